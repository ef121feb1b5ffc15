import type { FastifyRequest } from 'fastify';
import { KeypairStore } from './keypairs.js';
import { StowageError } from '../../errors.js';
import { type Principal, authenticateApiKey, bearerToken } from '../auth/api-keys.js';
import type { ControlContext } from '../context.js';
import type { Db } from '../db/database.js';
import { isSignedRequest, verifySignedRequest } from './hmac.js';

/** The caller of a request, from `Authorization: Bearer <api key>`; undefined without a valid key. */
export async function principalOf(db: Db, req: FastifyRequest): Promise<Principal | undefined> {
  const token = bearerToken(req.headers.authorization);
  return token ? authenticateApiKey(db, token) : undefined;
}

/**
 * The caller of a request to a surface Backend.AI clients use (/admin/gql, the task events, the admin
 * REST): a Backend.AI-signed request (keypair HMAC, hmac.ts) or a Bearer API key. Reads only the request
 * line and headers, so it runs in onRequest, before any body is read. A signed request that does not
 * verify is refused (UNAUTHORIZED, saying why); no credential at all is undefined.
 */
export async function authenticateRequest(ctx: ControlContext, req: FastifyRequest): Promise<Principal | undefined> {
  if (isSignedRequest(req.headers)) {
    const keypairs = new KeypairStore(ctx.db);
    const { principal, accessKey } = await verifySignedRequest({ method: req.method, url: req.raw.url ?? req.url, headers: req.headers }, (ak) =>
      keypairs.credentials(ak),
    );
    await keypairs.markUsed(accessKey);
    return principal;
  }
  return principalOf(ctx.db, req);
}

const callers = new WeakMap<FastifyRequest, Principal>();

/**
 * An onRequest hook: authenticates (Bearer or Backend.AI signature) before the body is read, refusing
 * with UNAUTHORIZED; the handler then takes the caller with callerOf(req).
 */
export function requireCaller(ctx: ControlContext) {
  return async (req: FastifyRequest): Promise<void> => {
    const principal = await authenticateRequest(ctx, req);
    if (!principal) {
      throw new StowageError('UNAUTHORIZED', 'credentials are required: Authorization: Bearer <API key>, or a Backend.AI keypair signature');
    }
    callers.set(req, principal);
  };
}

/** The caller requireCaller authenticated for this request. */
export function callerOf(req: FastifyRequest): Principal {
  const p = callers.get(req);
  if (!p) throw new StowageError('INTERNAL', 'the route was registered without requireCaller');
  return p;
}
