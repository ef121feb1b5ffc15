import { createHash } from 'node:crypto';
import { StowageError } from '../errors.js';
import type { Credentials } from '../registry/auth.js';
import { RegistryClient, type RegistryErrorDetails, isLoopbackHost } from '../registry/client.js';
import type { EngineContext } from './context.js';

/** What a client sends in X-Registry-Auth (Docker's AuthConfig). */
export interface RegistryAuth {
  username?: string | undefined;
  password?: string | undefined;
  auth?: string | undefined;
  serveraddress?: string | undefined;
  identitytoken?: string | undefined;
  registrytoken?: string | undefined;
}

const MAX_HEADER = 64 * 1024;

/**
 * Decodes X-Registry-Auth: base64url (RFC 4648 §5) of a JSON AuthConfig. Standard base64, missing or
 * extra padding are tolerated, as are the empty string and "{}" (anonymous). Anything else that does not
 * decode is a 400, like dockerd's "invalid X-Registry-Auth header".
 */
export function decodeRegistryAuth(header: string | string[] | undefined): RegistryAuth | undefined {
  const raw = Array.isArray(header) ? header[0] : header;
  if (raw === undefined) return undefined;
  const value = raw.trim();
  if (value === '' || value === '{}' || value === 'null') return undefined;
  if (value.length > MAX_HEADER) throw new StowageError('BAD_REQUEST', 'invalid X-Registry-Auth header: too long');
  let json: string;
  if (value.startsWith('{')) {
    json = value; // some clients send the JSON itself
  } else {
    if (!/^[A-Za-z0-9+/_-]+=*$/.test(value)) throw new StowageError('BAD_REQUEST', 'invalid X-Registry-Auth header: not base64url');
    const b64 = value.replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/');
    json = Buffer.from(b64, 'base64').toString('utf8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    throw new StowageError('BAD_REQUEST', `invalid X-Registry-Auth header: ${(err as Error).message}`);
  }
  if (parsed === null) return undefined;
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new StowageError('BAD_REQUEST', 'invalid X-Registry-Auth header: expected a JSON object');
  const o = parsed as Record<string, unknown>;
  const str = (k: string): string | undefined => {
    const v = o[k] ?? o[k.charAt(0).toUpperCase() + k.slice(1)];
    return typeof v === 'string' && v !== '' ? v : undefined;
  };
  const auth: RegistryAuth = {
    username: str('username'),
    password: str('password'),
    auth: str('auth'),
    serveraddress: str('serveraddress'),
    identitytoken: str('identitytoken'),
    registrytoken: str('registrytoken'),
  };
  // "auth" is base64(username:password), as in config.json.
  if (auth.auth && auth.username === undefined) {
    const plain = Buffer.from(auth.auth, 'base64').toString('utf8');
    const colon = plain.indexOf(':');
    if (colon > 0) {
      auth.username = plain.slice(0, colon);
      auth.password = plain.slice(colon + 1);
    }
  }
  return auth;
}

/** Registry host names Docker treats as Docker Hub. */
const HUB_ALIASES = ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'https://index.docker.io/v1/'];

