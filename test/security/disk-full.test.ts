import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Operation, UploadGrant } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { type TestImageInfo, makeImageTar, makeTestImage } from '../harness/images.js';
import { run, runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Issue 13, defect 8: a full disk on an agent was reported as `INTERNAL "ENOSPC…"` on a distribute target
 * and as "invalid tar archive" on `docker load`. Agent-2 keeps its data on a 24 MiB tmpfs; every write of a
 * 40 MiB layer to it must fail as INSUFFICIENT_STORAGE / HTTP 507 with a message saying the disk is full,
 * leave no partial file, and leave the agent working (a small image still loads afterwards).
 */

const MiB = 1024 * 1024;
const BIG_LAYER = 40 * MiB;

let cluster: Cluster;
let mountPoint: string | undefined;
let big: { tar: string; image: TestImageInfo };
let bigLayout: string;
let bigLayoutImage: TestImageInfo;

const basic = (token: string) => `Basic ${Buffer.from(`stowage:${token}`).toString('base64')}`;

function agent2() {
  return cluster.agents.find((a) => a.name === 'agent-2')!;
}

/** The agent's blob files and leftover ingests, as they are on disk. */
async function storeFiles(): Promise<{ blobs: string[]; ingests: string[] }> {
  const store = join(agent2().dataDir, 'store');
  const list = async (dir: string) => (await readdir(dir).catch(() => [] as string[])).sort();
  return { blobs: await list(join(store, 'blobs', 'sha256')), ingests: await list(join(store, 'ingest')) };
}

/** Waits until no ingest is left on agent-2 and checks the blobs are as before. */
async function expectNothingLeft(before: { blobs: string[] }): Promise<void> {
  await until('agent-2 to hold no partial ingest', async () => ((await storeFiles()).ingests.length === 0 ? true : undefined), { timeoutMs: 30_000 });
  expect((await storeFiles()).blobs).toEqual(before.blobs);
}

/** A small image still loads: the failed write gave its space back and the agent works on. */
async function expectStillWorking(tag: string): Promise<void> {
  const { tar } = await makeImageTar(`after/${tag}:1`, { layers: 1 });
  const out = await runOk('docker', ['load', '-i', tar], { env: { DOCKER_HOST: agent2().dockerHost }, timeoutMs: 120_000 });
  expect(out).toBe(`Loaded image: after/${tag}:1\n`);
}

beforeAll(async () => {
  cluster = await startCluster({
    agents: 2,
    prepareAgentDataDir: async (index, dataDir) => {
      if (index !== 1) return;
      await mkdir(dataDir, { recursive: true });
      await runOk('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', dataDir]);
      mountPoint = dataDir;
    },
  });
  big = await makeImageTar('big/image:1', { layers: 1, layerBytes: BIG_LAYER });
  bigLayout = await tmpDir('stowage-big-layout-');
  bigLayoutImage = await makeTestImage(bigLayout, { layers: 1, layerBytes: BIG_LAYER, tag: 'x' });
}, 300_000);

afterAll(async () => {
  await cluster?.close();
  if (mountPoint) await run('umount', ['-l', mountPoint]);
});

