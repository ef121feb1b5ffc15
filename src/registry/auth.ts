/**
 * Registry authentication pieces: WWW-Authenticate parsing (RFC 7235 challenges as registries send
 * them), Basic credentials and a per-scope bearer token cache.
 */

export interface Challenge {
  /** Lowercased: "basic", "bearer", … */
  scheme: string;
  /** Lowercased parameter names; values unquoted ("realm", "service", "scope", "error"). */
  params: Record<string, string>;
}

export interface Credentials {
  username: string;
  password: string;
  /**
   * An OAuth2 refresh token (Docker's `identitytoken`): exchanged at the bearer realm with a POST
   * grant_type=refresh_token, falling back to a GET with Basic credentials where the token service
   * does not speak OAuth (404), as dockerd does.
   */
  identityToken?: string | undefined;
  /** A bearer token sent as is on every request (Docker's `registrytoken`). */
  registryToken?: string | undefined;
}

const TOKEN = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y;
const TOKEN68 = /[A-Za-z0-9\-._~+/]+=*/y;
/** Unquoted parameter values, leniently: real registries send unquoted URLs too. */
const BARE_VALUE = /[^,\s"]+/y;

/**
 * Parses a WWW-Authenticate header (or several) into its challenges, e.g.
 * `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push"` or
 * `Basic realm="x", Bearer realm="y"`. Quoted values may contain commas and backslash escapes.
 * Malformed trailing input is ignored; what was parsed before it is kept.
 */
export function parseWwwAuthenticate(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  if (Array.isArray(header)) return header.flatMap((h) => parseWwwAuthenticate(h));
  const s = header;
  let i = 0;
  const out: Challenge[] = [];

  const skipWs = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const skipWsAndCommas = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === ',')) i++;
  };
  const matchAt = (re: RegExp): string | undefined => {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m) return undefined;
    i = re.lastIndex;
    return m[0];
  };
  const quoted = (): string | undefined => {
    if (s[i] !== '"') return undefined;
    i++;
    let v = '';
    while (i < s.length && s[i] !== '"') {
      if (s[i] === '\\' && i + 1 < s.length) i++;
      v += s[i];
      i++;
    }
    if (s[i] !== '"') return undefined; // unterminated
    i++;
    return v;
  };

  skipWsAndCommas();
  while (i < s.length) {
    const scheme = matchAt(TOKEN);
    if (!scheme) break;
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    skipWs();
    // A token68 ("Negotiate abc==") instead of parameters?
    {
      const start = i;
      const t68 = matchAt(TOKEN68);
      const after = i;
      skipWs();
      if (t68 && t68.endsWith('=') && (i >= s.length || s[i] === ',')) {
        challenge.params['token68'] = t68;
        skipWsAndCommas();
        continue;
      }
      i = t68 ? start : after;
    }
    // Either auth-params (name=value, …), or nothing.
    for (;;) {
      skipWsAndCommas();
      const start = i;
      const name = matchAt(TOKEN);
      if (!name) break;
      skipWs();
      if (s[i] !== '=') {
        // A token not followed by '=' starts the next challenge.
        i = start;
        break;
      }
      i++;
      skipWs();
      const value = s[i] === '"' ? quoted() : matchAt(BARE_VALUE);
      if (value === undefined) {
        // Perhaps a token68 ("abc==") rather than a parameter.
        i = start;
        const t68 = matchAt(TOKEN68);
        if (t68) challenge.params['token68'] = t68;
        return out;
      }
      challenge.params[name.toLowerCase()] = value;
    }
    skipWsAndCommas();
  }
  return out;
}

export function basicAuthorization(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`, 'utf8').toString('base64')}`;
}

/** `repository:<name>:pull[,push]` */
export function repositoryScope(repo: string, actions: Array<'pull' | 'push'>): string {
  return `repository:${repo}:${actions.join(',')}`;
}

export const CATALOG_SCOPE = 'registry:catalog:*';

/** Docker's token server defaults expires_in to 60 s when absent; refresh a little early. */
const DEFAULT_TOKEN_SECONDS = 60;
const EXPIRY_MARGIN_MS = 5_000;

/** Bearer tokens keyed by the sorted scope set they were issued for. */
export class TokenCache {
  private readonly tokens = new Map<string, { token: string; expiresAt: number }>();

  static key(scopes: readonly string[]): string {
    return [...new Set(scopes)].sort().join(' ');
  }

  get(scopes: readonly string[], now = Date.now()): string | undefined {
    const key = TokenCache.key(scopes);
    const hit = this.tokens.get(key);
    if (!hit) return undefined;
    if (hit.expiresAt <= now) {
      this.tokens.delete(key);
      return undefined;
    }
    return hit.token;
  }

  set(scopes: readonly string[], token: string, expiresInSeconds: number | undefined, now = Date.now()): void {
    const seconds = expiresInSeconds !== undefined && Number.isFinite(expiresInSeconds) && expiresInSeconds > 0 ? expiresInSeconds : DEFAULT_TOKEN_SECONDS;
    this.tokens.set(TokenCache.key(scopes), { token, expiresAt: now + Math.max(seconds * 1000 - EXPIRY_MARGIN_MS, 1000) });
  }
}

/** The token endpoint's answer: `token` or `access_token` (OAuth2 style), optional expires_in seconds. */
export function parseTokenResponse(body: unknown): { token: string; expiresIn: number | undefined } | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as Record<string, unknown>;
  const token = typeof b['token'] === 'string' && b['token'] !== '' ? b['token'] : typeof b['access_token'] === 'string' ? b['access_token'] : undefined;
  if (!token) return undefined;
  const expiresIn = typeof b['expires_in'] === 'number' ? b['expires_in'] : undefined;
  return { token, expiresIn };
}
