import type { FastifyRequest } from 'fastify';
import { type Principal, authenticateApiKey, bearerToken } from '../auth/api-keys.js';
import type { Db } from '../db/database.js';

/** The caller of a request, from `Authorization: Bearer <api key>`; undefined without a valid key. */
export function principalOf(db: Db, req: FastifyRequest): Principal | undefined {
  const token = bearerToken(req.headers.authorization);
  return token ? authenticateApiKey(db, token) : undefined;
}
