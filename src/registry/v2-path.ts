import type { FastifyRequest } from 'fastify';
import type { RegistryResource } from '../control/peer-token.js';
import type { RequiredAccess } from './peer-auth.js';

/**
 * What a /v2/ request addresses, parsed from ONE string: the route's wildcard as the router decoded it.
 * The authorization check and the handlers both read it through v2Target, so a percent-encoded slash
 * (`/v2/a/manifests%2F1`) means the same thing to both: what the check allows is what the handler does.
 */
export type V2Target =
  | { kind: 'catalog' }
  | { kind: 'tags'; name: string }
  | { kind: 'manifest'; name: string; ref: string }
  | { kind: 'blob'; name: string; ref: string }
  | { kind: 'upload-start'; name: string }
  | { kind: 'upload'; name: string; uuid: string }
  | { kind: 'referrers'; name: string; digest: string }
  | { kind: 'unknown'; rest: string };

export function parseV2Path(rest: string): V2Target {
  if (rest === '_catalog') return { kind: 'catalog' };
  const tags = /^(.+)\/tags\/list$/.exec(rest);
  if (tags) return { kind: 'tags', name: tags[1] as string };
  const up = /^(.+)\/blobs\/uploads\/([^/]*)$/.exec(rest);
  if (up) return up[2] === '' ? { kind: 'upload-start', name: up[1] as string } : { kind: 'upload', name: up[1] as string, uuid: up[2] as string };
  const refs = /^(.+)\/referrers\/([^/]+)$/.exec(rest);
  if (refs) return { kind: 'referrers', name: refs[1] as string, digest: refs[2] as string };
  const m = /^(.+)\/(manifests|blobs)\/([^/]+)$/.exec(rest);
  if (m) return { kind: m[2] === 'manifests' ? 'manifest' : 'blob', name: m[1] as string, ref: m[3] as string };
  return { kind: 'unknown', rest };
}

/** The wildcard of a /v2/* route, decoded once by the router; '' for /v2/ itself. */
export function v2Rest(req: FastifyRequest): string {
  return (req.params as { '*'?: string })['*'] ?? '';
}

export function v2Target(req: FastifyRequest): V2Target {
  return parseV2Path(v2Rest(req));
}

const isRead = (method: string) => method === 'GET' || method === 'HEAD';

/**
 * The scope a request needs. Reads need pull, except an upload's status (push); blob uploads and manifests
 * by digest need push; pointing a tag needs tag, since it can replace what others run; deleting needs delete.
 */
export function requiredAccess(method: string, rest: string | undefined): RequiredAccess {
  if (rest === undefined || rest === '') return { scope: isRead(method) ? 'pull' : 'push', resource: { kind: 'base' } };
  const target = parseV2Path(rest);
  const resource: RegistryResource =
    target.kind === 'catalog' ? { kind: 'catalog' } : target.kind === 'unknown' ? { kind: 'base' } : { kind: 'repository', name: target.name };
  if (isRead(method)) return { scope: target.kind === 'upload' ? 'push' : 'pull', resource };
  if (method === 'DELETE' && (target.kind === 'manifest' || target.kind === 'blob')) return { scope: 'delete', resource };
  if (method === 'PUT' && target.kind === 'manifest' && !target.ref.includes(':')) return { scope: 'tag', resource };
  return { scope: 'push', resource };
}

/** The Docker token-spec scope a client should ask the token service for (the challenge's `scope`). */
export function challengeScope(need: RequiredAccess): string | undefined {
  const r = need.resource;
  if (r.kind === 'base') return undefined;
  if (r.kind === 'catalog') return 'registry:catalog:*';
  const actions = need.scope === 'pull' ? 'pull' : need.scope === 'delete' ? 'delete' : 'pull,push';
  return `repository:${r.name}:${actions}`;
}
