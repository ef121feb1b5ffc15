import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CatalogStore } from '../../src/control/catalog/store.js';
import { applyCatalogSeed } from '../../src/control/tenancy/seed.js';
import type { InventoryItem } from '../../src/control/wire.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { type CatalogPlane, type LabelledImages, operationOfTask, pushLabelledImages, startCatalogPlane } from './catalog-harness.js';

/**
 * Tenancy over the admin GraphQL API: domains limit registries, groups and scaling groups limit images to
 * those installed on allowed agents, installed_agents is for superadmins and admins, and refused mutations change
 * nothing. Agents join through the real Machines module with their inventory, as the REST join does.
 */

let reg: TestRegistry;
let plane: CatalogPlane;
let images: LabelledImages;
let keys: Record<string, string>;

const fields = '{ name tag digest installed installed_agents }';
interface Img {
  name: string;
  tag: string;
  digest: string;
  installed: boolean;
  installed_agents: string[] | null;
}

/** An agent holding each [platform manifest digest, tag reference] (an image is installed by its reference, as in Backend.AI). */
async function join(name: string, scalingGroup: string, held: Array<[string, string]>): Promise<void> {
  const inventory: InventoryItem[] = held.map(([d, ref]) => ({
    digest: d as InventoryItem['digest'],
    config_digest: d as InventoryItem['digest'],
    platform: 'linux/amd64',
    references: [ref],
    size_bytes: 1,
  }));
  await plane.ctx.machines.join({
    join_token: 'x',
    name,
    agent_url: 'http://127.0.0.1:9',
    platform: 'linux/amd64',
    labels: {},
    scaling_group: scalingGroup,
    inventory,
    inventory_seq: 1,
  });
}

async function list(who: string, args = ''): Promise<{ images?: Img[]; errors?: Array<{ message: string; extensions?: { code?: string } }> }> {
  const r = await plane.gql<{ images: Img[] }>(keys[who], `{ images${args} ${fields} }`);
  return { ...(r.body.data?.images ? { images: r.body.data.images } : {}), ...(r.body.errors ? { errors: r.body.errors } : {}) };
}

