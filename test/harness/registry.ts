import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { type TokenServer, startTokenServer } from './token-server.js';

/**
 * A real distribution registry (Debian's /usr/bin/docker-registry, v2.8) on a free loopback port with
 * filesystem storage in a temp dir, deletes enabled and logging at error level.
 *
 *   const reg = await startRegistry();                                  // anonymous
 *   const reg = await startRegistry({ htpasswd: { user: 'u', password: 'p' } }); // basic auth
 *   const reg = await startRegistry({ tokenAuth: { user: 'u', password: 'p' } }); // bearer tokens (reg.tokenServer)
 *   reg.host   // "127.0.0.1:41234" (use with --dest-tls-verify=false)
 *   reg.url    // "http://127.0.0.1:41234"
 *   reg.storageDir // the registry's filesystem root (docker/registry/v2/…), for tests of a misbehaving peer
 *   await reg.stop();
 */

export interface TestRegistry {
  /** "127.0.0.1:<port>". */
  host: string;
  /** "http://127.0.0.1:<port>". */
  url: string;
  /** storage.filesystem.rootdirectory. */
  storageDir: string;
  /** With `tokenAuth`: the token server the registry sends clients to. */
  tokenServer?: TokenServer;
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  htpasswd?: { user: string; password: string };
  /** Bearer-token auth through a local token server (see token-server.ts) that knows this one user. */
  tokenAuth?: { user: string; password: string; refreshToken?: string };
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
/**
 * A port that is free now, picked below the kernel's ephemeral range where it can be: a daemon restarted on
 * its old port must not find it taken as the local port of some outgoing connection made meanwhile.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow();
  if (low > FIXED_PORTS_FROM + 1000) {
    for (let i = 0; i < 100; i++) {
      const port = FIXED_PORTS_FROM + Math.floor(Math.random() * (low - FIXED_PORTS_FROM));
      if (await canListen(port)) return port;
    }
  }
  return listenOnce(0);
}

const FIXED_PORTS_FROM = 10_000;

function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

async function canListen(port: number): Promise<boolean> {
  return listenOnce(port).then(
    () => true,
    () => false,
  );
}

function listenOnce(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', () => {
      const bound = (srv.address() as { port: number }).port;
      srv.close(() => resolve(bound));
    });
  });
}

const BINARY = process.env['STOWAGE_TEST_REGISTRY_BIN'] ?? '/usr/bin/docker-registry';

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-registry-'));
  const storageDir = join(dir, 'data');
  await mkdir(storageDir);
  let auth = '';
  if (opts.htpasswd) {
    // Go's bcrypt accepts the $2b$ hashes bcryptjs makes; cost 5 keeps the tests fast.
    const line = `${opts.htpasswd.user}:${bcrypt.hashSync(opts.htpasswd.password, 5)}\n`;
    await writeFile(join(dir, 'htpasswd'), line);
    auth = `auth:\n  htpasswd:\n    realm: stowage-test\n    path: ${join(dir, 'htpasswd')}\n`;
  }
  let tokenServer: TokenServer | undefined;
  if (opts.tokenAuth) {
    tokenServer = await startTokenServer(dir, opts.tokenAuth);
    auth =
      `auth:\n  token:\n    realm: ${tokenServer.realm}\n    service: ${tokenServer.service}\n` +
      `    issuer: ${tokenServer.issuer}\n    rootcertbundle: ${tokenServer.certPath}\n`;
  }
  // A port can be taken between freePort() and the registry's bind: try a few.
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const config = join(dir, 'config.yml');
    await writeFile(
      config,
      'version: 0.1\n' +
        'log:\n  level: error\n  accesslog:\n    disabled: true\n' +
        `storage:\n  filesystem:\n    rootdirectory: ${storageDir}\n  delete:\n    enabled: true\n` +
        `http:\n  addr: 127.0.0.1:${port}\n` +
        auth,
    );
    const child = spawn(BINARY, ['serve', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      if (stderr.length < 8192) stderr += d.toString();
    });
    const host = `127.0.0.1:${port}`;
    try {
      await waitUntilUp(child, `http://${host}/v2/`);
    } catch (err) {
      child.kill('SIGKILL');
      lastError = new Error(`docker-registry did not start: ${(err as Error).message}\n${stderr}`);
      continue;
    }
    return {
      host,
      url: `http://${host}`,
      storageDir,
      ...(tokenServer ? { tokenServer } : {}),
      async stop() {
        await stopChild(child);
        await tokenServer?.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
  await tokenServer?.stop();
  await rm(dir, { recursive: true, force: true });
  throw lastError;
}

/** Polls GET /v2/ until it answers 200 (anonymous) or 401 (auth configured). */
async function waitUntilUp(child: ChildProcess, url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited with code ${child.exitCode}`);
    try {
      const res = await fetch(url);
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) return;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('timed out waiting for GET /v2/');
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
