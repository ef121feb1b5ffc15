import type { Readable } from 'node:stream';
import { request } from 'undici';
import { StowageError } from '../errors.js';
import { type Digest, digestOf, isDigest } from '../oci/digest.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES } from '../oci/media-types.js';
import type { ResolvedCredentials } from './registry-auth.js';

/**
 * The registry operations the Docker Engine routes need (pull, push, search), over the distribution
 * API: anonymous, basic and bearer-token auth, Link-paginated _catalog. Errors carry the registry's
 * error code and message so the routes can word them as dockerd does.
 */

export interface RegistryErrorDetails {
  status: number;
  /** e.g. MANIFEST_UNKNOWN, NAME_UNKNOWN, DENIED, UNAUTHORIZED. */
  registryCode: string | undefined;
  registryMessage: string | undefined;
}

export class RegistryHttpError extends StowageError {
  readonly http: RegistryErrorDetails;
  constructor(message: string, http: RegistryErrorDetails) {
    const code =
      http.status === 401 ? 'UNAUTHORIZED' : http.status === 403 ? 'DENIED' : http.status === 404 ? (http.registryCode === 'BLOB_UNKNOWN' ? 'BLOB_NOT_FOUND' : 'MANIFEST_NOT_FOUND') : 'REGISTRY_ERROR';
    super(code, message, { details: { ...http } });
    this.http = http;
  }

  /** errcode.Error's text: "manifest unknown: manifest unknown". */
  get registryText(): string {
    const codeText = (this.http.registryCode ?? `status ${this.http.status}`).toLowerCase().replace(/_/g, ' ');
    return this.http.registryMessage ? `${codeText}: ${this.http.registryMessage}` : codeText;
  }
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

interface Challenge {
  scheme: 'basic' | 'bearer';
  params: Record<string, string>;
}

function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const h = Array.isArray(header) ? header[0] : header;
  if (!h) return undefined;
  const m = /^(\w+)\s*(.*)$/s.exec(h.trim());
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return undefined;
  const params: Record<string, string> = {};
  const re = /(\w+)="([^"]*)"|(\w+)=([^,\s]*)/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!)) !== null) params[(p[1] ?? p[3])!.toLowerCase()] = p[2] ?? p[4] ?? '';
  return { scheme, params };
}

const TIMEOUT_MS = 60_000;

export class EngineRegistry {
  private readonly base: string;
  private authHeader: string | undefined;
  private readonly tokens = new Map<string, string>();

  constructor(
    readonly host: string,
    readonly insecure: boolean,
    private readonly creds: ResolvedCredentials | undefined,
  ) {
    const endpoint = host === 'docker.io' ? 'registry-1.docker.io' : host;
    this.base = `${insecure ? 'http' : 'https'}://${endpoint}`;
    if (creds?.registryToken) this.authHeader = `Bearer ${creds.registryToken}`;
  }

