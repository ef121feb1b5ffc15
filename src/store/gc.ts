import type { ContentStore } from './content-store.js';
import type { BlobInfo, ImageIndexApi } from './types.js';

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
 * and does not commit again is not protected.
 */
export async function collectGarbage(
  store: Pick<ContentStore, 'listCommitted' | 'delete' | 'removeStaleIngests'>,
  images: ImageIndexApi,
  opts: GcOptions = {},
): Promise<GcResult> {
  const now = Date.now();
  const committedBefore = now - (opts.graceMs ?? DEFAULT_GC_GRACE_MS);
  const referenced = images.referencedBlobs();
  const removed: BlobInfo[] = [];
  let reclaimedBytes = 0;
  for await (const { digest, size, committedAt } of store.listCommitted()) {
    if (referenced.has(digest) || committedAt > committedBefore) continue;
    if (!opts.dryRun) await store.delete(digest);
    removed.push({ digest, size });
    reclaimedBytes += size;
  }
  const staleIngests = await store.removeStaleIngests(opts.staleIngestMs ?? DEFAULT_STALE_INGEST_MS, { dryRun: opts.dryRun ?? false, now });
  return { removed, reclaimedBytes, staleIngests };
}
