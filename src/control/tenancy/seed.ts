import { z } from 'zod';
import { createApiKey, createUser, userByName } from '../auth/api-keys.js';
import { registryInputSchema, RegistryStore } from '../catalog/registries.js';
import type { Db } from '../db/database.js';
import { TenancyStore } from './store.js';

/**
 * A declarative seed for registries and tenancy, applied at startup (or by tests): everything is upserted,
 * nothing is deleted. Users are created once (an existing name is left as it is, keys included).
 *
 *   { "registries": [{ "name": "127.0.0.1:5000", "url": "http://127.0.0.1:5000" }],
 *     "domains": [{ "name": "research", "allowed_registries": ["127.0.0.1:5000"] }],
 *     "groups": [{ "domain": "research", "name": "ml", "allowed_scaling_groups": ["gpu"] }],
 *     "users": [{ "name": "alice", "role": "user", "domain": "research", "groups": ["ml"] }] }
 */

export const catalogSeedSchema = z
  .object({
    registries: z.array(registryInputSchema).max(1000).default([]),
    domains: z.array(z.object({ name: z.string(), allowed_registries: z.array(z.string()).default([]) }).strict()).max(1000).default([]),
    groups: z
      .array(z.object({ domain: z.string(), name: z.string(), allowed_scaling_groups: z.array(z.string()).default([]) }).strict())
      .max(10_000)
      .default([]),
    users: z
      .array(
        z
          .object({
            name: z.string().min(1).max(128),
            role: z.enum(['superadmin', 'admin', 'user']),
            domain: z.string().optional(),
            groups: z.array(z.string()).default([]),
          })
          .strict(),
      )
      .max(10_000)
      .default([]),
  })
  .strict();
export type CatalogSeed = z.input<typeof catalogSeedSchema>;

/** Applies the seed in one transaction; returns API keys of the users it created, by name. */
export async function applyCatalogSeed(db: Db, input: CatalogSeed): Promise<Record<string, string>> {
  const seed = catalogSeedSchema.parse(input);
  const keys: Record<string, string> = {};
  await db.transaction(async (tx) => {
    const registries = new RegistryStore(tx);
    const tenancy = new TenancyStore(tx);
    for (const r of seed.registries) await registries.put(r);
    for (const d of seed.domains) await tenancy.putDomain(d.name, d.allowed_registries);
    for (const g of seed.groups) await tenancy.putGroup(g.domain, g.name, g.allowed_scaling_groups);
    for (const u of seed.users) {
      if (await userByName(tx, u.name)) continue;
      if (u.domain) await tenancy.requireDomain(u.domain);
      const user = await createUser(tx, { name: u.name, role: u.role, domain: u.domain ?? null });
      for (const g of u.groups) await tenancy.addMember(u.domain ?? '', g, user.userId);
      keys[u.name] = await createApiKey(tx, user.userId);
    }
  });
  return keys;
}
