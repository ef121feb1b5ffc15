import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { type Platform, choosePlatform, defaultPlatform } from '../oci/platform.js';
import { type ImageReference, familiarString, formatReference, isImageIdLike, parseReference, repository, withDefaultTag } from '../oci/reference.js';
import type { ImageIndexApi, ImageRecord, IndexRecord } from '../store/types.js';

/**
 * The Docker view of a machine's image records: images grouped by Docker image ID (the config digest),
 * with the tags and repo digests that name them, and name resolution as dockerd does it (full or short ID,
 * `name:tag`, `name@sha256:…`, short names normalised).
 */

/** One Docker image: every stored manifest whose config is this ID, and the references naming it. */
export interface LocalImage {
  /** Docker image ID: the config digest. */
  id: Digest;
  /** The platform manifests with this config (the first is the one reported). */
  records: ImageRecord[];
  primary: ImageRecord;
  /** Tag references (normalised, with tag) that resolve to this image. */
  tags: Array<{ ref: ImageReference; target: Digest }>;
  /** Repo digests (repository@digest). */
  digests: Array<{ ref: ImageReference; manifestDigest: Digest }>;
  /**
   * A non-chosen child of a multi-platform index that nothing names: it exists for the index's sake
   * (shown by `docker images -a` only, never dangling).
   */
  indexChild: boolean;
}

export interface Inventory {
  /** Keyed by image ID. */
  byId: Map<Digest, LocalImage>;
  /** Manifest digest -> image ID. */
  byManifest: Map<Digest, Digest>;
  indexes: IndexRecord[];
}

/**
 * The platform image a tag or digest that points at `target` means: the manifest itself, or for an index
 * the present child best matching `platform` (default: this machine's), else the first present child.
 */
export function platformRecord(images: ImageIndexApi, target: Digest, platform?: Platform): ImageRecord | undefined {
  const direct = images.getImage(target);
  if (direct) return direct;
  const index = images.getIndex(target);
  if (!index) return undefined;
  const present = index.children
    .filter((c) => c.present)
    .map((c) => ({ digest: c.digest, platform: c.platform, record: images.getImage(c.digest) }))
    .filter((c): c is { digest: Digest; platform: Platform | undefined; record: ImageRecord } => c.record !== undefined)
    .map((c) => ({ ...c, platform: c.platform ?? c.record.platform }));
  if (present.length === 0) return undefined;
  try {
    return choosePlatform(present, platform ?? defaultPlatform()).record;
  } catch {
    return platform ? undefined : present[0]?.record;
  }
}

/** Builds the grouped view of every image record. */
export function inventory(images: ImageIndexApi): Inventory {
  const byId = new Map<Digest, LocalImage>();
  const byManifest = new Map<Digest, Digest>();
  for (const record of images.listImages()) {
    byManifest.set(record.manifestDigest, record.configDigest);
    const existing = byId.get(record.configDigest);
    if (existing) {
      existing.records.push(record);
      continue;
    }
    byId.set(record.configDigest, { id: record.configDigest, records: [record], primary: record, tags: [], digests: [], indexChild: false });
  }
  for (const t of images.listTags()) {
    const record = platformRecord(images, t.target);
    if (!record) continue;
    const img = byId.get(record.configDigest);
    if (!img) continue;
    let ref: ImageReference;
    try {
      ref = parseReference(t.reference);
    } catch {
      continue;
    }
    if (ref.tag === undefined) continue;
    img.tags.push({ ref, target: t.target });
    // The manifest that carries the tag is the one reported.
    if (img.primary !== record && img.tags.length === 1) img.primary = record;
  }
  for (const img of byId.values()) {
    const seen = new Set<string>();
    for (const r of img.records) {
      for (const d of images.repoDigestsFor(r.manifestDigest)) {
        let ref: ImageReference;
        try {
          ref = parseReference(`${d.repository}@${d.digest}`);
        } catch {
          continue;
        }
        const key = formatReference(ref);
        if (seen.has(key)) continue;
        seen.add(key);
        img.digests.push({ ref, manifestDigest: r.manifestDigest });
      }
    }
  }
  const indexes = images.listIndexes();
  const children = new Set<Digest>();
  for (const idx of indexes) for (const c of idx.children) if (c.present) children.add(c.digest);
  for (const img of byId.values()) {
    if (img.tags.length === 0 && img.digests.length === 0 && img.records.every((r) => children.has(r.manifestDigest))) img.indexChild = true;
  }
  return { byId, byManifest, indexes };
}

export function isDangling(img: LocalImage): boolean {
  return img.tags.length === 0 && img.digests.length === 0 && !img.indexChild;
}

