import type { Readable } from 'node:stream';
import { StowageError, isStowageError } from '../errors.js';
import { type Digest, digestOf, shortId } from '../oci/digest.js';
import type { Descriptor, ImageIndex, ImageManifest } from '../oci/manifest.js';
import { parseImageConfig, parseManifestBytes } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, checkManifestSize, isIndexMediaType } from '../oci/media-types.js';
import { type Platform, choosePlatform, defaultPlatform } from '../oci/platform.js';
import { type ImageReference, formatReference, parseReference, repository } from '../oci/reference.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord, Lease } from '../store/types.js';
import { bodyChunks } from './body-chunks.js';
import { type FetchedManifest, type RegistryClient, registryEndpoint } from './client.js';
import { forEachLimited } from './pool.js';
import { stallGuard } from './stall-guard.js';

/**
 * Pulls an image from a registry into the local store: manifest (or index + the wanted platform's
 * manifest), config, and only the layers the store lacks. Every blob goes through an ingest keyed by
 * its digest with the expected digest and size, so nothing is visible before it is verified and an
 * interrupted pull resumes with a Range request from where the ingest stopped. Records (image, index,
 * tag, repo digest) are written only after all blobs are in.
 *
 * Every blob the records will name is leased (see Lease in store/types.ts) before the pull asks whether the
 * store has it, until the records are written: a layer that "Already exists" because another image holds it
 * cannot be deleted with that image (docker rmi, prune, GC) while this pull is still running.
 */

export type PullStatus = 'Pulling fs layer' | 'Waiting' | 'Downloading' | 'Download complete' | 'Already exists' | 'Pull complete';

export interface PullProgressEvent {
  /** Short layer id: the first 12 hex digits of its digest (as Docker shows). */
  id: string;
  status: PullStatus;
  current?: number;
  /** The layer's size ('Pulling fs layer', 'Downloading'). */
  total?: number;
}

export interface PullOptions {
  /** Platform to pick from an index (default: linux + this machine's architecture). */
  platform?: Platform | undefined;
  /** Pull every platform of an index (attestation manifests excepted). */
  pullAllPlatforms?: boolean;
  onProgress?: ((event: PullProgressEvent) => void) | undefined;
  /** Layers downloaded at once (default 3). */
  concurrency?: number;
  /** Range-resume attempts per layer after a dropped connection (default 3). */
  retries?: number;
  /** Called once the top manifest (or index) is fetched and verified, before any blob is. */
  onManifest?: ((top: FetchedManifest) => void) | undefined;
  /** Stops the downloads (the ingests stay, for a later pull to resume); the pull rejects with the reason. */
  signal?: AbortSignal | undefined;
  /**
   * The caller's lease, to lease the pulled blobs in (instead of a lease of the pull's own, released once
   * the records are written): for a caller that goes on using the image, such as a build's FROM.
   */
  lease?: Lease | undefined;
  /**
   * Called with the size of each chunk of blob bytes received, before it is written: awaiting it paces the
   * download (a bandwidth cap), and the sum is what actually crossed the network (resumed prefixes excluded).
   * `source` is the host[:port] that sent them (a peer or the origin).
   */
  onBlobBytes?: ((bytes: number, source: string) => Promise<void> | void) | undefined;
  /** Called once a platform manifest's config is in, with the layers that must still be downloaded. */
  onPlan?: ((missing: readonly Descriptor[]) => void) | undefined;
  /**
   * Records of the caller's, written inside the pull's own records transaction (so they appear together):
   * `target` is what the pull resolved (index or manifest digest).
   */
  onRecord?: ((target: Digest, records: readonly ImageRecord[]) => void) | undefined;
  /**
   * Whether to record the source's name (its tag and repo digest) for the image. Default true; false for a
   * transfer from a peer agent, whose host:port is no name for the image.
   */
  recordSourceNames?: boolean | undefined;
  /**
   * Where blobs (configs and layers) come from, in order of preference; default the registry the manifest
   * came from. A blob is fetched from the first; when a source fails (refuses, does not have it, drops the
   * connection, stalls, sends bad bytes), the next one resumes it with Range from the bytes already here.
   * The last gets `retries` more attempts. Asked again for each attempt, so it may hand out renewed
   * credentials or a new plan.
   */
  blobSources?: (() => readonly BlobSource[]) | undefined;
  /** A blob download that receives nothing for this long is cut and resumed from the next source. */
  stallTimeoutMs?: number | undefined;
}