beforeAll(async () => {
  reg = await startRegistry();
  images = await pushLabelledImages(reg.host);
  // The agents below never heartbeat: they must not turn offline while the file runs on a loaded machine.
  plane = await startCatalogPlane({ offlineAfterMs: 3_600_000 });
  keys = await applyCatalogSeed(plane.ctx.db, {
    registries: [{ name: reg.host, url: reg.url }],
    domains: [
      { name: 'research', allowed_registries: [reg.host] },
      { name: 'other', allowed_registries: ['registry.other.example'] },
    ],
    groups: [
      { domain: 'research', name: 'ml', allowed_scaling_groups: ['gpu'] },
      { domain: 'research', name: 'web', allowed_scaling_groups: ['cpu'] },
    ],
    users: [
      { name: 'root', role: 'superadmin' },
      { name: 'ada', role: 'admin', domain: 'research' },
      { name: 'alice', role: 'user', domain: 'research', groups: ['ml'] },
      { name: 'olga', role: 'user', domain: 'other' },
      { name: 'oscar', role: 'admin', domain: 'other' },
    ],
  });
  const r = await plane.gql<{ rescan_images: { task_id: string } }>(keys['root'], `mutation { rescan_images(registry: "${reg.host}") { ok task_id } }`);
  expect(r.body.data?.rescan_images.task_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  await plane.ctx.runner.idle();
  // app on a gpu agent; system on a cpu agent; multi's amd64 child on both.
  const amd64: [string, string] = [images.multi.children[0]!.manifestDigest, `${reg.host}/test/multi:1`];
  await join('gpu-1', 'gpu', [[images.app.manifestDigest, `${reg.host}/test/app:1`], amd64]);
  await join('cpu-1', 'cpu', [[images.system.manifestDigest, `${reg.host}/test/system:1`], amd64]);
});

afterAll(async () => {
  await plane?.close();
  await reg?.stop();
});

describe('images visibility', () => {
  it('answers 401 without an API key', async () => {
    const r = await plane.gql(undefined, '{ images { name } }');
    expect(r.status).toBe(401);
    expect(r.body.errors?.[0]?.extensions?.code).toBe('UNAUTHORIZED');
    expect((await plane.gql('stk_not-a-key', '{ images { name } }')).status).toBe(401);
  });

  it('a superadmin sees everything with installed_agents', async () => {
    const { images: all } = await list('root');
    expect(all).toHaveLength(5);
    const app = all!.find((i) => i.name === 'test/app')!;
    expect(app).toMatchObject({ installed: true, installed_agents: ['gpu-1'] });
    const amd64 = all!.find((i) => i.digest === images.multi.children[0]!.configDigest)!;
    expect(amd64.installed_agents).toEqual(['cpu-1', 'gpu-1']);
    const { images: installed } = await list('root', '(is_installed: true)');
    expect(installed!.map((i) => i.name).sort()).toEqual(['test/app', 'test/multi', 'test/system']);
    const { images: notInstalled } = await list('root', '(is_installed: false)');
    expect(notInstalled!.map((i) => i.name).sort()).toEqual(['test/multi', 'test/old']);
  });

  it('a user of a domain without that registry sees nothing', async () => {
    expect((await list('olga')).images).toEqual([]);
    const one = await plane.gql<{ image: unknown }>(keys['olga'], `{ image(reference: "${reg.host}/test/app:1", architecture: "x86_64") { name } }`);
    expect(one.body.data?.image).toBeNull();
    expect(one.body.errors?.[0]?.extensions?.code).toBe('IMAGE_NOT_FOUND');
    const other = await list('olga', '(domain: "research")');
    expect(other.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
  });

  it('a user of the domain sees its registry, without installed_agents', async () => {
    const { images: seen } = await list('alice');
    expect(seen).toHaveLength(5);
    expect(seen!.every((i) => i.installed_agents === null)).toBe(true);
    expect(seen!.find((i) => i.name === 'test/app')?.installed).toBe(true);
  });

  it('an admin of the domain sees installed_agents', async () => {
    const { images: seen } = await list('ada');
    expect(seen!.find((i) => i.name === 'test/app')?.installed_agents).toEqual(['gpu-1']);
  });

  it('group and scaling_group keep images installed on an allowed agent', async () => {
    const ml = await list('alice', '(group: "ml")');
    expect(ml.images!.map((i) => i.name).sort()).toEqual(['test/app', 'test/multi']);
    const gpu = await list('alice', '(scaling_group: "gpu")');
    expect(gpu.images!.map((i) => i.name).sort()).toEqual(['test/app', 'test/multi']);
    // alice is not in "web", and "cpu" is allowed only to "web".
    expect((await list('alice', '(group: "web")')).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    expect((await list('alice', '(scaling_group: "cpu")')).errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    // an admin may use every group of the domain.
    expect((await list('ada', '(group: "web")')).images!.map((i) => i.name).sort()).toEqual(['test/multi', 'test/system']);
    // a superadmin names any scaling group.
    expect((await list('root', '(scaling_group: "cpu")')).images!.map((i) => i.name).sort()).toEqual(['test/multi', 'test/system']);
    expect((await list('root', '(domain: "other")')).images).toEqual([]);
  });

  it("a superadmin's group without a domain narrows to the group's domain's registries too", async () => {
    // "other" does not allow this registry; its group allows the gpu agents, which hold app and multi.
    const put = await plane.rest(keys['root']!, 'PUT', '/api/v1/admin/domains/other/groups/ogpu', { allowed_scaling_groups: ['gpu'] });
    expect(put.status).toBe(200);
    expect((await list('root', '(group: "ogpu")')).images).toEqual([]);
    expect((await list('root', '(group: "ogpu", domain: "other")')).images).toEqual([]);
    // A group of the registry's own domain still shows what its agents hold.
    expect((await list('root', '(group: "ml")')).images!.map((i) => i.name).sort()).toEqual(['test/app', 'test/multi']);
  });
});

describe('mutations', () => {
  const snapshot = async () => ({
    images: await new CatalogStore(plane.ctx.db).list(),
    aliases: [...(await new CatalogStore(plane.ctx.db).aliasMap()).entries()],
    operations: (await plane.ctx.operations.list({ limit: 1000 })).length,
  });

  it('are refused with FORBIDDEN for users and other domains, and change nothing', async () => {
    const before = await snapshot();
    const ref = `${reg.host}/test/app:1`;
    const attempts: Array<[string, string]> = [
      ['olga', `mutation { rescan_images(registry: "${reg.host}") { ok msg task_id } }`],
      ['oscar', `mutation { rescan_images(registry: "${reg.host}") { ok msg task_id } }`],
      ['alice', `mutation { rescan_images(registry: "${reg.host}") { ok msg task_id } }`],
      ['olga', `mutation { alias_image(alias: "mine", target: "${ref}") { ok msg } }`],
      ['ada', `mutation { alias_image(alias: "mine", target: "${ref}") { ok msg } }`],
      ['olga', `mutation { forget_image(reference: "${ref}") { ok msg } }`],
      ['ada', `mutation { forget_image(reference: "${ref}") { ok msg } }`],
      ['olga', `mutation { dealias_image(alias: "mine") { ok msg } }`],
      ['olga', `mutation { preload_image(reference: "${ref}", target_agents: "*") { ok msg task_id } }`],
      ['ada', `mutation { unload_image(reference: "${ref}", target_agents: "*") { ok msg task_id } }`],
    ];
    for (const [who, query] of attempts) {
      const r = await plane.gql(keys[who], query);
      expect(r.status, `${who}: ${query}`).toBe(200);
      expect(r.body.errors?.[0]?.extensions?.code, `${who}: ${query}`).toBe('FORBIDDEN');
      expect(r.body.errors?.[0]?.message).toMatch(/needs the superadmin|not allowed in domain/);
      const data = r.body.data as Record<string, unknown>;
      expect(Object.values(data)).toEqual([null]);
    }
    expect(await snapshot()).toEqual(before);
  });

  it('an admin may rescan the registries of its domain', async () => {
    const r = await plane.gql<{ rescan_images: { ok: boolean; task_id: string } }>(keys['ada'], `mutation { rescan_images(registry: "${reg.host}") { ok msg task_id } }`);
    expect(r.body.errors).toBeUndefined();
    expect(r.body.data?.rescan_images.ok).toBe(true);
    await plane.ctx.runner.idle();
    expect(await operationOfTask(plane, r.body.data!.rescan_images.task_id)).toMatchObject({ status: 'succeeded', actor: 'ada' });
  });
});

describe('admin REST', () => {
  it('creates domains, groups and users for superadmins only', async () => {
    const root = keys['root']!;
    expect((await plane.rest(root, 'PUT', '/api/v1/admin/domains/lab', { allowed_registries: [reg.host] })).status).toBe(200);
    expect((await plane.rest(root, 'PUT', '/api/v1/admin/domains/lab/groups/team', { allowed_scaling_groups: ['gpu'] })).status).toBe(200);
    const u = await plane.rest<{ api_key: string; user: { role: string } }>(root, 'POST', '/api/v1/admin/users', {
      name: 'lab-user',
      role: 'user',
      domain: 'lab',
      groups: ['team'],
    });
    expect(u.status).toBe(200);
    const r = await plane.gql<{ images: Img[] }>(u.body.api_key, '{ images(group: "team") { name } }');
    expect(r.body.data?.images.map((i) => i.name).sort()).toEqual(['test/app', 'test/multi']);

    const refused = await plane.rest<{ error: { code: string } }>(keys['ada']!, 'PUT', '/api/v1/admin/domains/lab', { allowed_registries: [] });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('FORBIDDEN');
    const badGroup = await plane.rest<{ error: { code: string } }>(root, 'PUT', '/api/v1/admin/domains/nope/groups/x', { allowed_scaling_groups: [] });
    expect(badGroup.body.error.code).toBe('DOMAIN_NOT_FOUND');
    const regs = await plane.rest<{ registries: Array<Record<string, unknown>> }>(root, 'GET', '/api/v1/admin/registries');
    expect(regs.body.registries[0]).not.toHaveProperty('password');
  });
});
