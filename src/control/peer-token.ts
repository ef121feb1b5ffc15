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

/** pull: read; push: upload blobs and manifests by digest; tag: also point tags (push tokens with t). */
export type PeerScope = 'pull' | 'push' | 'tag';

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
}

const PREFIX = 'spt.';

export function newSecret(prefix: string): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`;
}

function sign(secret: string, body: string): string {
  return createHmac('sha256', secret).update(body).digest('base64url');
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
  if ((scope === 'push' || scope === 'tag') && payload.s !== 'push') return undefined;
  if (scope === 'tag' && payload.t !== true) return undefined;
  if (payload.s !== 'pull' && payload.s !== 'push') return undefined;
  return payload;
}

/** Constant-time comparison of a presented bearer secret with the stored one. */
export function secretsEqual(presented: string, stored: string): boolean {
  const a = Buffer.from(presented);
  const b = Buffer.from(stored);
  return a.length === b.length && timingSafeEqual(a, b);
}
