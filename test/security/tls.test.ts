import { type ChildProcess, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCa, issueKeyPair, issuedBy } from '../../src/cluster/pki.js';
import type { Availability, Operation } from '../../src/control/wire.js';
import { until } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { freePort } from '../harness/registry.js';
import { run, runOk } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Issue 13, TLS: a cluster made with `stowd init` (control plane and two agents joined with the pinned
 * join token, as processes) runs every link over TLS: HTTPS to the control plane, mutual TLS on the
 * agents' /v2/ and /agent/v1, machine certificates renewed before they expire, and the Docker API over
 * tcp:// with TLS client certificates as dockerd --tlsverify does.
 */

const STOWD = join(import.meta.dirname, '..', '..', 'bin', 'stowd.js');
const STOWCTL = join(import.meta.dirname, '..', '..', 'bin', 'stowctl.js');
/** Short on purpose: agents renew at two thirds of it, so a renewal happens while the test runs. */
const MACHINE_CERT_LIFETIME_S = 90;
const IMAGE = 'example.test/tls/app:1.0';

const children: ChildProcess[] = [];
let root: string;
let controlUrl: string;
let caPem: string;
let adminToken: string;
let dispatcher: Agent;
const agents: Array<{ name: string; dataDir: string; peerPort: number; dockerPort: number; args: string[]; child?: ChildProcess }> = [];
let clientCertDir: string;
let joinToken: string;
let digest: string;

function startDaemon(args: string[], ready: RegExp, started?: (child: ChildProcess) => void): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [STOWD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    started?.(child);
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`stowd ${args[0]} did not start: ${err}`)), 180_000);
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.stderr?.on('data', (c: Buffer) => {
      err += c.toString();
      if (process.env['STOWAGE_TEST_DEBUG']) process.stderr.write(c);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`stowd ${args[0]} exited with ${code}: ${err}`));
    });
  });
}