/** A registry (or peer agent) to take blobs from, and the repository path blobs are asked under there. */
export interface BlobSource {
  client: RegistryClient;
  path: string;
}

export interface PullResult {
  /** The platform manifest pulled (for pullAllPlatforms: the one matching `platform`, else the first). */
  manifestDigest: Digest;
  configDigest: Digest;
  indexDigest?: Digest;
  platform: Platform;
  /** The normalised reference that was tagged, when the pull was by tag. */
  reference?: string;
  /** Every image record written (one, or one per platform with pullAllPlatforms). */
  images: ImageRecord[];
  /** True when any blob (manifest, index, config or layer) was not in the store before. */
  downloaded: boolean;
}

type NewImageRecord = Omit<ImageRecord, 'addedAt'>;

export interface StoreHandles {
  store: ContentStoreApi;
  images: ImageIndexApi;
}

/** What one pull did, gathered across its platforms, and the lease on every blob it will record. */
interface PullStats {
  downloaded: boolean;
  lease: Lease;
}

const MAX_LAYERS = 1000;
const PROGRESS_INTERVAL_MS = 100;

/** Downloads in flight per store, so two pulls sharing a layer fetch it once. */
const inFlight = new WeakMap<ContentStoreApi, Map<Digest, Promise<void>>>();

export async function pullImage(client: RegistryClient, ref: string | ImageReference, handles: StoreHandles, opts: PullOptions = {}): Promise<PullResult> {
  const parsed = typeof ref === 'string' ? parseReference(ref) : ref;
  if (registryEndpoint(parsed.domain) !== registryEndpoint(client.host)) {
    throw new StowageError('BAD_REQUEST', `reference ${formatReference(parsed)} is not on registry ${client.host}`);
  }
  const tag = parsed.tag ?? (parsed.digest === undefined ? 'latest' : undefined);
  const path = client.repoPath(parsed.path);
  const top = await client.getManifest(path, parsed.digest ?? (tag as string));
  opts.onManifest?.(top);
  const want = opts.platform ?? defaultPlatform();
  const lease = opts.lease ?? handles.store.lease();
  try {
    return await pullLeased(client, parsed, tag, path, top, want, handles, opts, { downloaded: false, lease });
  } finally {
    // The records are written (or the pull failed): what they name is theirs now.
    if (lease !== opts.lease) lease.release();
  }
}

/**
 * Fetches one blob into the store unless it is there already: from the first of `opts.blobSources` that
 * serves it, resuming from the next one with Range when a source fails, and verified against its digest and
 * size before it becomes visible (bad bytes are dropped). A download of the same blob already under way in
 * this store is joined, not repeated. For callers that move single blobs, such as a pull-through mirror.
 */
export async function fetchBlobInto(
  desc: Descriptor,
  store: ContentStoreApi,
  opts: Pick<PullOptions, 'onBlobBytes' | 'signal' | 'stallTimeoutMs' | 'retries'> & { blobSources: () => readonly BlobSource[] },
): Promise<void> {
  const first = opts.blobSources()[0];
  if (!first) throw new StowageError('BLOB_NOT_FOUND', `no source for blob ${desc.digest}`);
  const lease = store.lease();
  try {
    await fetchBlob(first.client, first.path, desc, store, opts, false, { downloaded: false, lease });
  } finally {
    lease.release();
  }
}

