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
 * machine online nor choose it (issue 14, defect 5), and an agent restarted without its control plane
 * must not drop out of the cluster silently (defect 6).
 */

const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
let cluster: Cluster;

async function json<T>(args: string[]): Promise<{ code: number; body: T }> {
  const r = await cluster.stowctl(['--json', ...args]);
  return { code: r.code, body: JSON.parse(r.stdout) as T };
}

beforeAll(async () => {
  // A long grace period: a machine not heard from since the restart stays `unknown` for all of this file.
  cluster = await startCluster({ agents: 2, control: { unknownAfterRestartMs: 600_000 } });
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

function agentProcess(name: string) {
  return cluster.agents.find((a) => a.name === name)!.process;
}

async function machineStatus(name: string): Promise<string | undefined> {
  const m = await json<{ machines: Machine[] }>(['machine', 'ls']);
  return m.body.machines.find((x) => x.id === name)?.status;
}

describe('restarts', () => {
  it('after a control-plane restart a machine not heard from is unknown, and a distribute to it fails MACHINE_OFFLINE', async () => {
    const { tar } = await makeImageTar('example.test/restart/app:1', { layers: 1 });
    const digest = await cluster.loadImage('agent-1', tar, 'example.test/restart/app:1');
    await cluster.killAgent('agent-2', 'SIGKILL');
    await cluster.killControl('SIGKILL');
    await cluster.startControl();

    // agent-1 has called in (startControl waits for it); agent-2 is down and has not.
    const listed = await cluster.stowctl(['machine', 'ls']);
    expect(listed.stdout).toMatch(/agent-1\s.*online/);
    expect(listed.stdout).toMatch(/agent-2\s.*unknown/);
    expect(await machineStatus('agent-2')).toBe('unknown');

    const r = await json<{ operation: Operation }>(['image', 'distribute', 'example.test/restart/app:1', '--from', 'agent-1', '--to', 'agent-2']);
    expect(r.code).toBe(1);
    expect(r.body.operation.artifact.digest).toBe(digest);
    const [target] = r.body.operation.targets;
    expect([target!.machine_id, target!.status, target!.failure?.code]).toEqual(['agent-2', 'failed', 'MACHINE_OFFLINE']);
    expect(target!.failure?.message).toMatch(/"agent-2" has not been heard from since the control plane restarted/);
    // Nothing was asked of agent-2, so nothing claims it holds or receives the image.
    const status = await json<{ records: Array<{ machine_id: string }> }>(['image', 'status', '--digest', digest]);
    expect(status.body.records.map((x) => x.machine_id)).toEqual(['agent-1']);

    await cluster.startAgent('agent-2');
    await until('agent-2 online again', async () => ((await machineStatus('agent-2')) === 'online' ? true : undefined));
  }, 900_000);

  it('an operation resumed after a restart waits for a target that has not called in yet, then finishes', async () => {
    const { tar } = await makeImageTar('example.test/restart/resume:1', { layers: 2, layerBytes: 512 * 1024 });
    const digest = await cluster.loadImage('agent-1', tar, 'example.test/restart/resume:1');
    // agent-2 frozen: the distribute cannot finish before the control plane dies, and agent-2 cannot call in after.
    agentProcess('agent-2').kill('SIGSTOP');
    try {
      const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2'] });
      expect(created.status).toBe(202);
      const id = created.body.operation.id;
      await until('the transfer to start', async () => {
        const o = await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`);
        return o.body.operation.targets[0]?.status === 'running' ? true : undefined;
      });
      await cluster.killControl('SIGKILL');
      await cluster.startControl({ waitFor: ['agent-1'] });
      expect(await machineStatus('agent-2')).toBe('unknown');
      // Resumed, the operation waits for agent-2 instead of failing it at once.
      const waiting = await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`);
      expect(waiting.body.operation.status).toBe('running');
      expect(waiting.body.operation.targets[0]?.status).toBe('running');

      agentProcess('agent-2').kill('SIGCONT');
      const final = await cluster.settle(id);
      expect(final.status).toBe('succeeded');
      expect(final.targets.map((t) => [t.machine_id, t.status])).toEqual([['agent-2', 'present']]);
      await cluster.waitForImage('agent-2', digest);
    } finally {
      agentProcess('agent-2').kill('SIGCONT');
    }
  }, 900_000);

  it('an agent that joined refuses to start without its control plane unless --standalone', async () => {
    await cluster.killAgent('agent-2', 'SIGKILL');
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
