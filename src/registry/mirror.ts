import type { Readable } from 'node:stream';
import type { PeerTlsClient } from '../cluster/tls-client.js';
import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/manifest.js';
import type { ContentStoreApi } from '../store/types.js';
import { type FetchedManifest, RegistryClient } from './client.js';
import { type BlobSource, fetchBlobInto } from './pull.js';

/**
 * A pull-through mirror for the machine's container runtime: manifests come from the upstream registry,
 * each blob from a peer machine that holds it (the control plane says which) and only otherwise from
 * upstream. A blob is written into this machine's store through an ingest named by its digest, so the
 * client reads it while it arrives (store/live-blobs.ts: the final byte goes out only once the whole blob
 * matched its digest; a blob that does not match fails the client's read and is never stored).
 */

/** A machine holding a blob, and how to read it there (a pull-only peer token). */
export interface PeerHolder {
  machine_id: string;
  registry_url: string;
  repository: string;
  username?: string | undefined;
  password?: string | undefined;
}

export interface MirrorOptions {
  store: ContentStoreApi;
  /** A client for an upstream registry host, with this machine's credentials for it when configured. */
  upstream: (host: string) => RegistryClient;
  /** Which other machines hold these blobs ({} when nobody knows, e.g. a standalone agent). */
  holders: (digests: readonly Digest[]) => Promise<Record<string, PeerHolder[] | undefined>>;
  /** A blob download silent this long moves on to the next source. */
  stallTimeoutMs?: number | undefined;
  log?: (line: string) => void;
  /** In a TLS cluster: what presents this machine's certificate to peers' https:// /v2/. */
  peerTls?: (() => PeerTlsClient | undefined) | undefined;
  /** Blob bytes as they arrive, by where they came from (the agent's /metrics counts them). */
  onBlobBytes?: ((bytes: number, from: MirrorSource) => void) | undefined;
  /** A blob brought in whole and verified, by where its last bytes came from. */
  onBlobStored?: ((from: MirrorSource) => void) | undefined;
}

export type MirrorSource = 'peer' | 'upstream';

/** What the mirror moved, by where it came from (GET /agent/v1/stats). */
export interface MirrorStats {
  bytesFromPeers: number;
  bytesFromUpstream: number;
  /** Blobs brought in whole and verified, by where their last bytes came from. */
  blobsFromPeers: number;
  blobsFromUpstream: number;
}

/** A blob as the mirror can serve it: its size and a stream of (a range of) it. */
export interface MirrorBlob {
  size: number;
  /** `end` is inclusive, like HTTP Range. */
  open(range?: { start: number; end: number }): Promise<Readable>;
}

const MAX_CACHED_MANIFESTS = 256;
const MAX_KNOWN_SIZES = 20_000;
const HOLDERS_FRESH_MS = 30_000;
/** How long a blob waits for the control plane's answer before it is taken from upstream. */
const HOLDERS_PATIENCE_MS = 15_000;

export class PullThroughMirror {
  readonly stats: MirrorStats = { bytesFromPeers: 0, bytesFromUpstream: 0, blobsFromPeers: 0, blobsFromUpstream: 0 };
  private readonly manifests = new Map<Digest, FetchedManifest>();
  /** Blob sizes from the manifests served: a blob fetch needs its size before its first byte. */
  private readonly sizes = new Map<Digest, number>();
  private readonly holderCache = new Map<Digest, { at: number; holders: Promise<PeerHolder[]> }>();
  private readonly fills = new Map<Digest, Promise<void>>();
  private readonly peerClients = new Map<string, RegistryClient>();
  /** host[:port] of the peers blobs were asked from (what onBlobBytes names), to count by source. */
  private readonly peerHosts = new Set<string>();

  constructor(private readonly opts: MirrorOptions) {}

  /**
   * The manifest `ref` (tag or digest) of `name` on `host`, fetched from upstream (a digest is served from
   * the cache when it was fetched lately): digest-checked by the client. Looking up where its blobs are
   * starts at once, so the blob requests that follow find the answer waiting.
   */
  async manifest(host: string, name: string, ref: string): Promise<FetchedManifest> {
    const cached = ref.includes(':') ? this.manifests.get(ref as Digest) : undefined;
    if (cached) return cached;
    const m = await this.opts.upstream(host).getManifest(name, ref);
    remember(this.manifests, m.digest, m, MAX_CACHED_MANIFESTS);
    if (m.parsed.kind === 'manifest') {
      const blobs: Descriptor[] = [m.parsed.manifest.config, ...m.parsed.manifest.layers];
      for (const d of blobs) remember(this.sizes, d.digest, d.size, MAX_KNOWN_SIZES);
      this.lookUpHolders(blobs.map((d) => d.digest));
    }
    return m;
  }

  /** Size of a blob without fetching it: held here, else known from a manifest, else asked upstream. */
  async blobSize(host: string, name: string, digest: Digest): Promise<number | undefined> {
    const held = await this.opts.store.stat(digest);
    if (held) return held.size;
    return this.sizes.get(digest) ?? (await this.opts.upstream(host).blobSize(name, digest));
  }

