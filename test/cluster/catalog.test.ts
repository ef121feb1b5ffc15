import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster } from '../harness/cluster.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { runOk } from '../harness/run.js';
import { type LabelledImages, pushLabelledImages } from '../control/catalog-harness.js';

/**
 * The catalog through stowctl on a cluster of real processes: a registry named in the control plane's
 * configuration, rescan, list, preload onto a scaling group, unload; preload and unload are operations
 * like any other, listed by `stowctl image operation list`.
 */

let reg: TestRegistry;
let images: LabelledImages;
let cluster: Cluster;

async function json<T>(args: string[]): Promise<{ code: number; body: T; stderr: string }> {
  const r = await cluster.stowctl(['--json', ...args]);
  try {
    return { code: r.code, body: JSON.parse(r.stdout) as T, stderr: r.stderr };
  } catch {
    throw new Error(`stowctl ${args.join(' ')} printed no JSON (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  }
}

beforeAll(async () => {
  reg = await startRegistry();
  images = await pushLabelledImages(reg.host);
  cluster = await startCluster({
    agents: 3,
    scalingGroups: ['gpu', 'gpu', 'cpu'],
    control: { seed: { registries: [{ name: reg.host, url: reg.url }] } },
  });
}, 900_000);

afterAll(async () => {
  await cluster?.close();
  await reg?.stop();
});

describe('catalog through stowctl on a process cluster', () => {
  it('rescans, lists, preloads onto a scaling group and unloads, with operations to show for it', async () => {
    const rescan = await cluster.stowctl(['catalog', 'rescan', reg.host]);
    expect(rescan.code, rescan.stderr).toBe(0);

    const list = await json<{ images: Array<{ name: string; tag: string; digest: string }> }>(['catalog', 'list']);
    expect(list.code).toBe(0);
    const app = list.body.images.find((i) => i.name.endsWith('test/app') && i.tag === '1');
    // Backend.AI's digest: the config digest, the image ID `docker images` shows.
    expect(app?.digest).toBe(images.app.configDigest);

    const ref = `${reg.host}/test/app:1`;
    const preload = await cluster.stowctl(['catalog', 'preload', ref, '--agents', 'scaling_group:gpu']);
    expect(preload.code, preload.stderr).toBe(0);

    const ops = await json<{ operations: Operation[] }>(['image', 'operation', 'list', '--kind', 'preload']);
    const op = ops.body.operations[0]!;
    expect(op.status).toBe('succeeded');
    expect(op.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['agent-1', 'present'],
      ['agent-2', 'present'],
    ]);
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: { DOCKER_HOST: cluster.agents[1]!.dockerHost } });
    expect(listed).toContain(`${reg.host}/test/app:1`);
    await cluster.waitForImage('agent-2', images.app.manifestDigest);

    const unload = await cluster.stowctl(['catalog', 'unload', ref, '--agents', 'agent-2']);
    expect(unload.code, unload.stderr).toBe(0);
    const unloads = await json<{ operations: Operation[] }>(['image', 'operation', 'list', '--kind', 'unload']);
    expect(unloads.body.operations[0]!.targets).toMatchObject([{ machine_id: 'agent-2', status: 'absent' }]);
    await cluster.waitForImage('agent-2', images.app.manifestDigest, { absent: true });
    const status = await json<{ records: Availability[] }>(['image', 'status', '--digest', images.app.manifestDigest]);
    expect(status.body.records.filter((r) => r.presence.state === 'present').map((r) => r.machine_id)).toEqual(['agent-1']);
  }, 900_000);

  it('a finished task survives a control-plane restart: subscribing afterwards yields its final event', async () => {
    const rescan = await json<{ ok: boolean; task_id: string; outcome: { event: string } }>(['catalog', 'rescan', reg.host]);
    expect(rescan.body.outcome.event).toBe('bgtask_done');
    await cluster.killControl();
    await cluster.startControl();
    const res = await request(`${cluster.controlUrl}/events/background-task?task_id=${rescan.body.task_id}`, {
      headers: { authorization: `Bearer ${cluster.adminToken}` },
    });
    expect(res.statusCode).toBe(200);
    // The stream ends by itself after the final event and Backend.AI's server_close.
    const text = await res.body.text();
    const events = [...text.matchAll(/^event: (\S+)$/gm)].map((m) => m[1]);
    expect(events).toEqual(['bgtask_done', 'server_close']);
    const watch = await cluster.stowctl(['task', 'watch', rescan.body.task_id]);
    expect(watch.code, watch.stderr).toBe(0);
  }, 900_000);
});
