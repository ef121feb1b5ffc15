import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { RegistryStore } from '../../src/control/catalog/registries.js';
import { type ScannedImage, CatalogStore } from '../../src/control/catalog/store.js';
import { type CatalogPlane, startCatalogPlane } from './catalog-harness.js';

/**
 * Aliases against the catalog: a catalog image always wins over an alias spelled like it, an alias that
 * names a catalog image is refused (a GraphQL error, nothing changed), and deleting a registry takes
 * its aliases with its rows. Rows are recorded directly (no registry to scan).
 */

const REG = 'registry.test:5000';
const OTHER = 'other.test:5000';
const digest = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;

function row(registry: string, name: string, tag: string, n: number): ScannedImage {
  return {
    registry,
    name,
    tag,
    platform: 'linux/amd64',
    digest: digest(n),
    index_digest: null,
    config_digest: digest(n + 1000),
    architecture: 'amd64',
    labels: {},
    size_bytes: 1,
    resource_limits: [],
    accelerators: [],
    is_operation: false,
  };
}

let plane: CatalogPlane;
let root: string;
let catalog: CatalogStore;

beforeAll(async () => {
  plane = await startCatalogPlane();
  root = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'root', role: 'superadmin' })).userId);
  catalog = new CatalogStore(plane.ctx.db);
});
afterAll(async () => plane?.close());

beforeEach(async () => {
  const registries = new RegistryStore(plane.ctx.db);
  for (const r of await registries.list()) await registries.delete(r.name);
  await plane.ctx.db.run(sql`DELETE FROM catalog_aliases`);
  await registries.put({ name: REG, insecure: true });
  await registries.put({ name: OTHER, insecure: true });
});

const aliases = async () => [...(await catalog.aliasMap()).entries()];

describe('an alias never shadows a catalog image', () => {
  it('alias_image refuses an alias that names a catalog image, as a GraphQL error, and records nothing', async () => {
    await catalog.applyScan(REG, [row(REG, 'test/a', '1', 1), row(REG, 'test/b', '1', 2), row(REG, 'test/a', 'latest', 3)], new Set());
    for (const alias of [`${REG}/test/a:1`, `${REG}/test/a`, `${REG}/test/a@${digest(1)}`]) {
      const r = await plane.gql<{ alias_image: unknown }>(root, 'mutation($a: String!, $t: String!) { alias_image(alias: $a, target: $t) { ok msg } }', {
        a: alias,
        t: `${REG}/test/b:1`,
      });
      expect(r.status, alias).toBe(200);
      expect(r.body.data?.alias_image, alias).toBeNull();
      expect(r.body.errors?.[0]?.extensions?.code, alias).toBe('CONFLICT');
      expect(r.body.errors?.[0]?.message).toMatch(/already names the catalog image registry\.test:5000\/test\/a:(1|latest)/);
    }
    expect(await aliases()).toEqual([]);
    // The image itself cannot be its own alias either; a plain name still works.
    await expect(catalog.addAlias(`${REG}/test/b:1`, `${REG}/test/b:1`)).rejects.toThrow(/already names the catalog image/);
    const ok = await plane.gql<{ alias_image: { ok: boolean } }>(root, `mutation { alias_image(alias: "bee", target: "${REG}/test/b:1") { ok msg } }`);
    expect(ok.body.data?.alias_image.ok).toBe(true);
  });

  it('an alias made before the image it spells appeared does not redirect forget, image(), preload or unload', async () => {
    await catalog.applyScan(REG, [row(REG, 'test/b', '1', 2)], new Set());
    await catalog.addAlias(`${REG}/test/a:1`, `${REG}/test/b:1`);
    // A later scan finds the real test/a:1.
    await catalog.applyScan(REG, [row(REG, 'test/a', '1', 1), row(REG, 'test/b', '1', 2)], new Set());

    const one = await plane.gql<{ image: { name: string } | null }>(root, `{ image(reference: "${REG}/test/a:1") { name } }`);
    expect(one.body.data?.image?.name).toBe('test/a');
    // What preload_image / unload_image resolve their reference with.
    expect(await catalog.requireKey(`${REG}/test/a:1`)).toEqual({ registry: REG, name: 'test/a', tag: '1' });

    const forget = await plane.gql<{ forget_image: { ok: boolean; msg: string } }>(root, `mutation { forget_image(reference: "${REG}/test/a:1") { ok msg } }`);
    expect(forget.body.data?.forget_image).toEqual({ ok: true, msg: `forgot ${REG}/test/a:1` });
    expect((await catalog.list()).map((r) => `${r.name}:${r.tag}`)).toEqual(['test/b:1']);
  });
});

describe('deleting a registry', () => {
  it('removes its rows and the aliases naming them, and nothing of other registries', async () => {
    await catalog.applyScan(REG, [row(REG, 'test/a', '1', 1)], new Set());
    await catalog.applyScan(OTHER, [row(OTHER, 'test/o', '1', 5)], new Set());
    await catalog.addAlias('a', `${REG}/test/a:1`);
    await catalog.addAlias('o', `${OTHER}/test/o:1`);

    const r = await plane.rest<unknown>(root, 'DELETE', `/api/v1/admin/registries/${encodeURIComponent(REG)}`);
    expect(r.status).toBeLessThan(300);
    expect((await catalog.list()).map((x) => x.registry)).toEqual([OTHER]);
    expect(await catalog.aliasTarget('a')).toBeUndefined();
    expect(await aliases()).toEqual([[`${OTHER}/test/o:1`, ['o']]]);

    // Re-adding the registry and rescanning the same image does not bring a stale alias back.
    await new RegistryStore(plane.ctx.db).put({ name: REG, insecure: true });
    await catalog.applyScan(REG, [row(REG, 'test/a', '1', 1)], new Set());
    expect(await catalog.resolve('a')).toEqual([]);
  });
});
