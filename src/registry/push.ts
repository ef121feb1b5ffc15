import { StowageError, isStowageError } from '../errors.js';
import { type Digest, shortId } from '../oci/digest.js';
import { parseManifestBytes } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES } from '../oci/media-types.js';
import { formatPlatform } from '../oci/platform.js';
import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import type { PushBlobResult, RegistryClient } from './client.js';
import { forEachSending } from './pool.js';

/**
 * Pushes a local image (a platform manifest, or an index with its present children) to a repository
 * of a registry: blobs first, config before layers (skipping what the registry has, mounting from
 * `mountFrom` when given), then child manifests by digest, then the top manifest under `tag`.
 */

export type PushStatus = 'Preparing' | 'Waiting' | 'Layer already exists' | 'Mounted from' | 'Pushing' | 'Pushed';

export interface PushProgressEvent {
  /** Short layer id (12 hex digits). */
  id: string;
  status: PushStatus;
  current?: number;
  total?: number;
  /** For 'Mounted from': the source repository. */
  from?: string;
}

export interface PushOptions {
  onProgress?: ((event: PushProgressEvent) => void) | undefined;
  /** A repository on the same registry that already holds the blobs (cross-repository mount). */
  mountFrom?: string | undefined;
  /** Blobs uploaded at once (default 3). */
  concurrency?: number;
  /** Stops the uploads; the push rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
}

export interface PushResult {
  /** Digest of the top manifest or index as pushed (unchanged bytes, so equal to the local digest). */
  digest: Digest;
  size: number;
  mediaType: string;
  /** Platform manifests pushed (one for a single image). */
  manifests: Digest[];
}

const PROGRESS_INTERVAL_MS = 100;

export async function pushImage(
  client: RegistryClient,
  handles: { store: ContentStoreApi; images: ImageIndexApi },
  localDigest: Digest,
  targetRepo: string,
  tag: string | undefined,
  opts: PushOptions = {},
): Promise<PushResult> {
  const { store, images } = handles;
  const repo = client.repoPath(targetRepo);
  const index = images.getIndex(localDigest);
  if (index) {
    const pushed: Digest[] = [];
    for (const child of index.children) {
      if (images.getImage(child.digest)) {
        await pushManifest(client, store, child.digest, repo, child.digest, opts);
        pushed.push(child.digest);
      } else if (!(await client.headManifest(repo, child.digest))) {
        // A registry refuses an index whose children it lacks; say which platform is missing here.
        const p = child.platform ? formatPlatform(child.platform) : 'unknown platform';
        throw new StowageError('PLATFORM_NOT_FOUND', `cannot push index ${localDigest}: its ${p} image ${child.digest} is not present locally nor on ${client.host}/${repo}`, {
          details: { digest: child.digest, platform: child.platform },
        });
      }
    }
    const bytes = await readLocal(localDigest, 'index', localDigest, () => store.readBytes(localDigest, MAX_MANIFEST_BYTES));
    await client.putManifest(repo, tag ?? localDigest, bytes, index.mediaType);
    return { digest: localDigest, size: bytes.length, mediaType: index.mediaType, manifests: pushed };
  }
  const image = images.getImage(localDigest);
  if (!image) throw new StowageError('IMAGE_NOT_FOUND', `no local image or index ${localDigest}`);
  const { size, mediaType } = await pushManifest(client, store, localDigest, repo, tag ?? localDigest, opts);
  return { digest: localDigest, size, mediaType, manifests: [localDigest] };
}

async function pushManifest(
  client: RegistryClient,
  store: ContentStoreApi,
  digest: Digest,
  repo: string,
  ref: string,
  opts: PushOptions,
): Promise<{ size: number; mediaType: string }> {
  const bytes = await readLocal(digest, 'manifest', digest, () => store.readBytes(digest, MAX_MANIFEST_BYTES));
  const parsed = parseManifestBytes(bytes);
  if (parsed.kind !== 'manifest') throw new StowageError('INVALID_MANIFEST', `${digest} is an index where an image manifest was expected`);
  const m = parsed.manifest;
  // Uploaded in the order a pull reads them (registry/pull.ts): the config, then the layers bottom first.
  // A machine pulling from the receiver while this push arrives (a push's fan-out) then plans at once and
  // reads each layer as it comes in, instead of waiting for a config sent last or a layer not begun.
  const layers = [...new Map(m.layers.map((l) => [l.digest, l])).values()];
  const concurrency = Math.max(1, opts.concurrency ?? 3);
  // Listed top layer first, as dockerd lists them.
  for (const l of [...layers].reverse()) opts.onProgress?.({ id: shortId(l.digest), status: 'Preparing' });
  for (const l of layers.slice(concurrency)) opts.onProgress?.({ id: shortId(l.digest), status: 'Waiting' });

  const pushOne = async (d: { digest: Digest; size: number }, report: boolean, bodySent?: () => void): Promise<PushBlobResult> => {
    const id = shortId(d.digest);
    let last = 0;
    const open = () => readLocal(digest, report ? 'layer' : 'config', d.digest, () => store.createReadStream(d.digest));
    const result = await client.pushBlob(repo, d.digest, d.size, async () => abortable(await open(), opts.signal, bodySent), {
      mountFrom: opts.mountFrom,
      onProgress: report
        ? (sent) => {
            const now = Date.now();
            if (now - last < PROGRESS_INTERVAL_MS && sent < d.size) return;
            last = now;
            opts.onProgress?.({ id, status: 'Pushing', current: sent, total: d.size });
          }
        : undefined,
    });
    if (report) {
      if (result === 'exists') opts.onProgress?.({ id, status: 'Layer already exists' });
      else if (result === 'mounted') opts.onProgress?.({ id, status: 'Mounted from', from: opts.mountFrom ?? '' });
      else opts.onProgress?.({ id, status: 'Pushed' });
    }
    return result;
  };

  await pushOne(m.config, false);
  // A layer's slot frees once its last byte is sent, not when the receiver answers (after its verification
  // and fsync): the next layer keeps the link busy meanwhile.
  await forEachSending(layers, concurrency, async (l, bodySent) => {
    opts.signal?.throwIfAborted();
    await pushOne(l, true, bodySent);
  });
  await client.putManifest(repo, ref, bytes, parsed.mediaType);
  return { size: bytes.length, mediaType: parsed.mediaType };
}

/**
 * Reads a blob of the image being pushed. A push holds no lease: deleting the image meanwhile (docker rmi)
 * wins, and the push fails saying which blob went, rather than with a bare "blob not found".
 */
async function readLocal<T>(image: Digest, what: string, blob: Digest, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (!isStowageError(err, 'BLOB_NOT_FOUND')) throw err;
    throw new StowageError('BLOB_NOT_FOUND', `cannot push ${image}: its ${what} ${blob} is no longer in the local store (was the image deleted during the push?)`, {
      details: { image, digest: blob },
      cause: err,
    });
  }
}

/** The bytes of `source`, failing with the signal's reason once it is aborted; `ended` once all were taken. */
async function* abortable(source: AsyncIterable<Uint8Array>, signal: AbortSignal | undefined, ended?: () => void): AsyncIterable<Uint8Array> {
  for await (const chunk of source) {
    signal?.throwIfAborted();
    yield chunk;
  }
  ended?.();
}
