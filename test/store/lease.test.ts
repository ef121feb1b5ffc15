import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isStowageError } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { collectGarbage, openStore, type ContentStore, type ImageIndex } from '../../src/store/index.js';
import { listBlobs } from '../harness/store.js';
import { chunked, pseudoRandom } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

let store: ContentStore;
let images: ImageIndex;

beforeEach(async () => {
  ({ store, images } = await openStore(await tmpDir('stowage-lease-')));
});
afterEach(() => {
  images.close();
});

const put = async (s: string) => (await store.putBytes(Buffer.from(s))).digest;
const present = async () => (await listBlobs(store)).map((b) => b.digest).sort();

describe('leases', () => {
  it('a leased blob survives delete() and GC; once released it goes', async () => {
    const kept = await put('kept layer');
    const other = await put('other blob');
    const lease = store.lease([kept]);
    expect(store.isLeased(kept)).toBe(true);
    expect(lease.has(kept)).toBe(true);

    expect(await store.delete(kept)).toBe(false);
    expect(await store.has(kept)).toBe(true);

    const dry = await collectGarbage(store, images, { dryRun: true, graceMs: 0 });
    expect(dry.removed.map((b) => b.digest)).toEqual([other]);
    const gc = await collectGarbage(store, images, { graceMs: 0 });
    expect(gc.removed).toEqual([{ digest: other, size: 'other blob'.length }]);
    expect(gc.reclaimedBytes).toBe('other blob'.length);
    expect(await present()).toEqual([kept]);

    lease.release();
    lease.release(); // idempotent
    expect(store.isLeased(kept)).toBe(false);
    const after = await collectGarbage(store, images, { graceMs: 0 });
    expect(after.removed.map((b) => b.digest)).toEqual([kept]);
    expect(await present()).toEqual([]);
    // Deleting what is not there deletes nothing.
    expect(await store.delete(kept)).toBe(false);
  });

  it('counts leases per digest: a blob stays until every lease on it is released', async () => {
    const shared = await put('shared');
    const a = store.lease([shared]);
    const b = store.lease();
    b.add(shared);
    b.add(shared); // one lease holds a digest once
    a.release();
    expect(store.isLeased(shared)).toBe(true);
    expect(await store.delete(shared)).toBe(false);
    b.release();
    expect(store.isLeased(shared)).toBe(false);
    expect(await store.delete(shared)).toBe(true);
    expect(await store.has(shared)).toBe(false);
  });

  it('a released lease refuses add(); a bad digest is refused', async () => {
    const lease = store.lease();
    expect(() => lease.add('sha256:nope' as never)).toThrow(/invalid digest/);
    lease.release();
    expect(() => lease.add(digestOf(Buffer.from('x')))).toThrow(/already released/);
  });

  it('put, putBytes and ingest commits add the committed digest to the lease given', async () => {
    const lease = store.lease();
    const small = await store.putBytes(Buffer.from('config'), undefined, { lease });
    const streamed = await store.put(chunked(pseudoRandom(50_000)), undefined, { lease });
    const ingest = await store.openIngest('some-layer');
    await ingest.write(chunked(pseudoRandom(30_000, 7)));
    const committed = await ingest.commit({}, { lease });
    for (const d of [small.digest, streamed.digest, committed.digest]) {
      expect(lease.has(d)).toBe(true);
      expect(await store.delete(d)).toBe(false);
    }
    expect((await collectGarbage(store, images, { graceMs: 0 })).removed).toEqual([]);
    lease.release();
    expect((await collectGarbage(store, images, { graceMs: 0 })).removed).toHaveLength(3);
  });

  it('refuses a lease of another store before writing anything', async () => {
    const other = await openStore(await tmpDir('stowage-lease-other-'));
    try {
      const foreign = other.store.lease();
      const err = await store.putBytes(Buffer.from('x'), undefined, { lease: foreign }).catch((e: unknown) => e);
      expect(isStowageError(err, 'INTERNAL')).toBe(true);
      expect(await present()).toEqual([]);
    } finally {
      other.images.close();
    }
  });

  it('a writer that leases while a delete is in flight sees the blob gone, never a blob about to vanish', async () => {
    const d = await put('layer being deleted');
    // The delete is registered synchronously; the writer leases and asks has() right after.
    const deleting = store.delete(d);
    const lease = store.lease([d]);
    expect(await store.has(d)).toBe(false);
    expect(await deleting).toBe(true);
    // So it writes the blob again, and from then on it stays.
    await store.putBytes(Buffer.from('layer being deleted'), { digest: d }, { lease });
    expect(await store.delete(d)).toBe(false);
    expect(await store.has(d)).toBe(true);
    lease.release();
  });

  it('two deletes of one blob: one deletes it, the other reports it did not', async () => {
    const d = await put('twice');
    const results = await Promise.all([store.delete(d), store.delete(d)]);
    expect(results.sort()).toEqual([false, true]);
    expect(await store.has(d)).toBe(false);
  });
});
