import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { StowageError } from '../../errors.js';
import type { Principal } from '../auth/api-keys.js';
import type { ControlContext } from '../context.js';
import { createDistribute } from '../operations/distribute.js';
import { type PushParams, createPush } from '../operations/push.js';
import { streamTaskEvents } from '../tasks/sse.js';
import { type Operation, distributeRequestSchema, operationKinds, operationStatuses, pushRequestSchema, uploadFinishedSchema } from '../wire.js';
import { parseWith } from './errors.js';
import { CLUSTER_ROLES, canSeeOperation, requireUser } from './guards.js';

const listQuery = z.object({
  kind: z.enum(operationKinds).optional(),
  status: z.enum(operationStatuses).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
});

/** Creating, following and listing operations. */
export function operationRoutes(app: FastifyInstance, ctx: ControlContext): void {
  app.post('/api/v1/operations/distribute', async (request, reply) => {
    const user = await requireUser(ctx, request, CLUSTER_ROLES);
    const req = parseWith(distributeRequestSchema, request.body);
    const operation = await createDistribute(ctx, req, user.name);
    ctx.runner.start(operation.id);
    return reply.code(202).send({ operation });
  });

  app.post('/api/v1/operations/push', async (request, reply) => {
    const user = await requireUser(ctx, request, CLUSTER_ROLES);
    const req = parseWith(pushRequestSchema, request.body);
    const created = await createPush(ctx, req, user.name);
    ctx.runner.start(created.operation.id);
    return reply.code(201).send(created);
  });

  app.post<{ Params: { id: string } }>('/api/v1/operations/:id/upload-finished', async (request) => {
    await requireUser(ctx, request, CLUSTER_ROLES);
    const report = parseWith(uploadFinishedSchema, request.body);
    const op = await ctx.operations.require(request.params.id);
    const params = op.kind === 'push' ? await ctx.operations.params<PushParams>(op.id) : undefined;
    if (!params || op.stage !== 'uploading' || params.upload_report) {
      throw new StowageError('CONFLICT', `operation ${op.id} is not waiting for an upload (it is ${op.kind}, ${op.status}, ${op.stage})`);
    }
    // Kept first, so a restart acts on this report instead of waiting for one that will not come again.
    await ctx.operations.setParams(op.id, { ...params, upload_report: report });
    if (!ctx.uploads.report(op.id, report)) ctx.uploads.onUnheard?.(op.id);
    return { operation: await ctx.operations.require(op.id) };
  });

  app.post<{ Params: { id: string } }>('/api/v1/operations/:id/cancel', async (request) => {
    const user = await requireUser(ctx, request);
    await visibleOperation(ctx, user, request.params.id);
    const operation = await ctx.runner.cancel(request.params.id, user.name);
    // Its grants are refused on the online agents before this answers (the runner told them already; this waits).
    await ctx.revocations.revokeOperation(operation.id);
    return { operation };
  });

  app.get('/api/v1/operations', async (request) => {
    await requireUser(ctx, request, CLUSTER_ROLES);
    const q = parseWith(listQuery, request.query);
    return { operations: await ctx.operations.list(q) };
  });

  app.get<{ Params: { id: string } }>('/api/v1/operations/:id', async (request) => {
    return { operation: await visibleOperation(ctx, await requireUser(ctx, request), request.params.id) };
  });

  app.get<{ Params: { id: string } }>('/api/v1/operations/:id/events', async (request, reply) => {
    await visibleOperation(ctx, await requireUser(ctx, request), request.params.id);
    await streamTaskEvents(ctx, reply, request.params.id, { heartbeatMs: ctx.config.events.keepaliveMs, throttleMs: ctx.config.events.throttleMs });
    return reply;
  });
}

/** The operation, when the caller may see it; another user's operation is as unknown as a missing one. */
async function visibleOperation(ctx: ControlContext, principal: Principal, id: string): Promise<Operation> {
  const op = await ctx.operations.get(id);
  if (!op || !canSeeOperation(principal, op.actor)) throw new StowageError('OPERATION_NOT_FOUND', `no operation ${id}`);
  return op;
}
