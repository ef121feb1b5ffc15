import { Readable, Transform, pipeline } from 'node:stream';
import { Agent, type Dispatcher, interceptors, request } from 'undici';
import type { ClientTls } from '../cluster/tls-client.js';
import { isPeerToken } from '../control/peer-token.js';
import { type ErrorCode, StowageError, isStowageError } from '../errors.js';
import { type Digest, digestOf, isDigest, parseDigest } from '../oci/digest.js';
import { type Descriptor, type ParsedManifest, parseManifestBytes } from '../oci/manifest.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, MediaType, checkManifestSize } from '../oci/media-types.js';
import { isValidTag } from '../oci/reference.js';
import type { ByteSource } from '../store/types.js';
import {
  type Challenge,
  type Credentials,
  CATALOG_SCOPE,
  TokenCache,
  basicAuthorization,
  parseTokenResponse,
  parseWwwAuthenticate,
  repositoryScope,
} from './auth.js';
import { directGet } from './direct-get.js';
import { STOWAGE_ERROR_HEADER, STOWAGE_MESSAGE_HEADER } from './distribution-errors.js';
import { isRepositoryPath } from './names.js';

/**
 * A client for the OCI distribution API (registry v2): anonymous, Basic and bearer-token auth, the four
 * manifest kinds, blobs with Range resume, monolithic/chunked/mounted blob uploads, and Link-paginated
 * `_catalog` / `tags/list`.
 *
 * Errors are StowageErrors: 401 UNAUTHORIZED, 403 DENIED, 404 MANIFEST_NOT_FOUND / BLOB_NOT_FOUND
 * (IMAGE_NOT_FOUND for an unknown repository in tags()), anything else REGISTRY_ERROR carrying the
 * registry's own error message; details hold {status, registryCode, registryMessage}.
 *
 * Blob bytes returned by getBlob are NOT verified here: feed them to the store with the expected digest.
 * Manifests are verified (digest computed over the bytes, checked against Docker-Content-Digest and
 * against the requested digest).
 */

export interface RegistryClientOptions {
  /** Registry host[:port] as it appears in references ("docker.io", "ghcr.io", "127.0.0.1:5000"). */
  host: string;
  /** Use plain HTTP. Loopback hosts (localhost, 127.x, ::1) always do. */
  insecure?: boolean | ((host: string) => boolean);
  /** Speak HTTPS even to a loopback host (a cluster member serving TLS); overrides `insecure`. */
  forceHttps?: boolean;
  credentials?: Credentials;
  /** Blobs larger than this are uploaded in PATCH chunks (default 32 MiB). */
  chunkThreshold?: number;
  /** Size of one PATCH chunk (default 8 MiB). */
  chunkSize?: number;
  /** Undici dispatcher; defaults to a shared Agent that follows redirects (blob CDNs). */
  dispatcher?: Dispatcher;
  /**
   * What an https: Stowage peer is reached with (the cluster CA, this machine's certificate) when its blobs
   * are read directly (see `direct`); without it such a peer's blobs go through the dispatcher.
   */
  peerTls?: ClientTls | undefined;
  userAgent?: string;
}

export interface FetchedManifest {
  bytes: Buffer;
  /** The manifest's media type (Content-Type, else its mediaType field / shape). */
  mediaType: string;
  digest: Digest;
  parsed: ParsedManifest;
}

export interface ManifestHead {
  digest: Digest | undefined;
  mediaType: string | undefined;
  size: number | undefined;
}

export type PushBlobResult = 'exists' | 'mounted' | 'pushed';

export interface PushBlobOptions {
  /** Try a cross-repository mount from this repository (same registry) first. */
  mountFrom?: string | undefined;
  /** Called with the number of bytes sent so far. */
  onProgress?: ((sent: number) => void) | undefined;
}

export const DEFAULT_CHUNK_THRESHOLD = 32 * 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024;
/** Error bodies, token responses and list pages are small; refuse anything bigger. */
const MAX_SMALL_BODY = 8 * 1024 * 1024;
const MAX_PAGES = 100_000;

let sharedDispatcher: Dispatcher | undefined;
function defaultDispatcher(): Dispatcher {
  sharedDispatcher ??= new Agent({ headersTimeout: 60_000, bodyTimeout: 300_000, connections: 16 }).compose(
    interceptors.redirect({ maxRedirections: 5 }),
  );
  return sharedDispatcher;
}

