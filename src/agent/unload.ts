import { StowageError } from '../errors.js';
import { type Digest, isDigest } from '../oci/digest.js';
import { type Platform, choosePlatform, formatPlatform } from '../oci/platform.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { collectBlobs } from '../engine/remove.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord, IndexRecord } from '../store/types.js';

/**
 * POST /agent/v1/unload: takes an image off this machine. `ref` (a manifest or index digest, or a tag)
 * names it; for an index, `platform` picks one child, else every child goes. The records (and the tags on
 * them) are deleted in one transaction, an index with no child left goes too, and then the blobs nothing
 * references any more are collected (leased blobs of a running pull stay).
 */

export interface UnloadDeps {
  store: ContentStoreApi;
  images: ImageIndexApi;
}

export interface UnloadResult {
  /** The manifest (and index) digests whose records were removed. */
  removed: Digest[];
  /** Blobs deleted from the content store. */
  blobs: Digest[];
}

function notFound(ref: string, platform?: Platform): StowageError {
  const on = platform ? ` for platform ${formatPlatform(platform)}` : '';
  return new StowageError('IMAGE_NOT_FOUND', `no image ${ref}${on} on this machine`, { details: { ref } });
}

/** The digest `ref` names here: itself when a digest, else what the (normalised) tag points at. */
function resolveRef(images: ImageIndexApi, ref: string): Digest | undefined {
  if (isDigest(ref)) return ref;
  let normalised: string;
  try {
    normalised = formatReference(parseReference(ref));
  } catch (err) {
    throw new StowageError('INVALID_REFERENCE', (err as Error).message);
  }
  return images.resolveTag(normalised);
}

/** The manifests to remove: the image itself, or an index's chosen (or every) present child. */
function manifestsOf(images: ImageIndexApi, target: Digest, index: IndexRecord | undefined, ref: string, platform?: Platform): ImageRecord[] {
  const direct = images.getImage(target);
  if (direct) {
    if (platform) choosePlatform([direct], platform); // a platform that does not match is an error, not a no-op
    return [direct];
  }
  if (!index) return [];
  const present = index.children
    .map((c) => ({ platform: c.platform, record: images.getImage(c.digest) }))
    .filter((c): c is { platform: Platform | undefined; record: ImageRecord } => c.record !== undefined)
    .map((c) => ({ platform: c.platform ?? c.record.platform, record: c.record }));
  if (!platform) return present.map((c) => c.record);
  try {
    return [choosePlatform(present, platform).record];
  } catch {
    throw notFound(ref, platform);
  }
}

export async function unloadImage(deps: UnloadDeps, ref: string, platform?: Platform): Promise<UnloadResult> {
  const { images } = deps;
  const candidates: Digest[] = [];
  const removed: Digest[] = [];
  let untagged = false;
  images.transaction(() => {
    const target = resolveRef(images, ref);
    if (!target) throw notFound(ref, platform);
    if (!isDigest(ref) && !platform && images.tagsFor(target).length > 1) {
      untagged = images.untag(formatReference(parseReference(ref)));
      return;
    }
    const index = images.getIndex(target);
    const records = manifestsOf(images, target, index, ref, platform);
    if (records.length === 0) {
      // An index whose children are all gone already: only the index itself is left to remove.
      if (!index || platform) throw notFound(ref, platform);
    }
    const gone = new Set<Digest>();
    for (const rec of records) {
      images.deleteImage(rec.manifestDigest); // its tags and repo digests go with it
      gone.add(rec.manifestDigest);
      removed.push(rec.manifestDigest);
      candidates.push(rec.manifestDigest, rec.configDigest, ...rec.layers);
    }
    // Indexes naming a removed child lose it; one with nothing present left goes, with its tags.
    for (const idx of images.listIndexes()) {
      if (!idx.children.some((c) => gone.has(c.digest)) && idx.indexDigest !== target) continue;
      const children = idx.children.map((c) => ({ ...c, present: c.present && !gone.has(c.digest) && images.getImage(c.digest) !== undefined }));
      if (children.some((c) => c.present)) {
        images.putIndex({ indexDigest: idx.indexDigest, mediaType: idx.mediaType, children });
      } else {
        images.deleteIndex(idx.indexDigest);
        removed.push(idx.indexDigest);
        candidates.push(idx.indexDigest);
      }
    }
  });
  if (untagged) return { removed: [], blobs: [] };
  const { removed: blobs } = await collectBlobs(deps, candidates);
  return { removed, blobs };
}
