import { describe, expect, it } from 'vitest';
import { forEachSending } from '../../src/registry/pool.js';

/** A promise with its resolver, for steps the test releases one at a time. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('forEachSending', () => {
  it('starts the next item once one has sent, without waiting for it to end', async () => {
    const started: number[] = [];
    const finish = [gate(), gate(), gate()];
    const sent: Array<() => void> = [];
    const run = forEachSending([0, 1, 2], 1, async (i, markSent) => {
      started.push(i);
      sent[i] = markSent;
      await finish[i]!.promise;
    });
    await settle();
    expect(started).toEqual([0]);
    sent[0]!(); // item 0 has sent everything, its answer is still to come
    await settle();
    expect(started).toEqual([0, 1]);
    finish[1]!.open(); // an item that ends without saying it sent frees its slot too
    await settle();
    expect(started).toEqual([0, 1, 2]);
    finish[0]!.open();
    finish[2]!.open();
    await run;
  });

  it('starts nothing after a failure, waits for the started ones, then throws that failure', async () => {
    const started: number[] = [];
    const hold = gate();
    const run = forEachSending([0, 1, 2, 3], 2, async (i) => {
      started.push(i);
      if (i === 1) throw new Error('item 1 failed');
      await hold.promise;
    });
    await settle();
    hold.open();
    await expect(run).rejects.toThrow('item 1 failed');
    expect(started).toEqual([0, 1]);
  });
});
