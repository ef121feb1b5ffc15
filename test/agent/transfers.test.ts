import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RunningAgent, startAgent } from '../../src/agent/agent.js';
import { parseAgentConfig } from '../../src/agent/config.js';
import { mintPeerToken, newSecret } from '../../src/control/peer-token.js';
import { type InventoryItem, type TransferEvent, errorBodySchema, inventoryItemSchema, transferEventSchema } from '../../src/control/wire.js';
import { digestHex, digestOf, type Digest } from '../../src/oci/digest.js';
import { freePort, makeImageTar, makeMultiPlatformLayout, skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Agents joined to a control plane, without the control plane: each starts with an identity file written
 * here (machine ID + secret), as a join would leave it, and a control URL nothing listens on (the link
 * retries in the background; the agent serves regardless). The test plays the control plane: it calls
 * /agent/v1 with the machine secret and mints peer tokens with the source's secret.
 */

interface TestAgent {
  id: string;
  secret: string;
  dataDir: string;
  agent: RunningAgent;
}

let controlUrl: string;
let dockerConfig: string;

async function startJoined(id: string, extra: Record<string, unknown> = {}): Promise<TestAgent> {
  const dataDir = await tmpDir(`stowage-xfer-${id}-`);
  await mkdir(dataDir, { recursive: true });
  const secret = newSecret('sms_');
  await writeFile(join(dataDir, 'identity.json'), JSON.stringify({ control_url: controlUrl, machine_id: id, machine_secret: secret }), { mode: 0o600 });
  const agent = await startAgent(parseAgentConfig({ dataDir, engine: { tcp: { port: 0 } }, control: { url: controlUrl }, ...extra }));
  return { id, secret, dataDir, agent };
}

function peerToken(source: TestAgent, scope: 'pull' | 'push' = 'pull'): string {
  return mintPeerToken(source.secret, { m: source.id, s: scope, exp: Math.floor(Date.now() / 1000) + 300 });
}

function api(target: TestAgent, path: string, init: { method?: string; body?: unknown; secret?: string } = {}): Promise<Response> {
  return fetch(`${target.agent.peerUrl}/agent/v1${path}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: { authorization: `Bearer ${init.secret ?? target.secret}`, ...(init.body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
}

interface TransferBody {
  operation_id: string;
  source: { registry_url: string; repository: string; username?: string; password?: string };
  ref: string;
  platform?: string;
  references?: string[];
}

function fromPeer(source: TestAgent, ref: string, extra: Partial<TransferBody> = {}): TransferBody {
  return {
    operation_id: 'op-test',
    source: { registry_url: source.agent.peerUrl, repository: 'any/name', username: 'stowage', password: peerToken(source) },
    ref,
    ...extra,
  };
}

/** Sends a transfer and reads its NDJSON answer to the end (or until `stopAfter` lines). */
async function transfer(target: TestAgent, body: TransferBody, opts: { stopAfter?: number } = {}): Promise<TransferEvent[]> {
  const controller = new AbortController();
  const res = await fetch(`${target.agent.peerUrl}/agent/v1/transfers`, {
    method: 'POST',
    headers: { authorization: `Bearer ${target.secret}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: controller.signal,
  });
  expect(res.status, await (res.status === 200 ? '' : res.clone().text())).toBe(200);
  expect(res.headers.get('content-type')).toContain('application/x-ndjson');
  const events: TransferEvent[] = [];
  const decoder = new TextDecoder();
  let buffered = '';
  const reader = res.body!.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      events.push(transferEventSchema.parse(JSON.parse(buffered.slice(0, nl))));
      buffered = buffered.slice(nl + 1);
      if (opts.stopAfter !== undefined && events.length >= opts.stopAfter) {
        controller.abort();
        await reader.cancel().catch(() => undefined);
        return events;
      }
    }
  }
  expect(buffered).toBe('');
  return events;
}

function finalOf(events: TransferEvent[]): Exclude<TransferEvent, { type: 'progress' }> {
  const last = events.at(-1);
  if (!last || last.type === 'progress') throw new Error(`the stream ended without a result: ${JSON.stringify(events)}`);
  return last;
}

const docker = (target: TestAgent, args: string[]) => run('docker', args, { DOCKER_HOST: target.agent.engineTcp!, DOCKER_CONFIG: dockerConfig });

async function inventoryOf(target: TestAgent): Promise<InventoryItem[]> {
  const res = await api(target, '/inventory');
  expect(res.status).toBe(200);
  const body = (await res.json()) as { seq: number; items: unknown[] };
  return body.items.map((i) => inventoryItemSchema.parse(i));
}

