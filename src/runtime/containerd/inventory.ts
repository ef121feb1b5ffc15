import { type Digest, isDigest } from '../../oci/digest.js';
import { parseImageConfig, parseManifestBytes } from '../../oci/manifest.js';
import { MAX_MANIFEST_BYTES, isIndexMediaType, isManifestMediaType } from '../../oci/media-types.js';
import type { Platform } from '../../oci/platform.js';
import { formatReference, parseReference, repository } from '../../oci/reference.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord, IndexRecord } from '../../store/types.js';
import type { ContainerdImage } from './client.js';

/**
 * The agent's image records as a mirror of containerd's image list: every containerd image whose target
 * is a manifest (or an index, with the children whose manifest and config are in the content store) becomes
 * an image record, and its name a tag. The first mirror makes the records equal to containerd's; after that
 * each mirror applies what changed in containerd since the previous one, so records containerd never had
 * (an upload waiting for its hand-over) are left alone until they are handed over.
 */

type NewImage = Omit<ImageRecord, 'addedAt'>;
type NewIndex = Omit<IndexRecord, 'addedAt'>;

interface Resolved {
  images: NewImage[];
  index?: NewIndex;
}

/** A containerd name as a Stowage reference: a normalised tag, a digest reference, or neither (CRI's "sha256:…" IDs). */
function nameOf(name: string): { tag?: string; repo?: string } {
  try {
    const ref = parseReference(name);
    if (ref.digest !== undefined) return { repo: repository(ref) };
    return { tag: formatReference(ref) };
  } catch {
    return {};
  }
}

async function imageFromContent(store: ContentStoreApi, digest: Digest, mediaType: string, manifestSize: number): Promise<NewImage | undefined> {
  if (!(await store.has(digest))) return undefined;
  const parsed = parseManifestBytes(await store.readBytes(digest, MAX_MANIFEST_BYTES), mediaType);
  if (parsed.kind !== 'manifest') return undefined;
  const m = parsed.manifest;
  if (!(await store.has(m.config.digest))) return undefined;
  const config = parseImageConfig(await store.readBytes(m.config.digest, MAX_MANIFEST_BYTES));
  const platform: Platform = { os: config.os, architecture: config.architecture };
  if (config.variant) platform.variant = config.variant;
  return {
    manifestDigest: digest,
    manifestMediaType: parsed.mediaType,
    configDigest: m.config.digest,
    platform,
    layers: m.layers.map((l) => l.digest),
    size: manifestSize + m.config.size + m.layers.reduce((n, l) => n + l.size, 0),
    created: config.created,
    labels: config.config?.Labels ?? {},
  };
}

/** The records a containerd image target stands for, read from the content store (undefined: not readable). */
export async function resolveTarget(store: ContentStoreApi, target: ContainerdImage['target']): Promise<Resolved | undefined> {
  const digest = target.digest;
  if (!isDigest(digest)) return undefined;
  if (isManifestMediaType(target.media_type)) {
    const image = await imageFromContent(store, digest, target.media_type, target.size);
    return image && { images: [image] };
  }
  if (!isIndexMediaType(target.media_type) || !(await store.has(digest))) return undefined;
  const parsed = parseManifestBytes(await store.readBytes(digest, MAX_MANIFEST_BYTES), target.media_type);
  if (parsed.kind !== 'index') return undefined;
  const images: NewImage[] = [];
  const children: NewIndex['children'] = [];
  for (const d of parsed.index.manifests) {
    const image = isManifestMediaType(d.mediaType) ? await imageFromContent(store, d.digest as Digest, d.mediaType, d.size) : undefined;
    if (image) images.push(image);
    let platform: Platform | undefined;
    if (d.platform) {
      platform = { os: d.platform.os, architecture: d.platform.architecture };
      if (d.platform.variant) platform.variant = d.platform.variant;
    }
    children.push({ digest: d.digest as Digest, platform, present: image !== undefined });
  }
  return { images, index: { indexDigest: digest, mediaType: parsed.mediaType, children } };
}

