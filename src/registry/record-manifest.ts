import { StowageError, isStowageError } from '../errors.js';
import { type Digest, digestOf, isDigest } from '../oci/digest.js';
import { type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, type OciIndex, type OciManifest, type ParsedManifest, parseImageConfig, parseManifestBytes } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, MediaType, checkManifestSize } from '../oci/media-types.js';
import type { Platform } from '../oci/platform.js';
import { formatReference, isValidTag, repository } from '../oci/reference.js';
import type { ArtifactRecord, ContentStoreApi, ImageIndexApi, ImageRecord, IndexRecord, Lease, ReferrerRecord } from '../store/types.js';
import { normalisedRepo } from './name-rule.js';

/**
 * A manifest or index pushed to our /v2/ (PUT /v2/<name>/manifests/<ref>): checked against the store,
 * stored as a blob, and recorded (image, artifact or index, tag, repo digest, referrer) in one transaction.
 *
 * As the distribution spec asks, any manifest whose blobs are all here is accepted. One is recorded as an
 * image when it is one: an image config that lists a diff ID per layer, and no artifactType. Anything else
 * (signatures, SBOMs, charts, a config that does not describe the layers) is an artifact: stored, tagged,
 * served and collected the same way, but never offered to the Docker API or the inventory as an image.
 * A manifest or index with a `subject` is also recorded as one of that subject's referrers.
 *
 * Every blob the records will name is leased before it is looked for and until the records are written
 * (see Lease in store/types.ts), so a delete (docker rmi, prune, GC) cannot take a layer the manifest
 * was just found to have.
 */

export interface PushedManifest {
  /** Repository path from the URL ("library/alpine", "team/app"). */
  name: string;
  /** Tag or digest from the URL. */
  ref: string;
  bytes: Buffer;
  /** The request's Content-Type, when it sent one. */
  contentType: string | undefined;
}

export interface RecordedManifest {
  digest: Digest;
  mediaType: string;
  /** The normalised tag recorded ("docker.io/library/alpine:3.19"), when the reference was a tag. */
  reference?: string;
  /** The manifest's subject, when it has one (answered as the OCI-Subject header). */
  subject?: Digest;
  /** What it was recorded as. */
  recordedAs: 'image' | 'artifact' | 'index';
}

const MAX_LAYERS = 1000;
const MAX_CHILDREN = 1000;

type NewImageRecord = Omit<ImageRecord, 'addedAt'>;
type NewIndexRecord = Omit<IndexRecord, 'addedAt'>;
type NewArtifactRecord = Omit<ArtifactRecord, 'addedAt'>;
type ManifestRecord = { kind: 'image'; record: NewImageRecord } | { kind: 'artifact'; record: NewArtifactRecord } | { kind: 'index'; record: NewIndexRecord };

const IMAGE_CONFIG_TYPES: readonly string[] = [MediaType.DockerConfig, MediaType.OciConfig];

/**
 * Throws StowageErrors the route maps to distribution codes: INVALID_DIGEST / DIGEST_MISMATCH, INVALID_REFERENCE
 * (a name or tag), TOO_LARGE, INVALID_MANIFEST / UNSUPPORTED, BLOB_NOT_FOUND (a named blob is missing).
 */
