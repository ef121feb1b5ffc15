import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { RegistryStore, registryClient } from '../../src/control/catalog/registries.js';
import { scanRegistry } from '../../src/control/catalog/scanner.js';
import { CatalogStore } from '../../src/control/catalog/store.js';
import { MediaType } from '../../src/oci/media-types.js';
import { type TestImageInfo, makeMultiPlatformLayout, makeTestImage, skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { tmpDir } from '../harness/tmp.js';
import { type CatalogPlane, KERNELSPEC, type ReceivedEvent, type RegistryProxy, collectTaskEvents, operationOfTask, startCatalogPlane, startRegistryProxy } from './catalog-harness.js';

/**
 * Rescan edge cases against a real docker-registry, some through a proxy that delays or answers 404:
 * a tag deleted between tags/list and its manifest GET goes (a 404 further down stays a bad tag), index
 * entries name their rows' platforms, and a cancelled rescan stops walking and records nothing.
 */

let reg: TestRegistry;
let plane: CatalogPlane;
let root: string;
let app: TestImageInfo;
const proxies: RegistryProxy[] = [];
const MANY_TAGS = 40;

async function push(repo: string, opts: { arch?: string; labels?: Record<string, string> } = {}): Promise<TestImageInfo> {
  const dir = await tmpDir('stowage-layout-');
  const img = await makeTestImage(dir, { layers: 1, layerBytes: 256, tag: 'x', ...(opts.arch ? { arch: opts.arch } : {}), labels: { ...KERNELSPEC, ...opts.labels } });
  await skopeo(['copy', `oci:${dir}:x`, `docker://${reg.host}/${repo}`]);
  return img;
}

async function putManifest(repo: string, ref: string, mediaType: string, bytes: Buffer): Promise<void> {
  const res = await request(`${reg.url}/v2/${repo}/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': mediaType }, body: bytes });
  await res.body.dump();
  if (res.statusCode !== 201) throw new Error(`PUT ${repo}:${ref} answered ${res.statusCode}`);
}

/** Points the registry record at `url` (the record's name, and so its rows, stay the registry's host). */
async function reachVia(url: string): Promise<void> {
  await new RegistryStore(plane.ctx.db).put({ name: reg.host, url });
}

async function proxy(opts: Parameters<typeof startRegistryProxy>[1]): Promise<RegistryProxy> {
  const p = await startRegistryProxy(reg.url, opts);
  proxies.push(p);
  return p;
}

async function rescan(): Promise<string> {
  const r = await plane.gql<{ rescan_images: { ok: boolean; task_id: string } }>(root, `mutation { rescan_images(registry: "${reg.host}") { ok msg task_id } }`);
  expect(r.body.data?.rescan_images.ok).toBe(true);
  return r.body.data!.rescan_images.task_id;
}

const rowKeys = async () =>
  (await new CatalogStore(plane.ctx.db).list())
    .map((r) => `${r.name}:${r.tag}@${r.platform}=${r.digest}`)
    .sort();

beforeAll(async () => {
  reg = await startRegistry();
  plane = await startCatalogPlane({ throttleMs: 0 });
  root = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'root', role: 'superadmin' })).userId);
  await reachVia(reg.url);
});

afterAll(async () => {
  await plane?.close();
  for (const p of proxies) await p.close();
  await reg?.stop();
});

describe('tags that change during a scan', () => {
  let multiChild: string;

  beforeAll(async () => {
    app = await push('test/app:1');
    await push('test/gone:1');
    const dir = await tmpDir('stowage-layout-');
    const multi = await makeMultiPlatformLayout(dir, ['linux/amd64', 'linux/arm64/v8'], { tag: 'x', layers: 1, labels: KERNELSPEC });
    await skopeo(['copy', '--all', `oci:${dir}:x`, `docker://${reg.host}/test/multi:1`]);
    multiChild = multi.children[1]!.manifestDigest;
    const first = await rescan();
    expect((await collectTaskEvents(plane.url, root, first)).events.at(-1)?.event).toBe('bgtask_done');
    expect((await rowKeys()).filter((k) => k.startsWith('test/gone:1@'))).toHaveLength(1);
  });

  afterAll(async () => reachVia(reg.url));

  it('a tag whose manifest answers 404 after tags/list listed it is removed; a 404 on a child manifest keeps the tag', async () => {
    const p = await proxy({
      fault: (method, path) => (method === 'GET' && (path === '/v2/test/gone/manifests/1' || path === `/v2/test/multi/manifests/${multiChild}`) ? 404 : undefined),
    });
    await reachVia(p.url);
    const before = await rowKeys();
    const taskId = await rescan();
    const { events } = await collectTaskEvents(plane.url, root, taskId);
    const last = events.at(-1)!;
    expect(last.event).toBe('bgtask_done');
    // tags/list still listed test/gone:1: the proxy only hid its manifest.
    expect(p.requests).toContain('GET /v2/test/gone/manifests/1');
    expect(await rowKeys()).toEqual(before.filter((k) => !k.startsWith('test/gone:1@')));
    expect(last.data.message).toMatch(/1 deleted during the scan/);
    // The child's 404 is a bad tag: named, skipped, its old rows kept.
    expect(last.data.message).toMatch(/skipped 1: test\/multi:1: MANIFEST_NOT_FOUND/);
    expect(last.data.message).not.toContain('test/gone');
    expect((await rowKeys()).filter((k) => k.startsWith('test/multi:1@'))).toHaveLength(2);
  });
});

