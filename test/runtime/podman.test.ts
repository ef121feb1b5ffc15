import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster } from '../harness/cluster.js';
import { type RunnableImage, makeRunnableImage } from '../harness/containerd.js';
import { type PodmanService, startPodman } from '../harness/podman.js';
import { skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { until } from '../harness/cluster.js';

/**
 * Three agents with `--runtime docker`, each beside its own Podman service: an image pushed from an archive
 * and distributed is loaded into every Podman (same image ID, the config digest) and `podman run` starts it;
 * `podman rmi` on a machine drops it from image status.
 */

const REF = 'docker.io/stowage-test/podhello:1';

let cluster: Cluster;
const services: PodmanService[] = [];
let image: RunnableImage;
let registry: TestRegistry;

async function records(machine: string): Promise<Availability[]> {
  const r = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?machine=${machine}`);
  return r.body.records;
}

interface PodmanImage {
  Id: string;
  Names?: string[];
}

async function podmanImages(i: number): Promise<PodmanImage[]> {
  const r = await services[i]!.podman(['images', '--format', 'json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as PodmanImage[];
}

/** What unload_image asks of an agent: POST /agent/v1/unload with its machine secret (from its identity.json). */
async function unloadOn(agent: { peerUrl: string; dataDir: string }, ref: string): Promise<{ status: number; body: unknown }> {
  const { machine_secret } = JSON.parse(await readFile(join(agent.dataDir, 'identity.json'), 'utf8')) as { machine_secret: string };
  const res = await request(`${agent.peerUrl}/agent/v1/unload`, {
    method: 'POST',
    headers: { authorization: `Bearer ${machine_secret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ref }),
  });
  return { status: res.statusCode, body: await res.body.json() };
}

beforeAll(async () => {
  for (let i = 0; i < 3; i++) services.push(await startPodman());
  image = await makeRunnableImage(REF);
  cluster = await startCluster({ agents: 3, agentArgs: (i) => ['--runtime', 'docker', '--docker-socket', services[i]!.socket] });
}, 400_000);

afterAll(async () => {
  await cluster?.close();
  for (const s of services) await s.stop();
  await registry?.stop();
});

describe('agents beside Podman', () => {
  it('push to agent-1 and distribute to agents 2 and 3: every Podman holds the image ID and podman run prints the message', async () => {
    const push = await cluster.stowctl(['--json', 'image', 'push', REF, '--archive', image.tar, '--to', 'agent-1']);
    expect(push.code, push.stderr + push.stdout).toBe(0);
    const dist = await cluster.stowctl(['--json', 'image', 'distribute', '--digest', image.manifestDigest, '--from', 'agent-1', '--to', 'agent-2,agent-3']);
    expect(dist.code, dist.stderr + dist.stdout).toBe(0);
    for (let i = 0; i < 3; i++) {
      const held = (await podmanImages(i)).find((img) => `sha256:${img.Id.replace(/^sha256:/, '')}` === image.configDigest);
      expect(held?.Names, `agent-${i + 1}`).toContain(REF);
      const ran = await services[i]!.podman(['run', '--rm', REF]);
      expect(ran.stdout, ran.stderr).toBe(image.message);
      const r = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?machine=agent-${i + 1}&digest=${image.manifestDigest}`);
      expect(r.body.records.find((x) => x.presence.state === 'present')?.references).toContain(REF);
    }
  }, 300_000);

  it('podman rmi on a target drops it from image status; a second distribute loads it again', async () => {
    const rmi = await services[2]!.podman(['rmi', '--force', REF]);
    expect(rmi.code, rmi.stderr).toBe(0);
    await cluster.waitForImage('agent-3', image.manifestDigest, { absent: true });
    const again = await cluster.stowctl(['--json', 'image', 'distribute', '--digest', image.manifestDigest, '--from', 'agent-1', '--to', 'agent-3']);
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect((JSON.parse(again.stdout) as { operation: Operation }).operation.targets[0]?.status).toMatch(/^(present|skipped_present)$/);
    await cluster.waitForImage('agent-3', image.manifestDigest);
    const ran = await services[2]!.podman(['run', '--rm', REF]);
    expect(ran.stdout, ran.stderr).toBe(image.message);
  }, 300_000);

  it('podman pull, tag and rmi on the machine show in image status, by the registry manifest digest and the image ID', async () => {
    registry = await startRegistry();
    const direct = await makeRunnableImage('docker.io/stowage-test/pulled:1');
    const ref = `${registry.host}/stowage-test/pulled:1`;
    await skopeo(['copy', `oci:${direct.layout}`, `docker://${ref}`]);
    const pull = await services[1]!.podman(['pull', '--tls-verify=false', ref]);
    expect(pull.code, pull.stderr).toBe(0);
    const pulled = await until('agent-2 to report the pulled image', async () => (await records('agent-2')).find((r) => r.digest === direct.manifestDigest && r.presence.state === 'present'), {
      timeoutMs: 120_000,
    });
    expect(pulled.config_digest).toBe(direct.configDigest);
    expect(pulled.platform).toBe('linux/amd64');
    expect(pulled.references).toEqual([ref]);

    // A tag-only change.
    const tag = await services[1]!.podman(['tag', ref, 'docker.io/stowage-test/pulled:renamed']);
    expect(tag.code, tag.stderr).toBe(0);
    await until('agent-2 to report the new tag', async () => {
      const rec = (await records('agent-2')).find((r) => r.digest === direct.manifestDigest);
      return rec?.references.includes('docker.io/stowage-test/pulled:renamed') ? true : undefined;
    }, { timeoutMs: 120_000 });

    const rmi = await services[1]!.podman(['rmi', '--force', direct.configDigest.slice('sha256:'.length)]);
    expect(rmi.code, rmi.stderr).toBe(0);
    await cluster.waitForImage('agent-2', direct.manifestDigest, { absent: true });
  }, 300_000);

  it('unload removes the image from Podman and from image status', async () => {
    const res = await unloadOn(cluster.agents[2]!, image.manifestDigest);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect((await podmanImages(2)).some((img) => `sha256:${img.Id.replace(/^sha256:/, '')}` === image.configDigest)).toBe(false);
    await cluster.waitForImage('agent-3', image.manifestDigest, { absent: true });
  }, 300_000);
});
