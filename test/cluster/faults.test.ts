import { createReadStream } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RegistryClient } from '../../src/registry/client.js';
import { pushImage } from '../../src/registry/push.js';
import { openStore } from '../../src/store/index.js';
import { importArchive } from '../../src/store/import-archive.js';
import { tmpDir } from '../harness/tmp.js';
import type { Availability, Operation, UploadGrant } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { runOk } from '../harness/run.js';

/**
 * Crashes in the middle of a distribute: the control plane killed with SIGKILL and restarted, and a
 * target agent killed or stopped. Transfers are slowed by the agents' real bandwidth cap, and where a
 * test needs them surely unfinished, the agents serving the image are frozen (SIGSTOP) once bytes
 * move: then nothing can finish, however fast or loaded the machine is, until they are thawed.
 */

const RATE = 4 * 1024 * 1024;
let cluster: Cluster;
/** Deadlines for hangs, not speed; polls quick. */
const SLOW = { timeoutMs: 180_000, everyMs: 50 };
/** Agents this test froze: thawed after it whatever happened, so nothing leaks into the next. */
const frozen = new Set<string>();

function agentProcess(name: string) {
  return cluster.agents.find((a) => a.name === name)!.process;
}

/** SIGSTOP: whatever the agents serve stalls, and they send nothing, until thaw(). */
function freeze(...names: string[]): void {
  for (const name of names) {
    frozen.add(name);
    agentProcess(name).kill('SIGSTOP');
  }
}

function thaw(): void {
  for (const name of frozen) agentProcess(name).kill('SIGCONT');
  frozen.clear();
}

/**
 * Stops the control plane with SIGTERM and resolves once it exited; fails if it is still up after
 * `deadlineMs`: long enough for any loaded machine, far shorter than what it must not wait for.
 */
async function stopsWithin(deadlineMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the control plane was still running ${deadlineMs} ms after SIGTERM`)), deadlineMs);
  });
  try {
    await Promise.race([cluster.killControl('SIGTERM'), late]);
  } finally {
    clearTimeout(timer);
  }
}

async function machineOnline(name: string): Promise<void> {
  await until(`${name} online`, async () => {
    const r = await cluster.api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
    return r.body.machines.find((m) => m.id === name && m.status === 'online');
  }, SLOW);
}

async function op(id: string): Promise<Operation> {
  const r = await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`);
  return r.body.operation;
}

async function loadImage(name: string): Promise<string> {
  // 3 layers of 4 MiB of random bytes: about 3 s per target at the cap.
  const { tar } = await makeImageTar(name, { layers: 3, layerBytes: 4 * 1024 * 1024 });
  return cluster.loadImage('agent-1', tar, name);
}

/** Starts a distribute to agent-2 and agent-3 and resolves once bytes move and neither has finished. */
async function distributeMidway(digest: string): Promise<string> {
  const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2', 'agent-3'] });
  const id = created.body.operation.id;
  await until('bytes to move', async () => {
    const o = await op(id);
    return o.targets.some((t) => t.bytes_transferred > 0) && o.targets.every((t) => t.status === 'running') ? o : undefined;
  }, SLOW);
  return id;
}

beforeAll(async () => {
  cluster = await startCluster({ agents: 3, maxTransferRate: RATE });
}, 900_000);

afterEach(() => {
  thaw();
});

afterAll(async () => {
  thaw();
  await cluster?.close();
});

/**
 * Starts a distribute from agent-1 to agent-2 and agent-3, waits until agent-3 receives bytes while
 * neither target has finished, and freezes both agents that could serve it the rest (agent-1, and
 * agent-2 as its peer): agent-3's transfer is then surely in flight.
 */
async function distributeToAFrozenSource(digest: string): Promise<string> {
  const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2', 'agent-3'] });
  const id = created.body.operation.id;
  await until('agent-3 to receive bytes', async () => {
    const o = await op(id);
    const three = o.targets.find((t) => t.machine_id === 'agent-3');
    return (three?.bytes_transferred ?? 0) > 0 && o.targets.every((t) => t.status === 'running') ? o : undefined;
  }, SLOW);
  freeze('agent-1', 'agent-2');
  return id;
}

