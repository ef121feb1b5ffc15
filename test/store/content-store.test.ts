import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { StowageError } from '../../src/errors.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { ContentStore } from '../../src/store/content-store.js';
import { ingestEntries, listBlobs } from '../harness/store.js';
import { chunked, failingStream, pseudoRandom, readAll } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

let dir: string;
let store: ContentStore;

beforeEach(async () => {
  dir = await tmpDir('stowage-store-');
  store = await ContentStore.open(dir);
});

async function expectCode(p: Promise<unknown>, code: string): Promise<StowageError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StowageError);
  expect((err as StowageError).code).toBe(code);
  return err as StowageError;
}

async function expectEmpty(): Promise<void> {
  expect(await listBlobs(store)).toEqual([]);
  expect(await ingestEntries(dir)).toEqual([]);
}

describe('put', () => {
  it('stores a streamed blob at blobs/sha256/<hex> and reads it back', async () => {
    const data = pseudoRandom(300_000);
    const digest = digestOf(data);
    const info = await store.put(chunked(data), { digest, size: data.length });
    expect(info).toEqual({ digest, size: data.length });
    expect(await readFile(join(dir, 'blobs', 'sha256', digest.slice(7)))).toEqual(data);
    expect(await store.has(digest)).toBe(true);
    expect(await store.stat(digest)).toEqual({ digest, size: data.length });
    expect(await readAll(await store.createReadStream(digest))).toEqual(data);
    expect(await listBlobs(store)).toEqual([{ digest, size: data.length }]);
    expect(await ingestEntries(dir)).toEqual([]);
  });

  it('computes the digest when none is expected, and accepts empty blobs', async () => {
    const info = await store.putBytes(Buffer.from('hello'));
    expect(info).toEqual({ digest: digestOf('hello'), size: 5 });
    const empty = await store.putBytes(new Uint8Array(0), { size: 0, digest: digestOf('') });
    expect(await store.readBytes(empty.digest)).toEqual(Buffer.alloc(0));
  });

  it('storing the same content twice keeps one intact blob', async () => {
    const data = pseudoRandom(10_000);
    await store.putBytes(data);
    await store.put(chunked(data, 1000), { digest: digestOf(data) });
    expect(await listBlobs(store)).toEqual([{ digest: digestOf(data), size: data.length }]);
    expect(await store.readBytes(digestOf(data))).toEqual(data);
  });

  it('rejects a wrong digest with DIGEST_MISMATCH and stores nothing', async () => {
    const data = pseudoRandom(50_000);
    const err = await expectCode(store.put(chunked(data), { digest: digestOf('something else') }), 'DIGEST_MISMATCH');
    expect(err.details).toMatchObject({ actual: digestOf(data) });
    await expectEmpty();
  });

  it('rejects more bytes than the expected size with SIZE_MISMATCH and stores nothing', async () => {
    const data = pseudoRandom(200_000);
    await expectCode(store.put(chunked(data), { digest: digestOf(data), size: 1000 }), 'SIZE_MISMATCH');
    await expectCode(store.putBytes(data, { size: data.length + 1 }), 'TRUNCATED');
    await expectEmpty();
  });

  it('a source that errors midway leaves nothing behind', async () => {
    const data = pseudoRandom(100_000);
    await expectCode(store.put(failingStream(data, 40_000), { digest: digestOf(data), size: data.length }), 'TRUNCATED');
    await expectCode(store.put(failingStream(data, 40_000)), 'TRUNCATED');
    await expectEmpty();
  });

  it('a source that ends early with a size expected is TRUNCATED and leaves nothing', async () => {
    const data = pseudoRandom(100_000);
    await expectCode(store.put(chunked(data.subarray(0, 70_000)), { digest: digestOf(data), size: data.length }), 'TRUNCATED');
    await expectEmpty();
  });

  it('rejects malformed expectations before touching the disk', async () => {
    await expectCode(store.putBytes(Buffer.from('x'), { digest: 'sha256:nothex' as Digest }), 'INVALID_DIGEST');
    await expectCode(store.putBytes(Buffer.from('x'), { size: -1 }), 'BAD_REQUEST');
    await expectEmpty();
  });

  it('concurrent puts of the same and of different content all succeed with intact blobs', async () => {
    const big = pseudoRandom(5 * 1024 * 1024, 42);
    const others = [1, 2, 3, 4].map((seed) => pseudoRandom(700_000 + seed * 1000, seed));
    const results = await Promise.all([
      ...Array.from({ length: 8 }, () => store.put(chunked(big, 48 * 1024), { digest: digestOf(big), size: big.length })),
      ...others.map((o) => store.put(chunked(o), { digest: digestOf(o) })),
    ]);
    for (const r of results.slice(0, 8)) expect(r).toEqual({ digest: digestOf(big), size: big.length });
    expect(await listBlobs(store)).toEqual(
      [big, ...others].map((b) => ({ digest: digestOf(b), size: b.length })).sort((a, b) => a.digest.localeCompare(b.digest)),
    );
    expect(digestOf(await readAll(await store.createReadStream(digestOf(big))))).toBe(digestOf(big));
    for (const o of others) expect(digestOf(await store.readBytes(digestOf(o)))).toBe(digestOf(o));
    expect(await ingestEntries(dir)).toEqual([]);
  });
});

