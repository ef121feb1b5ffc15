import type { FastifyRequest } from 'fastify';
import { StowageError } from '../../errors.js';
import { authenticateApiKey, bearerToken } from './api-keys.js';
import type { Db } from '../db/database.js';

/**
 * Refuses, before a byte of the body is read, a request to the REST or GraphQL API that carries no
 * credential or an API key nobody holds: strangers cannot make the control plane buffer and parse bodies.
 * Other schemes (Backend.AI's HMAC signature covers the body) pass on to the route's own check, as do
 * the agent routes under /api/v1/machines/, which check the join token or machine secret themselves
 * before their body (machine-routes.ts).
 */
export async function refuseWithoutCredential(db: Db, request: FastifyRequest): Promise<void> {
  if (request.method === 'GET' || request.method === 'HEAD' || request.method === 'OPTIONS') return;
  const path = request.url.split('?', 1)[0] ?? '';
  const guarded = (path.startsWith('/api/v1/') && !path.startsWith('/api/v1/machines/')) || path === '/admin/gql';
  if (!guarded) return;
  const authorization = request.headers.authorization;
  if (authorization === undefined || authorization.trim() === '') {
    throw new StowageError('UNAUTHORIZED', 'a credential is required (Authorization: Bearer stk_…)');
  }
  const token = bearerToken(authorization);
  if (token !== undefined && !(await authenticateApiKey(db, token))) throw new StowageError('UNAUTHORIZED', 'unknown or revoked API token');
}
