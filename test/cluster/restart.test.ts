import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Machine, Operation } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { freePort } from '../harness/registry.js';
import { run } from '../harness/run.js';

/**
 * Restarts that used to mislead: a control plane restarted while a machine is down must not call that
 * machine online (issue 14, defect 5), and an agent restarted without its control plane must not drop
 * out of the cluster silently (defect 6).
 */

const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
let cluster: Cluster;

async function json<T>(args: string[]): Promise<{ code: number; body: T }> {
  const r = await cluster.stowctl(['--json', ...args]);
  return { code: r.code, body: JSON.parse(r.stdout) as T };
}

beforeAll(async () => {
  // A long offline window: right after a restart, a silent machine is "unknown" for all of it (work for
  // it waits that long for it to call in, then fails MACHINE_OFFLINE).
  cluster = await startCluster({ agents: 2, offlineAfterMs: 90_000 });
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

describe('restarts', () => {
  it('after a control-plane restart a machine not heard from is unknown, and a distribute to it fails MACHINE_OFFLINE', async () => {
    const { tar } = await makeImageTar('example.test/restart/app:1', { layers: 1 });
    const digest = await cluster.loadImage('agent-1', tar, 'example.test/restart/app:1');
    await cluster.killAgent('agent-2', 'SIGKILL');
    await cluster.killControl('SIGKILL');
    await cluster.startControl();

    const machines = await until('agent-1 to call in after the restart', async () => {
      const m = await cluster.api<{ machines: Machine[] }>('GET', '/api/v1/machines');
      return m.body.machines.find((x) => x.id === 'agent-1')?.status === 'online' ? m.body.machines : undefined;
    });
    expect(machines.find((x) => x.id === 'agent-2')?.status).toBe('unknown');

    const r = await json<{ operation: Operation }>(['image', 'distribute', 'example.test/restart/app:1', '--from', 'agent-1', '--to', 'agent-2']);
    expect(r.code).toBe(1);
    expect(r.body.operation.artifact.digest).toBe(digest);
    const [target] = r.body.operation.targets;
    expect([target!.machine_id, target!.status, target!.failure?.code]).toEqual(['agent-2', 'failed', 'MACHINE_OFFLINE']);
    expect(target!.failure?.message).toMatch(/agent-2" (is offline|has not been heard from since the control plane started)/);
  }, 900_000);

  it('an agent that joined refuses to start without its control plane unless --standalone', async () => {
    const dataDir = cluster.agents.find((a) => a.name === 'agent-2')!.dataDir;
    const refused = await run(process.execPath, [STOWD, 'agent', '--data-dir', dataDir, '--peer-port', String(await freePort())], {}, { timeoutMs: 180_000 });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`identity.json says this machine joined control plane ${cluster.controlUrl} as agent-2`);
    expect(refused.stderr).toContain(`--control-url ${cluster.controlUrl}`);
    expect(refused.stderr).toContain('--standalone');

    const child = spawn(process.execPath, [STOWD, 'agent', '--data-dir', dataDir, '--peer-port', String(await freePort()), '--standalone'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await until('the standalone agent to be ready', async () => (out.includes('agent ready') ? true : child.exitCode !== null ? Promise.reject(new Error(out)) : undefined), {
        timeoutMs: 180_000,
      });
      expect(out).not.toContain('control plane');
    } finally {
      child.kill('SIGKILL');
      await exited;
    }

    // Started as it should be, it is back in the cluster.
    await cluster.startAgent('agent-2');
    await until('agent-2 online again', async () => {
      const m = await json<{ machines: Machine[] }>(['machine', 'ls']);
      return m.body.machines.find((x) => x.id === 'agent-2')?.status === 'online' ? true : undefined;
    });
  }, 900_000);
});
