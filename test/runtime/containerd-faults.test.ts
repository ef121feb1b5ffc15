import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Availability, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { type Containerd, type RunnableImage, makeRunnableImage, startContainerd } from '../harness/containerd.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Hand-over failures: an agent whose containerd socket is missing, and one whose containerd dies in the middle
 * of a transfer. The target fails at stage `runtime` with a clear code, containerd lists nothing of the image,
 * and the agent keeps serving (a later distribute succeeds once containerd is back).
 */

const REF = 'docker.io/stowage-test/faults:1';
const RATE = 4 * 1024 * 1024;

let cluster: Cluster;
let source: Containerd;
let dying: Containerd;
let missingSocket: string;
let late: Containerd | undefined;
let image: RunnableImage;

async function operation(id: string): Promise<Operation> {
  return (await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`)).body.operation;
}

async function distribute(to: string): Promise<string> {
  const r = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest: image.manifestDigest, from: 'agent-1', to: [to] });
  expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  return r.body.operation.id;
}

async function online(machine: string): Promise<boolean> {
  const r = await cluster.api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
  return r.body.machines.some((m) => m.id === machine && m.status === 'online');
}

beforeAll(async () => {
  source = await startContainerd();
  dying = await startContainerd();
  missingSocket = join(await tmpDir('stowage-nosock-'), 'c.sock');
  // 32 MiB of layers: at RATE bytes/s into agent-2, the transfer is under way for seconds.
  image = await makeRunnableImage(REF, { extraLayers: 2, extraBytes: 16 * 1024 * 1024 });
  const sockets = [source.socket, dying.socket, missingSocket];
  cluster = await startCluster({
    agents: 3,
    agentArgs: (i) => ['--runtime', 'containerd', '--containerd-socket', sockets[i]!, ...(i === 1 ? ['--max-transfer-rate', String(RATE)] : [])],
  });
  const push = await cluster.stowctl(['--json', 'image', 'push', REF, '--archive', image.tar, '--to', 'agent-1']);
  expect(push.code, push.stderr + push.stdout).toBe(0);
}, 240_000);

afterAll(async () => {
  await cluster?.close();
  await source?.stop();
  await dying?.stop();
  await late?.stop();
});

describe('containerd hand-over failures', () => {
  it('a missing containerd socket: the agent serves, and a distribute to it fails at stage runtime', async () => {
    expect(await online('agent-3')).toBe(true);
    const op = await cluster.settle(await distribute('agent-3'));
    expect(op.status).toBe('failed');
    const target = op.targets[0]!;
    expect(target.status).toBe('failed');
    expect(target.failure).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', stage: 'runtime' });
    expect(target.failure?.message).toContain('containerd');
    const status = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?machine=agent-3&digest=${image.manifestDigest}`);
    expect(status.body.records.filter((r) => r.presence.state === 'present')).toEqual([]);
    expect(await online('agent-3')).toBe(true);
  }, 300_000);

  it('containerd killed mid-transfer: failed at stage runtime, nothing listed after it restarts, and the next distribute works', async () => {
    const id = await distribute('agent-2');
    await until('bytes to arrive at agent-2', async () => ((await operation(id)).targets[0]?.bytes_transferred ?? 0) > 1024 * 1024 ? true : undefined, {
      timeoutMs: 60_000,
      everyMs: 50,
    });
    await dying.stop();
    const op = await cluster.settle(id, 120_000);
    const target = op.targets[0]!;
    expect(target.status).toBe('failed');
    expect(target.failure).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', stage: 'runtime' });

    await dying.restart();
    const ls = await dying.ctr(['images', 'ls', '-q']);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout.trim()).toBe('');
    expect(await online('agent-2')).toBe(true);

    const again = await cluster.settle(await distribute('agent-2'), 180_000);
    expect(again.targets[0]?.status, JSON.stringify(again.targets[0]?.failure)).toBe('present');
    const ran = await dying.ctr(['run', '--rm', REF, 't-after']);
    expect(ran.stdout).toBe(image.message);

    // The agent follows the restarted containerd again: a change made there directly is reported.
    const direct = await makeRunnableImage('docker.io/stowage-test/after-restart:1');
    const imported = await dying.ctr(['images', 'import', direct.tar]);
    expect(imported.code, imported.stderr).toBe(0);
    await cluster.waitForImage('agent-2', direct.manifestDigest, { timeoutMs: 120_000 });
    const rm = await dying.ctr(['images', 'rm', REF]);
    expect(rm.code, rm.stderr).toBe(0);
    await cluster.waitForImage('agent-2', image.manifestDigest, { absent: true, timeoutMs: 120_000 });
  }, 300_000);

  it('a push to an agent whose containerd socket is missing: that target failed at stage runtime, nothing reported', async () => {
    const push = await cluster.stowctl(['--json', 'image', 'push', REF, '--archive', image.tar, '--to', 'agent-3']);
    expect(push.code, push.stdout + push.stderr).toBe(1);
    // The blobs go straight into containerd's content store, so the upload itself meets the missing runtime.
    const error = (JSON.parse(push.stdout) as { error: { code: string; details: { operation_id: string; stage: string } } }).error;
    expect(error).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', details: { stage: 'runtime' } });
    const op = await cluster.settle(error.details.operation_id);
    expect(op.status).toBe('failed');
    const target = op.targets.find((t) => t.machine_id === 'agent-3');
    expect(target?.status).toBe('failed');
    expect(target?.failure).toMatchObject({ code: 'RUNTIME_UNAVAILABLE', stage: 'runtime' });
    expect(target?.failure?.message).toContain('containerd is not answering');
    const status = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-3');
    expect(status.body.records.filter((r) => r.presence.state === 'present')).toEqual([]);
    expect(await online('agent-3')).toBe(true);
  }, 300_000);

  it('a containerd that appears later at the missing socket is picked up: the next distribute to that agent works', async () => {
    late = await startContainerd({ dir: dirname(missingSocket) });
    expect(late.socket).toBe(missingSocket);
    // The agent follows it: an image imported there directly is reported.
    const direct = await makeRunnableImage('docker.io/stowage-test/late:1');
    const imported = await late.ctr(['images', 'import', direct.tar]);
    expect(imported.code, imported.stderr).toBe(0);
    await cluster.waitForImage('agent-3', direct.manifestDigest, { timeoutMs: 120_000 });
    const op = await cluster.settle(await distribute('agent-3'), 180_000);
    expect(op.targets[0]?.status, JSON.stringify(op.targets[0]?.failure)).toBe('present');
    const ran = await late.ctr(['run', '--rm', REF, 't-late']);
    expect(ran.stdout).toBe(image.message);
    await cluster.waitForImage('agent-3', image.manifestDigest, { timeoutMs: 120_000 });
  }, 300_000);
});
