import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { registryClient, RegistryStore } from '../../src/control/catalog/registries.js';
import { scanRegistry } from '../../src/control/catalog/scanner.js';
import { CatalogStore } from '../../src/control/catalog/store.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { skopeo } from '../harness/images.js';
import {
  type CatalogPlane,
  type DockerFormatImages,
  type LabelledImages,
  type RegistryProxy,
  collectTaskEvents,
  operationOfTask,
  pushDockerFormatImages,
  pushLabelledImages,
  startCatalogPlane,
  startRegistryProxy,
} from './catalog-harness.js';

/**
 * rescan_images against a real docker-registry holding labelled images: the rows it records, the limits
 * and accelerators derived from labels (OCI and Docker manifests, OCI index and Docker manifest list), a bad
 * tag reported and skipped, a vanished tag removed, and the task's SSE stream. The control plane reaches
 * the registry through a proxy adding 40 ms per request, so a subscriber sees the scan in progress.
 */

const IMAGE_FIELDS = `name humanized_name tag registry digest size_bytes labels { key value } aliases
  resource_limits { key min max } supported_accelerators installed installed_agents`;

interface GqlImage {
  name: string;
  humanized_name: string;
  tag: string;
  registry: string;
  digest: string;
  size_bytes: number;
  labels: Array<{ key: string; value: string }>;
  aliases: string[];
  resource_limits: Array<{ key: string; min: string; max: string | null }>;
  supported_accelerators: string[];
  installed: boolean;
  installed_agents: string[] | null;
}

let reg: TestRegistry;
let plane: CatalogPlane;
let images: LabelledImages;
let docker: DockerFormatImages;
let proxy: RegistryProxy;
let root: string;

async function rescan(token: string): Promise<string> {
  const r = await plane.gql<{ rescan_images: { ok: boolean; msg: string; task_id: string } }>(
    token,
    'mutation($r: String!) { rescan_images(registry: $r) { ok msg task_id } }',
    { r: reg.host },
  );
  expect(r.body.errors).toBeUndefined();
  expect(r.body.data?.rescan_images.ok).toBe(true);
  return r.body.data!.rescan_images.task_id;
}

async function listRows() {
  return await new CatalogStore(plane.ctx.db).rowsOf({ registry: reg.host, name: 'test/list', tag: '1' });
}

async function listImages(token: string, args = ''): Promise<GqlImage[]> {
  const r = await plane.gql<{ images: GqlImage[] }>(token, `{ images${args} { ${IMAGE_FIELDS} } }`);
  expect(r.body.errors).toBeUndefined();
  return r.body.data!.images;
}

beforeAll(async () => {
  reg = await startRegistry();
  images = await pushLabelledImages(reg.host);
  docker = await pushDockerFormatImages(reg.host);
  proxy = await startRegistryProxy(reg.url, { delayMs: 40 });
  plane = await startCatalogPlane({ throttleMs: 0 });
  await new RegistryStore(plane.ctx.db).put({ name: reg.host, url: proxy.url });
  root = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'root', role: 'superadmin' })).userId);
});

afterAll(async () => {
  await plane?.close();
  await proxy?.close();
  await reg?.stop();
});

