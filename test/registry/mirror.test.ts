import { createHash } from 'node:crypto';
import { access, mkdir, open, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex, digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { type Containerd, startContainerd } from '../harness/containerd.js';
import { type TestImageInfo, freePort, makeTestImage, skopeo } from '../harness/images.js';
import { type Sample, scrape, valueOf } from '../harness/prometheus.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The agent's pull-through registry mirror, on real processes: a docker-registry holds the images, agent-1
 * holds some of their layers (pulled through its Docker API), agent-2 serves as the registry mirror of a
 * real containerd (hosts.toml). A pull through agent-2 takes the layers agent-1 holds from agent-1 (bytes
 * counted on agent-1) and only the rest from the registry; bytes that do not match their digest, from the
 * registry or from a peer, are refused and never stored.
 */

const LAYER_BYTES = 256 * 1024;
const SLOW = { timeoutMs: 120_000, everyMs: 100 };

let registry: TestRegistry;
let cluster: Cluster;
let containerd: Containerd;
let mirrorPort: number;
let mirrorUrl: string;

beforeAll(async () => {
  registry = await startRegistry();
  mirrorPort = await freePort();
  mirrorUrl = `http://127.0.0.1:${mirrorPort}`;
  cluster = await startCluster({ agents: 2, agentArgs: (i) => (i === 1 ? ['--mirror-port', String(mirrorPort)] : []) });
  containerd = await startContainerd();
}, 180_000);

afterAll(async () => {
  await containerd?.stop();
  await cluster?.close();
  await registry?.stop();
});

interface Stats {
  blob_bytes_served: number;
  mirror_bytes_from_peers?: number;
  mirror_bytes_from_upstream?: number;
}

async function secretOf(name: string): Promise<string> {
  const agent = cluster.agents.find((a) => a.name === name)!;
  return (JSON.parse(await readFile(join(agent.dataDir, 'identity.json'), 'utf8')) as { machine_secret: string }).machine_secret;
}

async function stats(name: string): Promise<Stats> {
  const agent = cluster.agents.find((a) => a.name === name)!;
  const res = await request(`${agent.peerUrl}/agent/v1/stats`, { headers: { authorization: `Bearer ${await secretOf(name)}` } });
  expect(res.statusCode).toBe(200);
  return (await res.body.json()) as Stats;
}

/** The agent's /metrics samples, read with its machine secret. */
async function metricsOf(name: string): Promise<Sample[]> {
  const agent = cluster.agents.find((a) => a.name === name)!;
  const r = await scrape(agent.peerUrl, await secretOf(name));
  expect(r.status).toBe(200);
  return r.samples;
}

function storedBlob(name: string, digest: string): string {
  const agent = cluster.agents.find((a) => a.name === name)!;
  return join(agent.dataDir, 'store', 'blobs', 'sha256', digestHex(digest as `sha256:${string}`));
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** An image whose layers are the first `count` layers of `of` (its own config): what a machine may hold already. */
async function sharingLayers(of: { dir: string; img: TestImageInfo }, count: number): Promise<string> {
  const dir = await tmpDir('stowage-base-');
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layers = of.img.layers.slice(0, count);
  for (const l of layers) {
    await writeFile(join(dir, 'blobs', 'sha256', digestHex(l.digest)), await readFile(join(of.dir, 'blobs', 'sha256', digestHex(l.digest))));
  }
  const put = async (bytes: Buffer) => {
    const digest = digestOf(bytes);
    await writeFile(join(dir, 'blobs', 'sha256', digestHex(digest)), bytes);
    return { digest, size: bytes.length };
  };
  const config = await put(
    Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'] }, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) } })),
  );
  const manifest = await put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, ...config },
        layers: layers.map((l) => ({ mediaType: MediaType.OciLayerGzip, digest: l.digest, size: l.size })),
      }),
    ),
  );
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'x' } }] }),
  );
  return dir;
}

/** Pushes a fresh test image to the registry as `name`. */
async function pushImage(name: string, layers: number): Promise<{ dir: string; img: TestImageInfo }> {
  const dir = await tmpDir('stowage-mirror-img-');
  const img = await makeTestImage(dir, { layers, layerBytes: LAYER_BYTES, tag: 'x' });
  await skopeo(['copy', `oci:${dir}:x`, `docker://${registry.host}/${name}`]);
  return { dir, img };
}

/** agent-1 pulls `ref` from the registry (Docker API) and reports it to the control plane. */
async function agentOnePulls(ref: string, manifestDigest: string): Promise<void> {
  const agent = cluster.agents.find((a) => a.name === 'agent-1')!;
  await runOk('docker', ['pull', ref], { env: { DOCKER_HOST: agent.dockerHost } });
  await cluster.waitForImage('agent-1', manifestDigest);
}