/** How a client's name matched. */
export interface ResolvedImage {
  image: LocalImage;
  /** The platform manifest the name means (for an index, the chosen child). */
  record: ImageRecord;
  /** Set when the name was a reference (tag or digest), normalised, with "latest" added when bare. */
  reference?: ImageReference;
  /** True when the name was an image ID or ID prefix. */
  byId: boolean;
  inventory: Inventory;
}

/**
 * dockerd's ErrImageDoesNotExist: "No such image: <ref>", the reference shown familiar and with ":latest" when
 * it has neither tag nor digest ("nosuch" -> "nosuch:latest"); a bare 64-hex ID as "sha256:<hex>".
 */
export function noSuchImage(name: string): StowageError {
  let shown = name;
  if (/^[a-f0-9]{64}$/.test(name)) shown = `sha256:${name}`;
  else {
    try {
      shown = familiarString(withDefaultTag(parseReference(name)));
    } catch {
      /* not a reference: shown as given */
    }
  }
  return new StowageError('IMAGE_NOT_FOUND', `No such image: ${shown}`, { details: { name } });
}

const FULL_ID_RE = /^(?:sha256:)?([a-f0-9]{64})$/;

/** Finds images whose ID starts with the hex prefix (with or without "sha256:"). */
function searchId(inv: Inventory, name: string): LocalImage | undefined {
  const hex = name.startsWith('sha256:') ? name.slice(7) : name;
  if (hex === '') return undefined;
  const hits = [...inv.byId.values()].filter((img) => img.id.slice(7).startsWith(hex));
  return hits.length === 1 ? hits[0] : undefined;
}

function recordFor(img: LocalImage, manifest: Digest): ImageRecord {
  return img.records.find((r) => r.manifestDigest === manifest) ?? img.primary;
}

/**
 * Finds the image a client means, as dockerd's GetImage does: a full ID; a reference (tag, or digest matched
 * through repo digests and tags); then an ID prefix. Returns undefined when nothing matches (or a prefix
 * is ambiguous). Throws INVALID_REFERENCE for a name that is neither a reference nor ID-like.
 */
export function findImage(images: ImageIndexApi, name: string, opts: { platform?: Platform; inventory?: Inventory } = {}): ResolvedImage | undefined {
  const inv = opts.inventory ?? inventory(images);
  const full = FULL_ID_RE.exec(name);
  if (full && (name.startsWith('sha256:') || !isValidRef(name))) {
    const id = `sha256:${full[1]}` as Digest;
    const img = inv.byId.get(id);
    return img ? { image: img, record: img.primary, byId: true, inventory: inv } : undefined;
  }
  let ref: ImageReference | undefined;
  try {
    ref = parseReference(name);
  } catch (err) {
    if (!isImageIdLike(name)) throw err;
  }
  if (ref) {
    const hit = findByReference(images, inv, ref, opts.platform);
    if (hit) return hit;
  }
  if (isImageIdLike(name)) {
    const img = searchId(inv, name);
    if (img) return { image: img, record: img.primary, byId: true, inventory: inv };
  }
  return undefined;
}

function isValidRef(name: string): boolean {
  try {
    parseReference(name);
    return true;
  } catch {
    return false;
  }
}

function findByReference(images: ImageIndexApi, inv: Inventory, ref: ImageReference, platform?: Platform): ResolvedImage | undefined {
  if (ref.digest !== undefined) {
    const repo = repository(ref);
    for (const img of inv.byId.values()) {
      const d = img.digests.find((x) => repository(x.ref) === repo && x.ref.digest === ref.digest);
      if (d) return { image: img, record: recordFor(img, d.manifestDigest), reference: ref, byId: false, inventory: inv };
    }
    // name@digest where a tag of that repository points at exactly this manifest or index.
    for (const img of inv.byId.values()) {
      const t = img.tags.find((x) => repository(x.ref) === repo && x.target === ref.digest);
      if (t) {
        const record = platformRecord(images, t.target, platform) ?? img.primary;
        return { image: img, record, reference: ref, byId: false, inventory: inv };
      }
    }
    return undefined;
  }
  const full = withDefaultTag(ref);
  const target = images.resolveTag(formatReference(full));
  if (!target) return undefined;
  const record = platformRecord(images, target, platform);
  if (!record) return undefined;
  const img = inv.byId.get(record.configDigest);
  if (!img) return undefined;
  return { image: img, record, reference: full, byId: false, inventory: inv };
}

/** findImage, or IMAGE_NOT_FOUND "No such image: <name>" (404). */
export function resolveImage(images: ImageIndexApi, name: string, opts: { platform?: Platform; inventory?: Inventory } = {}): ResolvedImage {
  const hit = findImage(images, name, opts);
  if (!hit) throw noSuchImage(name);
  return hit;
}
