import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { z } from 'zod';
import { StowageError } from '../../errors.js';
import { keyId, revokeApiKey } from '../auth/api-keys.js';
import type { ControlContext } from '../context.js';
import { parseWith } from './errors.js';
import { requireUser } from './guards.js';

const revokeKeySchema = z.object({ key: z.string().min(1).max(256) }).strict();

/** Who the API key belongs to: the dashboard's login checks a key here and shows what the role may do. */
export function sessionRoutes(app: FastifyInstance, ctx: ControlContext): void {
  app.get('/api/v1/whoami', async (request) => {
    const { name, role, domain } = await requireUser(ctx, request);
    return { user: { name, role, domain } };
  });

  // POST /api/v1/api-keys/revoke {key: <the key, or its ID>}: anyone may revoke their own key, the
  // superadmin any key. From the next request on, the key and every registry token issued for it are refused,
  // on the control plane and on every online agent (told before this answers; the others at their next heartbeat).
  app.post('/api/v1/api-keys/revoke', async (request) => {
    const caller = await requireUser(ctx, request);
    const { key } = parseWith(revokeKeySchema, request.body);
    const id = key.startsWith('stk_') ? keyId(key) : key;
    const owner = (await ctx.db.get<{ user_id: string }>(sql`SELECT user_id FROM api_keys WHERE substr(key_hash, 1, 16) = ${id}`))?.user_id;
    if (owner === undefined) throw new StowageError('BAD_REQUEST', `no API key ${id.slice(0, 64)}`, { status: 404 });
    if (caller.role !== 'superadmin' && owner !== caller.userId) throw new StowageError('FORBIDDEN', `${caller.name} may revoke only their own API keys`);
    await revokeApiKey(ctx.db, id);
    await ctx.revocations.revokeKey(id);
    return { revoked: { key_id: id } };
  });
}
