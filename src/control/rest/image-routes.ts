import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { ControlContext } from '../context.js';
import { inspectImage } from '../inspect.js';
import { parseWith } from './errors.js';
import { CLUSTER_ROLES, requireUser } from './guards.js';

const digestParam = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'expected a sha256 digest (sha256:<64 hex>)');
const statusQuery = z.object({ digest: digestParam.optional(), machine: z.string().min(1).optional() });
const inspectQuery = z
  .object({ digest: digestParam.optional(), reference: z.string().min(1).max(512).optional(), machine: z.string().min(1).optional() })
  .refine((q) => q.digest !== undefined || q.reference !== undefined, { message: 'give digest or reference' });

/** Where images are (status) and what they are (inspect). */
export function imageRoutes(app: FastifyInstance, ctx: ControlContext): void {
  app.get('/api/v1/images/status', async (request) => {
    await requireUser(ctx, request, CLUSTER_ROLES);
    const q = parseWith(statusQuery, request.query);
    if (q.machine !== undefined) await ctx.machines.require(q.machine);
    return { records: await ctx.availability.query({ digest: q.digest, machine: q.machine }) };
  });

  app.get('/api/v1/images/inspect', async (request) => {
    await requireUser(ctx, request, CLUSTER_ROLES);
    const q = parseWith(inspectQuery, request.query);
    if (q.machine !== undefined) await ctx.machines.require(q.machine);
    return inspectImage(ctx, q);
  });
}