async function api<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; body: T }> {
  const res = await request(`${controlUrl}${path}`, {
    method,
    dispatcher,
    headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as T };
}

/** One HTTPS GET with the given trust and client certificate: the status, or the TLS error that stopped it. */
function tlsGet(url: string, tls: { ca: string; cert?: string; key?: string }): Promise<{ status?: number; error?: string; peerCert?: string }> {
  return new Promise((resolve) => {
    const req = httpsRequest(url, { ...tls, agent: false, timeout: 30_000 }, (res) => {
      const peer = (res.socket as TLSSocket).getPeerCertificate();
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, peerCert: peer.serialNumber }));
    });
    req.on('error', (err) => resolve({ error: err.message }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

const modeOf = async (path: string): Promise<number> => (await stat(path)).mode & 0o777;
const dockerEnv = (agent: { dockerPort: number }) => ({ DOCKER_HOST: `tcp://127.0.0.1:${agent.dockerPort}`, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: clientCertDir });

beforeAll(async () => {
  root = await tmpDir('stowage-tls-');
  const controlDir = join(root, 'control');
  await runOk(process.execPath, [STOWD, 'init', '--dir', controlDir], { timeoutMs: 120_000 });
  const controlPort = await freePort();
  const ready = await startDaemon(
    ['control', '--data-dir', controlDir, '--port', String(controlPort), '--machine-cert-lifetime', String(MACHINE_CERT_LIFETIME_S)],
    /control plane ready at (\S+)/,
  );
  controlUrl = ready[1] ?? '';
  caPem = await readFile(join(controlDir, 'tls', 'ca.pem'), 'utf8');
  adminToken = (await readFile(join(controlDir, 'admin.token'), 'utf8')).trim();
  joinToken = (await readFile(join(controlDir, 'join.token'), 'utf8')).trim();
  dispatcher = new Agent({ connect: { ca: caPem } });
  clientCertDir = join(root, 'alice');
  await runOk(process.execPath, [STOWD, 'client-cert', '--dir', controlDir, '--user', 'alice', '--out', clientCertDir], { timeoutMs: 120_000 });

  for (const name of ['agent-1', 'agent-2']) {
    const dataDir = join(root, name);
    const peerPort = await freePort();
    const dockerPort = await freePort();
    const args = ['agent', '--data-dir', dataDir, '--peer-port', String(peerPort), '--docker-port', String(dockerPort), '--docker-tlsverify', '--control-url', controlUrl, '--name', name];
    const agent: (typeof agents)[number] = { name, dataDir, peerPort, dockerPort, args };
    agents.push(agent);
    await startDaemon([...args, '--join-token', joinToken], /agent ready/, (child) => (agent.child = child));
  }
  await until(
    'both agents to join over TLS',
    async () => {
      const r = await api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
      return r.body.machines.filter((m) => m.status === 'online').length === 2 ? true : undefined;
    },
    { timeoutMs: 180_000 },
  );
}, 600_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await dispatcher?.close();
});

describe('a cluster made with stowd init', () => {
  it('gave each agent a machine certificate from the cluster CA, kept owner-only, and an https:// address', async () => {
    const machines = await api<{ machines: Array<{ id: string; agent_url: string }> }>('GET', '/api/v1/machines');
    for (const agent of agents) {
      expect(machines.body.machines.find((m) => m.id === agent.name)?.agent_url).toBe(`https://127.0.0.1:${agent.peerPort}`);
      const dir = join(agent.dataDir, 'tls');
      // Written once the join is answered, which may be just after the control plane counted the machine.
      await until(`${agent.name} to keep its certificate`, async () => ((await stat(join(dir, 'machine.pem')).catch(() => undefined)) ? true : undefined));
      expect(await modeOf(dir)).toBe(0o700);
      for (const f of ['ca.pem', 'machine.pem', 'machine.key']) expect([f, await modeOf(join(dir, f))]).toEqual([f, 0o600]);
      const cert = await readFile(join(dir, 'machine.pem'), 'utf8');
      expect(issuedBy(cert, caPem)).toBe(true);
      expect(new X509Certificate(cert).subject).toContain(`CN=${agent.name}`);
    }
  });

  it('serves the Docker API over tcp:// to the docker CLI with a client certificate, and refuses it without one', async () => {
    const { tar } = await makeImageTar(IMAGE, { layers: 2, layerBytes: 128 * 1024 });
    const agent1 = agents[0]!;
    await runOk('docker', ['load', '-i', tar], { env: dockerEnv(agent1), timeoutMs: 120_000 });
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: dockerEnv(agent1) });
    expect(listed.split('\n')).toContain(IMAGE);

    // Plain HTTP to the TLS port, and TLS without a client certificate: both refused.
    const plain = await run('docker', ['images'], { DOCKER_HOST: `tcp://127.0.0.1:${agent1.dockerPort}`, DOCKER_TLS_VERIFY: '', DOCKER_CERT_PATH: '' });
    expect(plain.code).not.toBe(0);
    const noCert = await tlsGet(`https://127.0.0.1:${agent1.dockerPort}/_ping`, { ca: caPem });
    expect(noCert.status).toBeUndefined();
    expect(noCert.error).toBeDefined();
    const alice = { ca: caPem, cert: await readFile(join(clientCertDir, 'cert.pem'), 'utf8'), key: await readFile(join(clientCertDir, 'key.pem'), 'utf8') };
    expect((await tlsGet(`https://127.0.0.1:${agent1.dockerPort}/_ping`, alice)).status).toBe(200);

    digest = await until(
      'agent-1 to report the loaded image',
      async () => (await api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-1')).body.records.find((r) => r.references.includes(IMAGE))?.digest,
      { timeoutMs: 120_000 },
    );
  }, 300_000);

  it('distributes an image agent to agent over mutual TLS', async () => {
    expect(digest).toBeDefined();
    const created = await api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to: ['agent-2'] });
    expect(created.status).toBe(202);
    const op = await until(
      'the distribute to end',
      async () => {
        const r = await api<{ operation: Operation }>('GET', `/api/v1/operations/${created.body.operation.id}`);
        return ['succeeded', 'partially_failed', 'failed', 'cancelled'].includes(r.body.operation.status) ? r.body.operation : undefined;
      },
      { timeoutMs: 240_000 },
    );
    expect(op.status, JSON.stringify(op)).toBe('succeeded');
    expect(op.targets[0]).toMatchObject({ machine_id: 'agent-2', status: 'present' });
    expect(op.targets[0]?.bytes_transferred).toBeGreaterThan(2 * 128 * 1024);
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: dockerEnv(agents[1]!) });
    expect(listed.split('\n')).toContain(IMAGE);
  }, 300_000);

  it('lets stowctl push into the cluster with a client certificate, and not without one', async () => {
    const ref = 'example.test/tls/pushed:2';
    const { tar } = await makeImageTar(ref, { layers: 1, layerBytes: 64 * 1024 });
    const env = { STOWAGE_HOST: controlUrl, STOWAGE_TOKEN: adminToken, STOWAGE_CACERT: join(root, 'control', 'tls', 'ca.pem') };
    const push = ['--json', 'image', 'push', ref, '--archive', tar, '--to', 'agent-2'];
    const refused = await run(process.execPath, [STOWCTL, ...push], env, { timeoutMs: 300_000 });
    expect(refused.code).toBe(1);
    expect((JSON.parse(refused.stdout) as { error: { details?: { stage?: string } } }).error.details?.stage).toBe('upload');
    const pushed = await run(process.execPath, [STOWCTL, ...push], { ...env, STOWAGE_CERT: join(clientCertDir, 'cert.pem'), STOWAGE_KEY: join(clientCertDir, 'key.pem') }, { timeoutMs: 300_000 });
    expect(pushed.code, pushed.stdout + pushed.stderr).toBe(0);
    expect((JSON.parse(pushed.stdout) as { operation: Operation }).operation.status).toBe('succeeded');
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: dockerEnv(agents[1]!) });
    expect(listed.split('\n')).toContain(ref);
  }, 600_000);

  it('refuses clients without the CA, and peers presenting no certificate or one from another CA', async () => {
    const untrusted = await run('curl', ['-sS', `${controlUrl}/healthz`]);
    expect(untrusted.code).toBe(60); // the control plane's certificate cannot be verified without the CA
    expect((await tlsGet(`${controlUrl}/healthz`, { ca: caPem })).status).toBe(200);

    const foreignCa = await createCa('Somebody else');
    const foreign = await issueKeyPair(foreignCa, { name: 'agent-9', altNames: ['127.0.0.1'], use: 'both', lifetimeMs: 3600_000 });
    const member = { ca: caPem, cert: await readFile(join(clientCertDir, 'cert.pem'), 'utf8'), key: await readFile(join(clientCertDir, 'key.pem'), 'utf8') };
    for (const agent of agents) {
      for (const path of ['/v2/', '/agent/v1/images/sha256:' + '0'.repeat(64)]) {
        const url = `https://127.0.0.1:${agent.peerPort}${path}`;
        const none = await tlsGet(url, { ca: caPem });
        expect([url, none.status]).toEqual([url, undefined]);
        const stranger = await tlsGet(url, { ca: caPem, cert: foreign.certPem, key: foreign.keyPem });
        expect([url, stranger.status]).toEqual([url, undefined]);
        // A certificate from the cluster CA gets through TLS; the route still wants its token.
        const withCert = await tlsGet(url, member);
        expect([url, withCert.status]).toEqual([url, 401]);
      }
      // And nothing plain on the peer port.
      const plain = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${agent.peerPort}/v2/`]);
      expect(plain.stdout).not.toBe('401');
    }
  }, 120_000);

  it('never joins a control plane whose CA is not the one the join token pins', async () => {
    // The same secret, pinning another CA: as if the control-plane address led somewhere else.
    const otherPin = `${joinToken.slice(0, joinToken.indexOf('@sha256:'))}@sha256:${'ab'.repeat(32)}`;
    const dataDir = join(root, 'agent-pinned');
    const child = spawn(process.execPath, [STOWD, 'agent', '--data-dir', dataDir, '--peer-port', String(await freePort()), '--control-url', controlUrl, '--name', 'agent-pinned'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, STOWAGE_JOIN_TOKEN: otherPin },
    });
    children.push(child);
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.stdout.resume();
    await until('the agent to refuse the CA', async () => (err.includes('is not the one the join token pins') ? true : undefined), { timeoutMs: 180_000 });
    child.kill('SIGKILL');
    const machines = await api<{ machines: Array<{ id: string }> }>('GET', '/api/v1/machines');
    expect(machines.body.machines.map((m) => m.id)).not.toContain('agent-pinned');
    await expect(stat(join(dataDir, 'identity.json'))).rejects.toThrow();
  }, 300_000);

  it('renews machine certificates before they expire, and serves the new one', async () => {
    const agent = agents[1]!;
    const file = join(agent.dataDir, 'tls', 'machine.pem');
    const first = new X509Certificate(await readFile(file, 'utf8'));
    const renewed = await until(
      'agent-2 to renew its certificate',
      async () => {
        const now = new X509Certificate(await readFile(file, 'utf8'));
        return now.serialNumber !== first.serialNumber ? now : undefined;
      },
      { timeoutMs: 180_000, everyMs: 500 },
    );
    expect(issuedBy(renewed.toString(), caPem)).toBe(true);
    expect(new Date(renewed.validTo).getTime()).toBeGreaterThan(new Date(first.validTo).getTime());
    // Issued before the old one ran out.
    expect(new Date(renewed.validFrom).getTime()).toBeLessThan(new Date(first.validTo).getTime());
    const member = { ca: caPem, cert: await readFile(join(clientCertDir, 'cert.pem'), 'utf8'), key: await readFile(join(clientCertDir, 'key.pem'), 'utf8') };
    await until(
      'agent-2 to serve a renewed certificate',
      async () => {
        const served = await tlsGet(`https://127.0.0.1:${agent.peerPort}/v2/`, member);
        return served.peerCert && served.peerCert !== first.serialNumber ? true : undefined;
      },
      { timeoutMs: 60_000 },
    );
    // The machine is still in the cluster with the new certificate.
    const machines = await api<{ machines: Array<{ id: string; status: string }> }>('GET', '/api/v1/machines');
    expect(machines.body.machines.find((m) => m.id === agent.name)?.status).toBe('online');
  }, 300_000);

  it('brings a restarted agent back with the CA and certificate it kept, without the join token', async () => {
    const agent = agents[0]!;
    const old = agent.child!;
    old.kill('SIGKILL');
    const restartedAt = Date.now();
    await new Promise((resolve) => (old.exitCode !== null || old.signalCode !== null ? resolve(undefined) : old.once('exit', resolve)));
    await startDaemon(agent.args, /agent ready/, (child) => (agent.child = child));
    const listed = await runOk('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}'], { env: dockerEnv(agent) });
    expect(listed.split('\n')).toContain(IMAGE);
    await until(
      'agent-1 to call in again over TLS',
      async () => {
        const r = await api<{ machines: Array<{ id: string; status: string; last_seen_at: string }> }>('GET', '/api/v1/machines');
        const m = r.body.machines.find((x) => x.id === agent.name);
        return m?.status === 'online' && Date.parse(m.last_seen_at) > restartedAt ? true : undefined;
      },
      { timeoutMs: 180_000 },
    );
  }, 300_000);
});