describe('index entries', () => {
  it('name the platform of their rows, even when their configs say the same platform', async () => {
    // Two amd64 images, listed by an index as linux/amd64 and linux/arm64: two rows, not one overwritten.
    const a = await push('test/same:a', { labels: { which: 'a' } });
    const b = await push('test/same:b', { labels: { which: 'b' } });
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [
          { mediaType: MediaType.OciManifest, digest: a.manifestDigest, size: a.manifestSize, platform: { os: 'linux', architecture: 'amd64' } },
          { mediaType: MediaType.OciManifest, digest: b.manifestDigest, size: b.manifestSize, platform: { os: 'linux', architecture: 'arm64' } },
        ],
      }),
    );
    await putManifest('test/same', '1', MediaType.OciIndex, index);
    const result = await scanRegistry(registryClient(await new RegistryStore(plane.ctx.db).require(reg.host)), { registry: reg.host });
    const rows = result.rows.filter((r) => r.name === 'test/same' && r.tag === '1').sort((x, y) => x.platform.localeCompare(y.platform));
    expect(rows.map((r) => [r.platform, r.architecture, r.digest, r.labels['which']])).toEqual([
      ['linux/amd64', 'amd64', a.manifestDigest, 'a'],
      ['linux/arm64', 'arm64', b.manifestDigest, 'b'],
    ]);
  });
});

describe('cancelling a rescan', () => {
  it('stops the walk, ends the stream with bgtask_cancelled, and keeps the catalog as it was', async () => {
    // Many tags of one image, and one more image that is deleted after a first scan recorded it.
    const manifest = await request(`${reg.url}/v2/test/app/manifests/1`, { headers: { accept: MediaType.OciManifest } });
    const bytes = Buffer.from(await manifest.body.arrayBuffer());
    for (let i = 0; i < MANY_TAGS; i++) await putManifest('test/app', `t${String(i).padStart(2, '0')}`, MediaType.OciManifest, bytes);
    await push('test/doomed:1');
    await reachVia(reg.url);
    const first = await rescan();
    expect((await collectTaskEvents(plane.url, root, first)).events.at(-1)?.event).toBe('bgtask_done');
    const before = await rowKeys();
    expect(before.filter((k) => k.startsWith('test/app:'))).toHaveLength(MANY_TAGS + 1);
    expect(before.some((k) => k.startsWith('test/doomed:1@'))).toBe(true);
    await skopeo(['delete', `docker://${reg.host}/test/doomed:1`]);

    // Slow the registry down, then cancel once some tags are done.
    const p = await proxy({ delayMs: 60 });
    await reachVia(p.url);
    const taskId = await rescan();
    let requestsAtCancel = -1;
    let cancelled: Promise<unknown> | undefined;
    const { events } = await collectTaskEvents(plane.url, root, taskId, 30_000, (e: ReceivedEvent) => {
      if (requestsAtCancel < 0 && e.event === 'bgtask_updated' && e.data.current_progress > 0) {
        requestsAtCancel = p.requests.length;
        cancelled = (async () => await plane.ctx.runner.cancel((await operationOfTask(plane, taskId))!.id, 'root'))();
      }
    });
    expect(requestsAtCancel).toBeGreaterThan(0);
    await cancelled;
    const last = events.at(-1)!;
    expect(last.event).toBe('bgtask_cancelled');
    expect(last.data.current_progress).toBeLessThan(last.data.total_progress);
    expect(events.filter((e) => e.event !== 'bgtask_updated')).toHaveLength(1);

    await plane.ctx.runner.idle();
    await new Promise((r) => setTimeout(r, 300));
    // Only requests already under way when it was cancelled (at most one per concurrent tag) followed.
    expect(p.requests.length - requestsAtCancel, p.requests.slice(requestsAtCancel).join('\n')).toBeLessThanOrEqual(8);
    expect(p.requests.filter((r) => r.includes('/manifests/')).length).toBeLessThan(MANY_TAGS);
    // Nothing recorded: the vanished tag is still there (the walk was incomplete), and the operation stays cancelled.
    expect(await rowKeys()).toEqual(before);
    expect(await operationOfTask(plane, taskId)).toMatchObject({ status: 'cancelled' });
  });
});
