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
 * A private put is used instead whenever the digest's ingest could be shared: live reads cannot work or help
 * (a store without them, no declared size, a blob already held), another upload of the same digest is under
 * way, or the ingest holds someone else's bytes (a transfer's, in flight or left over): those are never
 * touched, and two writers never append to one file.
 */

/** Digests whose whole-blob upload writes the digest's ingest right now, per store. */
const writing = new WeakMap<ContentStoreApi, Set<Digest>>();

export async function putWholeBlob(store: ContentStoreApi, body: AsyncIterable<Uint8Array>, digest: Digest, declaredSize: number | undefined): Promise<void> {
  const privately = (): Promise<unknown> => store.put(body, { digest, ...(declaredSize === undefined ? {} : { size: declaredSize }) });
  let busy = writing.get(store);
  if (!busy) writing.set(store, (busy = new Set()));
  if (!store.expectBlob || declaredSize === undefined || busy.has(digest) || (await store.has(digest)) || busy.has(digest)) {
    await privately();
    return;
  }
  busy.add(digest);
  const release = store.expectBlob(digest, declaredSize);
  try {
    const ingest = await store.openIngest(digest);
    if (ingest.offset > 0) {
      await privately();
      return;
    }
    let started = false;
    const tracked = (async function* () {
      started = true;
      yield* body;
    })();
    try {
      await ingest.write(tracked);
    } catch (err) {
      // A transfer took the ingest first: this upload takes the private way, its body still unread.
      if (isStowageError(err, 'CONFLICT') && !started) {
        await privately();
        return;
      }
      // An upload cannot be resumed where it broke off: its bytes go, and so do the reads of them.
      await ingest.abort().catch(() => undefined);
      throw err;
    }
    await ingest.commit({ digest, size: declaredSize });
  } finally {
    busy.delete(digest);
    release();
  }
}