export async function recordPushedManifest(handles: { store: ContentStoreApi; images: ImageIndexApi }, input: PushedManifest): Promise<RecordedManifest> {
  const { store, images } = handles;
  checkManifestSize(input.bytes.length, 'manifest');
  const digest = digestOf(input.bytes);
  let tag: string | undefined;
  if (input.ref.includes(':')) {
    if (!isDigest(input.ref)) throw new StowageError('INVALID_DIGEST', `invalid digest "${input.ref.slice(0, 100)}"`);
    if (input.ref !== digest) {
      throw new StowageError('DIGEST_MISMATCH', `manifest bytes have digest ${digest}, not ${input.ref}`, { details: { expected: input.ref, actual: digest } });
    }
  } else {
    if (!isValidTag(input.ref)) throw new StowageError('INVALID_REFERENCE', `invalid tag "${input.ref.slice(0, 100)}"`, { details: { what: 'tag' } });
    tag = input.ref;
  }
  const repo = normalisedRepo(input.name);
  if (!repo) throw new StowageError('INVALID_REFERENCE', `invalid repository name "${input.name.slice(0, 200)}"`, { details: { what: 'name' } });
  const parsed = parseManifestBytes(input.bytes, input.contentType);

  const lease = store.lease();
  try {
    const recorded: ManifestRecord =
      parsed.kind === 'manifest' ? await manifestRecord(store, lease, digest, parsed, input.bytes.length) : { kind: 'index', record: indexRecord(lease, digest, parsed) };
    const referrer = referrerOf(parsed, digest, input.bytes.length);
    // The manifest itself last: once stored and recorded, the image is whole.
    await store.putBytes(input.bytes, { digest, size: input.bytes.length }, { lease });
    const reference = tag === undefined ? undefined : formatReference({ domain: repo.domain, path: repo.path, tag });
    const repoName = repository(repo);
    images.transaction(() => {
      let platformManifests: Digest[] = [];
      if (recorded.kind === 'image') {
        images.putImage(recorded.record);
        platformManifests = [digest];
      } else if (recorded.kind === 'artifact') {
        images.putArtifact(recorded.record);
      } else {
        // Presence is read inside the transaction, so it agrees with the image records it is written next to.
        const children = recorded.record.children.map((c) => ({ ...c, present: images.getImage(c.digest) !== undefined }));
        images.putIndex({ ...recorded.record, children });
        platformManifests = children.filter((c) => c.present).map((c) => c.digest);
      }
      if (referrer) images.putReferrer(referrer);
      if (reference === undefined) return;
      images.tag(reference, digest);
      for (const m of platformManifests) images.addRepoDigest({ repository: repoName, digest, manifestDigest: m });
    });
    const out: RecordedManifest = { digest, mediaType: parsed.mediaType, recordedAs: recorded.kind };
    if (reference !== undefined) out.reference = reference;
    if (referrer) out.subject = referrer.subject;
    return out;
  } finally {
    lease.release();
  }
}

/** The subject of an OCI manifest or index (the Docker formats have none). */
function subjectOf(parsed: ParsedManifest): Descriptor | undefined {
  if (parsed.mediaType === MediaType.OciManifest) return (parsed.manifest as OciManifest).subject;
  if (parsed.mediaType === MediaType.OciIndex) return (parsed.index as OciIndex).subject;
  return undefined;
}

/** The referrers entry of a manifest or index with a subject (artifactType: its own, else its config's media type). */
function referrerOf(parsed: ParsedManifest, digest: Digest, size: number): Omit<ReferrerRecord, 'addedAt'> | undefined {
  const doc = parsed.kind === 'manifest' ? parsed.manifest : parsed.index;
  const subject = subjectOf(parsed);
  if (!subject) return undefined;
  const own = 'artifactType' in doc && typeof doc.artifactType === 'string' ? doc.artifactType : undefined;
  const artifactType = own ?? (parsed.kind === 'manifest' ? parsed.manifest.config.mediaType : undefined);
  return { subject: subject.digest, digest, mediaType: parsed.mediaType, size, artifactType, annotations: doc.annotations ?? {} };
}

