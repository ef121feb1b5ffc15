import { type PeerScope, verifyPeerToken } from '../control/peer-token.js';

/** Decides whether a request's Authorization header may do `scope` on this /v2/. */
export type RegistryAuthorizer = (authorization: string | undefined, scope: PeerScope) => boolean;

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
 * The authorizer an agent gives registryRoutes: peer tokens minted by the control plane for this machine
 * (see control/peer-token.ts), as the Basic password (any username) or a Bearer token.
 */
export function peerAuthorizer(machineId: string, secret: string): RegistryAuthorizer {
  return (authorization, scope) => {
    const token = presentedToken(authorization);
    return token !== undefined && verifyPeerToken(secret, machineId, token, scope) !== undefined;
  };
}