describe('reads', () => {
  const data = Buffer.from('0123456789abcdef');
  const digest = digestOf(data);

  it('serves inclusive ranges', async () => {
    await store.putBytes(data);
    const read = async (range?: { start: number; end?: number }) => (await readAll(await store.createReadStream(digest, range))).toString();
    expect(await read()).toBe('0123456789abcdef');
    expect(await read({ start: 4 })).toBe('456789abcdef');
    expect(await read({ start: 4, end: 7 })).toBe('4567');
    expect(await read({ start: 0, end: 0 })).toBe('0');
    expect(await read({ start: 10, end: 1000 })).toBe('abcdef');
    // A resume that already has every byte gets an empty body, not an error.
    expect(await read({ start: 16 })).toBe('');
  });

  it('rejects unsatisfiable ranges', async () => {
    await store.putBytes(data);
    const err = await expectCode(store.createReadStream(digest, { start: 17 }), 'BAD_REQUEST');
    expect(err.status).toBe(416);
    await expectCode(store.createReadStream(digest, { start: 5, end: 4 }), 'BAD_REQUEST');
    await expectCode(store.createReadStream(digest, { start: -1 }), 'BAD_REQUEST');
  });

  it('missing blobs are BLOB_NOT_FOUND; malformed digests never become paths', async () => {
    await expectCode(store.createReadStream(digest), 'BLOB_NOT_FOUND');
    await expectCode(store.readBytes(digest), 'BLOB_NOT_FOUND');
    expect(await store.stat(digest)).toBeUndefined();
    expect(await store.has(digest)).toBe(false);
    await expectCode(store.readBytes('sha256:../../../etc/passwd' as Digest), 'INVALID_DIGEST');
    await expectCode(store.has('../images.db' as Digest), 'INVALID_DIGEST');
  });

  it('readBytes enforces its limit', async () => {
    await store.putBytes(data);
    expect((await store.readBytes(digest, 16)).toString()).toBe('0123456789abcdef');
    const err = await expectCode(store.readBytes(digest, 15), 'TOO_LARGE');
    expect(err.details).toEqual({ size: 16, limit: 15 });
  });

  it('list ignores stray files in the blob directory', async () => {
    await store.putBytes(data);
    await writeFile(join(dir, 'blobs', 'sha256', 'not-a-digest'), 'x');
    expect(await listBlobs(store)).toEqual([{ digest, size: 16 }]);
  });

  it('delete removes a blob and is a no-op when it is absent', async () => {
    await store.putBytes(data);
    await store.delete(digest);
    expect(await store.has(digest)).toBe(false);
    await store.delete(digest);
    expect(await listBlobs(store)).toEqual([]);
  });
});

