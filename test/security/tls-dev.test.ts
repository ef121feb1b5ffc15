import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { until } from '../harness/cluster.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

// `stowd dev --tls`: the local cluster with every link over TLS; the printed exports are all stowctl needs.
const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
const STOWCTL = join(import.meta.dirname, '..', '..', 'bin', 'stowctl.js');

describe('stowd dev --tls', () => {
  it('runs the control plane over HTTPS with agents joined over TLS, reachable with the printed CA file', async () => {
    const dataDir = await tmpDir('stowage-dev-tls-');
    const child = spawn(process.execPath, [STOWD, 'dev', '--tls', '--agents', '2', '--control-port', '0', '--base-port', '0', '--data-dir', dataDir], {
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
    const env = {
      STOWAGE_HOST: /export STOWAGE_HOST=(\S+)/.exec(out)?.[1] ?? '',
      STOWAGE_TOKEN: /export STOWAGE_TOKEN=(\S+)/.exec(out)?.[1] ?? '',
      STOWAGE_CACERT: /export STOWAGE_CACERT=(\S+)/.exec(out)?.[1] ?? '',
    };
    expect(env.STOWAGE_HOST).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(env.STOWAGE_CACERT).toBe(join(dataDir, 'control', 'tls', 'ca.pem'));
    const machines = await until(
      'both agents online',
      async () => {
        const r = await run(process.execPath, [STOWCTL, 'machine', 'list', '--json'], env);
        if (r.code !== 0) return undefined;
        const list = (JSON.parse(r.stdout) as { machines: Array<{ id: string; status: string; agent_url: string }> }).machines;
        return list.filter((m) => m.status === 'online').length === 2 ? list : undefined;
      },
      { timeoutMs: 180_000 },
    );
    for (const m of machines) expect(m.agent_url).toMatch(/^https:\/\//);
    const withoutCa = await run(process.execPath, [STOWCTL, 'machine', 'list', '--json'], { ...env, STOWAGE_CACERT: '' });
    expect(withoutCa.code).not.toBe(0);

    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  }, 600_000);
});
