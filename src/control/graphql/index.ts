import type { FastifyError, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { isStowageError } from '../../errors.js';
import { z } from 'zod';
import { registerCatalogOperations } from '../catalog/operations.js';
import type { ControlContext } from '../context.js';
import { callerOf, requireCaller } from '../tenancy/authenticate.js';
import { API_VERSION } from '../tenancy/hmac.js';
import { gqlContext } from './context.js';
import { runGraphql } from './execute.js';
import { DEFAULT_LIMITS } from './limits.js';

/**
 * POST /admin/gql: the admin GraphQL API (schema.ts), `Authorization: Bearer <api key>` or a Backend.AI
 * keypair signature (checked before the body is read), JSON body {query, variables?, operationName?},
 * answer {data, errors} (401 without valid credentials). GET / answers Backend.AI's version handshake. Registering the plugin also registers the catalog's operation kinds with the runner.
 * Failures before the handler runs (a body past the limit, malformed JSON, another content type) answer
 * in the same {errors: [{message, extensions: {code}}]} shape: an oversized body is 400 QUERY_TOO_COMPLEX.
 */

/** What GET / reports as the server's own version beside the API version. */
const STOWAGE_VERSION = 'stowage-0.1.0';

const bodySchema = z.object({
  query: z.string(),
  variables: z.record(z.unknown()).nullish(),
  operationName: z.string().nullish(),
});

/** The JSON body may carry variables beside the query; the query itself is bounded separately. */
const BODY_LIMIT = DEFAULT_LIMITS.maxQueryBytes * 4;

export const graphqlRoutes: FastifyPluginAsync<{ ctx: ControlContext }> = async (app, opts) => {
  const { ctx } = opts;
  registerCatalogOperations(ctx);
  // Backend.AI's clients ask this first (unsigned) and speak the lower of its version and theirs.
  app.get('/', async () => ({ version: API_VERSION, manager: STOWAGE_VERSION }));
  app.post('/admin/gql', { bodyLimit: BODY_LIMIT, errorHandler: gqlErrorHandler(ctx), onRequest: requireCaller(ctx) }, async (req, reply) => {
    const principal = callerOf(req);
    const body = bodySchema.safeParse(req.body);
    if (!body.success) {
      return reply.code(400).send({ errors: [{ message: 'expected a JSON body {query, variables?, operationName?}', extensions: { code: 'BAD_REQUEST' } }] });
    }
    const result = await runGraphql(body.data, gqlContext(ctx, principal), ctx.log);
    return reply.code(result.status).send(result.body);
  });
};

/** The route's error handler: every failure reads as a GraphQL error response. */
function gqlErrorHandler(ctx: ControlContext) {
  return (err: FastifyError, _req: FastifyRequest, reply: FastifyReply): void => {
    let status: number;
    let code: string;
    let message: string;
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      status = 400;
      code = 'QUERY_TOO_COMPLEX';
      message = `the request body is larger than ${BODY_LIMIT} bytes; at most ${BODY_LIMIT} are allowed`;
    } else if (isStowageError(err)) {
      status = err.status;
      code = err.code;
      message = err.message;
    } else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      status = err.statusCode;
      code = 'BAD_REQUEST';
      message = err.message;
    } else {
      ctx.log.error({ err }, 'graphql request failed');
      status = 500;
      code = 'INTERNAL';
      message = 'internal error';
    }
    void reply.code(status).send({ errors: [{ message, extensions: { code } }] });
  };
}
