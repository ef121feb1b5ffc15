import type { FastifyError, FastifyInstance } from 'fastify';
import { ZodError, type ZodType, type ZodTypeDef } from 'zod';
import { StowageError, isStowageError, storageFullOr } from '../../errors.js';
import { describeIssues } from '../../validation.js';
import type { ErrorBody } from '../wire.js';

/** Every error of /api/v1 and /agent/v1 as `{error: {code, message, details?}}` with its status. */
export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((caught: FastifyError | Error, request, reply) => {
    // A write the full disk refused (SQLITE_FULL, ENOSPC) is 507 INSUFFICIENT_STORAGE, not an internal error.
    const err = storageFullOr(caught, "the control plane's database") as FastifyError | Error;
    const body = toErrorBody(err);
    const status = isStowageError(err) ? err.status : err instanceof ZodError ? 400 : ((err as FastifyError).statusCode ?? 500);
    if (status >= 500) request.log.error({ err }, 'request failed');
    void reply.code(status).send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}` } });
  });
}

export function toErrorBody(err: unknown): ErrorBody {
  if (isStowageError(err)) return { error: { code: err.code, message: err.message, ...(err.details ? { details: err.details } : {}) } };
  if (err instanceof ZodError) {
    return { error: { code: 'BAD_REQUEST', message: describeIssues(err, '(body)') } };
  }
  const fe = err as FastifyError;
  if (fe.statusCode !== undefined && fe.statusCode < 500) return { error: { code: fe.code ?? 'BAD_REQUEST', message: fe.message } };
  return { error: { code: 'INTERNAL', message: 'internal error' } };
}

/** Parses a body or query with a wire schema; a mismatch is a 400 naming the fields. */
export function parseWith<T>(schema: ZodType<T, ZodTypeDef, unknown>, input: unknown): T {
  const parsed = schema.safeParse(input ?? {});
  if (!parsed.success) {
    throw new StowageError('BAD_REQUEST', describeIssues(parsed.error, '(body)'));
  }
  return parsed.data;
}