/** localhost, 127.0.0.0/8 and ::1, with or without a port. */
export function isLoopbackHost(host: string): boolean {
  let name = host;
  if (name.startsWith('[')) name = name.slice(1, name.indexOf(']'));
  else if (name.split(':').length === 2) name = name.split(':')[0] ?? '';
  return name === 'localhost' || name.endsWith('.localhost') || name === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** What a registry said when it refused a request: the `details` of the StowageErrors this client throws. */
export interface RegistryErrorDetails {
  /** The HTTP status of the refusal. */
  status: number;
  /** The first `errors[].code` of the body, e.g. MANIFEST_UNKNOWN, NAME_UNKNOWN, DENIED, UNAUTHORIZED. */
  registryCode: string | undefined;
  registryMessage: string | undefined;
}

/** The registry's refusal behind an error this client threw; undefined for other errors (network, digest, …). */
export function registryErrorDetails(err: unknown): RegistryErrorDetails | undefined {
  if (!isStowageError(err)) return undefined;
  const d = err.details;
  if (typeof d?.['status'] !== 'number') return undefined;
  const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
  return { status: d['status'], registryCode: str(d['registryCode']), registryMessage: str(d['registryMessage']) };
}

/** docker.io's API lives at registry-1.docker.io. */
export function registryEndpoint(host: string): string {
  return host === 'docker.io' || host === 'index.docker.io' ? 'registry-1.docker.io' : host;
}

function bareType(contentType: string | string[] | undefined): string | undefined {
  const v = Array.isArray(contentType) ? contentType[0] : contentType;
  const bare = v?.split(';')[0]?.trim().toLowerCase();
  return bare || undefined;
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads a response body whole, refusing more than `limit` bytes. */
async function readBounded(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      body.destroy();
      throw new StowageError('TOO_LARGE', `${what} is larger than ${limit} bytes`, { details: { limit } });
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** Ends a response whose body is not wanted: undici reads a short one to keep the connection, else it is cut. */
async function discard(body: Readable): Promise<void> {
  const dump = (body as Partial<Dispatcher.ResponseData['body']>).dump;
  if (!dump) {
    body.destroy();
    return;
  }
  try {
    await dump.call(body, { limit: 256 * 1024 });
  } catch {
    /* the connection is dropped instead */
  }
}

/** `<…>; rel="next"` from a Link header, if any. */
export function parseNextLink(link: string | string[] | undefined): string | undefined {
  const values = Array.isArray(link) ? link : link ? [link] : [];
  for (const v of values) {
    for (const m of v.matchAll(/<([^>]*)>\s*((?:;\s*[^;,]*)*)/g)) {
      if (/;\s*rel\s*=\s*"?next"?/i.test(m[2] ?? '')) return m[1];
    }
  }
  return undefined;
}

/** An answer with a streamed body: undici's, or directGet's (a blob from a Stowage peer). */
interface BlobResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
}

interface SendOptions {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path ("/v2/…") or absolute URL. */
  url: string;
  scopes: string[];
  headers?: Record<string, string>;
  body?: string | Buffer | Readable | null;
  /** Cuts the request, the wait for the answer included; the rejection (or the body's error) is its reason. */
  signal?: AbortSignal | undefined;
}

export class RegistryClient {
  readonly host: string;
  /** "http://host" or "https://host" (docker.io mapped to registry-1.docker.io). */
  readonly baseUrl: string;
  /** The origin of baseUrl: requests (and Links) elsewhere never carry our credentials. */
  private readonly origin: string;
  private readonly credentials: Credentials | undefined;
  private readonly dispatcher: Dispatcher;
  /**
   * Blob bodies are read by directGet, not undici: the registry is a Stowage agent (it was given a peer
   * token), whose answers directGet understands, and whose blobs are what fan-out moves at line rate.
   */
  private readonly direct: { tls: ClientTls | undefined } | undefined;
  private readonly chunkThreshold: number;
  private readonly chunkSize: number;
  private readonly userAgent: string;
  private readonly tokens = new TokenCache();
  /** Token requests under way, by scope set: concurrent 401s for one scope set share one. */
  private readonly tokenRequests = new Map<string, Promise<void>>();
  /** The challenge learned from the last 401 (bearer realm/service, or basic). */
  private challenge: Challenge | undefined;

  constructor(opts: RegistryClientOptions) {
    if (!opts.host || /[/\s]/.test(opts.host)) throw new StowageError('BAD_REQUEST', `invalid registry host "${opts.host}"`);
    this.host = opts.host;
    const insecure = typeof opts.insecure === 'function' ? opts.insecure(opts.host) : opts.insecure === true;
    const scheme = opts.forceHttps ? 'https' : insecure || isLoopbackHost(opts.host) ? 'http' : 'https';
    this.baseUrl = `${scheme}://${registryEndpoint(opts.host)}`;
    this.origin = new URL(this.baseUrl).origin;
    // A Stowage peer token is a bearer token the agent checks itself: sent at once, it needs no token
    // service round trip, so transfers keep going while the control plane is away.
    const creds = opts.credentials;
    this.credentials = creds && !creds.registryToken && isPeerToken(creds.password) ? { ...creds, registryToken: creds.password } : creds;
    this.dispatcher = opts.dispatcher ?? defaultDispatcher();
    const peer = this.credentials?.registryToken !== undefined && isPeerToken(this.credentials.registryToken);
    if (peer && (scheme === 'http' || opts.peerTls)) this.direct = { tls: scheme === 'https' ? opts.peerTls : undefined };
    this.chunkThreshold = opts.chunkThreshold ?? DEFAULT_CHUNK_THRESHOLD;
    this.chunkSize = Math.max(1, opts.chunkSize ?? DEFAULT_CHUNK_SIZE);
    this.userAgent = opts.userAgent ?? 'stowage/0.1';
  }

  // ---------------------------------------------------------------------------------------------
  // API

  /** GET /v2/: checks the registry speaks the v2 API and that the credentials (if any) work. */
  async ping(): Promise<void> {
    const res = await this.send({ method: 'GET', url: '/v2/', scopes: [] });
    if (res.statusCode !== 200) await this.fail(res, 'REGISTRY_ERROR', 'GET /v2/');
    await discard(res.body);
  }

  async getManifest(repo: string, ref: string, opts: { signal?: AbortSignal | undefined } = {}): Promise<FetchedManifest> {
    const path = this.repoPath(repo);
    const wantDigest = this.checkRef(ref);
    const res = await this.send({
      method: 'GET',
      url: `/v2/${path}/manifests/${ref}`,
      scopes: [repositoryScope(path, ['pull'])],
      signal: opts.signal,
      headers: { accept: MANIFEST_ACCEPT },
    });
    if (res.statusCode !== 200) await this.fail(res, 'MANIFEST_NOT_FOUND', `manifest ${path}:${ref}`);
    const length = Number(header(res.headers, 'content-length') ?? NaN);
    if (length > MAX_MANIFEST_BYTES) await discard(res.body);
    checkManifestSize(length, `manifest ${path}:${ref}`);
    const bytes = await readBounded(res.body, MAX_MANIFEST_BYTES, `manifest ${path}:${ref}`);
    const digest = digestOf(bytes);
    const claimed = header(res.headers, 'docker-content-digest');
    if (claimed !== undefined && isDigest(claimed) && claimed !== digest) {
      throw new StowageError('DIGEST_MISMATCH', `registry ${this.host} sent manifest ${path}:${ref} whose digest ${digest} is not the ${claimed} it announced`, {
        details: { expected: claimed, actual: digest },
      });
    }
    if (wantDigest !== undefined && wantDigest !== digest) {
      throw new StowageError('DIGEST_MISMATCH', `registry ${this.host} sent manifest ${path}@${wantDigest} with digest ${digest}`, {
        details: { expected: wantDigest, actual: digest },
      });
    }
    const parsed = parseManifestBytes(bytes, bareType(res.headers['content-type']));
    return { bytes, mediaType: parsed.mediaType, digest, parsed };
  }

  /**
   * The referrers of a manifest (OCI distribution 1.1): descriptors of the manifests whose subject it is.
   * A registry without the referrers API (404) has none to give: an empty list.
   */
  async getReferrers(repo: string, digest: Digest, opts: { signal?: AbortSignal | undefined } = {}): Promise<Descriptor[]> {
    const path = this.repoPath(repo);
    parseDigest(digest);
    const res = await this.send({
      method: 'GET',
      url: `/v2/${path}/referrers/${digest}`,
      scopes: [repositoryScope(path, ['pull'])],
      headers: { accept: MediaType.OciIndex },
      signal: opts.signal,
    });
    if (res.statusCode === 404) {
      await discard(res.body);
      return [];
    }
    if (res.statusCode !== 200) await this.fail(res, 'REGISTRY_ERROR', `referrers of ${path}@${digest}`);
    const bytes = await readBounded(res.body, MAX_MANIFEST_BYTES, `referrers of ${path}@${digest}`);
    const parsed = parseManifestBytes(bytes, MediaType.OciIndex);
    return parsed.kind === 'index' ? parsed.index.manifests : [];
  }

  /** HEAD of a manifest; undefined when the registry does not have it. */
  async headManifest(repo: string, ref: string): Promise<ManifestHead | undefined> {
    const path = this.repoPath(repo);
    const wantDigest = this.checkRef(ref);
    const res = await this.send({
      method: 'HEAD',
      url: `/v2/${path}/manifests/${ref}`,
      scopes: [repositoryScope(path, ['pull'])],
      headers: { accept: MANIFEST_ACCEPT },
    });
    if (res.statusCode === 404) {
      await discard(res.body);
      return undefined;
    }
    if (res.statusCode !== 200) await this.fail(res, 'MANIFEST_NOT_FOUND', `manifest ${path}:${ref}`);
    await discard(res.body);
    const claimed = header(res.headers, 'docker-content-digest');
    const len = header(res.headers, 'content-length');
    return {
      digest: claimed !== undefined && isDigest(claimed) ? claimed : wantDigest,
      mediaType: bareType(res.headers['content-type']),
      size: len !== undefined && /^\d+$/.test(len) ? Number(len) : undefined,
    };
  }

  /**
   * Streams a blob from `start` (Range resume). The bytes are not verified here. When the registry
   * ignores the Range and sends everything, the first `start` bytes are skipped locally. `signal` cuts the
   * request whenever it fires: while waiting for the answer (a peer that sends no headers) or the body.
   */
  async getBlob(repo: string, digest: Digest, opts: { start?: number; signal?: AbortSignal | undefined } = {}): Promise<Readable> {
    const path = this.repoPath(repo);
    parseDigest(digest);
    const start = opts.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) throw new StowageError('BAD_REQUEST', `invalid blob offset ${start}`);
    const headers: Record<string, string> = start > 0 ? { range: `bytes=${start}-` } : {};
    const url = `/v2/${path}/blobs/${digest}`;
    const res = this.direct
      ? await this.directBlobGet(url, headers, opts.signal)
      : await this.send({ method: 'GET', url, scopes: [repositoryScope(path, ['pull'])], headers, signal: opts.signal });
    if (start > 0 && res.statusCode === 206) {
      const cr = /^bytes (\d+)-/.exec(header(res.headers, 'content-range') ?? '');
      if (!cr || Number(cr[1]) !== start) {
        await discard(res.body);
        throw new StowageError('REGISTRY_ERROR', `registry ${this.host} answered a range request for ${digest} from ${start} with "${header(res.headers, 'content-range') ?? ''}"`);
      }
      return res.body;
    }
    if (res.statusCode === 416 && start > 0) {
      // Nothing past `start`: the caller already has the whole blob (commit will tell).
      await discard(res.body);
      return Readable.from([]);
    }
    if (res.statusCode !== 200) await this.fail(res, 'BLOB_NOT_FOUND', `blob ${path}@${digest}`);
    if (start === 0) return res.body;
    // pipeline, not pipe: a body that fails fails the skipped stream too (a pipe would leave it open forever).
    const skipped = skipBytes(start);
    pipeline(res.body, skipped, () => undefined);
    return skipped;
  }

  /**
   * A small blob (an image config) read whole, bounded like a manifest and checked against its digest:
   * for callers that parse it rather than store it.
   */
  async getSmallBlob(repo: string, digest: Digest, limit = MAX_MANIFEST_BYTES): Promise<Buffer> {
    const stream = await this.getBlob(repo, digest);
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > limit) {
        stream.destroy();
        throw new StowageError('TOO_LARGE', `blob ${digest} is larger than ${limit} bytes`);
      }
      chunks.push(chunk);
    }
    const bytes = Buffer.concat(chunks);
    const actual = digestOf(bytes);
    if (actual !== digest) throw new StowageError('DIGEST_MISMATCH', `blob ${digest} arrived with digest ${actual}`, { details: { expected: digest, actual } });
    return bytes;
  }

  /** HEAD of a blob: its size (Content-Length), or undefined when the registry does not have it. */
  async blobSize(repo: string, digest: Digest): Promise<number | undefined> {
    const path = this.repoPath(repo);
    parseDigest(digest);
    const res = await this.send({ method: 'HEAD', url: `/v2/${path}/blobs/${digest}`, scopes: [repositoryScope(path, ['pull'])] });
    await discard(res.body);
    if (res.statusCode === 404) return undefined;
    if (res.statusCode !== 200) await this.fail(res, 'BLOB_NOT_FOUND', `blob ${path}@${digest}`);
    const len = header(res.headers, 'content-length');
    if (len === undefined || !/^\d{1,15}$/.test(len)) {
      throw new StowageError('REGISTRY_ERROR', `registry ${this.host} did not say how large blob ${path}@${digest} is`);
    }
    return Number(len);
  }

  /** HEAD of a blob: does the registry have it? */
  async blobExists(repo: string, digest: Digest): Promise<boolean> {
    const path = this.repoPath(repo);
    parseDigest(digest);
    const res = await this.send({ method: 'HEAD', url: `/v2/${path}/blobs/${digest}`, scopes: [repositoryScope(path, ['pull'])] });
    await discard(res.body);
    if (res.statusCode === 404) return false;
    if (res.statusCode !== 200) await this.fail(res, 'BLOB_NOT_FOUND', `blob ${path}@${digest}`);
    return true;
  }

  /**
   * Uploads one blob unless the registry has it: a cross-repository mount when `mountFrom` is given,
   * else a monolithic PUT (size <= chunkThreshold) or PATCH chunks followed by PUT ?digest=.
   * `source` may be a function so that nothing is opened when the blob already exists.
   */
  async pushBlob(
    repo: string,
    digest: Digest,
    size: number,
    source: ByteSource | (() => ByteSource | Promise<ByteSource>),
    opts: PushBlobOptions = {},
  ): Promise<PushBlobResult> {
    const path = this.repoPath(repo);
    parseDigest(digest);
    if (!Number.isSafeInteger(size) || size < 0) throw new StowageError('BAD_REQUEST', `invalid blob size ${size}`);
    const scopes = [repositoryScope(path, ['pull', 'push'])];
    if (await this.blobExists(path, digest)) return 'exists';

    let startUrl = `/v2/${path}/blobs/uploads/`;
    if (opts.mountFrom !== undefined) {
      const from = this.repoPath(opts.mountFrom);
      if (from !== path) {
        startUrl += `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`;
        scopes.push(repositoryScope(from, ['pull']));
      }
    }
    const started = await this.send({ method: 'POST', url: startUrl, scopes, headers: { 'content-length': '0' } });
    if (started.statusCode === 201) {
      await discard(started.body);
      return 'mounted';
    }
    if (started.statusCode !== 202) await this.fail(started, 'BLOB_NOT_FOUND', `starting an upload to ${path}`);
    await discard(started.body);
    let location = this.uploadLocation(started.headers);

    const src = typeof source === 'function' ? await source() : source;
    let sent = 0;
    const counted = async function* (it: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
      for await (const chunk of it) {
        sent += chunk.byteLength;
        opts.onProgress?.(sent);
        yield chunk;
      }
    };

    if (size <= this.chunkThreshold) {
      const res = await this.send({
        method: 'PUT',
        url: withQuery(location, 'digest', digest),
        scopes,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
        body: Readable.from(counted(src)),
      });
      if (res.statusCode !== 201) await this.fail(res, 'BLOB_NOT_FOUND', `uploading ${path}@${digest}`);
      await discard(res.body);
      return 'pushed';
    }

    const iterator = (src as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
    const state: { leftover: Uint8Array | undefined; done: boolean } = { leftover: undefined, done: false };
    let offset = 0;
    try {
      while (offset < size) {
        const n = Math.min(this.chunkSize, size - offset);
        const res = await this.send({
          method: 'PATCH',
          url: location,
          scopes,
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': String(n),
            'content-range': `${offset}-${offset + n - 1}`,
          },
          body: Readable.from(counted(take(iterator, state, n))),
        });
        if (res.statusCode !== 202) await this.fail(res, 'BLOB_NOT_FOUND', `uploading ${path}@${digest} at ${offset}`);
        await discard(res.body);
        location = this.uploadLocation(res.headers, location);
        offset += n;
      }
    } catch (err) {
      await iterator.return?.();
      throw err;
    }
    const extra = state.leftover ?? (await iterator.next()).value;
    if (extra !== undefined && extra.byteLength > 0) {
      await iterator.return?.();
      throw new StowageError('SIZE_MISMATCH', `blob ${digest} is longer than the ${size} bytes announced`);
    }
    const res = await this.send({ method: 'PUT', url: withQuery(location, 'digest', digest), scopes, headers: { 'content-length': '0' } });
    if (res.statusCode !== 201) await this.fail(res, 'BLOB_NOT_FOUND', `completing the upload of ${path}@${digest}`);
    await discard(res.body);
    return 'pushed';
  }

  /** PUT a manifest or index under a tag or digest; returns its digest. */
  async putManifest(repo: string, ref: string, bytes: Uint8Array, mediaType: string): Promise<{ digest: Digest }> {
    const path = this.repoPath(repo);
    const digest = digestOf(bytes);
    const wantDigest = this.checkRef(ref);
    if (wantDigest !== undefined && wantDigest !== digest) {
      throw new StowageError('DIGEST_MISMATCH', `manifest bytes have digest ${digest}, not ${wantDigest}`);
    }
    const res = await this.send({
      method: 'PUT',
      url: `/v2/${path}/manifests/${ref}`,
      scopes: [repositoryScope(path, ['pull', 'push'])],
      headers: { 'content-type': mediaType, 'content-length': String(bytes.byteLength) },
      body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
    });
    if (res.statusCode !== 201 && res.statusCode !== 200) await this.fail(res, 'MANIFEST_NOT_FOUND', `putting manifest ${path}:${ref}`);
    await discard(res.body);
    const claimed = header(res.headers, 'docker-content-digest');
    if (claimed !== undefined && isDigest(claimed) && claimed !== digest) {
      throw new StowageError('DIGEST_MISMATCH', `registry stored manifest ${path}:${ref} as ${claimed}, expected ${digest}`);
    }
    return { digest };
  }

  /** Every repository in GET /v2/_catalog, following Link pagination. */
  catalog(opts: { pageSize?: number } = {}): AsyncIterable<string> {
    const first = `/v2/_catalog${opts.pageSize ? `?n=${opts.pageSize}` : ''}`;
    return this.paginate(first, [CATALOG_SCOPE], 'repositories', 'REGISTRY_ERROR', 'catalog');
  }

  /** Every tag of a repository (GET /v2/<name>/tags/list), following Link pagination. */
  tags(repo: string, opts: { pageSize?: number } = {}): AsyncIterable<string> {
    const path = this.repoPath(repo);
    const first = `/v2/${path}/tags/list${opts.pageSize ? `?n=${opts.pageSize}` : ''}`;
    return this.paginate(first, [repositoryScope(path, ['pull'])], 'tags', 'IMAGE_NOT_FOUND', `repository ${path}`);
  }

  /** The repository path as the registry API wants it: docker.io's official images get library/. */
  repoPath(repo: string): string {
    let path = repo;
    if (registryEndpoint(this.host) === 'registry-1.docker.io' && !path.includes('/')) path = `library/${path}`;
    if (!isRepositoryPath(path)) throw new StowageError('INVALID_REFERENCE', `invalid repository name "${repo.slice(0, 100)}"`);
    return path;
  }

  // ---------------------------------------------------------------------------------------------
  // plumbing

  private checkRef(ref: string): Digest | undefined {
    if (isDigest(ref)) return ref;
    if (ref.startsWith('sha256:') || ref.includes(':')) parseDigest(ref);
    if (!isValidTag(ref)) throw new StowageError('INVALID_REFERENCE', `invalid tag "${ref.slice(0, 100)}"`);
    return undefined;
  }

  private async *paginate(first: string, scopes: string[], field: string, notFound: ErrorCode, what: string): AsyncIterable<string> {
    let url: string | undefined = first;
    const seen = new Set<string>();
    for (let page = 0; url !== undefined && page < MAX_PAGES; page++) {
      if (seen.has(url)) break;
      seen.add(url);
      const res = await this.send({ method: 'GET', url, scopes, headers: { accept: 'application/json' } });
      if (res.statusCode !== 200) await this.fail(res, notFound, what);
      const body = await readBounded(res.body, MAX_SMALL_BODY, `${what} page`);
      let doc: unknown;
      try {
        doc = JSON.parse(body.toString('utf8'));
      } catch {
        throw new StowageError('REGISTRY_ERROR', `registry ${this.host} sent an invalid ${what} page`);
      }
      const items = (doc as Record<string, unknown> | null)?.[field];
      if (items !== null && items !== undefined && !Array.isArray(items)) {
        throw new StowageError('REGISTRY_ERROR', `registry ${this.host} sent an invalid ${what} page: ${field} is not a list`);
      }
      for (const item of (items as unknown[] | null | undefined) ?? []) if (typeof item === 'string') yield item;
      const next = parseNextLink(res.headers['link']);
      if (next === undefined) break;
      const resolved = new URL(next, this.baseUrl);
      // Never follow a Link (with our credentials) off the registry.
      if (resolved.origin !== this.origin) break;
      url = resolved.pathname + resolved.search;
    }
  }

  private uploadLocation(headers: Record<string, string | string[] | undefined>, previous?: string): string {
    const loc = header(headers, 'location');
    if (!loc) {
      if (previous) return previous;
      throw new StowageError('REGISTRY_ERROR', `registry ${this.host} started an upload without a Location`);
    }
    return new URL(loc, this.baseUrl).toString();
  }

  /** A blob GET to a Stowage peer by directGet, with the peer token (no challenge to answer). */
  private async directBlobGet(url: string, headers: Record<string, string>, signal: AbortSignal | undefined): Promise<BlobResponse> {
    const token = this.credentials?.registryToken as string;
    const res = await directGet(new URL(url, this.baseUrl), {
      headers: { 'user-agent': this.userAgent, authorization: `Bearer ${token}`, ...headers },
      tls: this.direct?.tls,
      signal,
    });
    if (res.statusCode === 401) await this.givenTokenRefused(res.body);
    return res;
  }

  /** A 401 to the token we were given: all we have, no token service can make it good. */
  private async givenTokenRefused(body: Readable): Promise<never> {
    await discard(body);
    throw new StowageError('UNAUTHORIZED', `registry ${this.host} refused the credentials: the token it was given is not valid there`, { details: { status: 401 } });
  }

  /** One request with auth: cached credentials first, and on a 401 one retry after answering the challenge. */
  private async send(opts: SendOptions): Promise<Dispatcher.ResponseData> {
    const url = new URL(opts.url, this.baseUrl);
    const sameOrigin = url.origin === this.origin;
    const replayable = opts.body === undefined || opts.body === null || typeof opts.body === 'string' || Buffer.isBuffer(opts.body);
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...opts.headers };
      if (sameOrigin) {
        const auth = this.cachedAuthorization(opts.scopes);
        if (auth) headers['authorization'] = auth;
      }
      const sentAuth = headers['authorization'];
      let res: Dispatcher.ResponseData;
      try {
        res = await request(url, {
          method: opts.method,
          headers,
          body: opts.body ?? null,
          dispatcher: this.dispatcher,
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
      } catch (err) {
        if (err instanceof StowageError) throw err;
        throw new StowageError('REGISTRY_ERROR', `cannot reach registry ${this.host}: ${(err as Error).message}`, { cause: err });
      }
      if (res.statusCode !== 401 || attempt > 0 || !sameOrigin) return res;
      if (this.credentials?.registryToken && sentAuth === `Bearer ${this.credentials.registryToken}`) {
        await this.givenTokenRefused(res.body);
      }
      const challenges = parseWwwAuthenticate(res.headers['www-authenticate']);
      const challenge = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
      if (!challenge) return res;
      if (challenge.scheme === 'basic' && !this.credentials) return res;
      await discard(res.body);
      this.challenge = challenge;
      // Another request may have fetched this scope's token while this one was out: use that one.
      if (challenge.scheme === 'bearer' && this.cachedAuthorization(opts.scopes) === sentAuth) await this.fetchTokenShared(challenge, opts.scopes);
      if (!replayable) {
        throw new StowageError('UNAUTHORIZED', `registry ${this.host} asked for authentication in the middle of an upload`);
      }
    }
  }

  private cachedAuthorization(scopes: string[]): string | undefined {
    if (this.credentials?.registryToken) return `Bearer ${this.credentials.registryToken}`;
    if (!this.challenge) return undefined;
    if (this.challenge.scheme === 'basic') return this.credentials ? basicAuthorization(this.credentials) : undefined;
    if (this.challenge.scheme === 'bearer') {
      const token = this.tokens.get(scopes);
      return token ? `Bearer ${token}` : undefined;
    }
    return undefined;
  }

  private fetchTokenShared(challenge: Challenge, scopes: string[]): Promise<void> {
    const key = TokenCache.key(scopes);
    let pending = this.tokenRequests.get(key);
    if (!pending) {
      pending = this.fetchToken(challenge, scopes).finally(() => this.tokenRequests.delete(key));
      this.tokenRequests.set(key, pending);
    }
    return pending;
  }

  private async fetchToken(challenge: Challenge, scopes: string[]): Promise<void> {
    const realm = challenge.params['realm'];
    if (!realm) throw new StowageError('UNAUTHORIZED', `registry ${this.host} sent a bearer challenge without a realm`);
    let tokenUrl: URL;
    try {
      tokenUrl = new URL(realm);
    } catch {
      throw new StowageError('UNAUTHORIZED', `registry ${this.host} sent an invalid token realm "${realm}"`);
    }
    if (tokenUrl.protocol !== 'https:' && tokenUrl.protocol !== 'http:') {
      throw new StowageError('UNAUTHORIZED', `registry ${this.host} sent an invalid token realm "${realm}"`);
    }
    if (challenge.params['service']) tokenUrl.searchParams.set('service', challenge.params['service']);
    const wanted = new Set(scopes);
    if (challenge.params['scope']) for (const s of challenge.params['scope'].split(' ')) if (s) wanted.add(s);
    for (const s of wanted) tokenUrl.searchParams.append('scope', s);
    const headers: Record<string, string> = { 'user-agent': this.userAgent, accept: 'application/json' };
    let res: Dispatcher.ResponseData;
    try {
      res = await this.requestToken(tokenUrl, challenge.params['service'], [...wanted], headers);
    } catch (err) {
      throw new StowageError('REGISTRY_ERROR', `cannot reach the token service of ${this.host} at ${tokenUrl.origin}: ${(err as Error).message}`, { cause: err });
    }
    if (res.statusCode === 401) {
      await discard(res.body);
      throw new StowageError('UNAUTHORIZED', `authentication to ${this.host} failed: the token service refused the credentials`, { details: { status: 401 } });
    }
    if (res.statusCode === 403) {
      await discard(res.body);
      throw new StowageError('DENIED', `the token service of ${this.host} denied access to ${[...wanted].join(' ')}`, { details: { status: 403 } });
    }
    if (res.statusCode !== 200) await this.fail(res, 'REGISTRY_ERROR', `token for ${this.host}`);
    const body = await readBounded(res.body, MAX_SMALL_BODY, 'token response');
    let parsed: ReturnType<typeof parseTokenResponse>;
    try {
      parsed = parseTokenResponse(JSON.parse(body.toString('utf8')));
    } catch {
      parsed = undefined;
    }
    if (!parsed) throw new StowageError('UNAUTHORIZED', `the token service of ${this.host} sent no token`);
    this.tokens.set(scopes, parsed.token, parsed.expiresIn);
  }

  /**
   * The token request: with an identity token an OAuth2 POST (grant_type=refresh_token), and where the
   * token service does not do OAuth (404) — or without one — a GET with Basic credentials.
   */
  private async requestToken(tokenUrl: URL, service: string | undefined, scopes: string[], headers: Record<string, string>): Promise<Dispatcher.ResponseData> {
    const refreshToken = this.credentials?.identityToken;
    if (refreshToken) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, service: service ?? '', client_id: 'stowage' });
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      const url = new URL(tokenUrl.origin + tokenUrl.pathname);
      const res = await request(url, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
        dispatcher: this.dispatcher,
      });
      if (res.statusCode !== 404) return res;
      await discard(res.body);
    }
    const basic = this.credentials && (this.credentials.username !== '' || this.credentials.password !== '') ? { authorization: basicAuthorization(this.credentials) } : {};
    return request(tokenUrl, { method: 'GET', headers: { ...headers, ...basic }, dispatcher: this.dispatcher });
  }

  /** Reads the registry's error body and throws the mapped StowageError. */
  private async fail(res: BlobResponse, notFound: ErrorCode, what: string): Promise<never> {
    let registryCode: string | undefined;
    let registryMessage: string | undefined;
    try {
      const body = await readBounded(res.body, 64 * 1024, 'error body');
      const doc = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
      const first = Array.isArray(doc.errors) ? doc.errors[0] : undefined;
      if (typeof first?.code === 'string') registryCode = first.code;
      if (typeof first?.message === 'string') registryMessage = first.message;
    } catch {
      res.body.destroy();
    }
    // An agent says what failed in headers too (a HEAD answer has no body).
    registryCode ??= header(res.headers, STOWAGE_ERROR_HEADER);
    registryMessage ??= header(res.headers, STOWAGE_MESSAGE_HEADER);
    const status = res.statusCode;
    const details = { status, registryCode, registryMessage, registry: this.host };
    const said = registryMessage ? `: ${registryMessage}` : registryCode ? `: ${registryCode}` : '';
    if (status === 401) throw new StowageError('UNAUTHORIZED', `registry ${this.host} requires authentication for ${what}${said}`, { details });
    if (status === 403) throw new StowageError('DENIED', `registry ${this.host} denied access to ${what}${said}`, { details });
    if (status === 404) {
      const code: ErrorCode = notFound === 'REGISTRY_ERROR' ? 'REGISTRY_ERROR' : registryCode === 'BLOB_UNKNOWN' ? 'BLOB_NOT_FOUND' : notFound;
      throw new StowageError(code, `${what} not found on ${this.host}${said}`, { details, ...(code === 'REGISTRY_ERROR' ? { status: 502 } : {}) });
    }
    throw new StowageError('REGISTRY_ERROR', `registry ${this.host} answered ${status} for ${what}${said}`, { details });
  }
}

