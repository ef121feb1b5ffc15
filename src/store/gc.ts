import type { Digest } from '../oci/digest.js';
import type { ContentStore } from './content-store.js';
import type { BlobInfo, ContentStoreApi, ImageIndexApi } from './types.js';

export interface GcOptions {
  /** Report what would be removed without removing anything. */
  dryRun?: boolean;
  /** Ingests (resumable or crashed temps) untouched for longer than this are removed. Default 24 h. */
  staleIngestMs?: number;
  /**
   * Unreferenced blobs committed (or committed again) less than this long ago are kept: they may belong to a
   * pull or import that has stored its blobs but not yet written its records. Default DEFAULT_GC_GRACE_MS;
   * 0 is an explicit full sweep, for when nothing is writing to the store.
   */
  graceMs?: number;
}

export interface GcResult {
  removed: BlobInfo[];
  reclaimedBytes: number;
  /** Names of the stale ingest directories removed (or, with dryRun, that would be). */
  staleIngests: string[];
}

export const DEFAULT_STALE_INGEST_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_GC_GRACE_MS = 15 * 60 * 1000;

/**
 * Deletes every blob no image, index or tag refers to and that was committed more than `graceMs` ago, and
 * the stale ingests.
 *
 * The referenced set is a snapshot taken before the blobs are listed, and pulls and imports commit all
 * their blobs before they write their records (in one transaction). The grace period is what keeps a
 * running pull's or import's blobs: ContentStore dates every blob by its last commit (a commit of a blob
 * that is already there refreshes it), and GC leaves younger blobs alone. So the grace period must outlast
 * the time from a writer's first blob commit to its records; a blob that a writer finds already present
 * and does not commit again is not protected by the grace period: that is what leases are for (see Lease in
 * types.ts). Writers in this process lease every blob they are about to record, and delete() leaves leased
 * blobs alone, so GC never removes them whatever the grace period; the grace period remains for writers
 * outside this process's leases.
 */
export async function collectGarbage(
  store: Pick<ContentStore, 'listCommitted' | 'delete' | 'isLeased' | 'removeStaleIngests'>,
  images: ImageIndexApi,
  opts: GcOptions = {},
): Promise<GcResult> {
  const now = Date.now();
  const committedBefore = now - (opts.graceMs ?? DEFAULT_GC_GRACE_MS);
  const referenced = images.referencedBlobs();
  const candidates: BlobInfo[] = [];
  for await (const { digest, size, committedAt } of store.listCommitted()) {
    if (referenced.has(digest) || committedAt > committedBefore) continue;
    candidates.push({ digest, size });
  }
  // A leased blob belongs to a writer that has yet to record it: delete() leaves it, and so does a dry run.
  const removed = opts.dryRun
    ? candidates.filter((b) => !store.isLeased(b.digest))
    : await deleteUnreferenced(store, images, candidates);
  const reclaimedBytes = removed.reduce((n, b) => n + b.size, 0);
  const staleIngests = await store.removeStaleIngests(opts.staleIngestMs ?? DEFAULT_STALE_INGEST_MS, { dryRun: opts.dryRun ?? false, now });
  return { removed, reclaimedBytes, staleIngests };
}

const DELETE_BATCH = 256;

/**
 * Deletes those of `blobs` that no record refers to and no lease holds; returns the ones this call deleted.
 * What every deleter (GC, image removal, build-cache prune, a failed import's cleanup) goes through.
 *
 * Per batch, the reference snapshot and every delete's lease check run in one synchronous step (delete()
 * checks its lease before its first await). A writer leases its blobs before it looks at them and releases
 * the lease only after its records are written, so at that instant it either has its records in (and the
 * snapshot sees them) or still holds its lease (and delete() backs off): no window in between.
 */
export async function deleteUnreferenced<T extends { digest: Digest }>(
  store: Pick<ContentStoreApi, 'delete'>,
  images: Pick<ImageIndexApi, 'referencedBlobs'>,
  blobs: Iterable<T>,
): Promise<T[]> {
  const all = [...blobs];
  const deleted: T[] = [];
  for (let i = 0; i < all.length; i += DELETE_BATCH) {
    const referenced = images.referencedBlobs();
    const batch = all.slice(i, i + DELETE_BATCH).filter((b) => !referenced.has(b.digest));
    // No await between the snapshot and these calls.
    const outcomes = await Promise.all(batch.map((b) => store.delete(b.digest)));
    batch.forEach((b, j) => {
      if (outcomes[j]) deleted.push(b);
    });
  }
  return deleted;
}