async function pullLeased(
  client: RegistryClient,
  parsed: ImageReference,
  tag: string | undefined,
  path: string,
  top: FetchedManifest,
  want: Platform,
  handles: StoreHandles,
  opts: PullOptions,
  stats: PullStats,
): Promise<PullResult> {
  const { store, images } = handles;
  const index: ImageIndex | undefined = top.parsed.kind === 'index' ? top.parsed.index : undefined;
  const indexDigest = index ? top.digest : undefined;
  const fetchedImages: NewImageRecord[] = [];
  let primary: NewImageRecord;

  if (index) {
    const runnable = index.manifests.filter((d) => !isAttestation(d));
    let chosen: Descriptor[];
    let preferred: Descriptor | undefined;
    if (opts.pullAllPlatforms) {
      chosen = runnable;
      try {
        preferred = choosePlatform(runnable, want);
      } catch {
        preferred = runnable[0];
      }
    } else {
      preferred = choosePlatform(runnable, want);
      chosen = [preferred];
    }
    for (const child of chosen) {
      if (isIndexMediaType(child.mediaType)) throw new StowageError('UNSUPPORTED', `nested index ${child.digest} in ${path} is not supported`);
      const m = (await storedManifest(handles, child, stats)) ?? (await client.getManifest(path, child.digest));
      fetchedImages.push(await pullPlatformManifest(client, path, m, child.platform, handles, opts, stats));
    }
    const found = fetchedImages.find((r) => r.manifestDigest === preferred?.digest) ?? fetchedImages[0];
    if (!found) throw new StowageError('PLATFORM_NOT_FOUND', `index ${top.digest} has no image manifests`);
    primary = found;
    await storeManifest(store, top, stats);
  } else {
    primary = await pullPlatformManifest(client, path, top, undefined, handles, opts, stats);
    fetchedImages.push(primary);
  }

  const target = indexDigest ?? primary.manifestDigest;
  const repo = repository({ domain: parsed.domain, path: parsed.path });
  const reference = tag === undefined ? undefined : formatReference({ domain: parsed.domain, path: parsed.path, tag });
  // Every blob is in; the records (images, index, tag, repo digests) appear together or not at all.
  const pulled = images.transaction(() => {
    const recorded = fetchedImages.map((rec) => images.putImage(rec));
    if (index) {
      images.putIndex({
        indexDigest: top.digest,
        mediaType: top.mediaType,
        children: index.manifests.map((d) => ({
          digest: d.digest,
          platform: d.platform ? cleanPlatform(d.platform) : undefined,
          present: images.getImage(d.digest) !== undefined,
        })),
      });
    }
    if (opts.recordSourceNames !== false) {
      if (reference !== undefined) images.tag(reference, target);
      for (const rec of recorded) images.addRepoDigest({ repository: repo, digest: target, manifestDigest: rec.manifestDigest });
    }
    opts.onRecord?.(target, recorded);
    return recorded;
  });

  const result: PullResult = {
    manifestDigest: primary.manifestDigest,
    configDigest: primary.configDigest,
    platform: primary.platform,
    images: pulled,
    downloaded: stats.downloaded,
  };
  if (indexDigest !== undefined) result.indexDigest = indexDigest;
  if (reference !== undefined && opts.recordSourceNames !== false) result.reference = reference;
  return result;
}

/** Docker buildx attestation manifests sit in indexes as "unknown/unknown": not runnable images. */
function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest' || (d.platform?.os === 'unknown' && d.platform.architecture === 'unknown');
}

function cleanPlatform(p: { os: string; architecture: string; variant?: string | undefined; 'os.version'?: string | undefined }): Platform {
  const out: Platform = { os: p.os, architecture: p.architecture };
  if (p.variant) out.variant = p.variant;
  if (p['os.version']) out['os.version'] = p['os.version'];
  return out;
}

