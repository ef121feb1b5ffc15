import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Machine } from '../../src/control/wire.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { freePort } from '../harness/registry.js';
import { run } from '../harness/run.js';

/** An agent restarted without its control plane must not drop out of the cluster silently (issue 14, defect 6). */

const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
let cluster: Cluster;

async function json<T>(args: string[]): Promise<{ code: number; body: T }> {
  const r = await cluster.stowctl(['--json', ...args]);
  return { code: r.code, body: JSON.parse(r.stdout) as T };
}

beforeAll(async () => {
  cluster = await startCluster({ agents: 2 });
}, 900_000);

afterAll(async () => {
  await cluster?.close();
});

describe('restarts', () => {
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
