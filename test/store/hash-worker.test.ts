import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HashBuffer, OffThreadDigester } from '../../src/store/hash-worker.js';
import { pseudoRandom } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

const sha = (data: Uint8Array): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Feeds `data` to `digester` through one HashBuffer, `piece` bytes at a time. */
async function feed(digester: OffThreadDigester, data: Buffer, piece: number): Promise<void> {
  const buf = HashBuffer.take();
  try {
    for (let at = 0; at < data.length; at += piece) {
      const part = data.subarray(at, at + piece);
      part.copy(buf.bytes);
      await digester.update(buf, part.length);
    }
  } finally {
    HashBuffer.give(buf);
  }
}

describe('hashing on the hash thread', () => {
  it('gives the SHA-256 of the bytes fed in order, peeking without ending the hash', async () => {
    const data = pseudoRandom(3 * 1024 * 1024 + 17, 7);
    const d = OffThreadDigester.create();
    await feed(d, data.subarray(0, 1000), 300);
    expect(await d.peek()).toBe(sha(data.subarray(0, 1000)));
    await feed(d, data.subarray(1000), 512 * 1024);
    expect(d.size).toBe(data.length);
    expect(await d.digest()).toBe(sha(data));
  });

  it('starts from the bytes of a file, as a resumed ingest does, and goes on from there', async () => {
    const dir = await tmpDir('stowage-hash-');
    const data = pseudoRandom(2 * 1024 * 1024 + 5, 11);
    const file = join(dir, 'data');
    await writeFile(file, data.subarray(0, 1_500_000));
    const d = await OffThreadDigester.ofFile(file);
    expect(d.size).toBe(1_500_000);
    await feed(d, data.subarray(1_500_000), 64 * 1024);
    expect(await d.digest()).toBe(sha(data));
  });

  it('reports a missing file with its code, and keeps hashing others', async () => {
    const dir = await tmpDir('stowage-hash-');
    await expect(OffThreadDigester.ofFile(join(dir, 'gone'))).rejects.toMatchObject({ code: 'ENOENT' });
    const d = OffThreadDigester.create();
    await feed(d, Buffer.from('abc'), 3);
    expect(await d.digest()).toBe(sha(Buffer.from('abc')));
  });

  it('keeps the hashes of concurrent digesters apart', async () => {
    const a = pseudoRandom(700_000, 1);
    const b = pseudoRandom(900_000, 2);
    const [da, db] = [OffThreadDigester.create(), OffThreadDigester.create()];
    await Promise.all([feed(da, a, 100_000), feed(db, b, 70_000)]);
    expect([await da.digest(), await db.digest()]).toEqual([sha(a), sha(b)]);
  });
});