async function pullPlatformManifest(
  client: RegistryClient,
  path: string,
  fetched: FetchedManifest,
  descriptorPlatform: Platform | undefined,
  handles: StoreHandles,
  opts: PullOptions,
  stats: PullStats,
): Promise<NewImageRecord> {
  if (fetched.parsed.kind !== 'manifest') throw new StowageError('INVALID_MANIFEST', `${fetched.digest} is an index where an image manifest was expected`);
  const manifest: ImageManifest = fetched.parsed.manifest;
  const { store } = handles;
  if (manifest.layers.length > MAX_LAYERS) throw new StowageError('TOO_LARGE', `manifest ${fetched.digest} has ${manifest.layers.length} layers; the limit is ${MAX_LAYERS}`);
  checkManifestSize(manifest.config.size, `config ${manifest.config.digest}`);

  // Config first: it tells whether this is an image at all.
  await fetchBlob(client, path, manifest.config, store, opts, false, stats);
  const config = parseImageConfig(await store.readBytes(manifest.config.digest, MAX_MANIFEST_BYTES));
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new StowageError('INVALID_MANIFEST', `manifest ${fetched.digest} has ${manifest.layers.length} layers but its config lists ${config.rootfs.diff_ids.length}`);
  }

  // Decide what is missing before downloading anything, so the events read like Docker's.
  const missing: Descriptor[] = [];
  const seen = new Set<Digest>();
  for (const layer of manifest.layers) {
    if (seen.has(layer.digest)) continue;
    seen.add(layer.digest);
    stats.lease.add(layer.digest); // before has(): a layer that exists now stays until the records are in
    if (await store.has(layer.digest)) {
      opts.onProgress?.({ id: shortId(layer.digest), status: 'Already exists' });
    } else {
      missing.push(layer);
      opts.onProgress?.({ id: shortId(layer.digest), status: 'Pulling fs layer', total: layer.size });
    }
  }
  opts.onPlan?.(missing);
  const concurrency = Math.max(1, opts.concurrency ?? 3);
  for (const layer of missing.slice(concurrency)) opts.onProgress?.({ id: shortId(layer.digest), status: 'Waiting' });

  await forEachLimited(missing, concurrency, (layer) => fetchBlob(client, path, layer, store, opts, true, stats));

  // The manifest last: once it is stored (and, by the caller, recorded), the image is whole.
  await storeManifest(store, fetched, stats);
  const platform = descriptorPlatform
    ? cleanPlatform(descriptorPlatform)
    : cleanPlatform({ os: config.os, architecture: config.architecture, variant: config.variant, 'os.version': config['os.version'] });
  return {
    manifestDigest: fetched.digest,
    manifestMediaType: fetched.mediaType,
    configDigest: manifest.config.digest,
    platform,
    layers: manifest.layers.map((l) => l.digest),
    size: fetched.bytes.length + manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0),
    created: config.created,
    labels: config.config?.Labels ?? {},
  };
}

/**
 * A child manifest of an index that the store already holds, read from the store instead of the registry
 * (content-addressed: the bytes are checked against the descriptor's digest and size again, then parsed as
 * the client parses what a registry sends). Its media type is the one recorded for it when there is an
 * image record (what the registry said then), else the index descriptor's. Leased before it is looked at
 * (see Lease); undefined, so the caller fetches it, when it is absent or anything about it is off.
 */
async function storedManifest(handles: StoreHandles, child: Descriptor, stats: PullStats): Promise<FetchedManifest | undefined> {
  const { store, images } = handles;
  if (child.size > MAX_MANIFEST_BYTES) return undefined; // the client refuses it with TOO_LARGE
  stats.lease.add(child.digest); // before has(): it stays until the records are in (storeManifest adds it anyway)
  if (!(await store.has(child.digest))) return undefined;
  try {
    const bytes = await store.readBytes(child.digest, MAX_MANIFEST_BYTES);
    if (bytes.length !== child.size || digestOf(bytes) !== child.digest) return undefined;
    const contentType = images.getImage(child.digest)?.manifestMediaType ?? child.mediaType;
    const parsed = parseManifestBytes(bytes, contentType);
    return { bytes, mediaType: parsed.mediaType, digest: child.digest, parsed };
  } catch {
    return undefined; // unreadable or not parseable with that type: the registry's answer decides, as before
  }
}

/** Stores a fetched manifest or index (already verified by the client), noting whether it is new. */
async function storeManifest(store: ContentStoreApi, m: FetchedManifest, stats: PullStats): Promise<void> {
  stats.lease.add(m.digest);
  if (!(await store.has(m.digest))) stats.downloaded = true;
  await store.putBytes(m.bytes, { digest: m.digest, size: m.bytes.length }, { lease: stats.lease });
}

/** Fetches one blob into the store unless it is there; shares a download already in flight. */
async function fetchBlob(
  client: RegistryClient,
  path: string,
  desc: Descriptor,
  store: ContentStoreApi,
  opts: PullOptions,
  report: boolean,
  stats: PullStats,
): Promise<void> {
  stats.lease.add(desc.digest); // before has(), see pullImage
  if (await store.has(desc.digest)) {
    if (report) opts.onProgress?.({ id: shortId(desc.digest), status: 'Pull complete' });
    return;
  }
  let perStore = inFlight.get(store);
  if (!perStore) inFlight.set(store, (perStore = new Map()));
  const running = perStore.get(desc.digest);
  if (running) {
    await running;
    if (report) opts.onProgress?.({ id: shortId(desc.digest), status: 'Pull complete' });
    return;
  }
  stats.downloaded = true;
  const task = downloadBlob(client, path, desc, store, opts, report, stats.lease);
  perStore.set(desc.digest, task);
  try {
    await task;
  } finally {
    perStore.delete(desc.digest);
  }
}

