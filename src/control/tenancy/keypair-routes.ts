import { sql } from 'kysely';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { StowageError, isStowageError } from '../../errors.js';
import type { Principal } from '../auth/api-keys.js';
import type { ControlContext } from '../context.js';
import { callerOf, requireCaller } from './authenticate.js';
import { KeypairStore } from './keypairs.js';

/**
 * Keypair administration (JSON; errors {error: {code, message}}). A superadmin manages every user's
 * keypairs; a domain admin those of its domain's users; nobody else. Secrets appear only in the answers
 * that make them:
 *
 *   GET    /api/v1/admin/keypairs[?user_id=…]            → {keypairs: [{access_key, user_id, user_name, is_active, …}]}
 *   POST   /api/v1/admin/users/:id/keypairs               → {access_key, secret_key}
 *   POST   /api/v1/admin/keypairs/:access_key/rotate      → {access_key, secret_key} (the old secret stops working)
 *   DELETE /api/v1/admin/keypairs/:access_key             → {deleted}
 */

export const keypairRoutes: FastifyPluginAsync<{ ctx: ControlContext }> = async (app, opts) => {
  const { ctx } = opts;

  const mayManage = async (who: Principal, userId: string): Promise<void> => {
    if (who.role === 'superadmin') return;
    const domain = (await ctx.db.get<{ domain: string | null }>(sql`SELECT domain FROM users WHERE id = ${userId}`))?.domain;
    if (who.role !== 'admin' || domain === undefined || domain === null || domain !== who.domain) {
      throw new StowageError('FORBIDDEN', `${who.name} may not manage the keypairs of user ${userId}`);
    }
  };
  const ownerOf = async (accessKey: string): Promise<string> => {
    const kp = await new KeypairStore(ctx.db).get(accessKey);
    if (!kp) throw new StowageError('BAD_REQUEST', `no keypair ${accessKey.slice(0, 40)}`, { status: 404 });
    return kp.user_id;
  };

  const route =
    (fn: (req: FastifyRequest, who: Principal) => unknown) =>
    async (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
      try {
        const who = callerOf(req);
        if (who.role === 'user') throw new StowageError('FORBIDDEN', `keypairs are managed by admins; ${who.name} is a user`);
        return await fn(req, who);
      } catch (err) {
        if (!isStowageError(err)) throw err;
        return reply.code(err.status).send({ error: err.toJSON() });
      }
    };
  const param = (req: FastifyRequest, name: string) => String((req.params as Record<string, unknown>)[name] ?? '');
  const first = { onRequest: requireCaller(ctx) };

  app.get(
    '/api/v1/admin/keypairs',
    first,
    route(async (req, who) => {
      const userId = (req.query as Record<string, unknown>)['user_id'];
      const filter = { ...(typeof userId === 'string' ? { userId } : {}), ...(who.role === 'admin' ? { domain: who.domain ?? '\u0000' } : {}) };
      return { keypairs: await new KeypairStore(ctx.db).list(filter) };
    }),
  );
  app.post(
    '/api/v1/admin/users/:id/keypairs',
    first,
    route(async (req, who) => {
      await mayManage(who, param(req, 'id'));
      return new KeypairStore(ctx.db).create(param(req, 'id'));
    }),
  );
  app.post(
    '/api/v1/admin/keypairs/:access_key/rotate',
    first,
    route(async (req, who) => {
      await mayManage(who, await ownerOf(param(req, 'access_key')));
      return new KeypairStore(ctx.db).rotate(param(req, 'access_key'));
    }),
  );
  app.delete(
    '/api/v1/admin/keypairs/:access_key',
    first,
    route(async (req, who) => {
      await mayManage(who, await ownerOf(param(req, 'access_key')));
      await new KeypairStore(ctx.db).delete(param(req, 'access_key'));
      return { deleted: param(req, 'access_key') };
    }),
  );
};