  private async send(
    method: string,
    path: string,
    opts: { headers?: Record<string, string>; body?: Buffer | Readable | AsyncIterable<Uint8Array>; scope: string; absolute?: boolean },
  ) {
    const url = opts.absolute ? path : `${this.base}${path}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers: Record<string, string> = { ...opts.headers };
      const auth = this.tokens.get(opts.scope) ?? this.authHeader;
      if (auth) headers['authorization'] = auth;
      const res = await request(url, {
        method: method as 'GET',
        headers,
        body: opts.body as Buffer | undefined,
        headersTimeout: TIMEOUT_MS,
        bodyTimeout: TIMEOUT_MS * 5,
        maxRedirections: 0,
      } as Parameters<typeof request>[1]);
      if (res.statusCode === 401 && attempt === 0 && !(opts.body && !Buffer.isBuffer(opts.body))) {
        const challenge = parseChallenge(res.headers['www-authenticate']);
        await res.body.dump();
        if (!challenge) return res;
        await this.authenticate(challenge, opts.scope);
        continue;
      }
      if ((res.statusCode === 307 || res.statusCode === 302 || res.statusCode === 301) && method === 'GET') {
        const location = res.headers['location'];
        await res.body.dump();
        if (typeof location !== 'string') throw new StowageError('REGISTRY_ERROR', 'redirect without Location');
        const target = new URL(location, url).toString();
        return request(target, { method: 'GET', headersTimeout: TIMEOUT_MS, bodyTimeout: TIMEOUT_MS * 5 });
      }
      return res;
    }
    throw new StowageError('UNAUTHORIZED', 'authentication required');
  }

  private async authenticate(ch: Challenge, scope: string): Promise<void> {
    const c = this.creds;
    if (ch.scheme === 'basic') {
      if (!c?.username) throw this.denied(401, 'UNAUTHORIZED', 'authentication required');
      this.authHeader = `Basic ${Buffer.from(`${c.username}:${c.password ?? ''}`).toString('base64')}`;
      return;
    }
    const realm = ch.params['realm'];
    if (!realm) throw new StowageError('REGISTRY_ERROR', 'bearer challenge without realm');
    const u = new URL(realm);
    if (ch.params['service']) u.searchParams.set('service', ch.params['service']);
    u.searchParams.set('scope', ch.params['scope'] ?? scope);
    let res;
    if (c?.identityToken) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: c.identityToken, service: ch.params['service'] ?? '', scope: ch.params['scope'] ?? scope, client_id: 'stowage' });
      res = await request(realm, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), headersTimeout: TIMEOUT_MS });
    } else {
      const headers: Record<string, string> = {};
      if (c?.username) headers['authorization'] = `Basic ${Buffer.from(`${c.username}:${c.password ?? ''}`).toString('base64')}`;
      res = await request(u.toString(), { method: 'GET', headers, headersTimeout: TIMEOUT_MS });
    }
    const text = await res.body.text();
    if (res.statusCode >= 400) throw this.denied(res.statusCode, res.statusCode === 401 ? 'UNAUTHORIZED' : 'DENIED', text.slice(0, 200) || 'token request failed');
    const body = JSON.parse(text) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token) throw new StowageError('REGISTRY_ERROR', 'token endpoint returned no token');
    this.tokens.set(scope, `Bearer ${token}`);
  }

  private denied(status: number, code: string, message: string): RegistryHttpError {
    return new RegistryHttpError(`${code.toLowerCase()}: ${message}`, { status, registryCode: code, registryMessage: message });
  }

  private async failure(res: { statusCode: number; body: { text(): Promise<string> } }, what: string): Promise<RegistryHttpError> {
    let code: string | undefined;
    let message: string | undefined;
    try {
      const text = (await res.body.text()).slice(0, 64 * 1024);
      const parsed = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
      code = parsed.errors?.[0]?.code;
      message = parsed.errors?.[0]?.message;
    } catch {
      /* not JSON */
    }
    const err = new RegistryHttpError('', { status: res.statusCode, registryCode: code, registryMessage: message });
    const text = `${what}: ${err.registryText}`;
    const out = new RegistryHttpError(text, err.http);
    return out;
  }

  private scope(repo: string, push = false): string {
    return `repository:${repo}:${push ? 'pull,push' : 'pull'}`;
  }

  async getManifest(repo: string, reference: string): Promise<FetchedManifest> {
    const res = await this.send('GET', `/v2/${repo}/manifests/${reference}`, { headers: { accept: MANIFEST_ACCEPT }, scope: this.scope(repo) });
    if (res.statusCode !== 200) throw await this.failure(res, `manifest ${repo}:${reference}`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of res.body) {
      size += (c as Buffer).length;
      if (size > MAX_MANIFEST_BYTES) throw new StowageError('TOO_LARGE', `manifest ${repo}:${reference} is larger than ${MAX_MANIFEST_BYTES} bytes`);
      chunks.push(c as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const digest = digestOf(bytes);
    if (isDigest(reference) && reference !== digest) throw new StowageError('DIGEST_MISMATCH', `manifest ${repo}@${reference} has digest ${digest}`);
    const ct = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
    let mediaType = ct;
    try {
      const mt = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType;
      if (typeof mt === 'string') mediaType = mt;
    } catch {
      throw new StowageError('INVALID_MANIFEST', `manifest ${repo}:${reference} is not JSON`);
    }
    return { bytes, mediaType, digest };
  }

  async hasBlob(repo: string, digest: Digest, push = false): Promise<boolean> {
    const res = await this.send('HEAD', `/v2/${repo}/blobs/${digest}`, { scope: this.scope(repo, push) });
    await res.body.dump();
    if (res.statusCode === 200) return true;
    if (res.statusCode === 404) return false;
    throw new RegistryHttpError(`blob ${digest}: status ${res.statusCode}`, { status: res.statusCode, registryCode: undefined, registryMessage: undefined });
  }

  async getBlob(repo: string, digest: Digest): Promise<AsyncIterable<Uint8Array>> {
    const res = await this.send('GET', `/v2/${repo}/blobs/${digest}`, { scope: this.scope(repo) });
    if (res.statusCode !== 200) throw await this.failure(res, `blob ${digest}`);
    return res.body;
  }

  /** Monolithic upload: POST a session, PUT the bytes with ?digest=. */
  async pushBlob(repo: string, digest: Digest, size: number, source: AsyncIterable<Uint8Array>): Promise<void> {
    const start = await this.send('POST', `/v2/${repo}/blobs/uploads/`, { scope: this.scope(repo, true), headers: { 'content-length': '0' } });
    await start.body.dump();
    if (start.statusCode !== 202) throw await this.failure(start, `blob upload for ${repo}`);
    const location = start.headers['location'];
    if (typeof location !== 'string') throw new StowageError('REGISTRY_ERROR', 'blob upload without Location');
    const url = new URL(location, `${this.base}/v2/${repo}/blobs/uploads/`);
    url.searchParams.set('digest', digest);
    const res = await this.send('PUT', url.toString(), {
      absolute: true,
      scope: this.scope(repo, true),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body: source,
    });
    if (res.statusCode !== 201) throw await this.failure(res, `blob upload ${digest}`);
    await res.body.dump();
  }

  async putManifest(repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<Digest> {
    const res = await this.send('PUT', `/v2/${repo}/manifests/${reference}`, {
      scope: this.scope(repo, true),
      headers: { 'content-type': mediaType },
      body: bytes,
    });
    if (res.statusCode !== 201 && res.statusCode !== 200) throw await this.failure(res, `manifest ${repo}:${reference}`);
    await res.body.dump();
    return digestOf(bytes);
  }

  /** Every repository name of the registry, following Link pagination. */
  async *catalogNames(): AsyncGenerator<string> {
    let path: string | undefined = '/v2/_catalog?n=100';
    let pages = 0;
    while (path && pages++ < 10_000) {
      const res = await this.send('GET', path, { scope: 'registry:catalog:*' });
      if (res.statusCode !== 200) throw await this.failure(res, 'catalog');
      const body = (await res.body.json()) as { repositories?: unknown };
      const names = Array.isArray(body.repositories) ? body.repositories.filter((x): x is string => typeof x === 'string') : [];
      for (const n of names) yield n;
      const link = res.headers['link'];
      const m = typeof link === 'string' ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
      if (!m || names.length === 0) break;
      const next = new URL(m[1]!, `${this.base}/v2/_catalog`);
      path = `${next.pathname}${next.search}`;
    }
  }
}