/** Overwrites a file with as many different bytes: what a disk (or a peer) that lies would hand out. */
async function corrupt(path: string): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const { size } = await fh.stat();
    const junk = Buffer.alloc(size, 0x5a);
    await fh.write(junk, 0, size, 0);
  } finally {
    await fh.close();
  }
}

/** GET of a blob through the mirror: the body whole, or the error that cut it. */
async function getThroughMirror(name: string, digest: string): Promise<{ status: number; body?: Buffer; error?: unknown }> {
  const res = await request(`${mirrorUrl}/v2/${name}/blobs/${digest}?ns=${encodeURIComponent(registry.host)}`);
  try {
    const chunks: Buffer[] = [];
    for await (const c of res.body) chunks.push(c as Buffer);
    return { status: res.statusCode, body: Buffer.concat(chunks) };
  } catch (error) {
    return { status: res.statusCode, error };
  }
}

describe('pull-through registry mirror', () => {
  it('serves a containerd pull: layers a peer holds come from that peer, the rest from the registry, digests exact', async () => {
    const app = await pushImage('test/app:1', 3);
    const baseDir = await sharingLayers(app, 2);
    await skopeo(['copy', `oci:${baseDir}:x`, `docker://${registry.host}/test/base:1`]);
    const baseDigest = (JSON.parse(await readFile(join(baseDir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> }).manifests[0]!.digest;
    await agentOnePulls(`${registry.host}/test/base:1`, baseDigest);

    // containerd asks agent-2 for everything of this registry; its own server entry leads nowhere, so a pull
    // that did not go through the mirror could not succeed.
    const hostsDir = await tmpDir('stowage-hosts-');
    await mkdir(join(hostsDir, registry.host), { recursive: true });
    await writeFile(
      join(hostsDir, registry.host, 'hosts.toml'),
      `server = "http://127.0.0.1:9"\n\n[host."${mirrorUrl}"]\n  capabilities = ["pull", "resolve"]\n`,
    );
    const peerBefore = await stats('agent-1');
    const mirrorBefore = await stats('agent-2');
    const metricsBefore = await metricsOf('agent-2');
    const pulled = await containerd.ctr(['images', 'pull', '--all-platforms', '--hosts-dir', hostsDir, `${registry.host}/test/app:1`]);
    expect(pulled.code, pulled.stderr).toBe(0);

    const listed = await containerd.ctr(['images', 'ls']);
    expect(listed.stdout).toContain(`${registry.host}/test/app:1`);
    expect(listed.stdout).toContain(app.img.manifestDigest);
    const content = (await containerd.ctr(['content', 'ls'])).stdout;
    for (const blob of [app.img.configDigest, ...app.img.layers.map((l) => l.digest)]) expect(content).toContain(blob);

    const [held0, held1, fresh] = app.img.layers as [TestImageInfo['layers'][0], TestImageInfo['layers'][0], TestImageInfo['layers'][0]];
    const peerAfter = await stats('agent-1');
    const mirrorAfter = await stats('agent-2');
    expect(peerAfter.blob_bytes_served - peerBefore.blob_bytes_served).toBe(held0.size + held1.size);
    expect((mirrorAfter.mirror_bytes_from_peers ?? 0) - (mirrorBefore.mirror_bytes_from_peers ?? 0)).toBe(held0.size + held1.size);
    expect((mirrorAfter.mirror_bytes_from_upstream ?? 0) - (mirrorBefore.mirror_bytes_from_upstream ?? 0)).toBe(fresh.size + app.img.configSize);
    // The same counts on the agent's /metrics, blobs and bytes by source. A blob counts once stored, after its last byte.
    const metricsAfter = await until(
      "agent-2's /metrics to count the pulled blobs",
      async () => {
        const s = await metricsOf('agent-2');
        const blobs = (source: string) => valueOf(s, 'stowage_agent_mirror_blobs_total', { source }) - valueOf(metricsBefore, 'stowage_agent_mirror_blobs_total', { source });
        return blobs('peer') === 2 && blobs('upstream') === 2 ? s : undefined;
      },
      SLOW,
    );
    const bytes = (source: string) =>
      valueOf(metricsAfter, 'stowage_agent_mirror_bytes_total', { source }) - valueOf(metricsBefore, 'stowage_agent_mirror_bytes_total', { source });
    expect(bytes('peer')).toBe(held0.size + held1.size);
    expect(bytes('upstream')).toBe(fresh.size + app.img.configSize);
    // The mirror keeps what it verified: the blobs land in agent-2's store (the rename follows the last byte).
    for (const blob of [app.img.configDigest, ...app.img.layers.map((l) => l.digest)]) {
      await until(`${blob} to be stored on agent-2`, async () => ((await exists(storedBlob('agent-2', blob))) ? true : undefined), SLOW);
    }
  }, 240_000);

  it('refuses bad names, digests, registries and every write with a clear 4xx, storing nothing', async () => {
    const blobDir = join(cluster.agents.find((a) => a.name === 'agent-2')!.dataDir, 'store', 'blobs', 'sha256');
    const held = async () => (await readdir(blobDir).catch(() => [] as string[])).sort();
    const before = await held();
    const ns = `?ns=${encodeURIComponent(registry.host)}`;
    const layer = `sha256:${'e'.repeat(64)}`;
    const cases: Array<[string, string, number, string]> = [
      ['GET', `/v2/UPPER/case/blobs/${layer}${ns}`, 400, 'NAME_INVALID'],
      ['GET', `/v2/a/..%2F..%2Fetc/manifests/x${ns}`, 400, 'NAME_INVALID'],
      ['GET', `/v2/test/app/blobs/sha256:nothex${ns}`, 400, 'DIGEST_INVALID'],
      ['GET', `/v2/test/app/manifests/1?ns=${encodeURIComponent('evil.example/../x')}`, 400, 'NAME_INVALID'],
      ['GET', `/v2/test/app/manifests/bad%20tag${ns}`, 404, 'MANIFEST_UNKNOWN'],
      ['POST', `/v2/test/app/blobs/uploads/${ns}`, 405, 'UNSUPPORTED'],
      ['PUT', `/v2/test/app/manifests/1${ns}`, 405, 'UNSUPPORTED'],
      ['PATCH', `/v2/test/app/blobs/uploads/x${ns}`, 405, 'UNSUPPORTED'],
      ['DELETE', `/v2/test/app/blobs/${layer}${ns}`, 405, 'UNSUPPORTED'],
    ];
    for (const [method, path, status, code] of cases) {
      const res = await request(`${mirrorUrl}${path}`, { method: method as 'GET', ...(method === 'PUT' || method === 'PATCH' || method === 'POST' ? { body: 'x' } : {}) });
      const body = (await res.body.json()) as { errors?: Array<{ code: string; message: string }> };
      expect([res.statusCode, body.errors?.[0]?.code], `${method} ${path}`).toEqual([status, code]);
      expect(body.errors?.[0]?.message.length).toBeGreaterThan(0);
    }
    expect(await held()).toEqual(before);
  }, 240_000);

  it('refuses a blob whose bytes from the registry do not match its digest, and stores nothing', async () => {
    const bad = await pushImage('test/bad:1', 1);
    const layer = bad.img.layers[0]!;
    const hex = digestHex(layer.digest);
    await corrupt(join(registry.storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'));

    const got = await getThroughMirror('test/bad', layer.digest);
    // Either refused outright or cut before its end: never the whole (wrong) body.
    expect(got.status !== 200 || got.error !== undefined).toBe(true);
    if (got.body) expect(got.body.length).toBeLessThan(layer.size);
    // Asked again, the same: bad bytes never became a blob here.
    const again = await getThroughMirror('test/bad', layer.digest);
    expect(again.status !== 200 || again.error !== undefined).toBe(true);
    expect(await exists(storedBlob('agent-2', layer.digest))).toBe(false);
  }, 240_000);

  it('refuses bad bytes from a peer, then serves the blob verified from the registry', async () => {
    const img = await pushImage('test/peerbad:1', 1);
    const layer = img.img.layers[0]!;
    await agentOnePulls(`${registry.host}/test/peerbad:1`, img.img.manifestDigest);
    await corrupt(storedBlob('agent-1', layer.digest));
    // The mirror learns the layer sizes (and asks where they are) from the manifest, as a runtime's pull would.
    const manifest = await request(`${mirrorUrl}/v2/test/peerbad/manifests/1?ns=${encodeURIComponent(registry.host)}`);
    expect(manifest.statusCode).toBe(200);
    await manifest.body.dump();
    const peerBefore = await stats('agent-1');

    const first = await getThroughMirror('test/peerbad', layer.digest);
    expect(first.status !== 200 || first.error !== undefined).toBe(true);
    expect((await stats('agent-1')).blob_bytes_served).toBeGreaterThan(peerBefore.blob_bytes_served); // the peer was asked

    // The mirror passed over the peer and brought the blob in from the registry, verified.
    const good = await until('the blob to come whole from the registry', async () => {
      const r = await getThroughMirror('test/peerbad', layer.digest);
      return r.status === 200 ? r.body : undefined;
    }, SLOW);
    expect(good.length).toBe(layer.size);
    expect(`sha256:${createHash('sha256').update(good).digest('hex')}`).toBe(layer.digest);
    // Its last byte went out once it was verified; the rename into the store follows.
    await until('the verified blob to be stored', async () => ((await exists(storedBlob('agent-2', layer.digest))) ? true : undefined), SLOW);
  }, 240_000);
});
