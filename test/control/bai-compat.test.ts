import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import { createApiKey, userByName } from '../../src/control/auth/api-keys.js';
import { RegistryStore } from '../../src/control/catalog/registries.js';
import { KeypairStore } from '../../src/control/tenancy/keypairs.js';
import { applyCatalogSeed } from '../../src/control/tenancy/seed.js';
import type { InventoryItem } from '../../src/control/wire.js';
import { makeTestImage, skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { tmpDir } from '../harness/tmp.js';
import { BackendAiClient, type Keypair, type SseMessage, fetchEvents } from './bai-client.js';
import { type CatalogPlane, type LabelledImages, operationOfTask, pushLabelledImages, startCatalogPlane } from './catalog-harness.js';

/**
 * Backend.AI drop-in: the GraphQL documents Backend.AI's own clients send, verbatim (text, variables,
 * field selections), HMAC-signed as its SDK signs them, against /admin/gql; its SSE loop following a
 * rescan to server_close; its version handshake; and the same refusals as before, as GraphQL errors.
 *
 * Sources: lablup/backend.ai 23.09 (client/func/image.py, cli/admin/image.py, func/bgtask.py,
 * request.py, auth.py) and 26.8 (func/image.py), and lablup/backend.ai-webui's Image.list and its callers.
 */

const SDK_2309 = 'v7.20230615';
const SDK_NEWEST = 'v9.20250722';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** ai.backend.client.output.fields image_fields: the SDK's default list fields (FieldSpec.field_ref). */
const DEFAULT_FIELDS = 'name registry architecture tag digest size_bytes aliases';

// 23.09 client SDK (func/image.py), as the strings concatenate.
const SDK23_LIST = 'query($is_operation: Boolean) {  images(is_operation: $is_operation) {    $fields  }}'.replace('$fields', DEFAULT_FIELDS);
const SDK23_RESCAN = 'mutation($registry: String) {  rescan_images(registry:$registry) {   ok msg task_id  }}';
const SDK23_ALIAS = 'mutation($alias: String!, $target: String!) {  alias_image(alias: $alias, target: $target) {   ok msg  }}';
const SDK23_DEALIAS = 'mutation($alias: String!) {  dealias_image(alias: $alias) {   ok msg  }}';

// Newest client SDK (func/image.py, dedented).
const d = (s: string) => `\n${s}\n`;
const NEW_GET = d(`query($reference: String!, $architecture: String!) {
    image(reference: $reference, architecture: $architecture) {
        ${DEFAULT_FIELDS}
    }
}`);
const NEW_GET_BY_ID = d(`query($id: String!) {
    image(id: $id) {
        ${DEFAULT_FIELDS}
    }
}`);
const NEW_CUSTOMIZED = d(`query {
    customized_images {
        ${DEFAULT_FIELDS}
    }
}`);
const NEW_RESCAN = d(`mutation($registry: String, $project: String) {
    rescan_images(registry:$registry, project: $project) {
       ok msg task_id
    }
}`);
const NEW_FORGET_BY_ID = d(`mutation($image_id: String!) {
    forget_image_by_id(image_id: $image_id) {
        ok msg
    }
}`);
const NEW_PURGE_BY_ID = d(`mutation($image_id: String!, $options: PurgeImageOptions) {
    purge_image_by_id(image_id: $image_id, options: $options) {
        image {
            ${DEFAULT_FIELDS}
        }
    }
}`);
const NEW_UNTAG = d(`mutation($image_id: String!) {
    untag_image_from_registry(image_id: $image_id) {
        ok msg
    }
}`);
const NEW_FORGET = d(`mutation($reference: String!, $architecture: String!) {
    forget_image(reference: $reference, architecture: $architecture) {
       ok msg
    }
}`);

// Web UI (backend.ai-client-esm Image.list and its callers' field lists).
const WEB_LIST_INSTALLED = (fields: string[]) => `query($installed:Boolean) {  images(is_installed:$installed) { ${fields.join(' ')} }}`;
const WEB_LIST_ALL = (fields: string[]) => `query {  images { ${fields.join(' ')} }}`;
const WEB_ENV_FIELDS = ['name', 'tag', 'registry', 'architecture', 'digest', 'installed', 'labels { key value }', 'resource_limits { key min max }'];
const WEB_LAUNCHER_FIELDS = ['name', 'humanized_name', 'tag', 'registry', 'architecture', 'digest', 'installed', 'resource_limits { key min max }', 'labels { key value }'];
const WEB_DEFAULT_FIELDS = ['name', 'tag', 'registry', 'digest', 'installed', 'labels { key value }', 'resource_limits { key min max }'];

// The manager schema's preload_image shape (models/image.py PreloadImage).
const MANAGER_PRELOAD = 'mutation($references: [String]!, $target_agents: [String]!) { preload_image(references: $references, target_agents: $target_agents) { ok msg task_id } }';

interface Img {
  id?: string;
  name: string;
  registry: string;
  architecture: string;
  tag: string;
  digest: string;
  size_bytes: number;
  aliases: string[];
  installed?: boolean;
  humanized_name?: string;
  labels?: Array<{ key: string; value: string }>;
  resource_limits?: Array<{ key: string; min: string; max: string | null }>;
}

let reg: TestRegistry;
let plane: CatalogPlane;
let images: LabelledImages;
let kp: Record<string, Keypair>;
let root: BackendAiClient;

const client = (who: string, version = SDK_2309, clockOffsetMs = 0) => new BackendAiClient(plane.url, kp[who]!, version, clockOffsetMs);

/** The port of the SDK's SSE loop over a task: every message until it stops by itself. */
async function follow(c: BackendAiClient, taskId: string): Promise<{ messages: SseMessage[]; connections: number }> {
  const messages: SseMessage[] = [];
  let connections = 0;
  const connect = async () => {
    const r = await c.connectEvents(taskId);
    expect(r.status).toBe(200);
    return r.body as AsyncIterable<Buffer>;
  };
  for await (const m of fetchEvents(connect, { maxConnections: 3, sleep: (s) => new Promise((r) => setTimeout(r, s * 100)), onConnect: () => connections++ })) messages.push(m);
  return { messages, connections };
}

beforeAll(async () => {
  reg = await startRegistry();
  images = await pushLabelledImages(reg.host);
  // Not a Backend.AI image (no ai.backend.kernelspec): 23.09 skips it.
  const plain = await tmpDir('stowage-layout-');
  await makeTestImage(plain, { layers: 1, layerBytes: 128, tag: 'x', labels: { 'org.example': 'yes' } });
  await skopeo(['copy', `oci:${plain}:x`, `docker://${reg.host}/test/plain:1`]);
  plane = await startCatalogPlane({ offlineAfterMs: 3_600_000 });
  await new RegistryStore(plane.ctx.db).put({ name: reg.host, url: reg.url });
  await applyCatalogSeed(plane.ctx.db, {
    domains: [{ name: 'research', allowed_registries: [reg.host] }],
    users: [
      { name: 'root', role: 'superadmin' },
      { name: 'ada', role: 'admin', domain: 'research' },
      { name: 'alice', role: 'user', domain: 'research' },
    ],
  });
  const keypairs = new KeypairStore(plane.ctx.db);
  kp = {};
  for (const n of ['root', 'ada', 'alice']) kp[n] = await keypairs.create((await userByName(plane.ctx.db, n))!.userId);
  root = client('root');
  expect(await root.negotiate()).toMatchObject({ version: SDK_2309 });
}, 120_000);

afterAll(async () => {
  await plane?.close();
  await reg?.stop();
});

describe('Backend.AI 23.09 client SDK and CLI, signed', () => {
  it('GET / answers the version handshake; the client speaks v7.20230615', async () => {
    const res = await request(plane.url, { headers: { 'user-agent': 'Backend.AI Client for Python' } });
    expect(res.statusCode).toBe(200);
    expect(await res.body.json()).toEqual({ version: 'v7.20230615', manager: expect.any(String) });
    const newest = client('root', SDK_NEWEST);
    await newest.negotiate();
    expect(newest.apiVersion).toBe('v7.20230615');
  });

  it('rescan (all registries, as `backend.ai admin image rescan` without -r) is followed to server_close by the client loop', async () => {
    const r = await root.query<{ rescan_images: { ok: boolean; msg: string; task_id: string } }>(SDK23_RESCAN, { registry: null });
    expect(r.status).toBe(200);
    expect(r.body.errors).toBeUndefined();
    const { ok, task_id } = r.body.data!.rescan_images;
    expect(ok).toBe(true);
    expect(task_id).toMatch(UUID_RE);
    const { messages, connections } = await follow(root, task_id);
    expect(connections).toBe(1);
    expect(messages.at(-1)).toEqual({ event: 'server_close', data: '{}', id: null, retry: null });
    const done = messages.at(-2)!;
    expect(done.event).toBe('bgtask_done');
    const payload = JSON.parse(done.data) as Record<string, unknown>;
    expect(payload).toMatchObject({ task_id, message: expect.stringContaining('without an ai.backend.kernelspec label'), current_progress: 6, total_progress: 6 });
    // What the CLI reads of bgtask_updated: total_progress, message, current_progress; retry hint 5.
    const updates = messages.filter((m) => m.event === 'bgtask_updated');
    for (const u of updates) {
      expect(u.retry).toBe(5);
      expect(JSON.parse(u.data)).toMatchObject({ task_id, message: expect.any(String), current_progress: expect.any(Number), total_progress: expect.any(Number) });
    }
    expect((await operationOfTask(plane, task_id))?.status).toBe('succeeded');

    // Subscribing after the end: the final event and server_close at once.
    const again = await follow(root, task_id);
    expect(again.messages.map((m) => m.event)).toEqual(['bgtask_done', 'server_close']);
  });

  it('rescan of one registry (-r)', async () => {
    const r = await root.query<{ rescan_images: { ok: boolean; task_id: string } }>(SDK23_RESCAN, { registry: reg.host });
    expect(r.body.data?.rescan_images.ok).toBe(true);
    const { messages } = await follow(root, r.body.data!.rescan_images.task_id);
    expect(messages.slice(-2).map((m) => m.event)).toEqual(['bgtask_done', 'server_close']);
  });

  it('list, with and without --operation: one row per architecture, Backend.AI field semantics', async () => {
    const all = await root.query<{ images: Img[] }>(SDK23_LIST, { is_operation: false });
    expect(all.status).toBe(200);
    expect(all.body.errors).toBeUndefined();
    const rows = all.body.data!.images;
    expect(rows.map((i) => `${i.name}:${i.tag}/${i.architecture}`).sort()).toEqual(
      ['test/app:1/x86_64', 'test/multi:1/aarch64', 'test/multi:1/x86_64', 'test/old:1/x86_64'].sort(),
    );
    const app = rows.find((i) => i.name === 'test/app')!;
    expect(app).toEqual({
      name: 'test/app',
      registry: reg.host,
      architecture: 'x86_64',
      tag: '1',
      digest: images.app.configDigest,
      size_bytes: images.app.configSize + images.app.layers.reduce((n, l) => n + l.size, 0),
      aliases: [],
    });
    expect(rows.find((i) => i.architecture === 'aarch64')?.digest).toBe(images.multi.children[1]!.configDigest);
    const ops = await root.query<{ images: Img[] }>(SDK23_LIST, { is_operation: true });
    expect(ops.body.data!.images.map((i) => i.name)).toEqual(['test/system']);
  });

  it('alias (also with --arch) and dealias', async () => {
    const target = `${reg.host}/test/app:1`;
    const a = await root.query<{ alias_image: { ok: boolean; msg: string } }>(SDK23_ALIAS, { alias: 'app', target });
    expect(a.body.data?.alias_image.ok).toBe(true);
    // --arch adds an undeclared "architecture" variable: ignored, as by Backend.AI's server.
    const b = await root.query<{ alias_image: { ok: boolean } }>(SDK23_ALIAS, { architecture: 'x86_64', alias: 'app2', target });
    expect(b.body.data?.alias_image.ok).toBe(true);
    const listed = await root.query<{ images: Img[] }>(SDK23_LIST, { is_operation: false });
    expect(listed.body.data!.images.find((i) => i.name === 'test/app')?.aliases).toEqual(['app', 'app2']);
    for (const alias of ['app', 'app2']) expect((await root.query<{ dealias_image: { ok: boolean } }>(SDK23_DEALIAS, { alias })).body.data?.dealias_image.ok).toBe(true);
    const gone = await root.query<{ dealias_image: { ok: boolean; msg: string } }>(SDK23_DEALIAS, { alias: 'app' });
    expect(gone.body.data?.dealias_image.ok).toBe(false);
  });
});

describe('the newest client SDK, signed', () => {
  let c: BackendAiClient;
  beforeAll(async () => {
    c = client('root', SDK_NEWEST);
    await c.negotiate();
  });

  it('get by reference and architecture, short references, ImageNotFound', async () => {
    for (const [arch, child] of [['x86_64', 0], ['aarch64', 1]] as const) {
      const r = await c.query<{ image: Img }>(NEW_GET, { reference: `${reg.host}/test/multi:1`, architecture: arch });
      expect(r.body.errors).toBeUndefined();
      expect(r.body.data?.image).toMatchObject({ name: 'test/multi', architecture: arch, digest: images.multi.children[child]!.configDigest });
    }
    const short = await c.query<{ image: Img }>(NEW_GET, { reference: 'test/app:1', architecture: 'x86_64' });
    expect(short.body.data?.image.registry).toBe(reg.host);
    const missing = await c.query<{ image: Img | null }>(NEW_GET, { reference: `${reg.host}/test/app:1`, architecture: 'aarch64' });
    expect(missing.status).toBe(200);
    expect(missing.body.data?.image).toBeNull();
    expect(missing.body.errors?.[0]).toMatchObject({ message: expect.stringMatching(/^No such environment image/), extensions: { code: 'IMAGE_NOT_FOUND' } });
  });

  it('get by id, customized images, rescan with a project', async () => {
    const withId = await c.query<{ images: Array<Img & { id: string }> }>(`query { images { id name tag architecture } }`);
    const app = withId.body.data!.images.find((i) => i.name === 'test/app')!;
    expect(app.id).toMatch(UUID_RE);
    const byId = await c.query<{ image: Img }>(NEW_GET_BY_ID, { id: app.id });
    expect(byId.body.data?.image).toMatchObject({ name: 'test/app', tag: '1', architecture: 'x86_64' });
    const custom = await c.query<{ customized_images: Img[] }>(NEW_CUSTOMIZED, {});
    expect(custom.body.data?.customized_images).toEqual([]);
    const r = await c.query<{ rescan_images: { ok: boolean; task_id: string } }>(NEW_RESCAN, { registry: reg.host, project: 'test' });
    expect(r.body.data?.rescan_images.ok).toBe(true);
    const { messages } = await follow(c, r.body.data!.rescan_images.task_id);
    expect(messages.slice(-2).map((m) => m.event)).toEqual(['bgtask_done', 'server_close']);
    expect(JSON.parse(messages.at(-2)!.data).message).toContain('(project test)');
  });

  it('forget_image(reference, architecture) takes one architecture; by id; purge; untag is refused as unsupported', async () => {
    const f = await c.query<{ forget_image: { ok: boolean } }>(NEW_FORGET, { reference: `${reg.host}/test/multi:1`, architecture: 'aarch64' });
    expect(f.body.data?.forget_image.ok).toBe(true);
    const left = await c.query<{ images: Img[] }>(SDK23_LIST, { is_operation: false });
    expect(left.body.data!.images.filter((i) => i.name === 'test/multi').map((i) => i.architecture)).toEqual(['x86_64']);

    const ids = await c.query<{ images: Array<Img & { id: string }> }>(`query { images { id name } }`);
    const old = ids.body.data!.images.find((i) => i.name === 'test/old')!;
    const untag = await c.query<{ untag_image_from_registry: { ok: boolean; msg: string } }>(NEW_UNTAG, { image_id: old.id });
    expect(untag.body.data?.untag_image_from_registry).toEqual({ ok: false, msg: expect.stringContaining('UNSUPPORTED') });
    const purge = await c.query<{ purge_image_by_id: { image: Img } }>(NEW_PURGE_BY_ID, { image_id: old.id, options: { remove_from_registry: false } });
    expect(purge.body.data?.purge_image_by_id.image).toMatchObject({ name: 'test/old', tag: '1' });
    const again = await c.query<{ forget_image_by_id: { ok: boolean; msg: string } }>(NEW_FORGET_BY_ID, { image_id: old.id });
    expect(again.body.data?.forget_image_by_id).toEqual({ ok: false, msg: expect.stringContaining('IMAGE_NOT_FOUND') });
  });
});

describe('the web UI image queries, signed', () => {
  it('installed-only and all lists with their field selections', async () => {
    // An agent holding test/app:1 under its reference (what preload records).
    const item: InventoryItem = {
      digest: images.app.manifestDigest,
      config_digest: images.app.configDigest,
      platform: 'linux/amd64',
      references: [`${reg.host}/test/app:1`],
      size_bytes: 1,
    };
    await plane.ctx.machines.join({ join_token: 'x', name: 'gpu-1', agent_url: 'http://127.0.0.1:9', platform: 'linux/amd64', labels: {}, scaling_group: 'gpu', inventory: [item], inventory_seq: 1 });
    const web = client('alice');
    await web.negotiate();
    const launcher = await web.query<{ images: Img[] }>(WEB_LIST_INSTALLED(WEB_LAUNCHER_FIELDS), { installed: true, is_operation: false });
    expect(launcher.status).toBe(200);
    expect(launcher.body.errors).toBeUndefined();
    expect(launcher.body.data!.images.map((i) => [i.name, i.humanized_name, i.architecture, i.installed])).toEqual([['test/app', 'test/app', 'x86_64', true]]);
    const limits = launcher.body.data!.images[0]!.resource_limits!;
    expect(limits.find((l) => l.key === 'cpu')).toEqual({ key: 'cpu', min: '1', max: '4' });
    const folder = await web.query<{ images: Img[] }>(WEB_LIST_INSTALLED(WEB_DEFAULT_FIELDS), { installed: true, is_operation: true });
    expect(folder.body.data!.images.map((i) => i.name)).toEqual(['test/app']);
    const env = await web.query<{ images: Img[] }>(WEB_LIST_ALL(WEB_ENV_FIELDS), { is_operation: true });
    const envRows = env.body.data!.images;
    expect(envRows.map((i) => i.name).sort()).toEqual(['test/app', 'test/multi', 'test/system']);
    // 23.09's defaults for what the labels leave out: cpu 1, mem 1g.
    expect(envRows.find((i) => i.name === 'test/system')?.resource_limits).toEqual([
      { key: 'cpu', min: '1', max: null },
      { key: 'mem', min: '1g', max: null },
    ]);
    expect(envRows.every((i) => Array.isArray(i.labels))).toBe(true);
  });
});

describe('roles and credentials', () => {
  it('the same refusals as with Bearer keys, as GraphQL errors over HTTP 200', async () => {
    const user = client('alice');
    await user.negotiate();
    const rescan = await user.query(SDK23_RESCAN, { registry: reg.host });
    expect(rescan.status).toBe(200);
    expect(rescan.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const admin = client('ada');
    await admin.negotiate();
    const preload = await admin.query(MANAGER_PRELOAD, { references: [`${reg.host}/test/app:1`], target_agents: ['gpu-1'] });
    expect(preload.status).toBe(200);
    expect(preload.body.errors?.[0]?.extensions?.code).toBe('FORBIDDEN');
    const before = (await plane.ctx.operations.list({ limit: 1000 })).length;
    // An admin may rescan its domain's registries, with no registry named too.
    const own = await admin.query<{ rescan_images: { ok: boolean; task_id: string } }>(SDK23_RESCAN, { registry: null });
    expect(own.body.data?.rescan_images.ok).toBe(true);
    await follow(admin, own.body.data!.rescan_images.task_id);
    expect((await plane.ctx.operations.list({ limit: 1000 })).length).toBe(before + 1);
    // Another user's task is unknown on the event stream.
    const peek = await user.connectEvents(own.body.data!.rescan_images.task_id);
    expect(peek.status).toBe(404);
  });

  it('refuses a wrong secret, a skewed clock, a changed path and an unknown key; Bearer keys still work', async () => {
    const doc = SDK23_LIST;
    const wrong = new BackendAiClient(plane.url, { access_key: kp['root']!.access_key, secret_key: 'x'.repeat(40) }, SDK_2309);
    expect((await wrong.query(doc, { is_operation: false })).status).toBe(401);
    const skewed = client('root', SDK_2309, 20 * 60_000);
    const s = await skewed.query(doc, { is_operation: false });
    expect(s.status).toBe(401);
    expect(s.body.errors?.[0]?.message).toMatch(/more than 15 minutes/);
    expect((await client('root', SDK_2309, 10 * 60_000).query(doc, { is_operation: false })).status).toBe(200);
    const unknown = new BackendAiClient(plane.url, { access_key: 'AKIA0000000000000000', secret_key: kp['root']!.secret_key }, SDK_2309);
    expect((await unknown.query(doc, { is_operation: false })).status).toBe(401);
    // A signature for one path does not open another.
    const signed = await root.connectEvents('00000000-0000-4000-8000-000000000000');
    expect(signed.status).toBe(404);
    const headers = (await import('./bai-client.js')).generateSignature({
      method: 'GET',
      version: SDK_2309,
      hostname: new URL(plane.url).host,
      date: new Date().toISOString(),
      relUrl: '/events/background-task?task_id=a',
      contentType: 'application/octet-stream',
      accessKey: kp['root']!.access_key,
      secretKey: kp['root']!.secret_key,
    });
    const moved = await request(`${plane.url}/events/background-task?task_id=b`, { headers: { authorization: headers, date: new Date().toISOString(), 'x-backendai-version': SDK_2309 } });
    expect(moved.statusCode).toBe(401);
    await moved.body.dump();
    const bearer = await createApiKey(plane.ctx.db, (await userByName(plane.ctx.db, 'root'))!.userId);
    expect((await plane.gql(bearer, '{ images { name } }')).status).toBe(200);
  });

  it('keypairs are listed without secrets and rotated by admins; the old secret stops working at once', async () => {
    const bearer = await createApiKey(plane.ctx.db, (await userByName(plane.ctx.db, 'ada'))!.userId);
    const list = await plane.rest<{ keypairs: Array<Record<string, unknown>> }>(bearer, 'GET', '/api/v1/admin/keypairs');
    expect(list.status).toBe(200);
    // A domain admin sees its domain's users only, and never a secret.
    expect(list.body.keypairs.map((k) => k['user_name']).sort()).toEqual(['ada', 'alice']);
    expect(JSON.stringify(list.body)).not.toContain(kp['alice']!.secret_key);
    const rotated = await plane.rest<Keypair>(bearer, 'POST', `/api/v1/admin/keypairs/${kp['alice']!.access_key}/rotate`);
    expect(rotated.status).toBe(200);
    expect(rotated.body.access_key).toBe(kp['alice']!.access_key);
    expect(rotated.body.secret_key).toMatch(/^[A-Za-z0-9]{40}$/);
    expect((await client('alice').query(SDK23_LIST, { is_operation: false })).status).toBe(401);
    kp['alice'] = rotated.body;
    expect((await client('alice').query(SDK23_LIST, { is_operation: false })).status).toBe(200);
    const refused = await plane.rest<{ error: { code: string } }>(bearer, 'POST', `/api/v1/admin/keypairs/${kp['root']!.access_key}/rotate`);
    expect(refused.status).toBe(403);
    // The database holds no secret in the clear.
    const stored = (await plane.ctx.db.all<{ secret_sealed: string }>(sql`SELECT secret_sealed FROM keypairs`)).map((r) => r.secret_sealed);
    for (const k of Object.values(kp)) expect(stored.some((s) => s.includes(k.secret_key))).toBe(false);
  });
});
