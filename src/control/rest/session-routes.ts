import type { FastifyInstance } from 'fastify';
import type { ControlContext } from '../context.js';
import { requireUser } from './guards.js';

/** Who the API key belongs to: the dashboard's login checks a key here and shows what the role may do. */
export function sessionRoutes(app: FastifyInstance, ctx: ControlContext): void {
  app.get('/api/v1/whoami', async (request) => {
    const { name, role, domain } = requireUser(ctx, request);
    return { user: { name, role, domain } };
  });
}