/** The manifest `source` serves for `digest` (read from its /v2/ with a peer token): the blobs a transfer moves. */
async function manifestOf(source: TestAgent, digest: string): Promise<{ config: Digest; blobs: Digest[]; blobBytes: number }> {
  const res = await fetch(`${source.agent.peerUrl}/v2/any/name/manifests/${digest}`, {
    headers: { authorization: `Basic ${Buffer.from(`x:${peerToken(source)}`).toString('base64')}`, accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
  });
  expect(res.status).toBe(200);
  const m = (await res.json()) as { config: { digest: Digest; size: number }; layers: Array<{ digest: Digest; size: number }> };
  return {
    config: m.config.digest,
    blobs: [m.config.digest, ...m.layers.map((l) => l.digest)],
    blobBytes: m.config.size + m.layers.reduce((n, l) => n + l.size, 0),
  };
}

/** Loads a fresh image into `source` with the docker CLI; returns its manifest digest there and its image ID. */
async function loadInto(source: TestAgent, name: string, opts: { layers?: number; layerBytes?: number } = {}) {
  const { tar, image } = await makeImageTar(name, { layers: opts.layers ?? 2, ...(opts.layerBytes ? { layerBytes: opts.layerBytes } : {}) });
  const load = await docker(source, ['load', '-i', tar]);
  expect(load.code, load.stderr).toBe(0);
  const item = (await inventoryOf(source)).find((i) => i.config_digest === image.configDigest);
  expect(item).toBeDefined();
  const manifest = await manifestOf(source, item!.digest);
  return { digest: item!.digest as Digest, configDigest: image.configDigest, item: item!, manifest };
}

const blobPath = (t: TestAgent, d: string) => join(t.dataDir, 'store', 'blobs', 'sha256', digestHex(d as Digest));

describe('agent transfers between two joined agents', () => {
  let a: TestAgent;
  let b: TestAgent;
  let c: TestAgent;
  let registry: TestRegistry;

  beforeAll(async () => {
    controlUrl = `http://127.0.0.1:${await freePort()}`; // nothing listens: the control plane is "down"
    dockerConfig = await tmpDir('stowage-xfer-docker-');
    registry = await startRegistry();
    a = await startJoined('machine-a');
    b = await startJoined('machine-b');
    // C downloads at most 400 KB/s: its transfers are slow enough to watch and to join.
    c = await startJoined('machine-c', { transfer: { maxBytesPerSecond: 400_000 } });
  });

  afterAll(async () => {
    await Promise.allSettled([a?.agent.close(), b?.agent.close(), c?.agent.close()]);
    await registry?.stop();
  });

  it('moves an image from A /v2/ to B with a peer token, same image ID on B, then skips it with zero bytes', async () => {
    const img = await loadInto(a, 'team/app:1', { layers: 3 });
    const events = await transfer(b, fromPeer(a, img.digest, { references: ['team/app:1'] }));
    const result = finalOf(events);
    expect(result).toMatchObject({ type: 'result', status: 'present', digest: img.digest, config_digest: img.configDigest, platform: 'linux/amd64' });
    expect(result.type === 'result' && result.bytes_transferred).toBe(img.manifest.blobBytes);
    expect(result.type === 'result' && result.size_bytes).toBe(img.item.size_bytes);
    expect(events[0]).toMatchObject({ type: 'progress' });

    const id = await docker(b, ['image', 'inspect', '--format', '{{.Id}}', 'team/app:1']);
    expect(id.code, id.stderr).toBe(0);
    expect(id.stdout.trim()).toBe(img.configDigest);
    const onB = await api(b, `/images/${img.digest}`);
    expect(onB.status).toBe(200);
    expect(inventoryItemSchema.parse(await onB.json())).toEqual({ ...img.item, references: ['docker.io/team/app:1'] });

    const again = finalOf(await transfer(b, fromPeer(a, img.digest, { references: ['team/app:2'] })));
    expect(again).toMatchObject({ type: 'result', status: 'skipped_present', digest: img.digest, bytes_transferred: 0 });
    const tags = await docker(b, ['image', 'inspect', '--format', '{{join .RepoTags ","}}', img.configDigest]);
    expect(tags.stdout.trim().split(',').sort()).toEqual(['team/app:1', 'team/app:2']);
  });

  it('refuses a wrong or missing machine secret with 401 and an error body', async () => {
    for (const secret of ['sms_wrong', a.secret, '']) {
      const res = await api(b, '/inventory', { secret });
      expect(res.status).toBe(401);
      expect(errorBodySchema.parse(await res.json()).error.code).toBe('UNAUTHORIZED');
    }
    const res = await fetch(`${b.agent.peerUrl}/agent/v1/transfers`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(401);
  });

  it('fails a transfer with a bad peer token at the connect stage and records nothing', async () => {
    const img = await loadInto(a, 'team/secret:1');
    const before = await inventoryOf(b);
    const forged = mintPeerToken(newSecret('sms_'), { m: a.id, s: 'pull', exp: Math.floor(Date.now() / 1000) + 300 });
    const forB = peerToken(b); // genuine, but for another machine
    for (const password of [forged, forB]) {
      const body = fromPeer(a, img.digest, { references: ['team/secret:1'] });
      body.source.password = password;
      const result = finalOf(await transfer(b, body));
      expect(result).toMatchObject({ type: 'error', failure: { code: 'UNAUTHORIZED', stage: 'connect' } });
      expect(result.type === 'error' && result.failure.message).toMatch(/refused the credentials/);
    }
    // A password that is no token goes to A's token service (the control plane, absent in this test).
    const body = fromPeer(a, img.digest, { references: ['team/secret:1'] });
    body.source.password = 'not-a-token';
    const result = finalOf(await transfer(b, body));
    expect(result).toMatchObject({ type: 'error', failure: { code: 'REGISTRY_ERROR', stage: 'connect' } });
    expect(result.type === 'error' && result.failure.message).toMatch(/cannot reach the token service/);
    expect(await inventoryOf(b)).toEqual(before);
    expect((await api(b, `/images/${img.digest}`)).status).toBe(404);
    expect(existsSync(blobPath(b, img.configDigest))).toBe(false);
    // And nobody without a token reads A's /v2/ at all.
    expect((await fetch(`${a.agent.peerUrl}/v2/any/name/manifests/${img.digest}`)).status).toBe(401);
  });

  it('answers bad requests with 400 and starts nothing', async () => {
    const cases: unknown[] = [
      {},
      { operation_id: 'x', source: { registry_url: 'not a url', repository: 'a' }, ref: 'latest' },
      { operation_id: 'x', source: { registry_url: 'ftp://127.0.0.1:1', repository: 'a' }, ref: 'latest' },
      { operation_id: 'x', source: { registry_url: a.agent.peerUrl, repository: 'UPPER/case' }, ref: 'latest' },
      { operation_id: 'x', source: { registry_url: a.agent.peerUrl, repository: 'a' }, ref: 'bad ref!' },
      { operation_id: 'x', source: { registry_url: a.agent.peerUrl, repository: 'a' }, ref: 'latest', platform: 'linux/amd64/v1/x' },
      { operation_id: 'x', source: { registry_url: a.agent.peerUrl, repository: 'a' }, ref: 'latest', references: ['x@sha256:' + '0'.repeat(64)] },
    ];
    const before = await inventoryOf(b);
    for (const body of cases) {
      const res = await api(b, '/transfers', { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      const err = errorBodySchema.parse(await res.json());
      expect(err.error.message.length).toBeGreaterThan(0);
    }
    const notJson = await fetch(`${b.agent.peerUrl}/agent/v1/transfers`, {
      method: 'POST',
      headers: { authorization: `Bearer ${b.secret}`, 'content-type': 'application/json' },
      body: '{nope',
    });
    expect(notJson.status).toBe(400);
    expect(errorBodySchema.safeParse(await notJson.json()).success).toBe(true);
    expect((await api(b, '/images/sha256:nothex')).status).toBe(400);
    expect(await inventoryOf(b)).toEqual(before);
  });

  it('refuses bad push announcements (401, 400, 404) and serves nothing for them; a good one is served until withdrawn', async () => {
    const sha = (c: string) => `sha256:${c.repeat(64)}`;
    const manifest = (mediaType: string) =>
      JSON.stringify({
        schemaVersion: 2,
        mediaType,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('c'), size: 10 },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha('d'), size: 20 }],
      });
    const good = manifest('application/vnd.oci.image.manifest.v1+json');
    const goodDigest = digestOf(Buffer.from(good, 'utf8'));
    const served = async (digest: string) => {
      const res = await fetch(`${b.agent.peerUrl}/v2/any/name/manifests/${digest}`, {
        headers: { authorization: `Basic ${Buffer.from(`x:${peerToken(b)}`).toString('base64')}`, accept: 'application/vnd.oci.image.manifest.v1+json' },
      });
      await res.arrayBuffer();
      return res.status;
    };
    const before = await inventoryOf(b);

    for (const secret of ['sms_wrong', a.secret]) expect((await api(b, '/incoming', { secret, body: { operation_id: 'op-x', manifest: good, ttl_seconds: 60 } })).status).toBe(401);
    const index = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
    for (const body of [
      {},
      { operation_id: 'op-x', manifest: good, ttl_seconds: 0 },
      { operation_id: 'op-x', manifest: '{not json', ttl_seconds: 60 },
      { operation_id: 'op-x', manifest: index, ttl_seconds: 60 },
      { operation_id: '', manifest: good, ttl_seconds: 60 },
    ]) {
      const res = await api(b, '/incoming', { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(errorBodySchema.parse(await res.json()).error.message.length).toBeGreaterThan(0);
    }
    expect(await served(goodDigest)).toBe(404);
    const unknown = await api(b, '/incoming/op-none', { method: 'DELETE' });
    expect(unknown.status).toBe(404);
    expect(errorBodySchema.parse(await unknown.json()).error.code).toBe('OPERATION_NOT_FOUND');

    expect((await api(b, '/incoming', { body: { operation_id: 'op-x', manifest: good, ttl_seconds: 60 } })).status).toBe(204);
    expect(await served(goodDigest)).toBe(200);
    expect((await api(b, '/incoming/op-x', { method: 'DELETE' })).status).toBe(204);
    expect(await served(goodDigest)).toBe(404);
    expect(await inventoryOf(b)).toEqual(before);
  });

  it('reports several progress lines on a throttled transfer, growing to the total', async () => {
    const img = await loadInto(a, 'team/slow:1', { layers: 3, layerBytes: 200_000 });
    const started = Date.now();
    const events = await transfer(c, fromPeer(a, img.digest));
    const progress = events.filter((e): e is Extract<TransferEvent, { type: 'progress' }> => e.type === 'progress');
    const result = finalOf(events);
    expect(result).toMatchObject({ type: 'result', status: 'present', digest: img.digest });
    const bytes = result.type === 'result' ? result.bytes_transferred : 0;
    expect(bytes).toBeGreaterThan(600_000); // random bytes do not compress
    expect(Date.now() - started).toBeGreaterThan((bytes / 400_000) * 1000 * 0.8);
    expect(progress.length).toBeGreaterThanOrEqual(4);
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.bytes_transferred).toBeGreaterThanOrEqual(progress[i - 1]!.bytes_transferred);
    const known = progress.filter((p) => p.bytes_total !== null);
    expect(known.length).toBeGreaterThan(0);
    for (const p of known) expect(p.bytes_total).toBe(bytes);
    expect(progress.some((p) => p.bytes_transferred > 0 && p.bytes_transferred < bytes)).toBe(true);
  });

  it('shares one download between concurrent identical requests, and a dropped client does not cancel it', async () => {
    const img = await loadInto(a, 'team/shared:1', { layers: 2, layerBytes: 300_000 });
    // The first client goes away after two lines; the transfer goes on.
    const dropped = await transfer(c, fromPeer(a, img.digest), { stopAfter: 2 });
    expect(dropped).toHaveLength(2);
    const [one, two] = await Promise.all([
      transfer(c, fromPeer(a, img.digest, { references: ['team/shared:1'] })),
      transfer(c, fromPeer(a, img.digest, { references: ['team/shared:2'] })),
    ]);
    const r1 = finalOf(one);
    const r2 = finalOf(two);
    expect(r1).toMatchObject({ type: 'result', status: 'present', digest: img.digest });
    // One transfer: both saw every byte it downloaded (a second download would have found the blobs in flight, 0 bytes).
    expect(r2).toEqual(r1);
    expect(r1.type === 'result' && r1.bytes_transferred).toBe(img.manifest.blobBytes);
    const item = inventoryItemSchema.parse(await (await api(c, `/images/${img.digest}`)).json());
    expect(item.references).toEqual(['docker.io/team/shared:1', 'docker.io/team/shared:2']);
  });

  it('unloads an image: records, tags and the blobs nothing else uses', async () => {
    const img = await loadInto(a, 'team/gone:1');
    expect(finalOf(await transfer(b, fromPeer(a, img.digest, { references: ['team/gone:1'] })))).toMatchObject({ status: 'present' });
    const blobs = [img.digest, ...img.manifest.blobs];
    for (const d of blobs) expect(existsSync(blobPath(b, d)), d).toBe(true);

    const res = await api(b, '/unload', { body: { ref: 'team/gone:1' } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ removed: [img.digest] });
    for (const d of blobs) expect(existsSync(blobPath(b, d)), d).toBe(false);
    expect((await api(b, `/images/${img.digest}`)).status).toBe(404);
    expect((await docker(b, ['image', 'inspect', 'team/gone:1'])).code).not.toBe(0);
    // Other images are untouched.
    expect((await docker(b, ['image', 'inspect', 'team/app:1'])).code).toBe(0);

    const again = await api(b, '/unload', { body: { ref: img.digest } });
    expect(again.status).toBe(404);
    expect(errorBodySchema.parse(await again.json()).error.code).toBe('IMAGE_NOT_FOUND');
    expect((await api(b, '/unload', { body: { ref: 'Bad Ref' } })).status).toBe(400);
  });

  it('fetches platforms of a multi-platform index from a registry by tag; the inventory shows index, platform and tags', async () => {
    const dir = await tmpDir('stowage-xfer-multi-');
    const multi = await makeMultiPlatformLayout(dir, ['linux/amd64', 'linux/arm64/v8'], { tag: 'x', layers: 2 });
    await skopeo(['copy', '--all', `oci:${dir}:x`, `docker://${registry.host}/test/multi:1`]);
    const source = { registry_url: registry.url, repository: 'test/multi' };
    const [amd, arm] = multi.children as [(typeof multi.children)[0], (typeof multi.children)[0]];

    const first = finalOf(await transfer(b, { operation_id: 'op-m', source, ref: '1', platform: 'linux/arm64', references: ['example.com/multi:1'] }));
    expect(first).toMatchObject({ type: 'result', status: 'present', digest: arm.manifestDigest, config_digest: arm.configDigest, platform: 'linux/arm64/v8' });
    const second = finalOf(await transfer(b, { operation_id: 'op-m', source, ref: multi.indexDigest, platform: 'linux/amd64' }));
    expect(second).toMatchObject({ type: 'result', status: 'present', digest: amd.manifestDigest, platform: 'linux/amd64' });

    const items = (await inventoryOf(b)).filter((i) => i.index_digest === multi.indexDigest);
    const byDigest = new Map(items.map((i) => [i.digest, i]));
    expect(byDigest.get(arm.manifestDigest)).toEqual({
      digest: arm.manifestDigest,
      index_digest: multi.indexDigest,
      config_digest: arm.configDigest,
      platform: 'linux/arm64/v8',
      references: ['example.com/multi:1'],
      size_bytes: arm.manifestSize + arm.configSize + arm.layers.reduce((n, l) => n + l.size, 0),
    });
    expect(byDigest.get(amd.manifestDigest)).toMatchObject({ index_digest: multi.indexDigest, platform: 'linux/amd64', references: ['example.com/multi:1'] });
    expect(items).toHaveLength(2);

    // A platform the index does not have fails at the manifest stage.
    const missing = finalOf(await transfer(b, { operation_id: 'op-m', source, ref: '1', platform: 'linux/s390x' }));
    expect(missing).toMatchObject({ type: 'error', failure: { code: 'PLATFORM_NOT_FOUND', stage: 'manifest' } });
    // Unloading one platform of the index keeps the other; unloading the last takes the index too.
    expect(await (await api(b, '/unload', { body: { ref: 'example.com/multi:1', platform: 'linux/arm64' } })).json()).toEqual({ removed: [arm.manifestDigest] });
    expect(await (await api(b, '/unload', { body: { ref: multi.indexDigest } })).json()).toEqual({ removed: [amd.manifestDigest, multi.indexDigest] });
    expect((await inventoryOf(b)).filter((i) => i.index_digest === multi.indexDigest)).toEqual([]);
  });

  it('keeps the agent standalone and open without a control section', async () => {
    const plain = await startAgent(parseAgentConfig({ dataDir: await tmpDir('stowage-xfer-plain-') }));
    try {
      expect(plain.machineId).toBeUndefined();
      await plain.flushInventory();
      expect((await fetch(`${plain.peerUrl}/v2/`)).status).toBe(200);
      expect((await fetch(`${plain.peerUrl}/agent/v1/inventory`)).status).toBe(404);
    } finally {
      await plain.close();
    }
    expect(a.agent.machineId).toBe('machine-a');
  });
});
