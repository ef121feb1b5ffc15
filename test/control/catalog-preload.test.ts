import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { RegistryStore } from '../../src/control/catalog/registries.js';
import { until } from '../harness/cluster.js';
import { freePort } from '../harness/registry.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { tmpDir } from '../harness/tmp.js';
import { skopeo } from '../harness/images.js';
import { type CatalogPlane, type LabelledImages, collectTaskEvents, operationOfTask, pushLabelledImages, startCatalogPlane } from './catalog-harness.js';

/**
 * preload_image / unload_image with real agents (stowd agent processes) joined to an in-process control
 * plane: targets chosen by scaling_group:, label: and machine ID; images pulled from the registry or a
 * peer; installed_agents following the agents' live inventory.
 */

const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
const JOIN_TOKEN = 'sjt_catalog-preload-test-token';

let reg: TestRegistry;
let plane: CatalogPlane;
let images: LabelledImages;
let root: string;
const agents: ChildProcess[] = [];

async function startAgent(name: string, scalingGroup: string, labels: string[] = []): Promise<void> {
  const dataDir = await tmpDir(`stowage-${name}-`);
  const args = [STOWD, 'agent', '--data-dir', dataDir, '--peer-port', String(await freePort()), '--control-url', plane.url, '--join-token', JOIN_TOKEN];
  args.push('--name', name, '--scaling-group', scalingGroup, ...labels.flatMap((l) => ['--label', l]));
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  agents.push(child);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    let err = '';
    // A deadline for hangs: a loaded machine may take a minute to start an agent.
    const timer = setTimeout(() => reject(new Error(`agent ${name} did not start: ${err}`)), 180_000);
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (/agent ready/.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    child.once('exit', (code) => reject(new Error(`agent ${name} exited with ${code}: ${err}`)));
  });
}

interface Img {
  name: string;
  tag: string;
  digest: string;
  installed: boolean;
  installed_agents: string[] | null;
}

async function installedAgents(name: string, tag = '1'): Promise<string[] | null> {
  const r = await plane.gql<{ images: Img[] }>(root, '{ images { name tag digest installed installed_agents } }');
  return r.body.data?.images.find((i) => i.name === name && i.tag === tag)?.installed_agents ?? null;
}

/** What the agent itself holds of a platform manifest (asked over its API, not the control plane's records). */
async function agentRecord(machine: string, digest: string) {
  return plane.ctx.runner.agents.getImage(await plane.ctx.machines.require(machine), digest);
}

async function mutate(kind: 'preload_image' | 'unload_image', reference: string, targets: string) {
  const r = await plane.gql<Record<string, { ok: boolean; msg: string; task_id: string }>>(
    root,
    `mutation($r: String!, $t: [String]!) { ${kind}(reference: $r, target_agents: $t) { ok msg task_id } }`,
    { r: reference, t: targets },
  );
  expect(r.body.errors).toBeUndefined();
  return r.body.data![kind]!;
}

beforeAll(async () => {
  reg = await startRegistry();
  images = await pushLabelledImages(reg.host);
  plane = await startCatalogPlane({ joinToken: JOIN_TOKEN });
  await new RegistryStore(plane.ctx.db).put({ name: reg.host, url: reg.url });
  root = await createApiKey(plane.ctx.db, (await createUser(plane.ctx.db, { name: 'root', role: 'superadmin' })).userId);
  await Promise.all([startAgent('gpu-1', 'gpu', ['zone=a']), startAgent('gpu-2', 'gpu'), startAgent('cpu-1', 'cpu', ['zone=a'])]);
  const r = await plane.gql<{ rescan_images: { task_id: string } }>(root, `mutation { rescan_images(registry: "${reg.host}") { ok task_id } }`);
  await collectTaskEvents(plane.url, root, r.body.data!.rescan_images.task_id);
}, 900_000);

afterAll(async () => {
  for (const a of agents) a.kill('SIGKILL');
  await plane?.close();
  await reg?.stop();
});

