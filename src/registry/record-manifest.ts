import { StowageError } from '../errors.js';
import { type Digest, digestOf, isDigest } from '../oci/digest.js';
import { type Descriptor, type ImageIndex, type ImageManifest, type ParsedManifest, parseImageConfig, parseManifestBytes } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, checkManifestSize } from '../oci/media-types.js';
import type { Platform } from '../oci/platform.js';
import { formatReference, isValidTag, repository } from '../oci/reference.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord, IndexRecord, Lease } from '../store/types.js';
import { normalisedRepo } from './name-rule.js';

/**
 * A manifest or index pushed to our /v2/ (PUT /v2/<name>/manifests/<ref>): checked against the store,
 * stored as a blob, and recorded (image or index, tag, repo digest) in one transaction.
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
}

const MAX_LAYERS = 1000;
const MAX_CHILDREN = 1000;

type NewImageRecord = Omit<ImageRecord, 'addedAt'>;
type NewIndexRecord = Omit<IndexRecord, 'addedAt'>;

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
    const record = parsed.kind === 'manifest' ? await imageRecord(store, lease, digest, parsed, input.bytes.length) : indexRecord(lease, digest, parsed);
    // The manifest itself last: once stored and recorded, the image is whole.
    await store.putBytes(input.bytes, { digest, size: input.bytes.length }, { lease });
    const reference = tag === undefined ? undefined : formatReference({ domain: repo.domain, path: repo.path, tag });
    const repoName = repository(repo);
    images.transaction(() => {
      let platformManifests: Digest[];
      if ('configDigest' in record) {
        images.putImage(record);
        platformManifests = [digest];
      } else {
        // Presence is read inside the transaction, so it agrees with the image records it is written next to.
        const children = record.children.map((c) => ({ ...c, present: images.getImage(c.digest) !== undefined }));
        images.putIndex({ ...record, children });
        platformManifests = children.filter((c) => c.present).map((c) => c.digest);
      }
      if (reference === undefined) return;
      images.tag(reference, digest);
      for (const m of platformManifests) images.addRepoDigest({ repository: repoName, digest, manifestDigest: m });
    });
    const out: RecordedManifest = { digest, mediaType: parsed.mediaType };
    if (reference !== undefined) out.reference = reference;
    return out;
  } finally {
    lease.release();
  }
}

/** Checks that the config and every layer are in the store with the sizes named, and builds the image record. */
async function imageRecord(
  store: ContentStoreApi,
  lease: Lease,
  digest: Digest,
  parsed: Extract<ParsedManifest, { kind: 'manifest' }>,
  manifestSize: number,
): Promise<NewImageRecord> {
  const m: ImageManifest = parsed.manifest;
  if (m.layers.length > MAX_LAYERS) throw new StowageError('TOO_LARGE', `manifest has ${m.layers.length} layers; the limit is ${MAX_LAYERS}`);
  checkManifestSize(m.config.size, `config ${m.config.digest}`);
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
  const config = parseImageConfig(await store.readBytes(m.config.digest, MAX_MANIFEST_BYTES));
  if (config.rootfs.diff_ids.length !== m.layers.length) {
    throw new StowageError('INVALID_MANIFEST', `manifest has ${m.layers.length} layers but its config lists ${config.rootfs.diff_ids.length}`);
  }
  const platform: Platform = { os: config.os, architecture: config.architecture };
  if (config.variant) platform.variant = config.variant;
  if (config['os.version']) platform['os.version'] = config['os.version'];
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