  /**
   * The blob, held here or brought in now (from a peer, else upstream) and readable as it arrives.
   * BLOB_NOT_FOUND when upstream does not have it (and no size is known for it).
   */
  async blob(host: string, name: string, digest: Digest): Promise<MirrorBlob> {
    const { store } = this.opts;
    const held = await store.stat(digest);
    if (held) return { size: held.size, open: (range) => store.createReadStream(digest, range) };
    const arriving = store.liveReader?.(digest);
    if (arriving) return { size: arriving.size, open: async (range) => arriving.stream(range) };
    const size = await this.blobSize(host, name, digest);
    if (size === undefined) throw new StowageError('BLOB_NOT_FOUND', `blob ${digest} is not in ${host}/${name}`);
    const fill = this.fill(host, name, digest, size);
    // Announced synchronously by fill(): the reader attaches before any byte is written.
    const reader = store.liveReader?.(digest);
    if (reader) return { size: reader.size, open: async (range) => reader.stream(range) };
    // A store without live reads (a runtime's): serve once the blob is whole and verified.
    await fill;
    const info = await store.stat(digest);
    if (!info) throw new StowageError('BLOB_NOT_FOUND', `blob ${digest} vanished right after it was fetched`);
    return { size: info.size, open: (range) => store.createReadStream(digest, range) };
  }

  /** Brings the blob into the store unless that is under way already; the promise settles when it ends. */
  private fill(host: string, name: string, digest: Digest, size: number): Promise<void> {
    const running = this.fills.get(digest);
    if (running) return running;
    const release = this.opts.store.expectBlob?.(digest, size);
    const desc: Descriptor = { mediaType: 'application/octet-stream', digest, size };
    const task = (async () => {
      const peers = await withPatience(this.holdersOf(digest), HOLDERS_PATIENCE_MS, []);
      const sources: BlobSource[] = [...peers.map((p) => ({ client: this.peerClient(p), path: p.repository })), { client: this.opts.upstream(host), path: name }];
      let last = 'upstream' as MirrorSource; // set by the callback below (a cast: TS does not see it change)
      await fetchBlobInto(desc, this.opts.store, {
        blobSources: () => sources,
        stallTimeoutMs: this.opts.stallTimeoutMs,
        onBlobBytes: (n, from) => {
          last = this.peerHosts.has(from) ? 'peer' : 'upstream';
          if (last === 'peer') this.stats.bytesFromPeers += n;
          else this.stats.bytesFromUpstream += n;
          this.opts.onBlobBytes?.(n, last);
        },
      });
      if (last === 'peer') this.stats.blobsFromPeers += 1;
      else this.stats.blobsFromUpstream += 1;
      this.opts.onBlobStored?.(last);
    })();
    const settled = task
      .catch((err: unknown) => {
        this.opts.log?.(`mirror: could not bring in ${digest} for ${host}/${name}: ${err instanceof Error ? err.message : String(err)}`);
        throw err;
      })
      .finally(() => {
        release?.();
        this.fills.delete(digest);
      });
    this.fills.set(digest, settled);
    settled.catch(() => undefined); // its readers hear of a failure through the live blob
    return settled;
  }

  private holdersOf(digest: Digest): Promise<PeerHolder[]> {
    const hit = this.holderCache.get(digest);
    if (hit && Date.now() - hit.at < HOLDERS_FRESH_MS) return hit.holders;
    this.lookUpHolders([digest]);
    return (this.holderCache.get(digest) as { holders: Promise<PeerHolder[]> }).holders;
  }

  /** One question to the control plane for all these blobs; each digest's answer is cached a little while. */
  private lookUpHolders(digests: readonly Digest[]): void {
    const asked = this.opts.holders(digests);
    asked.catch((err: unknown) => this.opts.log?.(`mirror: could not ask where blobs are: ${err instanceof Error ? err.message : String(err)}`));
    const at = Date.now();
    for (const d of digests) {
      remember(
        this.holderCache,
        d,
        {
          at,
          holders: asked.then(
            (all) => all[d] ?? [],
            () => [],
          ),
        },
        MAX_KNOWN_SIZES,
      );
    }
  }

  private peerClient(p: PeerHolder): RegistryClient {
    const url = new URL(p.registry_url);
    const tls = url.protocol === 'https:' ? this.opts.peerTls?.() : undefined;
    const key = `${p.registry_url}|${p.password ?? ''}|${tls ? 'tls' : ''}`;
    let client = this.peerClients.get(key);
    if (!client) {
      client = new RegistryClient({
        host: url.host,
        insecure: url.protocol === 'http:',
        ...(tls ? { forceHttps: true, dispatcher: tls.dispatcher, peerTls: tls.tls } : {}),
        ...(p.password !== undefined ? { credentials: { username: p.username ?? 'stowage', password: p.password } } : {}),
      });
      this.peerHosts.add(client.host);
      remember(this.peerClients, key, client, 256);
    }
    return client;
  }
}

/** The promise's value, or `fallback` when it fails or takes longer than `ms`. */
function withPatience<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(fallback), ms);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      () => {
        clearTimeout(timer);
        resolve(fallback);
      },
    );
  });
}

/** Sets key → value in a map kept to `max` entries (the oldest go first). */
function remember<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value as K);
}