export class ContainerdMirror {
  /** name → target digest, as of the previous mirror (undefined before the first). */
  private previous: Map<string, Digest> | undefined;
  private readonly cache = new Map<Digest, Resolved>();
  /** The platform images containerd's list stood for at the last mirror. */
  private held = new Set<Digest>();

  constructor(
    private readonly store: ContentStoreApi,
    private readonly images: ImageIndexApi,
  ) {}

  /** Whether containerd's list (at the last mirror) has an image that is, or whose index has, this manifest. */
  holds(manifestDigest: Digest): boolean {
    return this.held.has(manifestDigest);
  }

  /** Applies containerd's image list to the records (see the class comment); true when holds() changed. */
  async apply(list: readonly ContainerdImage[]): Promise<boolean> {
    const next = new Map<string, Digest>();
    const resolved = new Map<Digest, Resolved>();
    for (const img of list) {
      if (!img.target || !isDigest(img.target.digest)) continue;
      const digest = img.target.digest;
      let r = resolved.get(digest) ?? this.cache.get(digest);
      // An index's presence can change as children arrive: read it again each time.
      if (!r || r.index) r = await resolveTarget(this.store, img.target).catch(() => undefined);
      if (!r) continue;
      resolved.set(digest, r);
      next.set(img.name, digest);
    }
    this.cache.clear();
    for (const [d, r] of resolved) this.cache.set(d, r);
    const { images } = this;
    const first = this.previous === undefined;
    const previous = this.previous ?? new Map<string, Digest>();
    const nextTargets = new Set(next.values());
    const keptManifests = new Set<Digest>();
    for (const r of resolved.values()) for (const i of r.images) keptManifests.add(i.manifestDigest);

    images.transaction(() => {
      // Gone targets: on the first mirror, everything not in containerd; after, what containerd dropped.
      const goneTargets = new Set<Digest>();
      if (first) {
        for (const rec of images.listImages()) if (!keptManifests.has(rec.manifestDigest) && !nextTargets.has(rec.manifestDigest)) goneTargets.add(rec.manifestDigest);
        for (const idx of images.listIndexes()) if (!nextTargets.has(idx.indexDigest)) goneTargets.add(idx.indexDigest);
        const named = new Set([...next.keys()].map((n) => nameOf(n).tag).filter((t): t is string => t !== undefined));
        for (const t of images.listTags()) if (!named.has(t.reference)) images.untag(t.reference);
      } else {
        for (const [name, digest] of previous) {
          const tag = nameOf(name).tag;
          if (tag && next.get(name) !== digest && images.resolveTag(tag) === digest) images.untag(tag);
          if (!nextTargets.has(digest)) goneTargets.add(digest);
        }
      }
      for (const digest of goneTargets) {
        const index = images.getIndex(digest);
        if (index) {
          images.deleteIndex(digest);
          for (const c of index.children) if (!keptManifests.has(c.digest)) images.deleteImage(c.digest);
        } else if (!keptManifests.has(digest)) {
          images.deleteImage(digest);
        }
      }
      for (const [name, digest] of next) {
        const r = resolved.get(digest)!;
        for (const rec of r.images) if (!images.getImage(rec.manifestDigest)) images.putImage(rec);
        if (r.index && !sameIndex(images.getIndex(digest), r.index)) images.putIndex(r.index);
        const { tag, repo } = nameOf(name);
        if (tag && images.resolveTag(tag) !== digest) images.tag(tag, digest);
        const repoName = repo ?? (tag ? repository(parseReference(tag)) : undefined);
        if (repoName) {
          for (const rec of r.images) {
            if (!images.repoDigestsFor(rec.manifestDigest).some((x) => x.repository === repoName && x.digest === digest)) {
              images.addRepoDigest({ repository: repoName, digest, manifestDigest: rec.manifestDigest });
            }
          }
        }
      }
    });
    this.previous = next;
    const changed = keptManifests.size !== this.held.size || [...keptManifests].some((d) => !this.held.has(d));
    this.held = keptManifests;
    return changed;
  }
}

function sameIndex(a: IndexRecord | undefined, b: NewIndex): boolean {
  if (!a || a.children.length !== b.children.length) return false;
  return a.children.every((c, i) => c.digest === b.children[i]!.digest && c.present === b.children[i]!.present);
}
