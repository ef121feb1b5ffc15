import { isStowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { ContentStoreApi } from '../store/types.js';

/**
 * A whole blob of a known digest arriving in one request body (a monolithic upload, or the PUT that brings
 * all of an upload's bytes), written through an ingest named by that digest and announced with its declared
 * size: peers reading the blob from this /v2/ get its bytes while they arrive (store/live-blobs.ts), the last
 * one only once the whole blob matched its digest; an upload that fails (short, cut, wrong digest) fails
 * their reads and leaves nothing. So what stowctl pushes to the first machine flows on to the others at once.
 *
 * A private put is used instead when live reads cannot work or help: a store without them, no declared
 * size, a blob already held, or another writer (a transfer) busy with the digest's ingest.
 */
export async function putWholeBlob(store: ContentStoreApi, body: AsyncIterable<Uint8Array>, digest: Digest, declaredSize: number | undefined): Promise<void> {
  if (!store.expectBlob || declaredSize === undefined || (await store.has(digest))) {
    await store.put(body, { digest, ...(declaredSize === undefined ? {} : { size: declaredSize }) });
    return;
  }
  let started = false;
  const tracked = (async function* () {
    started = true;
    yield* body;
  })();
  const release = store.expectBlob(digest, declaredSize);
  try {
    let ingest = await store.openIngest(digest);
    if (ingest.offset > 0) {
      // Leftovers of an earlier transfer: this body is the whole blob, not the rest of it.
      await ingest.abort();
      ingest = await store.openIngest(digest);
    }
    try {
      await ingest.write(tracked);
    } catch (err) {
      // An upload cannot be resumed where it broke off: its bytes go, and so do the reads of them.
      if (!(isStowageError(err, 'CONFLICT') && !started)) await ingest.abort().catch(() => undefined);
      throw err;
    }
    await ingest.commit({ digest, size: declaredSize });
  } catch (err) {
    if (isStowageError(err, 'CONFLICT') && !started) {
      // Someone else writes this digest's ingest right now: this upload takes the private way.
      await store.put(tracked, { digest, size: declaredSize });
      return;
    }
    throw err;
  } finally {
    release();
  }
}
