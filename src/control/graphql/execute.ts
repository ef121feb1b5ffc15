import { GraphQLError, type ExecutionResult, execute, parse, specifiedRules, validate } from 'graphql';
import type { Logger } from 'pino';
import { isStowageError } from '../../errors.js';
import type { GqlContext } from './context.js';
import { type QueryLimits, DEFAULT_LIMITS, checkLimits, checkQuerySize } from './limits.js';
import { adminSchema } from './schema.js';

/**
 * One GraphQL request, start to end: size check, parse (token-bounded), complexity limits, validation,
 * variable bounds, execution. Only a request past the limits (QUERY_TOO_COMPLEX) answers 400; everything
 * else answers 200 with {data?, errors?} as Backend.AI's manager does, including syntax and validation
 * errors and variables of the wrong type (BAD_USER_INPUT). Every error carries extensions.code:
 * StowageError codes pass through; only a resolver's unexpected failure is logged (at error level) and
 * shown as INTERNAL without its details.
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
    const error = toGraphqlError(err, log);
    return { status: error.extensions['code'] === 'QUERY_TOO_COMPLEX' ? 400 : 200, body: { errors: [error] } };
  }
  const invalid = validate(adminSchema, document, specifiedRules);
  if (invalid.length > 0) return { status: 200, body: { errors: invalid.map((e) => withCode(e, 'GRAPHQL_VALIDATION_FAILED')) } };
  const tooDeep = variablesTooDeep(req.variables, limits.maxValueDepth);
  if (tooDeep) return { status: 200, body: { errors: [new GraphQLError(tooDeep, { extensions: { code: 'BAD_USER_INPUT' } })] } };
  const result = await execute({
    schema: adminSchema,
    document,
    contextValue: context,
    variableValues: req.variables ?? undefined,
    operationName: req.operationName ?? undefined,
  });
  const errors = result.errors?.map((e) => toGraphqlError(e, log));
  return { status: 200, body: errors ? { ...result, errors } : result };
}

/** A message when a variable value nests lists or objects deeper than `max` (walked without recursion). */
function variablesTooDeep(variables: GqlRequest['variables'], max: number): string | undefined {
  const stack: Array<{ value: unknown; depth: number }> = [{ value: variables ?? {}, depth: 0 }];
  while (stack.length > 0) {
    const { value, depth } = stack.pop() as { value: unknown; depth: number };
    if (value === null || typeof value !== 'object') continue;
    if (depth > max) return `variables nest lists or objects more than ${max} levels deep`;
    for (const v of Array.isArray(value) ? value : Object.values(value)) stack.push({ value: v, depth: depth + 1 });
  }
  return undefined;
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
  // Coercing the request's input (a variable of the wrong type, a scalar that refuses a value) fails
  // before any resolver runs, with no path: the caller's mistake, reported with graphql's own message.
  if (base && base.path === undefined) return withCode(new GraphQLError(base.message, { nodes: base.nodes, source: base.source, positions: base.positions }), 'BAD_USER_INPUT');
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
