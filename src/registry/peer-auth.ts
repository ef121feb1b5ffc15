import { type PeerScope, type PeerTokenPayload, type RegistryResource, type RevokedTokens, grantsAllow, verifyPeerToken } from '../control/peer-token.js';

/** What one /v2/ request needs: a scope, on a repository, the catalog or /v2/ itself. */
export interface RequiredAccess {
  scope: PeerScope;
  resource: RegistryResource;
}

/** Decides whether a request's Authorization header may do what it asks on this /v2/. */
export type RegistryAuthorizer = (authorization: string | undefined, need: RequiredAccess) => boolean;

/** Bounds the header before any decoding: a peer token is at most 4 KiB. */
const MAX_AUTHORIZATION_LENGTH = 8192;

/** The token of `Basic base64(anyuser:token)` or `Bearer token`; undefined for anything else. */
export function presentedToken(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length > MAX_AUTHORIZATION_LENGTH) return undefined;
  const m = /^(basic|bearer)\s+(\S+)\s*$/i.exec(authorization);
  if (!m) return undefined;
  const [, scheme = '', value = ''] = m;
  if (scheme.toLowerCase() === 'bearer') return value;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? undefined : decoded.slice(colon + 1);
}

/**
 * The authorizer an agent gives registryRoutes: tokens minted by the control plane with this machine's
 * secret (see control/peer-token.ts), as the Basic password (any username) or a Bearer token. Peer tokens
 * hold for the whole machine; registry tokens (the /token flow) only for the repositories they name.
 */
export function peerAuthorizer(machineId: string, secret: string, revoked?: RevocationSet): RegistryAuthorizer {
  return (authorization, need) => {
    const token = presentedToken(authorization);
    if (token === undefined) return false;
    const payload = verifyPeerToken(secret, machineId, token, need.scope);
    return payload !== undefined && !revoked?.refuses(payload) && grantsAllow(payload, need.scope, need.resource);
  };
}

/** How long an agent remembers a revocation: longer than any token it could refuse lives. */
const REMEMBER_REVOCATION_MS = 24 * 3600 * 1000;

/**
 * The revocations an agent has been told of (pushed by the control plane when they happen, and repeated in
 * every heartbeat answer). Only added to: an answer from a control plane that restarted and forgot one
 * does not bring a revoked token back.
 */
export class RevocationSet {
  private readonly keys = new Map<string, number>();
  private readonly operations = new Map<string, number>();

  add(revoked: RevokedTokens, now = Date.now()): void {
    for (const k of revoked.keys) this.keys.set(k, now + REMEMBER_REVOCATION_MS);
    for (const o of revoked.operations) this.operations.set(o, now + REMEMBER_REVOCATION_MS);
    for (const m of [this.keys, this.operations]) for (const [id, until] of m) if (until <= now) m.delete(id);
  }

  refuses(payload: PeerTokenPayload): boolean {
    return (payload.kid !== undefined && this.keys.has(payload.kid)) || (payload.op !== undefined && this.operations.has(payload.op));
  }
}