describe('an agent whose disk is full', () => {
  it('docker load: 507-style INSUFFICIENT_STORAGE message, not "invalid tar archive"; nothing left behind', async () => {
    const before = await storeFiles();
    const r = await run('docker', ['load', '-i', big.tar], { DOCKER_HOST: agent2().dockerHost }, { timeoutMs: 120_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/no space left on the disk holding the image store \(ENOSPC\)/);
    expect(r.stderr + r.stdout).not.toMatch(/invalid tar archive/);
    await expectNothingLeft(before);
    const images = await runOk('docker', ['images', '--format', '{{.Repository}}'], { env: { DOCKER_HOST: agent2().dockerHost } });
    expect(images).not.toMatch(/big\/image/);
    await expectStillWorking('load');
  }, 300_000);

  describe('/v2/ uploads', () => {
    let grant: UploadGrant;
    beforeAll(async () => {
      const pushed = await cluster.api<{ upload: UploadGrant | null }>('POST', '/api/v1/operations/push', {
        digest: bigLayoutImage.manifestDigest,
        size_bytes: BIG_LAYER,
        to: ['agent-2'],
      });
      expect(pushed.status).toBe(201);
      grant = pushed.body.upload!;
    });

    it('a chunked PATCH answers 507 INSUFFICIENT_STORAGE (readable by the client) and drops the upload', async () => {
      const before = await storeFiles();
      const base = `${agent2().peerUrl}/v2/${grant.repository}/blobs/uploads/`;
      const start = await request(base, { method: 'POST', headers: { authorization: basic(grant.password) } });
      await start.body.dump();
      expect(start.statusCode).toBe(202);
      const location = String(start.headers['location']);
      const patch = await request(new URL(location, agent2().peerUrl).href, {
        method: 'PATCH',
        headers: { authorization: basic(grant.password), 'content-type': 'application/octet-stream' },
        body: randomBytes(BIG_LAYER),
        headersTimeout: 120_000,
        bodyTimeout: 120_000,
      });
      const body = (await patch.body.json()) as { errors: Array<{ code: string; message: string }> };
      expect({ status: patch.statusCode, code: body.errors[0]?.code }).toEqual({ status: 507, code: 'INSUFFICIENT_STORAGE' });
      expect(body.errors[0]?.message).toMatch(/no space left/);
      // The upload is gone with its bytes: its status is unknown now.
      const status = await request(new URL(location, agent2().peerUrl).href, { headers: { authorization: basic(grant.password) } });
      await status.body.dump();
      expect(status.statusCode).toBe(404);
      await expectNothingLeft(before);
    }, 180_000);

    it('a monolithic POST ?digest= answers 507 and keeps nothing', async () => {
      const before = await storeFiles();
      const layer = bigLayoutImage.layers[0]!;
      const bytes = await readFile(join(bigLayout, 'blobs', 'sha256', layer.digest.slice('sha256:'.length)));
      const res = await request(`${agent2().peerUrl}/v2/${grant.repository}/blobs/uploads/?digest=${layer.digest}`, {
        method: 'POST',
        headers: { authorization: basic(grant.password) },
        body: bytes,
        headersTimeout: 120_000,
        bodyTimeout: 120_000,
      });
      const body = (await res.body.json()) as { errors: Array<{ code: string; message: string }> };
      expect({ status: res.statusCode, code: body.errors[0]?.code }).toEqual({ status: 507, code: 'INSUFFICIENT_STORAGE' });
      await expectNothingLeft(before);
    }, 180_000);

    // skopeo gets the 507 when its PATCH is out before the answer is read, and otherwise a broken pipe (the
    // connection is closed after an early answer): what it must never do is succeed or leave bytes behind.
    // The answer itself is asserted above, by clients that read it.
    it('skopeo pushing to the agent fails, keeps nothing, and the agent keeps serving', async () => {
      const before = await storeFiles();
      const r = await run(
        'skopeo',
        ['--insecure-policy', 'copy', '--dest-tls-verify=false', '--retry-times', '0', '--dest-creds', `${grant.username}:${grant.password}`, `oci:${bigLayout}:x`, `docker://${new URL(grant.registry_url).host}/${grant.repository}:1`],
        {},
        { timeoutMs: 180_000 },
      );
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/507 Insufficient Storage|no space left on the disk holding the image store|broken pipe|use of closed network connection|connection reset/);
      await expectNothingLeft(before);
      await expectStillWorking('push');
    }, 240_000);
  });

  it('distribute: the target fails with INSUFFICIENT_STORAGE, others unaffected, nothing left behind', async () => {
    const digest = await cluster.loadImage('agent-1', big.tar, 'docker.io/big/image:1');
    const before = await storeFiles();
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2'] });
    expect(created.status).toBe(202);
    const done = await cluster.settle(created.body.operation.id);
    const target = done.targets.find((t) => t.machine_id === 'agent-2');
    expect(target?.status).toBe('failed');
    expect(target?.failure?.code).toBe('INSUFFICIENT_STORAGE');
    expect(target?.failure?.message).toMatch(/no space left/);
    // Whole, verified small blobs fetched before the layer (config, manifest) may stay for a retry to reuse;
    // no byte of the layer that did not fit does.
    await until('agent-2 to hold no partial ingest', async () => ((await storeFiles()).ingests.length === 0 ? true : undefined), { timeoutMs: 30_000 });
    const added = (await storeFiles()).blobs.filter((b) => !before.blobs.includes(b));
    const addedBytes = (await Promise.all(added.map((b) => stat(join(agent2().dataDir, 'store', 'blobs', 'sha256', b))))).reduce((n, s) => n + s.size, 0);
    expect(addedBytes).toBeLessThan(MiB);
    const machines = await cluster.api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
    expect(machines.body.machines.map((m) => [m.id, m.status]).sort()).toEqual([
      ['agent-1', 'online'],
      ['agent-2', 'online'],
    ]);
    await expectStillWorking('distribute');
  }, 300_000);
});