function withQuery(url: string, key: string, value: string): string {
  const u = new URL(url);
  u.searchParams.set(key, value);
  return u.toString();
}

/** Yields exactly `n` bytes from the shared iterator, keeping what is left of a split chunk. */
async function* take(
  it: AsyncIterator<Uint8Array>,
  state: { leftover: Uint8Array | undefined; done: boolean },
  n: number,
): AsyncIterable<Uint8Array> {
  let remaining = n;
  while (remaining > 0) {
    let chunk = state.leftover;
    state.leftover = undefined;
    if (chunk === undefined) {
      if (state.done) throw new StowageError('TRUNCATED', 'the blob source ended before the announced size');
      const next = await it.next();
      if (next.done) {
        state.done = true;
        throw new StowageError('TRUNCATED', 'the blob source ended before the announced size');
      }
      chunk = next.value;
    }
    if (chunk.byteLength > remaining) {
      state.leftover = chunk.subarray(remaining);
      chunk = chunk.subarray(0, remaining);
    }
    remaining -= chunk.byteLength;
    yield chunk;
  }
}

/** Drops the first `n` bytes of a stream. */
function skipBytes(n: number): Transform {
  let toSkip = n;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (toSkip >= chunk.length) {
        toSkip -= chunk.length;
        cb();
        return;
      }
      const out = chunk.subarray(toSkip);
      toSkip = 0;
      cb(null, out);
    },
  });
}