/** Checks that the config and every layer are in the store with the sizes named; an image record when it is an image, else an artifact's. */
async function manifestRecord(
  store: ContentStoreApi,
  lease: Lease,
  digest: Digest,
  parsed: Extract<ParsedManifest, { kind: 'manifest' }>,
  manifestSize: number,
): Promise<ManifestRecord> {
  const m: ImageManifest = parsed.manifest;
  if (m.layers.length > MAX_LAYERS) throw new StowageError('TOO_LARGE', `manifest has ${m.layers.length} layers; the limit is ${MAX_LAYERS}`);
  const missing: Descriptor[] = [];
  for (const d of [m.config, ...m.layers]) {
    lease.add(d.digest); // before stat(): a blob found now stays until the records are in
    const info = await store.stat(d.digest);
    if (!info) missing.push(d);
    else if (info.size !== d.size) {
      throw new StowageError('INVALID_MANIFEST', `manifest names ${d.digest} with size ${d.size}, but the blob has ${info.size} bytes`, {
        details: { digest: d.digest },
      });
    }
  }
  if (missing.length > 0) {
    throw new StowageError('BLOB_NOT_FOUND', `manifest ${digest} names blobs that were not uploaded: ${missing.map((d) => d.digest).join(', ')}`, {
      status: 400,
      details: { digests: missing.map((d) => d.digest) },
    });
  }
  const size = manifestSize + m.config.size + m.layers.reduce((n, l) => n + l.size, 0);
  const ownArtifactType = 'artifactType' in m && typeof m.artifactType === 'string' ? m.artifactType : undefined;
  const config = ownArtifactType === undefined ? await imageConfigOf(store, m) : undefined;
  if (!config) {
    const subject = subjectOf(parsed)?.digest;
    return {
      kind: 'artifact',
      record: {
        manifestDigest: digest,
        manifestMediaType: parsed.mediaType,
        artifactType: ownArtifactType ?? m.config.mediaType,
        subject,
        blobs: [m.config.digest, ...m.layers.map((l) => l.digest)],
        size,
      },
    };
  }
  const platform: Platform = { os: config.os, architecture: config.architecture };
  if (config.variant) platform.variant = config.variant;
  if (config['os.version']) platform['os.version'] = config['os.version'];
  return {
    kind: 'image',
    record: {
      manifestDigest: digest,
      manifestMediaType: parsed.mediaType,
      configDigest: m.config.digest,
      platform,
      layers: m.layers.map((l) => l.digest),
      size,
      created: config.created,
      labels: config.config?.Labels ?? {},
    },
  };
}

/** The image config when the manifest is a runnable image: an image config type, bounded, valid, one diff ID per layer. */
async function imageConfigOf(store: ContentStoreApi, m: ImageManifest): Promise<ImageConfig | undefined> {
  if (!IMAGE_CONFIG_TYPES.includes(m.config.mediaType) || m.config.size > MAX_MANIFEST_BYTES) return undefined;
  let config: ImageConfig;
  try {
    config = parseImageConfig(await store.readBytes(m.config.digest, MAX_MANIFEST_BYTES));
  } catch (err) {
    if (isStowageError(err, 'INVALID_MANIFEST')) return undefined;
    throw err;
  }
  return config.rootfs.diff_ids.length === m.layers.length ? config : undefined;
}

/** An index may name children this machine lacks (one platform pushed): they are recorded as not present (see the caller). */
function indexRecord(lease: Lease, digest: Digest, parsed: Extract<ParsedManifest, { kind: 'index' }>): NewIndexRecord {
  const index: ImageIndex = parsed.index;
  if (index.manifests.length > MAX_CHILDREN) throw new StowageError('TOO_LARGE', `index has ${index.manifests.length} manifests; the limit is ${MAX_CHILDREN}`);
  return {
    indexDigest: digest,
    mediaType: parsed.mediaType,
    children: index.manifests.map((d) => {
      lease.add(d.digest); // a child present now keeps its manifest blob until the index is recorded
      const child: NewIndexRecord['children'][number] = { digest: d.digest, platform: undefined, present: false };
      if (d.platform) {
        const p: Platform = { os: d.platform.os, architecture: d.platform.architecture };
        if (d.platform.variant) p.variant = d.platform.variant;
        if (d.platform['os.version']) p['os.version'] = d.platform['os.version'];
        child.platform = p;
      }
      return child;
    }),
  };
}
