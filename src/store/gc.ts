import type { BlobInfo, ContentStoreApi, ImageIndexApi } from './types.js';

export interface GcOptions {
  /** Report what would be removed without removing anything. */
  dryRun?: boolean;
  /** Ingests (resumable or crashed temps) untouched for longer than this are removed. Default 24 h. */
  staleIngestMs?: number;
}

export interface GcResult {
  removed: BlobInfo[];
  reclaimedBytes: number;
  /** Names of the stale ingest directories removed (or, with dryRun, that would be). */
  staleIngests: string[];
}

export const DEFAULT_STALE_INGEST_MS = 24 * 60 * 60 * 1000;

/** The part of ContentStore that knows about ingest directories; other ContentStoreApi implementations may lack it. */
interface IngestCleaner {
  removeStaleIngests(maxAgeMs: number, opts?: { dryRun?: boolean }): Promise<string[]>;
}

function hasIngestCleaner(store: ContentStoreApi): store is ContentStoreApi & IngestCleaner {
  return typeof (store as Partial<IngestCleaner>).removeStaleIngests === 'function';
}

/**
 * Deletes every blob no image, index or tag refers to.
 *
 * The referenced set is a snapshot taken before the blobs are listed: a pull that has stored blobs but
 * not yet recorded its image will lose them. Callers run this from rmi/prune, not concurrently with
 * pulls or imports into the same store.
 */
export async function collectGarbage(store: ContentStoreApi, images: ImageIndexApi, opts: GcOptions = {}): Promise<GcResult> {
  const referenced = images.referencedBlobs();
  const removed: BlobInfo[] = [];
  let reclaimedBytes = 0;
  for await (const blob of store.list()) {
    if (referenced.has(blob.digest)) continue;
    if (!opts.dryRun) await store.delete(blob.digest);
    removed.push(blob);
    reclaimedBytes += blob.size;
  }
  const staleIngests = hasIngestCleaner(store)
    ? await store.removeStaleIngests(opts.staleIngestMs ?? DEFAULT_STALE_INGEST_MS, { dryRun: opts.dryRun ?? false })
    : [];
  return { removed, reclaimedBytes, staleIngests };
}
