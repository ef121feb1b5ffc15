import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';
import { registerCatalogOperations } from '../catalog/operations.js';
import type { ControlContext } from '../context.js';
import { principalOf } from '../tenancy/authenticate.js';
import { gqlContext } from './context.js';
import { runGraphql } from './execute.js';
import { DEFAULT_LIMITS } from './limits.js';

/**
 * POST /admin/gql: the admin GraphQL API (schema.ts), `Authorization: Bearer <api key>`, JSON body
 * {query, variables?, operationName?}, answer {data, errors} (400 when nothing could run, 401 without
 * a valid key). Registering the plugin also registers the catalog's operation kinds with the runner.
 */

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
  app.post('/admin/gql', { bodyLimit: BODY_LIMIT }, async (req, reply) => {
    const principal = principalOf(ctx.db, req);
    if (!principal) {
      return reply.code(401).send({ errors: [{ message: 'an API key is required: Authorization: Bearer <key>', extensions: { code: 'UNAUTHORIZED' } }] });
    }
    const body = bodySchema.safeParse(req.body);
    if (!body.success) {
      return reply.code(400).send({ errors: [{ message: 'expected a JSON body {query, variables?, operationName?}', extensions: { code: 'BAD_REQUEST' } }] });
    }
    const result = await runGraphql(body.data, gqlContext(ctx, principal), ctx.log);
    return reply.code(result.status).send(result.body);
  });
};
