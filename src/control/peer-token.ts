import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Peer tokens: short-lived credentials for one machine's /v2/, minted by the control plane with that
 * machine's secret and checked by the machine alone (no call home). A token for machine A is useless on
 * machine B, a pull token cannot push, and every token expires.
 *
 *   spt.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, payload part))>
 *
 * Clients send it as the password of Basic auth (any username), which every registry client speaks.
 */

/**
 * pull: read; push: upload blobs and manifests by digest; tag: also point tags (push tokens with t);
 * delete: delete manifests, tags and blobs (push tokens with t, or a registry token granting delete).
 */
export type PeerScope = 'pull' | 'push' | 'tag' | 'delete';

/** One grant of a registry token, as the Docker token spec writes it (`repository:team/app:pull,push`). */
export interface AccessGrant {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

export interface PeerTokenPayload {
  /** The machine whose /v2/ accepts it. */
  m: string;
  /** push implies pull. */
  s: 'pull' | 'push';
  /** A push token that may also move tags (a manifest PUT by tag). Grants to stowctl never carry it. */
  t?: boolean;
  /** Expiry, seconds since the epoch. */
  exp: number;
  /** The operation it was minted for (for logs). */
  op?: string;
  /**
   * Registry tokens (issued by the control plane's /token to a user) name what they grant per repository;
   * a request must then match one of these as well. Peer tokens carry none: they hold for the whole machine.
   */
  acc?: AccessGrant[];
  /** The user a registry token was issued to (for logs). */
  sub?: string;
  /** The ID of the API key a registry token was issued for: revoking the key revokes the token. */
  kid?: string;
}

/** What agents must refuse though signed and unexpired: tokens of revoked API keys and of ended operations. */
export interface RevokedTokens {
  /** API key IDs (see keyId in auth/api-keys.ts). */
  keys: string[];
  /** Operation IDs whose peer grants ended with them. */
  operations: string[];
}

const PREFIX = 'spt.';

export function newSecret(prefix: string): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`;
}

function sign(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('base64url');
}

/** Whether a string has the shape of a peer or registry token (then it is a bearer credential, checked by the agent itself). */
export function isPeerToken(value: string): boolean {
  return value.startsWith(PREFIX);
}

export function mintPeerToken(secret: string, payload: PeerTokenPayload): string {
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${PREFIX}${body}.${sign(secret, body)}`;
}

/** The payload when the token is genuine, for this machine, unexpired and allows `scope`; else undefined. */
export function verifyPeerToken(secret: string, machineId: string, token: string, scope: PeerScope, now = Date.now()): PeerTokenPayload | undefined {
  if (!token.startsWith(PREFIX) || token.length > 4096) return undefined;
  const [body, mac] = token.slice(PREFIX.length).split('.');
  if (body === undefined || mac === undefined) return undefined;
  const want = Buffer.from(sign(secret, body));
  const got = Buffer.from(mac);
  if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
  let payload: PeerTokenPayload;
  try {
    payload = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as PeerTokenPayload;
  } catch {
    return undefined;
  }
  if (payload.m !== machineId || typeof payload.exp !== 'number' || payload.exp * 1000 <= now) return undefined;
  if (scope !== 'pull' && payload.s !== 'push') return undefined;
  if ((scope === 'tag' || scope === 'delete') && payload.t !== true) return undefined;
  if (payload.s !== 'pull' && payload.s !== 'push') return undefined;
  return payload;
}

/** The token action a request scope needs in a grant: tags are moved by whoever may push. */
const ACTION_FOR: Record<PeerScope, string> = { pull: 'pull', push: 'push', tag: 'push', delete: 'delete' };

/** What a /v2/ request touches: one repository, the catalog, or only /v2/ itself (the version check). */
export type RegistryResource = { kind: 'repository'; name: string } | { kind: 'catalog' } | { kind: 'base' };

/**
 * Whether the token's grants allow `scope` on `resource`. A token without grants (a peer token) holds for
 * the whole machine; verifyPeerToken has checked its scope already. Any valid token may ask /v2/ itself.
 */
export function grantsAllow(payload: PeerTokenPayload, scope: PeerScope, resource: RegistryResource): boolean {
  if (payload.acc === undefined || resource.kind === 'base') return true;
  if (!Array.isArray(payload.acc)) return false;
  const action = ACTION_FOR[scope];
  return payload.acc.some((g) => {
    if (!g || !Array.isArray(g.actions)) return false;
    if (resource.kind === 'catalog') return g.type === 'registry' && g.name === 'catalog' && g.actions.includes('*');
    return g.type === 'repository' && g.name === resource.name && (g.actions.includes(action) || g.actions.includes('*'));
  });
}

/** Constant-time comparison of a presented bearer secret with the stored one. */
export function secretsEqual(presented: string, stored: string): boolean {
  const a = Buffer.from(presented);
  const b = Buffer.from(stored);
  return a.length === b.length && timingSafeEqual(a, b);
}
