import { describe, expect, it } from 'vitest';
import { Transfer } from '../../src/agent/transfers.js';
import type { TransferPlan } from '../../src/agent/transfer-request.js';
import type { TransferEvent } from '../../src/control/wire.js';
import { parseReference } from '../../src/oci/reference.js';

/**
 * A transfer's progress lines: throttled to one per interval, except the plan (the first line with a total),
 * which lets the next machine of a fan-out chain start and so goes out at once.
 */

function transfer(): { t: Transfer; events: TransferEvent[] } {
  const plan: TransferPlan = {
    host: '127.0.0.1:1',
    repository: 'example/app',
    insecure: true,
    https: false,
    credentials: undefined,
    operationId: 'op-test',
    key: 'k',
    peers: [],
    source: parseReference('127.0.0.1:1/example/app:1'),
    digest: undefined,
    platform: undefined,
    references: [],
  };
  const t = new Transfer(plan);
  const events: TransferEvent[] = [];
  t.subscribe((e) => events.push(e));
  return { t, events };
}

describe('transfer progress lines', () => {
  it('holds a second line within the interval, but sends an urgent one (the plan) at once, and only once', () => {
    const { t, events } = transfer();
    events.length = 0;
    t.bytesTransferred = 10;
    t.progress(); // the first line goes out
    t.bytesTransferred = 20;
    t.progress(); // within the interval: held
    expect(events).toEqual([{ type: 'progress', bytes_transferred: 10, bytes_total: null }]);
    t.bytesTotal = 1000;
    t.progress(true);
    expect(events.at(-1)).toEqual({ type: 'progress', bytes_transferred: 20, bytes_total: 1000 });
    expect(events).toHaveLength(2);
    t.finish({ type: 'error', failure: { code: 'CANCELLED', message: 'done', stage: 'transfer' } });
    // The held line was dropped with the urgent one; nothing goes out after the end.
    expect(events).toHaveLength(3);
  });
});