async function downloadBlob(
  client: RegistryClient,
  path: string,
  desc: Descriptor,
  store: ContentStoreApi,
  opts: PullOptions,
  report: boolean,
  lease: Lease,
): Promise<void> {
  const id = shortId(desc.digest);
  const total = desc.size;
  const retries = opts.retries ?? 3;
  let ingest = await store.openIngest(desc.digest);
  if (ingest.offset > total) {
    // Leftovers longer than the blob cannot be a prefix of it.
    await ingest.abort();
    ingest = await store.openIngest(desc.digest);
  }
  let lastEmit = 0;
  const emit = (current: number, force = false) => {
    if (!report || !opts.onProgress) return;
    const now = Date.now();
    if (!force && now - lastEmit < PROGRESS_INTERVAL_MS) return;
    lastEmit = now;
    opts.onProgress({ id, status: 'Downloading', current, total });
  };

  for (let attempt = 0; ; attempt++) {
    const sources = opts.blobSources?.() ?? [{ client, path }];
    // One attempt per preferred source, in order; the last one (the origin) gets the retries.
    const index = Math.min(attempt, sources.length - 1);
    const source = sources[index] as BlobSource;
    const fallback = index < sources.length - 1;
    const host = source.client.host;
    const start = ingest.offset;
    try {
      if (start < total) {
        // Armed before the request: a source that answers nothing (no headers) is cut like one that stops sending.
        // Aborted (the agent stopping) while the source sends nothing, the request ends now, not at the stall timeout.
        const stall = stallGuard(opts.stallTimeoutMs, host, desc.digest, opts.signal);
        try {
          const body = await source.client.getBlob(source.path, desc.digest, { start, signal: stall.signal });
          stall.watch(body);
          let received = start;
          const counted = async function* (): AsyncIterable<Uint8Array> {
            for await (const chunk of bodyChunks(body)) {
              stall.fed();
              opts.signal?.throwIfAborted();
              received += chunk.length;
              if (received > total) {
                throw new StowageError('SIZE_MISMATCH', `registry ${host} sent more than the ${total} bytes of ${desc.digest}`, {
                  details: { expected: total },
                });
              }
              const paced = opts.onBlobBytes?.(chunk.length, host);
              if (paced) await paced;
              yield chunk;
              emit(received);
            }
          };
          emit(start, true);
          await ingest.write(counted());
        } finally {
          stall.stop();
        }
      }
      if (report) {
        emit(total, true);
        opts.onProgress?.({ id, status: 'Download complete' });
      }
      await ingest.commit({ digest: desc.digest, size: total }, { lease });
      if (report) opts.onProgress?.({ id, status: 'Pull complete' });
      return;
    } catch (err) {
      // A dropped connection (or a short body) is resumed from where the ingest got to.
      if (opts.signal?.aborted) throw err; // the ingest stays for a later pull to resume
      const badBytes = isStowageError(err, 'DIGEST_MISMATCH') || isStowageError(err, 'SIZE_MISMATCH');
      if (fallback) {
        // A peer that fails in any way is passed over; bad bytes from it are dropped, the rest is resumed.
        if (badBytes) {
          await ingest.abort().catch(() => undefined);
          ingest = await store.openIngest(desc.digest);
        }
        continue;
      }
      const resumable = isStowageError(err, 'TRUNCATED') || (isStowageError(err, 'REGISTRY_ERROR') && err.details?.['status'] === undefined);
      if (resumable && attempt - index < retries) continue;
      if (!resumable) await ingest.abort().catch(() => undefined);
      if (isStowageError(err, 'DIGEST_MISMATCH') || isStowageError(err, 'SIZE_MISMATCH')) {
        throw new StowageError(err.code, `registry ${host} sent bad content for ${source.path}@${desc.digest}: ${err.message}`, {
          details: { ...err.details, digest: desc.digest, stage: 'download' },
        });
      }
      throw err;
    }
  }
}