/** The end of a distribute whose target agent-3 went away mid-transfer: it alone failed, AGENT_UNREACHABLE while moving blobs. */
async function expectAgent3WentAway(id: string): Promise<void> {
  const final = await cluster.settle(id);
  expect(final.status).toBe('partially_failed');
  expect(final.targets.map((t) => [t.machine_id, t.status, t.failure?.code, t.failure?.stage])).toEqual([
    ['agent-2', 'present', undefined, undefined],
    ['agent-3', 'failed', 'AGENT_UNREACHABLE', 'blobs'],
  ]);
  // stowctl shows the same code.
  const shown = await cluster.stowctl(['operation', 'get', id]);
  expect(shown.stdout).toMatch(/agent-3\s+failed\s+.*AGENT_UNREACHABLE/);
}

describe('faults during distribute', () => {
  it('a control plane killed with SIGKILL mid-distribute resumes the operation after restart', async () => {
    const digest = await loadImage('example.test/crash/control:1');
    const id = await distributeMidway(digest);
    await cluster.killControl('SIGKILL');
    await cluster.startControl();

    const final = await cluster.settle(id);
    expect(final.status).toBe('succeeded');
    // Moved by this operation, before or after the crash: present, never skipped_present.
    expect(final.targets.map((t) => t.status)).toEqual(['present', 'present']);
    for (const t of final.targets) expect(t.finished_at).not.toBeNull();
    for (const name of ['agent-2', 'agent-3']) await cluster.waitForImage(name, digest);
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: { DOCKER_HOST: cluster.agents[2]!.dockerHost } });
    expect(listed).toContain('example.test/crash/control:1');
  }, 900_000);

  it('stowctl following a distribute survives a control-plane SIGKILL and restart, and reports the end', async () => {
    const digest = await loadImage('example.test/crash/follow:1');
    const cli = cluster.stowctl(['--json', 'image', 'distribute', '--digest', digest, '--from', 'agent-1', '--to', 'agent-2,agent-3']);
    await until('the operation to move bytes', async () => {
      const r = await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations?kind=distribute&limit=1');
      const o = r.body.operations[0];
      return o && o.artifact.digest === digest && o.targets.some((t) => t.bytes_transferred > 0) ? o : undefined;
    }, SLOW);
    await cluster.killControl('SIGKILL');
    await cluster.startControl();
    const r = await cli;
    expect(r.code, r.stderr).toBe(0);
    const final = (JSON.parse(r.stdout) as { operation: Operation }).operation;
    expect(final.status).toBe('succeeded');
    expect(final.targets.map((t) => t.status)).toEqual(['present', 'present']);
  }, 900_000);

  it('a target agent killed mid-distribute fails alone (AGENT_UNREACHABLE, stage blobs); the others finish; it returns intact', async () => {
    const digest = await loadImage('example.test/crash/agent:1');
    const id = await distributeToAFrozenSource(digest);
    await cluster.killAgent('agent-3', 'SIGKILL');
    thaw();
    await expectAgent3WentAway(id);

    // Nothing is recorded as present on agent-3 that is not there.
    const status = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${digest}&machine=agent-3`);
    expect(status.body.records.every((r) => r.presence.state !== 'present')).toBe(true);
    expect(status.body.records.map((r) => r.presence.state)).toEqual(['failed']);

    // Back up, it reports what it really holds (not the image), and a retry brings it.
    await cluster.startAgent('agent-3');
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: { DOCKER_HOST: cluster.agents[2]!.dockerHost } });
    expect(listed).not.toContain('example.test/crash/agent:1');
    await machineOnline('agent-3');
    const retry = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-3'] });
    const done = await cluster.settle(retry.body.operation.id);
    expect(done.targets[0]).toMatchObject({ machine_id: 'agent-3', status: 'present' });
    await cluster.waitForImage('agent-3', digest);
  }, 900_000);

  it('a target agent stopped with SIGTERM mid-distribute fails AGENT_UNREACHABLE (stage blobs), as a killed one does', async () => {
    const digest = await loadImage('example.test/crash/agent-term:1');
    const id = await distributeToAFrozenSource(digest);
    await cluster.killAgent('agent-3', 'SIGTERM');
    thaw();
    await expectAgent3WentAway(id);

    await cluster.startAgent('agent-3');
    await machineOnline('agent-3');
  }, 900_000);

  it('a push whose uploader went quiet survives a control-plane stop: SIGTERM exits at once, and after the restart the finished upload is found and fanned out', async () => {
    // The uploader's side, as stowctl does it, but it never reports back.
    const { tar } = await makeImageTar('example.test/quiet/uploader:1', { layers: 2, layerBytes: 256 * 1024 });
    const local = await openStore(await tmpDir('stowage-uploader-'));
    const [imported] = (await importArchive(createReadStream(tar), local)).images;
    const created = await cluster.api<{ operation: Operation; upload: UploadGrant }>('POST', '/api/v1/operations/push', {
      digest: imported!.manifestDigest,
      reference: 'example.test/quiet/uploader:1',
      size_bytes: 1,
      to: ['agent-2', 'agent-3'],
    });
    expect(created.status).toBe(201);
    const { operation, upload } = created.body;
    expect(operation.stage).toBe('uploading');
    const url = new URL(upload.registry_url);
    const client = new RegistryClient({ host: url.host, credentials: { username: upload.username, password: upload.password } });
    await pushImage(client, local, imported!.manifestDigest, upload.repository, undefined);
    local.images.close();

    // Stopping does not wait for a report that will not come (uploadTimeoutMs, an hour), and leaves the operation to resume.
    await stopsWithin(60_000);
    await cluster.startControl();
    const final = await cluster.settle(operation.id);
    expect(final.status).toBe('succeeded');
    expect(final.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['agent-2', 'present'],
      ['agent-3', 'present'],
    ]);
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: { DOCKER_HOST: cluster.agents[2]!.dockerHost } });
    expect(listed).toContain('example.test/quiet/uploader:1');
  }, 900_000);

  it('a cancelled distribute ends cancelled at once: its stream says so, unfinished targets fail CANCELLED, nothing is claimed', async () => {
    const digest = await loadImage('example.test/crash/cancel:1');
    const follower = cluster.stowctl(['--json', 'image', 'distribute', '--digest', digest, '--from', 'agent-1', '--to', 'agent-2,agent-3']);
    const running = await until('bytes to move', async () => {
      const r = await cluster.api<{ operations: Operation[] }>('GET', '/api/v1/operations?kind=distribute&limit=1');
      const o = r.body.operations[0];
      return o && o.artifact.digest === digest && o.targets.some((t) => t.bytes_transferred > 0) && o.targets.every((t) => t.status === 'running') ? o : undefined;
    }, SLOW);
    // Frozen, the transfers cannot end before the cancel arrives, however slowly stowctl starts.
    freeze('agent-1', 'agent-2');
    const cancel = await cluster.stowctl(['--json', 'operation', 'cancel', running.id]);
    thaw();
    expect(cancel.code, cancel.stderr).toBe(0);
    const cancelled = (JSON.parse(cancel.stdout) as { operation: Operation }).operation;
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.targets.every((t) => t.status === 'failed' && t.failure?.code === 'CANCELLED')).toBe(true);

    const followed = await follower;
    expect(followed.code).toBe(1);
    expect((JSON.parse(followed.stdout) as { operation: Operation }).operation.status).toBe('cancelled');
    // No availability record claims a transfer under way for it.
    const status = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${digest}`);
    expect(status.body.records.filter((r) => r.presence.state === 'transferring')).toEqual([]);
    // Too late to cancel twice.
    const again = await cluster.stowctl(['--json', 'operation', 'cancel', running.id]);
    expect(again.code).toBe(1);
    expect((JSON.parse(again.stdout) as { error: { code: string } }).error.code).toBe('CONFLICT');
  }, 900_000);

  it('SIGTERM during a distribute stops the control plane at once; after the restart the operation ends as if uninterrupted', async () => {
    const digest = await loadImage('example.test/crash/term:1');
    const id = await distributeMidway(digest);
    // With the sources frozen the transfers cannot end: a control plane waiting for them would not stop.
    freeze('agent-1', 'agent-2');
    await stopsWithin(60_000);
    thaw();
    await cluster.startControl();
    const final = await cluster.settle(id);
    expect(final.status).toBe('succeeded');
    expect(final.targets.map((t) => t.status)).toEqual(['present', 'present']);
  }, 900_000);
});
