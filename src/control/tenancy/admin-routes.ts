import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { StowageError, isStowageError } from '../../errors.js';
import { type Principal, createApiKey, createUser } from '../auth/api-keys.js';
import { type RegistryInput, RegistryStore, publicRegistry } from '../catalog/registries.js';
import type { ControlContext } from '../context.js';
import { authenticateRequest } from './authenticate.js';
import { type IssuedKeypair, KeypairStore } from './keypairs.js';
import { TenancyStore } from './store.js';

/**
 * Superadmin REST for what the catalog and tenancy need (JSON; errors {error: {code, message}}):
 *
 *   GET    /api/v1/admin/registries                         → {registries: [...]} (no passwords)
 *   PUT    /api/v1/admin/registries/:name                   {url?, username?, password?, insecure?, project?}
 *   DELETE /api/v1/admin/registries/:name                   (its catalog rows go too)
 *   GET    /api/v1/admin/domains                            → {domains: [...]}
 *   PUT    /api/v1/admin/domains/:name                      {allowed_registries: [...]}
 *   PUT    /api/v1/admin/domains/:domain/groups/:name       {allowed_scaling_groups: [...]}
 *   POST   /api/v1/admin/users                              {name, role, domain?, groups?} → {user, api_key, keypair}
 *   POST   /api/v1/admin/domains/:domain/groups/:name/members {user_id}
 */

const userSchema = z
  .object({
    name: z.string().min(1).max(128),
    role: z.enum(['superadmin', 'admin', 'user']),
    domain: z.string().optional(),
    groups: z.array(z.string()).max(1000).default([]),
  })
  .strict();

function parse<S extends z.ZodTypeAny>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new StowageError('BAD_REQUEST', `invalid body: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`);
  }
  return r.data;
}

function param(req: FastifyRequest, name: string): string {
  return String((req.params as Record<string, unknown>)[name] ?? '');
}

export const adminRoutes: FastifyPluginAsync<{ ctx: ControlContext }> = async (app, opts) => {
  const { ctx } = opts;
  const registries = new RegistryStore(ctx.db);
  const tenancy = new TenancyStore(ctx.db);

  /** Every admin route: superadmin only; StowageErrors become {error} with their status. */
  const route =
    (fn: (req: FastifyRequest, who: Principal) => unknown) =>
    async (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
      try {
        const who = await authenticateRequest(ctx, req);
        if (!who) throw new StowageError('UNAUTHORIZED', 'credentials are required: Authorization: Bearer <API key>, or a Backend.AI keypair signature');
        if (who.role !== 'superadmin') throw new StowageError('FORBIDDEN', `the admin API needs the superadmin role; ${who.name} is ${who.role}`);
        return await fn(req, who);
      } catch (err) {
        if (!isStowageError(err)) throw err;
        return reply.code(err.status).send({ error: err.toJSON() });
      }
    };

  app.get('/api/v1/admin/registries', route(async () => ({ registries: (await registries.list()).map(publicRegistry) })));
  app.put(
    '/api/v1/admin/registries/:name',
    route(async (req) => publicRegistry(await registries.put({ ...(req.body as Record<string, unknown>), name: param(req, 'name') } as RegistryInput))),
  );
  app.delete(
    '/api/v1/admin/registries/:name',
    route(async (req) => {
      if (!(await registries.delete(param(req, 'name')))) await registries.require(param(req, 'name'));
      return { deleted: param(req, 'name') };
    }),
  );
  app.get(
    '/api/v1/admin/domains',
    route(async () => {
      const domains = await tenancy.listDomains();
      const groups = [];
      for (const d of domains) groups.push(...(await tenancy.groupsIn(d.name)));
      return { domains, groups };
    }),
  );
  app.put(
    '/api/v1/admin/domains/:name',
    route((req) => tenancy.putDomain(param(req, 'name'), parse(z.object({ allowed_registries: z.array(z.string()) }).strict(), req.body).allowed_registries)),
  );
  app.put(
    '/api/v1/admin/domains/:domain/groups/:name',
    route((req) =>
      tenancy.putGroup(
        param(req, 'domain'),
        param(req, 'name'),
        parse(z.object({ allowed_scaling_groups: z.array(z.string()) }).strict(), req.body).allowed_scaling_groups,
      ),
    ),
  );
  app.post(
    '/api/v1/admin/users',
    route(async (req) => {
      const u = parse(userSchema, req.body);
      if (u.domain) await tenancy.requireDomain(u.domain);
      const out: { user: Principal; api_key: string; keypair: IssuedKeypair } = await ctx.db.transaction(async (tx) => {
        const user = await createUser(tx, { name: u.name, role: u.role, domain: u.domain ?? null });
        for (const g of u.groups) await new TenancyStore(tx).addMember(u.domain ?? '', g, user.userId);
        // Secrets are in this answer only: the API key is kept hashed, the keypair's secret sealed.
        return { user, api_key: await createApiKey(tx, user.userId), keypair: await new KeypairStore(tx).create(user.userId) };
      });
      return out;
    }),
  );
  app.post(
    '/api/v1/admin/domains/:domain/groups/:name/members',
    route(async (req) => {
      const { user_id } = parse(z.object({ user_id: z.string().min(1) }).strict(), req.body);
      await tenancy.addMember(param(req, 'domain'), param(req, 'name'), user_id);
      return { domain: param(req, 'domain'), group: param(req, 'name'), user_id };
    }),
  );
};
