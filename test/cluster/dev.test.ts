import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

describe('stowd dev (what npm start runs)', () => {
  it('starts a control plane and three agents, prints how to reach them, and stops cleanly on SIGTERM', async () => {
    const dataDir = await tmpDir('stowage-dev-');
    const stowd = fileURLToPath(new URL('../../bin/stowd.js', import.meta.url));
    const child = spawn(process.execPath, [stowd, 'dev', '--control-port', '0', '--base-port', '0', '--data-dir', dataDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('local cluster running')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`stowd dev exited ${code}: ${out}`)));
    });
    const hosts = [...out.matchAll(/^agent-\d+: DOCKER_HOST=(tcp:\/\/\S+)/gm)].map((m) => m[1]!);
    expect(hosts).toHaveLength(3);
    for (const host of hosts) {
      const version = await run('docker', ['version', '--format', '{{.Server.APIVersion}}'], { DOCKER_HOST: host });
      expect(version.stdout.trim()).toBe('1.41');
    }
    const stowageHost = /export STOWAGE_HOST=(\S+)/.exec(out)?.[1];
    const token = /export STOWAGE_TOKEN=(stk_\S+)/.exec(out)?.[1];
    expect(/export DOCKER_HOST=(tcp:\/\/\S+)/.exec(out)?.[1]).toBe(hosts[0]);
    // The printed token works, and the agents joined on their own.
    let machines: Array<{ id: string; status: string }> = [];
    for (let i = 0; i < 100 && machines.filter((m) => m.status === 'online').length < 3; i++) {
      const res = await request(`${stowageHost}/api/v1/machines`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.statusCode).toBe(200);
      machines = ((await res.body.json()) as { machines: typeof machines }).machines;
      if (machines.length < 3) await new Promise((r) => setTimeout(r, 100));
    }
    expect(machines.map((m) => [m.id, m.status])).toEqual([
      ['agent-1', 'online'],
      ['agent-2', 'online'],
      ['agent-3', 'online'],
    ]);
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(existsSync(join(dataDir, 'agent-1', 'docker.sock'))).toBe(false);
  }, 900_000);
});
