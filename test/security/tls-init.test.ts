import { type ChildProcess, spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseAgentConfig } from '../../src/agent/config.js';
import { certificateFingerprint } from '../../src/cluster/pki.js';
import { freePort } from '../harness/registry.js';
import { run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

// Issue 13: `stowd init` makes the cluster CA; the control plane then serves HTTPS only, and clients trust it from a file.
const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
const STOWCTL = join(import.meta.dirname, '..', '..', 'bin', 'stowctl.js');
const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;

function startDaemon(args: string[], ready: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [STOWD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`stowd ${args[0]} did not start: ${err}`)), 180_000);
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m });
      }
    });
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`stowd ${args[0]} exited with ${code}: ${err}`));
    });
  });
}

describe('stowd init and an HTTPS control plane', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
  });

  it('creates the CA, the control-plane certificate and a pinned join token, owner-only; a second init is refused', async () => {
    const dir = join(await tmpDir('stowage-init-'), 'control');
    const init = await run(process.execPath, [STOWD, 'init', '--dir', dir], {}, { timeoutMs: 120_000 });
    expect(init.code, init.stderr).toBe(0);
    expect(await modeOf(dir)).toBe(0o700);
    expect(await modeOf(join(dir, 'tls'))).toBe(0o700);
    for (const f of ['tls/ca.pem', 'tls/ca.key', 'tls/control.pem', 'tls/control.key', 'join.token']) expect([f, await modeOf(join(dir, f))]).toEqual([f, 0o600]);
    const token = (await readFile(join(dir, 'join.token'), 'utf8')).trim();
    const fingerprint = certificateFingerprint(await readFile(join(dir, 'tls', 'ca.pem'), 'utf8'));
    expect(token).toMatch(new RegExp(`^sjt_[A-Za-z0-9_-]+@sha256:${fingerprint}$`));
    expect(init.stdout).toContain(token);

    const again = await run(process.execPath, [STOWD, 'init', '--dir', dir], {}, { timeoutMs: 120_000 });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('initialised already');
    expect((await readFile(join(dir, 'join.token'), 'utf8')).trim()).toBe(token);
  }, 300_000);

  it('refuses to serve plain HTTP unless asked to', async () => {
    const dir = join(await tmpDir('stowage-plain-'), 'control');
    const r = await run(process.execPath, [STOWD, 'control', '--data-dir', dir, '--port', String(await freePort())], {}, { timeoutMs: 120_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('stowd init');
    expect(r.stderr).toContain('--insecure-http');
  }, 300_000);

  it('serves HTTPS: curl and stowctl without the CA are refused, with it they get through', async () => {
    const dir = join(await tmpDir('stowage-https-'), 'control');
    expect((await run(process.execPath, [STOWD, 'init', '--dir', dir], {}, { timeoutMs: 120_000 })).code).toBe(0);
    const port = await freePort();
    const { child, match } = await startDaemon(['control', '--data-dir', dir, '--port', String(port)], /control plane ready at (\S+)/);
    children.push(child);
    const url = match[1] ?? '';
    expect(url).toBe(`https://127.0.0.1:${port}`);
    const caFile = join(dir, 'tls', 'ca.pem');
    const token = (await readFile(join(dir, 'admin.token'), 'utf8')).trim();

    const plain = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/healthz`]);
    expect(plain.stdout).not.toBe('200');
    const untrusted = await run('curl', ['-sS', `${url}/healthz`]);
    expect(untrusted.code).toBe(60); // peer certificate cannot be authenticated with known CA certificates
    const trusted = await run('curl', ['-sS', '--cacert', caFile, `${url}/healthz`]);
    expect(trusted.stdout).toContain('"ok":true');

    const env = { STOWAGE_HOST: url, STOWAGE_TOKEN: token };
    const refused = await run(process.execPath, [STOWCTL, 'machine', 'list', '--json'], env);
    expect(refused.code).not.toBe(0);
    expect(refused.stdout + refused.stderr).toMatch(/CONNECTION_FAILED|certificate/);
    const viaFlag = await run(process.execPath, [STOWCTL, '--cacert', caFile, 'machine', 'list', '--json'], env);
    expect(viaFlag.code, viaFlag.stderr).toBe(0);
    expect(JSON.parse(viaFlag.stdout)).toEqual({ machines: [] });
    const viaEnv = await run(process.execPath, [STOWCTL, 'machine', 'list', '--json'], { ...env, STOWAGE_CACERT: caFile });
    expect(viaEnv.code, viaEnv.stderr).toBe(0);
  }, 300_000);

  it('opens the Docker API beyond loopback only with TLS client certificates, which need a TLS cluster', async () => {
    expect(() => parseAgentConfig({ dataDir: '/tmp/x', engine: { tcp: { host: '0.0.0.0', port: 2375 } } })).toThrow(/loopback/);
    expect(parseAgentConfig({ dataDir: '/tmp/x', engine: { tcp: { host: '0.0.0.0', port: 2376, tlsVerify: true } } }).engine.tcp).toEqual({ host: '0.0.0.0', port: 2376, tlsVerify: true });
    const dir = await tmpDir('stowage-tlsverify-');
    const r = await run(process.execPath, [STOWD, 'agent', '--data-dir', join(dir, 'a'), '--peer-port', '0', '--docker-port', '0', '--docker-host', '0.0.0.0', '--docker-tlsverify'], {}, { timeoutMs: 120_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('needs a machine certificate');
  }, 300_000);
});