describe('preload_image and unload_image', () => {
  it('preloads to the agents of a scaling group from the registry', async () => {
    const ref = `${reg.host}/test/app:1`;
    const res = await mutate('preload_image', ref, 'scaling_group:gpu');
    expect(res.ok).toBe(true);
    const { events } = await collectTaskEvents(plane.url, root, res.task_id);
    expect(events.at(-1)?.event).toBe('bgtask_done');
    const op = (await operationOfTask(plane, res.task_id))!;
    expect(op.kind).toBe('preload');
    expect(op.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['gpu-1', 'present'],
      ['gpu-2', 'present'],
    ]);
    expect(await installedAgents('test/app')).toEqual(['gpu-1', 'gpu-2']);
  });

  it('unloading one tag leaves a sibling tag of the same image installed, on the agent too', async () => {
    // test/app:sib is test/app:1 under another tag: one digest, two images in Backend.AI's sense.
    await skopeo(['copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${reg.host}/test/app:1`, `docker://${reg.host}/test/app:sib`]);
    const scan = await plane.gql<{ rescan_images: { task_id: string } }>(root, `mutation { rescan_images(registry: "${reg.host}") { ok task_id } }`);
    await collectTaskEvents(plane.url, root, scan.body.data!.rescan_images.task_id);
    expect(await installedAgents('test/app', 'sib')).toEqual([]);
    const pre = await mutate('preload_image', `${reg.host}/test/app:sib`, 'gpu-1');
    await collectTaskEvents(plane.url, root, pre.task_id);
    expect(await installedAgents('test/app', 'sib')).toEqual(['gpu-1']);

    const un = await mutate('unload_image', `${reg.host}/test/app:sib`, 'gpu-1');
    const { events } = await collectTaskEvents(plane.url, root, un.task_id);
    expect(events.at(-1)?.event).toBe('bgtask_done');
    // An inventory report gpu-1 sent before the unload can land after it: the control plane's view is awaited.
    await until('the catalog to show test/app:sib on no agent', async () => {
      const agents = await installedAgents('test/app', 'sib');
      return agents !== null && agents.length === 0 ? true : undefined;
    });
    expect(await installedAgents('test/app')).toEqual(['gpu-1', 'gpu-2']);
    // The agent itself kept the image under its other tag, and only that one.
    const onAgent = await agentRecord('gpu-1', images.app.manifestDigest);
    expect(onAgent?.references).toContain(`${reg.host}/test/app:1`);
    expect(onAgent?.references).not.toContain(`${reg.host}/test/app:sib`);
    // Its inventory reports, as they come in, say the same.
    await until('the control plane to record what gpu-1 holds', async () => {
      const held = (await plane.ctx.availability.query({ machine: 'gpu-1', presentOnly: true })).filter((a) => a.digest === images.app.manifestDigest);
      const refs = held.flatMap((a) => a.references);
      return refs.includes(`${reg.host}/test/app:1`) && !refs.includes(`${reg.host}/test/app:sib`) ? true : undefined;
    });
    expect(await installedAgents('test/app')).toEqual(['gpu-1', 'gpu-2']);
    await plane.gql(root, `mutation { forget_image(reference: "${reg.host}/test/app:sib") { ok } }`);
  });

  it('preloads from a peer that holds it, by label, and a second time is skipped_present', async () => {
    const ref = `${reg.host}/test/app:1`;
    // With the registry gone, only a peer agent can deliver the image.
    await reg.stop();
    const res = await mutate('preload_image', ref, 'label:zone=a');
    await collectTaskEvents(plane.url, root, res.task_id);
    const op = (await operationOfTask(plane, res.task_id))!;
    expect(op.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['cpu-1', 'present'],
      ['gpu-1', 'skipped_present'],
    ]);
    expect(await installedAgents('test/app')).toEqual(['cpu-1', 'gpu-1', 'gpu-2']);
  });

  it('unloads from the agents of a scaling group, and installed_agents drops them', async () => {
    const res = await mutate('unload_image', `${reg.host}/test/app:1`, 'scaling_group:gpu');
    const { events } = await collectTaskEvents(plane.url, root, res.task_id);
    expect(events.at(-1)?.event).toBe('bgtask_done');
    const op = (await operationOfTask(plane, res.task_id))!;
    expect(op.kind).toBe('unload');
    expect(op.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['gpu-1', 'absent'],
      ['gpu-2', 'absent'],
    ]);
    expect(await installedAgents('test/app')).toEqual(['cpu-1']);
    // Not only the control plane's bookkeeping: the agents themselves no longer hold it, cpu-1 still does.
    expect(await agentRecord('gpu-1', images.app.manifestDigest)).toBeUndefined();
    expect(await agentRecord('gpu-2', images.app.manifestDigest)).toBeUndefined();
    expect((await agentRecord('cpu-1', images.app.manifestDigest))?.references).toContain(`${reg.host}/test/app:1`);
    expect(await installedAgents('test/app')).toEqual(['cpu-1']);
  });

  it('a cancelled unload writes no target after the cancel: targets read failed CANCELLED', async () => {
    // cpu-1 still holds test/app:1; its agent call is under way when the operation is cancelled.
    const res = await mutate('unload_image', `${reg.host}/test/app:1`, 'cpu-1');
    expect(res.ok).toBe(true);
    await plane.ctx.runner.cancel((await operationOfTask(plane, res.task_id))!.id, 'root');
    const { events } = await collectTaskEvents(plane.url, root, res.task_id);
    expect(events.map((e) => e.event)).toEqual(['bgtask_cancelled']);
    await plane.ctx.runner.idle();
    const op = (await operationOfTask(plane, res.task_id))!;
    expect(op.status).toBe('cancelled');
    expect(op.targets.map((t) => [t.machine_id, t.status, t.failure?.code])).toEqual([['cpu-1', 'failed', 'CANCELLED']]);
  });

  it('refuses bad selectors and unknown images with ok: false and records nothing', async () => {
    const before = (await plane.ctx.operations.list({ limit: 1000 })).length;
    expect((await mutate('preload_image', `${reg.host}/test/app:1`, 'nosuch-machine')).msg).toMatch(/MACHINE_NOT_FOUND/);
    expect((await mutate('preload_image', `${reg.host}/test/app:1`, 'scaling_group:none')).msg).toMatch(/selects no online machine/);
    expect((await mutate('preload_image', `${reg.host}/test/nope:1`, '*')).msg).toMatch(/IMAGE_NOT_FOUND/);
    expect((await mutate('unload_image', `${reg.host}/test/app:1`, 'label:zone')).msg).toMatch(/label:key=value/);
    expect((await plane.ctx.operations.list({ limit: 1000 })).length).toBe(before);
  });
});
