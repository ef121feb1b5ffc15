import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { type ImageReference, familiarString, formatReference, repository } from '../oci/reference.js';
import { deleteUnreferenced } from '../store/gc.js';
import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import { shortId } from '../oci/digest.js';
import { type LocalImage, inventory, isDangling, resolveImage } from './resolve.js';

/** Docker's ImageDelete and ImagePrune over the image records, with Docker's conflict rules and answers. */

export interface DeleteItem {
  Untagged?: string;
  Deleted?: string;
}

export interface RemoveDeps {
  store: ContentStoreApi;
  images: ImageIndexApi;
}

interface Ref {
  ref: ImageReference;
  canonical: boolean;
  /** For canonical refs: the manifest the repo digest is recorded on. */
  manifestDigest?: Digest;
}

function refsOf(img: LocalImage): Ref[] {
  return [
    ...img.tags.map((t) => ({ ref: t.ref, canonical: false })),
    ...img.digests.map((d) => ({ ref: d.ref, canonical: true, manifestDigest: d.manifestDigest })),
  ];
}

function current(images: ImageIndexApi, id: Digest): LocalImage | undefined {
  return inventory(images).byId.get(id);
}

/** moby's isSingleReference: all references in one repository, and at most one tag. */
function isSingleReference(refs: Ref[]): boolean {
  if (refs.length <= 1) return refs.length === 1;
  let single: Ref | undefined;
  const canonical = new Set<string>();
  for (const r of refs) {
    if (r.canonical) canonical.add(repository(r.ref));
    else if (single === undefined) single = r;
    else return false;
  }
  const s = single ?? refs[0]!;
  return canonical.size === 1 && canonical.has(repository(s.ref));
}

/** Removes one tag or one repo digest of the image. */
function removeRef(images: ImageIndexApi, img: LocalImage, r: Ref): void {
  if (!r.canonical) {
    images.untag(formatReference(r.ref));
    return;
  }
  const repo = repository(r.ref);
  for (const rec of img.records) {
    const all = images.repoDigestsFor(rec.manifestDigest);
    const keep = all.filter((d) => !(d.repository === repo && d.digest === r.ref.digest));
    if (keep.length === all.length) continue;
    images.transaction(() => {
      images.removeRepoDigests(rec.manifestDigest);
      for (const k of keep) images.addRepoDigest(k);
    });
  }
}

/**
 * Deletes indexes nothing names any more (no tag, no repo digest), and the children they alone held.
 * Returns the blobs that may have become unreferenced.
 */
function dropOrphanIndexes(images: ImageIndexApi, keepImage: Digest | undefined): Digest[] {
  const candidates: Digest[] = [];
  const tagged = new Set(images.listTags().map((t) => t.target));
  const records = images.listImages();
  const digestTargets = new Set<Digest>();
  for (const r of records) for (const d of images.repoDigestsFor(r.manifestDigest)) digestTargets.add(d.digest);
  const orphanIndexes = images.listIndexes().filter((i) => !tagged.has(i.indexDigest) && !digestTargets.has(i.indexDigest));
  if (orphanIndexes.length === 0) return candidates;
  for (const idx of orphanIndexes) {
    images.deleteIndex(idx.indexDigest);
    candidates.push(idx.indexDigest);
  }
  const stillChildren = new Set<Digest>();
  for (const idx of images.listIndexes()) for (const c of idx.children) stillChildren.add(c.digest);
  for (const idx of orphanIndexes) {
    for (const c of idx.children) {
      const rec = images.getImage(c.digest);
      if (!rec || stillChildren.has(c.digest) || rec.configDigest === keepImage) continue;
      if (tagged.has(c.digest) || images.repoDigestsFor(c.digest).length > 0) continue;
      images.deleteImage(c.digest);
      candidates.push(rec.manifestDigest, rec.configDigest, ...rec.layers);
    }
  }
  return candidates;
}

/**
 * Deletes the blobs among `candidates` that nothing references any more and no writer holds a lease on (a
 * pull, import or build that is about to record an image using them); returns those actually deleted and
 * their bytes.
 */
export async function collectBlobs(deps: RemoveDeps, candidates: Iterable<Digest>): Promise<{ removed: Digest[]; bytes: number }> {
  const present = [];
  for (const d of new Set(candidates)) {
    const info = await deps.store.stat(d);
    if (info) present.push(info);
  }
  const deleted = await deleteUnreferenced(deps.store, deps.images, present);
  return { removed: deleted.map((b) => b.digest), bytes: deleted.reduce((n, b) => n + b.size, 0) };
}

export interface DeleteOutcome {
  items: DeleteItem[];
  /** Bytes of blobs removed. */
  reclaimed: number;
}

function conflict(id: Digest, message: string): StowageError {
  return new StowageError('CONFLICT', `conflict: unable to delete ${shortId(id)} (must be forced) - ${message}`);
}

/**
 * DELETE /images/{name}: untags when the name is a reference and other references remain; otherwise deletes
 * the image (all its platform manifests) and, unless noprune, the blobs nothing else uses.
 */
