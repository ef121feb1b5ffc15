import type { FastifyInstance } from 'fastify';
import { issueRegistryToken, parseScopes } from '../auth/registry-token.js';
import type { ControlContext } from '../context.js';

/**
 * GET /token?service=<machine id>&scope=…: the registry token service the agents' /v2/ challenges point
 * at (Docker token spec; see auth/registry-token.ts). Credentials come as Basic (any username, an API key
 * or a peer token as the password). Answers `{token, access_token, expires_in, issued_at}`, or 401 with a
 * Basic challenge, or 400 for a service that is no machine of this cluster.
 */

/** Bounds the header before decoding: an API key or peer token is at most 4 KiB. */
const MAX_AUTHORIZATION = 8192;

function basicPassword(header: string | undefined): string | undefined {
  if (header === undefined || header.length > MAX_AUTHORIZATION) return undefined;
  const m = /^basic\s+([A-Za-z0-9+/=_-]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon === -1 ? undefined : decoded.slice(colon + 1);
}

function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

export function tokenRoutes(app: FastifyInstance, ctx: ControlContext): void {
  app.get('/token', async (req, reply) => {
    const query = req.query as Record<string, unknown>;
    const service = strings(query['service'])[0];
    const outcome = await issueRegistryToken(
      ctx.db,
      (id) => ctx.machines.get(id),
      { service, scopes: parseScopes(strings(query['scope'])), password: basicPassword(req.headers.authorization) },
      ctx.config.registryTokenTtlSeconds,
    );
    switch (outcome.kind) {
      case 'unauthenticated':
        return reply
          .code(401)
          .header('www-authenticate', 'Basic realm="stowage"')
          .send({ errors: [{ code: 'UNAUTHORIZED', message: 'a valid API key (as the password of Basic credentials) is required' }] });
      case 'unknown-service':
        return reply.code(400).send({ errors: [{ code: 'UNSUPPORTED', message: `unknown service "${(service ?? '').slice(0, 100)}": name a machine of this cluster` }] });
      default:
        return reply.send({ token: outcome.token, access_token: outcome.token, expires_in: outcome.expiresIn, issued_at: outcome.issuedAt });
    }
  });
}