describe('ingest (same process)', () => {
  it('writes in pieces, reports its offset, and commits', async () => {
    const data = pseudoRandom(150_000);
    const ingest = await store.openIngest('pull/docker.io/library/alpine/layer1');
    expect(ingest.offset).toBe(0);
    // Each write reports the digest and size of everything written so far.
    expect(await ingest.write(chunked(data.subarray(0, 60_000)))).toEqual({ digest: digestOf(data.subarray(0, 60_000)), size: 60_000 });
    expect(ingest.offset).toBe(60_000);
    expect(await listBlobs(store)).toEqual([]);
    await ingest.write(chunked(data.subarray(60_000)));
    expect(await ingest.commit({ digest: digestOf(data), size: data.length })).toEqual({ digest: digestOf(data), size: data.length });
    expect(await store.readBytes(digestOf(data))).toEqual(data);
    expect(await ingestEntries(dir)).toEqual([]);
    await expectCode(ingest.write(chunked(data)), 'CONFLICT');
  });

  it('keeps what arrived before a source failure, so the write can resume', async () => {
    const data = pseudoRandom(100_000);
    const ingest = await store.openIngest('k');
    await expectCode(ingest.write(failingStream(data, 30_000)), 'TRUNCATED');
    expect(ingest.offset).toBe(30_000);
    const again = await store.openIngest('k');
    expect(again.offset).toBe(30_000);
    // A resumed write reports the whole content, the prefix from the previous handle included.
    expect(await again.write(chunked(data.subarray(again.offset)))).toEqual({ digest: digestOf(data), size: data.length });
    await again.commit({ digest: digestOf(data) });
    expect(await store.readBytes(digestOf(data))).toEqual(data);
  });

  it('a short commit is TRUNCATED and the ingest stays resumable', async () => {
    const data = pseudoRandom(10_000);
    const ingest = await store.openIngest('short');
    await ingest.write(chunked(data.subarray(0, 4_000)));
    await expectCode(ingest.commit({ digest: digestOf(data), size: data.length }), 'TRUNCATED');
    expect(await listBlobs(store)).toEqual([]);
    await ingest.write(chunked(data.subarray(4_000)));
    await ingest.commit({ digest: digestOf(data), size: data.length });
    expect(await store.readBytes(digestOf(data))).toEqual(data);
  });

  it('a wrong digest at commit drops the ingest', async () => {
    const ingest = await store.openIngest('bad');
    await ingest.write(chunked(Buffer.from('not what was promised')));
    await expectCode(ingest.commit({ digest: digestOf('promised') }), 'DIGEST_MISMATCH');
    await expectEmpty();
    expect((await store.openIngest('bad')).offset).toBe(0);
  });

  it('abort deletes the partial file', async () => {
    const ingest = await store.openIngest('gone');
    await ingest.write(chunked(Buffer.from('partial')));
    await ingest.abort();
    await expectEmpty();
  });

  it('a handle whose ingest was removed through another handle is CONFLICT and recreates nothing', async () => {
    const a = await store.openIngest('shared');
    const b = await store.openIngest('shared');
    await a.write(chunked(Buffer.from('partial')));
    await b.abort();
    await expectCode(a.write(chunked(Buffer.from('more'))), 'CONFLICT');
    await expectCode(a.commit(), 'CONFLICT');
    await expectEmpty();
  });

  it('keys never escape the ingest directory', async () => {
    const ingest = await store.openIngest('../../../../tmp/evil');
    await ingest.write(chunked(Buffer.from('x')));
    const entries = await ingestEntries(dir);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatch(/^[a-f0-9]{64}$/);
    await expectCode(store.openIngest(''), 'BAD_REQUEST');
  });

  it('refuses two concurrent writes to one key', async () => {
    const a = await store.openIngest('same');
    const b = await store.openIngest('same');
    const slow = a.write(chunked(pseudoRandom(2_000_000), 16 * 1024));
    await expectCode(b.write(chunked(Buffer.from('x'))), 'CONFLICT');
    await slow;
    // b picks up a's bytes (the hash is rebuilt from the file) and can finish the blob.
    await b.write(chunked(Buffer.from('tail')));
    const whole = Buffer.concat([pseudoRandom(2_000_000), Buffer.from('tail')]);
    expect(await b.commit({ digest: digestOf(whole), size: whole.length })).toEqual({ digest: digestOf(whole), size: whole.length });
  });
});