export async function deleteImage(deps: RemoveDeps, name: string, opts: { force: boolean; noprune: boolean }): Promise<DeleteOutcome> {
  const { images } = deps;
  const hit = resolveImage(images, name);
  const id = hit.image.id;
  const items: DeleteItem[] = [];
  const candidates: Digest[] = [];
  let img: LocalImage = hit.image;
  let refs = refsOf(img);

  if (!hit.byId && hit.reference) {
    const parsed = hit.reference;
    const canonical = parsed.digest !== undefined;
    const mine = refs.find((r) => formatReference(r.ref) === formatReference(parsed)) ?? { ref: parsed, canonical };
    removeRef(images, img, mine);
    items.push({ Untagged: familiarString(parsed) });
    candidates.push(...dropOrphanIndexes(images, id));
    const now = current(images, id);
    img = now ?? img;
    refs = now ? refsOf(now) : [];
    if (!canonical) {
      const repo = repository(parsed);
      const tagLeft = refs.some((r) => !r.canonical && repository(r.ref) === repo);
      if (!tagLeft) {
        const remaining: Ref[] = [];
        for (const r of refs) {
          if (r.canonical && repository(r.ref) === repo) {
            removeRef(images, img, r);
            items.push({ Untagged: familiarString(r.ref) });
          } else remaining.push(r);
        }
        refs = remaining;
      }
    }
    if (refs.length > 0) {
      candidates.push(...dropOrphanIndexes(images, id));
      const { bytes } = opts.noprune ? { bytes: 0 } : await collectBlobs(deps, candidates);
      return { items, reclaimed: bytes };
    }
  } else if (isSingleReference(refs)) {
    for (const r of refs) {
      removeRef(images, img, r);
      items.push({ Untagged: familiarString(r.ref) });
    }
    refs = [];
  }

  if (refs.length > 0 && !opts.force) throw conflict(id, 'image is referenced in multiple repositories');
  for (const r of refs) {
    removeRef(images, img, r);
    items.push({ Untagged: familiarString(r.ref) });
  }
  const out = await removeRecords(deps, img, candidates, opts.noprune);
  items.push(...out.items);
  return { items, reclaimed: out.reclaimed };
}

/** Deletes every record of the image (tags pointing at its manifests go with them) and collects blobs. */
async function removeRecords(deps: RemoveDeps, img: LocalImage, extra: Digest[], noprune: boolean): Promise<DeleteOutcome> {
  const { images } = deps;
  const candidates: Digest[] = [...extra];
  // Tags still pointing at an index whose chosen child is this image stay with the index; the index loses
  // nothing but availability of this platform.
  for (const rec of images.imagesByConfig(img.id)) {
    images.deleteImage(rec.manifestDigest);
    candidates.push(rec.manifestDigest, rec.configDigest, ...rec.layers);
    for (const idx of images.listIndexes()) {
      if (!idx.children.some((c) => c.digest === rec.manifestDigest && c.present)) continue;
      images.putIndex({
        indexDigest: idx.indexDigest,
        mediaType: idx.mediaType,
        children: idx.children.map((c) => (c.digest === rec.manifestDigest ? { ...c, present: false } : c)),
      });
    }
  }
  // An index none of whose children are present any more goes too.
  for (const idx of images.listIndexes()) {
    if (idx.children.some((c) => c.present)) continue;
    images.deleteIndex(idx.indexDigest);
    candidates.push(idx.indexDigest);
  }
  const items: DeleteItem[] = [{ Deleted: img.id }];
  if (noprune) return { items, reclaimed: 0 };
  const { removed, bytes } = await collectBlobs(deps, candidates);
  for (const d of removed) if (d !== img.id) items.push({ Deleted: d });
  return { items, reclaimed: bytes };
}

export interface PruneOptions {
  /** true: dangling images only (the default); false: every image (no containers use any). */
  danglingOnly: boolean;
  /** Only images created before this time (ms since epoch). */
  until?: number;
  /** Label filters that must match (`key`, `key=value`). */
  labels: string[];
  /** Label filters that must not match. */
  notLabels: string[];
  match: (labels: Record<string, string>, filters: readonly string[]) => boolean;
}

/** POST /images/prune. */
export async function pruneImages(deps: RemoveDeps, opts: PruneOptions): Promise<{ ImagesDeleted: DeleteItem[] | null; SpaceReclaimed: number }> {
  const inv = inventory(deps.images);
  const deleted: DeleteItem[] = [];
  let reclaimed = 0;
  for (const img of inv.byId.values()) {
    if (img.indexChild) continue;
    if (opts.danglingOnly && !isDangling(img)) continue;
    if (opts.until !== undefined) {
      const created = img.primary.created ? Date.parse(img.primary.created) : NaN;
      if (Number.isNaN(created) || created >= opts.until) continue;
    }
    const labels = img.primary.labels ?? {};
    if (opts.labels.length > 0 && !opts.match(labels, opts.labels)) continue;
    if (opts.notLabels.length > 0 && opts.notLabels.some((l) => opts.match(labels, [l]))) continue;
    try {
      if (isDangling(img)) {
        const out = await deleteImage(deps, img.id, { force: false, noprune: false });
        deleted.push(...out.items);
        reclaimed += out.reclaimed;
      } else {
        for (const r of refsOf(img)) {
          if (!current(deps.images, img.id)) break;
          const out = await deleteImage(deps, formatReference(r.ref), { force: false, noprune: false });
          deleted.push(...out.items);
          reclaimed += out.reclaimed;
        }
      }
    } catch (err) {
      if (err instanceof StowageError && (err.code === 'CONFLICT' || err.code === 'IMAGE_NOT_FOUND')) continue;
      throw err;
    }
  }
  return { ImagesDeleted: deleted.length > 0 ? deleted : null, SpaceReclaimed: reclaimed };
}
