import { GraphQLError, type ExecutionResult, execute, parse, specifiedRules, validate } from 'graphql';
import type { Logger } from 'pino';
import { isStowageError } from '../../errors.js';
import type { GqlContext } from './context.js';
import { type QueryLimits, DEFAULT_LIMITS, checkLimits, checkQuerySize } from './limits.js';
import { adminSchema } from './schema.js';

/**
 * One GraphQL request, start to end: size check, parse (token-bounded), complexity limits, validation,
 * execution. Request-level failures (nothing ran) come back as `status: 400`; execution answers 200 with
 * {data, errors}. Every error carries extensions.code: StowageError codes pass through, anything else is
 * logged and shown as INTERNAL without its details.
 */

export interface GqlRequest {
  query: string;
  variables?: Record<string, unknown> | null | undefined;
  operationName?: string | null | undefined;
}

export interface GqlResponse {
  status: number;
  body: ExecutionResult;
}

export async function runGraphql(req: GqlRequest, context: GqlContext, log: Logger, limits: QueryLimits = DEFAULT_LIMITS): Promise<GqlResponse> {
  let document;
  try {
    checkQuerySize(req.query, limits);
    document = parse(req.query, { maxTokens: limits.maxTokens });
    checkLimits(document, limits);
  } catch (err) {
    return { status: 400, body: { errors: [toGraphqlError(err, log)] } };
  }
  const invalid = validate(adminSchema, document, specifiedRules);
  if (invalid.length > 0) return { status: 400, body: { errors: invalid.map((e) => withCode(e, 'GRAPHQL_VALIDATION_FAILED')) } };
  const result = await execute({
    schema: adminSchema,
    document,
    contextValue: context,
    variableValues: req.variables ?? undefined,
    operationName: req.operationName ?? undefined,
  });
  const errors = result.errors?.map((e) => toGraphqlError(e, log));
  // Errors without data mean the request itself was unusable (bad variables, unknown operation).
  const status = result.data === undefined && errors ? 400 : 200;
  return { status, body: errors ? { ...result, errors } : result };
}

function toGraphqlError(err: unknown, log: Logger): GraphQLError {
  const original = err instanceof GraphQLError ? (err.originalError ?? undefined) : err;
  const base = err instanceof GraphQLError ? err : undefined;
  if (isStowageError(original)) {
    return new GraphQLError(original.message, {
      ...(base ? { nodes: base.nodes, path: base.path, source: base.source, positions: base.positions } : {}),
      extensions: { code: original.code, ...(original.details ? { details: original.details } : {}) },
    });
  }
  if (base && original === undefined) {
    // parse() aborts past maxTokens with a syntax error; it is a size limit, reported as one.
    if (/more tha[nt] \d+ tokens/.test(base.message)) return withCode(base, 'QUERY_TOO_COMPLEX');
    return withCode(base, base.message.startsWith('Syntax Error') ? 'GRAPHQL_PARSE_FAILED' : 'BAD_USER_INPUT');
  }
  log.error({ err: original }, 'graphql resolver failed');
  return new GraphQLError('internal error', {
    ...(base ? { nodes: base.nodes, path: base.path } : {}),
    extensions: { code: 'INTERNAL' },
  });
}

function withCode(e: GraphQLError, code: string): GraphQLError {
  if (e.extensions['code']) return e;
  return new GraphQLError(e.message, { nodes: e.nodes, source: e.source, positions: e.positions, path: e.path, extensions: { ...e.extensions, code } });
}