/** Normalises "https://host:5000/v2/" style server addresses to host[:port]. */
export function registryHostOf(address: string): string {
  let a = address.trim().replace(/^[a-z]+:\/\//i, '');
  a = a.replace(/\/.*$/, '');
  return a.toLowerCase();
}

/**
 * The credentials for `host`: the request's X-Registry-Auth when it carries any, otherwise the agent's
 * configured credentials for that registry.
 */
export function credentialsFor(ctx: EngineContext, host: string, fromHeader: RegistryAuth | undefined): Credentials | undefined {
  if (fromHeader && (fromHeader.username || fromHeader.identitytoken || fromHeader.registrytoken)) {
    return {
      username: fromHeader.username ?? '',
      password: fromHeader.password ?? '',
      identityToken: fromHeader.identitytoken,
      registryToken: fromHeader.registrytoken,
    };
  }
  const configured = ctx.registries.credentials;
  const want = host.toLowerCase();
  const candidates = HUB_ALIASES.includes(want) ? HUB_ALIASES.map(registryHostOf).concat(HUB_ALIASES) : [want];
  for (const [key, cred] of Object.entries(configured)) {
    const k = registryHostOf(key);
    if (candidates.includes(k) || candidates.includes(key)) return { username: cred.username, password: cred.password };
  }
  return undefined;
}

/** Plain HTTP for loopback and for hosts listed in insecureRegistries (host[:port] or host alone). */
export function isInsecureRegistry(ctx: EngineContext, host: string): boolean {
  if (isLoopbackHost(host.toLowerCase())) return true;
  const h = host.toLowerCase();
  const bare = h.replace(/:\d+$/, '');
  return ctx.registries.insecureRegistries.some((entry) => {
    const e = registryHostOf(entry);
    return e === h || e === bare;
  });
}

/**
 * Decodes X-Registry-Config (POST /build): base64url JSON of {"<registry>": AuthConfig, …}. Returns the
 * entry for `host`, if any (keys may be URLs, Docker Hub's is "https://index.docker.io/v1/").
 */
export function registryConfigAuth(header: string | string[] | undefined, host: string): RegistryAuth | undefined {
  const raw = Array.isArray(header) ? header[0] : header;
  if (raw === undefined || raw.trim() === '') return undefined;
  let map: unknown;
  try {
    const value = raw.trim();
    const json = value.startsWith('{') ? value : Buffer.from(value.replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8');
    map = JSON.parse(json);
  } catch {
    throw new StowageError('BAD_REQUEST', 'invalid X-Registry-Config header');
  }
  if (typeof map !== 'object' || map === null || Array.isArray(map)) return undefined;
  const want = host.toLowerCase();
  const hub = HUB_ALIASES.includes(want);
  for (const [key, value] of Object.entries(map as Record<string, unknown>)) {
    const k = registryHostOf(key);
    if (k === want || (hub && HUB_ALIASES.map(registryHostOf).includes(k))) {
      return decodeRegistryAuth(JSON.stringify(value));
    }
  }
  return undefined;
}

/** A registry's refusal as dockerd words it (errcode.Error): "manifest unknown: manifest unknown". */
export function registryErrorText(d: RegistryErrorDetails): string {
  const code = d.registryCode ?? (d.status === 401 ? 'UNAUTHORIZED' : d.status === 403 ? 'DENIED' : `status ${d.status}`);
  const codeText = code.toLowerCase().replace(/_/g, ' ');
  return d.registryMessage ? `${codeText}: ${d.registryMessage}` : codeText;
}

/**
 * A registry client for `host` (host[:port], "docker.io" for Docker Hub) with the request's
 * credentials merged over the agent's, plain HTTP for loopback and insecure registries.
 */
/** Clients kept per engine, so bearer tokens (cached per scope inside a client) outlive one request. */
const clientCache = new WeakMap<EngineContext, Map<string, RegistryClient>>();
const MAX_CACHED_CLIENTS = 64;

/**
 * A registry client for `host` with the request's credentials (X-Registry-Auth) or the agent's. Clients
 * are reused per (host, credentials) — the key is a hash, so no password sits in a map key — and the
 * least recently used is dropped past MAX_CACHED_CLIENTS. `fresh` gives a new one (docker login must
 * check the credentials against the registry, not a token obtained earlier).
 */
export function registryClientFor(ctx: EngineContext, host: string, fromHeader: RegistryAuth | undefined, opts: { fresh?: boolean } = {}): RegistryClient {
  const credentials = credentialsFor(ctx, host, fromHeader);
  const make = (): RegistryClient => new RegistryClient({ host, insecure: isInsecureRegistry(ctx, host), ...(credentials ? { credentials } : {}) });
  if (opts.fresh) return make();
  let cache = clientCache.get(ctx);
  if (!cache) clientCache.set(ctx, (cache = new Map()));
  const key = createHash('sha256').update(JSON.stringify([host, credentials ?? null])).digest('hex');
  let client = cache.get(key);
  if (client) cache.delete(key);
  else client = make();
  cache.set(key, client); // most recently used last
  if (cache.size > MAX_CACHED_CLIENTS) cache.delete(cache.keys().next().value as string);
  return client;
}