describe('rescan_images', () => {
  it('streams progress over SSE and ends with bgtask_done naming the skipped tag', async () => {
    const taskId = await rescan(root);
    const { status, events } = await collectTaskEvents(plane.url, root, taskId);
    expect(status).toBe(200);
    const names = events.map((e) => e.event);
    expect(names.at(-1)).toBe('bgtask_done');
    expect(names.filter((n) => n === 'bgtask_updated').length).toBeGreaterThanOrEqual(1);
    expect(names.filter((n) => n !== 'bgtask_updated')).toHaveLength(1);
    // The scan seen in progress: some tags done, not all.
    const midway = events.filter((e) => e.event === 'bgtask_updated' && e.data.current_progress > 0 && e.data.current_progress < e.data.total_progress);
    expect(midway.length, JSON.stringify(events.map((e) => [e.event, e.data.current_progress, e.data.total_progress]))).toBeGreaterThanOrEqual(1);
    expect(midway.every((e) => e.data.total_progress === 7)).toBe(true);
    const last = events.at(-1)!.data;
    expect(last.task_id).toBe(taskId);
    // 7 tags: app, multi, system, old, broken, v2s2, list.
    expect(last.total_progress).toBe(7);
    expect(last.current_progress).toBe(7);
    expect(last.message).toContain('test/broken:1');
    expect(last.message).toMatch(/skipped 1/);
    // Every update in order: progress never goes backwards.
    const progress = events.map((e) => e.data.current_progress);
    expect([...progress].sort((a, b) => a - b)).toEqual(progress);
    expect(taskId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect((await operationOfTask(plane, taskId))?.status).toBe('succeeded');
    expect((await operationOfTask(plane, taskId))?.kind).toBe('rescan');
  });

  it('subscribing after completion yields the final event at once', async () => {
    const [op] = await plane.ctx.operations.list({ kind: 'rescan' });
    // The stream ends by itself after the final event (collectTaskEvents fails if it is still open at the deadline).
    const { events } = await collectTaskEvents(plane.url, root, op!.id, 60_000);
    expect(events.map((e) => e.event)).toEqual(['bgtask_done']);
  });

  it('records one row per platform with limits, accelerators and labels', async () => {
    const all = await listImages(root);
    const key = (i: GqlImage) => `${i.name}:${i.tag}@${i.digest}`;
    expect(all.map(key).sort()).toEqual(
      [
        `test/app:1@${images.app.configDigest}`,
        `test/multi:1@${images.multi.children[0]!.configDigest}`,
        `test/multi:1@${images.multi.children[1]!.configDigest}`,
        `test/old:1@${images.old.configDigest}`,
        `test/system:1@${images.system.configDigest}`,
        `test/v2s2:1@${docker.v2s2.configDigest}`,
        ...(await listRows()).map((r) => `test/list:1@${r.config_digest}`),
      ].sort(),
    );
    const app = all.find((i) => i.name === 'test/app')!;
    expect(app.registry).toBe(reg.host);
    expect(app.humanized_name).toBe('test/app');
    expect(app.size_bytes).toBe(images.app.configSize + images.app.layers.reduce((n, l) => n + l.size, 0));
    expect(app.resource_limits).toEqual([
      { key: 'cpu', min: '1', max: '4' },
      { key: 'cuda.device', min: '1', max: null },
      { key: 'mem', min: '256m', max: null },
    ]);
    expect(app.supported_accelerators).toEqual(['cuda', 'rocm']);
    expect(app.labels).toContainEqual({ key: 'ai.backend.accelerators', value: 'cuda, rocm' });
    expect(app.installed).toBe(false);
    expect(app.installed_agents).toEqual([]);

    const multi = all.filter((i) => i.name === 'test/multi');
    for (const m of multi) {
      expect(m.supported_accelerators).toEqual(['cuda']);
      // Backend.AI's defaults fill the minimums the labels leave out: cpu 1, mem 1g.
      expect(m.resource_limits).toEqual([
        { key: 'cpu', min: '1', max: null },
        { key: 'mem', min: '1g', max: '8g' },
      ]);
    }
  });

  it('reads all four manifest types: a Docker v2 manifest and one row per platform of a Docker manifest list', async () => {
    const all = await listImages(root);
    const v2 = all.filter((i) => i.name === 'test/v2s2');
    expect(v2).toHaveLength(1);
    expect(v2[0]).toMatchObject({
      tag: '1',
      digest: docker.v2s2.configDigest,
      supported_accelerators: ['cuda'],
      resource_limits: [
        { key: 'cpu', min: '2', max: null },
        { key: 'mem', min: '1g', max: null },
      ],
    });
    const list = all.filter((i) => i.name === 'test/list');
    const rows = await listRows();
    expect(list.map((i) => i.digest).sort()).toEqual(rows.map((r) => r.config_digest).sort());
    for (const l of list) {
      expect(l.resource_limits).toEqual([
        { key: 'cpu', min: '1', max: null },
        { key: 'mem', min: '1g', max: '4g' },
      ]);
    }
    expect(rows.map((r) => r.platform)).toEqual(['linux/amd64', 'linux/arm64/v8']);
    expect(rows.map((r) => r.digest).sort()).toEqual(docker.list.children.map((c) => c.manifestDigest).sort());
    expect(rows.every((r) => r.index_digest === docker.list.listDigest)).toBe(true);
    // The list's digest names both rows; image() shows the one of the architecture asked for.
    for (const [arch, platform] of [['x86_64', 'linux/amd64'], ['aarch64', 'linux/arm64/v8']] as const) {
      const byList = await plane.gql<{ image: { digest: string; architecture: string } | null }>(
        root,
        `{ image(reference: "${reg.host}/test/list@${docker.list.listDigest}", architecture: "${arch}") { digest architecture } }`,
      );
      expect(byList.body.data?.image).toEqual({ digest: rows.find((r) => r.platform === platform)?.config_digest, architecture: arch });
    }
  });

  it('filters operation images by ai.backend.role=SYSTEM', async () => {
    expect((await listImages(root, '(is_operation: true)')).map((i) => i.name)).toEqual(['test/system']);
    expect((await listImages(root, '(is_operation: false)')).map((i) => i.name)).not.toContain('test/system');
  });

  it('image(reference) resolves references, digests and aliases', async () => {
    const one = async (ref: string, architecture = 'x86_64') => {
      const r = await plane.gql<{ image: GqlImage | null }>(root, 'query($r: String!, $a: String) { image(reference: $r, architecture: $a) { name tag digest aliases } }', {
        r: ref,
        a: architecture,
      });
      if (r.body.errors) {
        // Backend.AI's ImageNotFound: an error beside a null image.
        expect(r.body.errors.map((e) => e.extensions?.code)).toEqual(['IMAGE_NOT_FOUND']);
        expect(r.body.data?.image).toBeNull();
        return null;
      }
      return r.body.data!.image;
    };
    expect((await one(`${reg.host}/test/app:1`))?.digest).toBe(images.app.configDigest);
    expect((await one(`${reg.host}/test/multi@${images.multi.children[1]!.manifestDigest}`, 'aarch64'))?.digest).toBe(images.multi.children[1]!.configDigest);
    expect(await one(`${reg.host}/test/multi@${images.multi.children[1]!.manifestDigest}`, 'x86_64')).toBeNull();
    expect(await one(`${reg.host}/test/nope:1`)).toBeNull();

    const alias = await plane.gql<{ alias_image: { ok: boolean; msg: string } }>(
      root,
      'mutation($a: String!, $t: String!) { alias_image(alias: $a, target: $t) { ok msg } }',
      { a: 'app', t: `${reg.host}/test/app:1` },
    );
    expect(alias.body.data?.alias_image.ok).toBe(true);
    const viaAlias = await one('app');
    expect(viaAlias?.name).toBe('test/app');
    expect(viaAlias?.aliases).toEqual(['app']);

    const bad = await plane.gql<{ alias_image: { ok: boolean; msg: string } }>(root, 'mutation { alias_image(alias: "x", target: "nowhere/none:1") { ok msg } }');
    expect(bad.body.data?.alias_image).toEqual({ ok: false, msg: expect.stringContaining('IMAGE_NOT_FOUND') });

    const dealias = await plane.gql<{ dealias_image: { ok: boolean } }>(root, 'mutation { dealias_image(alias: "app") { ok msg } }');
    expect(dealias.body.data?.dealias_image.ok).toBe(true);
    expect(await one('app')).toBeNull();
  });

  it('a second rescan removes tags that vanished from the registry', async () => {
    await skopeo(['delete', `docker://${reg.host}/test/old:1`]);
    const taskId = await rescan(root);
    const { events } = await collectTaskEvents(plane.url, root, taskId);
    expect(events.at(-1)?.event).toBe('bgtask_done');
    const names = (await listImages(root)).map((i) => i.name);
    expect(names).not.toContain('test/old');
    expect(names).toContain('test/app');
  });

  it('forget_image removes a catalog entry and its aliases', async () => {
    await plane.gql(root, 'mutation { alias_image(alias: "sys", target: "' + `${reg.host}/test/system:1` + '") { ok } }');
    const r = await plane.gql<{ forget_image: { ok: boolean } }>(root, `mutation { forget_image(reference: "sys") { ok msg } }`);
    expect(r.body.data?.forget_image.ok).toBe(true);
    expect((await listImages(root)).map((i) => i.name)).not.toContain('test/system');
    const again = await plane.gql<{ image: unknown }>(root, '{ image(reference: "sys") { name } }');
    expect(again.body.data?.image).toBeNull();
    expect(again.body.errors?.[0]?.extensions?.code).toBe('IMAGE_NOT_FOUND');
  });

  it('an unreachable registry fails the task with bgtask_failed and changes nothing', async () => {
    const before = await listImages(root);
    await new RegistryStore(plane.ctx.db).put({ name: '127.0.0.1:1', url: 'http://127.0.0.1:1' });
    const r = await plane.gql<{ rescan_images: { ok: boolean; task_id: string } }>(root, 'mutation { rescan_images(registry: "127.0.0.1:1") { ok msg task_id } }');
    const { events } = await collectTaskEvents(plane.url, root, r.body.data!.rescan_images.task_id);
    expect(events.at(-1)?.event).toBe('bgtask_failed');
    expect(events.at(-1)?.data.message).toMatch(/\S/);
    expect(await listImages(root)).toEqual(before);
  });

  it('an unknown registry is ok: false, not a task', async () => {
    const ops = (await plane.ctx.operations.list()).length;
    const r = await plane.gql<{ rescan_images: { ok: boolean; msg: string; task_id: string | null } }>(
      root,
      'mutation { rescan_images(registry: "nowhere.example:5000") { ok msg task_id } }',
    );
    expect(r.body.data?.rescan_images).toEqual({ ok: false, msg: expect.stringContaining('REGISTRY_NOT_FOUND'), task_id: null });
    expect((await plane.ctx.operations.list()).length).toBe(ops);
  });
});

describe('scanRegistry', () => {
  it('follows Link pagination of _catalog and tags/list', async () => {
    const store = new RegistryStore(plane.ctx.db);
    const result = await scanRegistry(registryClient(await store.require(reg.host)), { registry: reg.host, pageSize: 1, concurrency: 2 });
    expect(result.tags).toBe(6); // old:1 is gone
    expect(new Set(result.rows.map((r) => r.name))).toEqual(new Set(['test/app', 'test/list', 'test/multi', 'test/system', 'test/v2s2']));
    expect([...result.unreadable]).toEqual(['test/broken:1']);
    const multi = result.rows.filter((r) => r.name === 'test/multi');
    expect(multi.map((r) => r.platform).sort()).toEqual(['linux/amd64', 'linux/arm64/v8']);
    expect(multi.every((r) => r.index_digest === images.multi.indexDigest)).toBe(true);
  });
});
