import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, inject } from 'vitest';
import { freePort } from './registry.js';

/**
 * A real PostgreSQL (Debian's, 15) for tests: initdb into a temp dir, a postmaster on a free loopback port
 * (its unix socket in that dir too), one fresh database per test cluster.
 *
 *   const url = await freshDatabase();   // postgres://stowage:…@127.0.0.1:<port>/stowage_<random>
 *
 * The vitest project `control-postgres` starts one server for the whole run (postgres-global-setup.ts) and
 * hands its admin URL to every test file; a file run on its own (e.g. the schema test in the default project)
 * starts a server of its own on first use, stopped after the file's tests.
 *
 * Run as root (CI, these machines), initdb and the postmaster run as the `postgres` user (they refuse root).
 * The cluster's locale is C: text sorts by byte as in SQLite, whatever the machine's locale.
 */

export interface PostgresServer {
  /** postgres://stowage:<pw>@127.0.0.1:<port>/postgres: a superuser on the maintenance database. */
  adminUrl: string;
  port: number;
  dataDir: string;
  stop(): Promise<void>;
}

const SUPERUSER = 'stowage';
/** Deadlines are for hangs: initdb and the first start can take a long while on a loaded 2-core machine. */
const START_MS = 300_000;

/** The directory holding initdb/pg_ctl: $STOWAGE_TEST_PG_BIN, else Debian's PostgreSQL 15, else the newest there is. */
export function postgresBinDir(): string | undefined {
  const fromEnv = process.env['STOWAGE_TEST_PG_BIN'];
  if (fromEnv) return fromEnv;
  const root = '/usr/lib/postgresql';
  if (existsSync(join(root, '15', 'bin', 'initdb'))) return join(root, '15', 'bin');
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : undefined;
}

/** The postmaster refuses to run as root: as root, run the tools as the `postgres` user. */
function asServerUser(cmd: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

function runTool(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  const [file, argv] = asServerUser(cmd, args);
  return new Promise((resolve) => {
    execFile(file, argv, { timeout: timeoutMs, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

/** Servers this process started and has not stopped: stopped (immediately) if the process exits first. */
const running = new Map<string, { pgCtl: string; dataDir: string; root: string }>();

process.once('exit', () => {
  for (const s of running.values()) {
    const [file, argv] = asServerUser(s.pgCtl, ['stop', '-D', s.dataDir, '-m', 'immediate', '-w']);
    spawnSync(file, argv, { stdio: 'ignore', timeout: 30_000 });
    rmSync(s.root, { recursive: true, force: true });
  }
});

/** initdb into a fresh temp dir and start a postmaster on a free port; resolves once it accepts connections. */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql; or set STOWAGE_TEST_PG_BIN)');
  const root = await mkdtemp(join(tmpdir(), 'stowage-pg-'));
  const dataDir = join(root, 'data');
  const password = randomBytes(12).toString('hex');
  const pwFile = join(root, 'pw');
  await writeFile(pwFile, `${password}\n`, { mode: 0o600 });
  if (process.getuid?.() === 0) {
    const { uid, gid } = postgresUser();
    chownSync(root, uid, gid);
    chownSync(pwFile, uid, gid);
  }
  chmodSync(root, 0o700);
  const pgCtl = join(bin, 'pg_ctl');
  const init = await runTool(
    join(bin, 'initdb'),
    ['-D', dataDir, '-U', SUPERUSER, `--pwfile=${pwFile}`, '--auth=scram-sha-256', '--locale=C', '--encoding=UTF8', '--no-sync'],
    START_MS,
  );
  if (init.code !== 0) {
    await rm(root, { recursive: true, force: true });
    throw new Error(`initdb failed (exit ${init.code}): ${init.out}`);
  }
  // A port can be taken between freePort() and the postmaster's bind: try a few.
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    // Durability off: a test database never outlives a crash, and fsyncs are what a loaded machine lacks most.
    const options = [
      `-c listen_addresses=127.0.0.1`,
      `-c port=${port}`,
      `-c unix_socket_directories=${root}`,
      '-c fsync=off',
      '-c synchronous_commit=off',
      '-c full_page_writes=off',
      '-c max_connections=300',
      '-c log_min_messages=warning',
    ].join(' ');
    running.set(dataDir, { pgCtl, dataDir, root });
    const start = await runTool(pgCtl, ['start', '-D', dataDir, '-w', '-t', String(START_MS / 1000), '-l', join(root, 'server.log'), '-o', options], START_MS + 10_000);
    if (start.code === 0) {
      const watchdog = stopWhenGone(pgCtl, dataDir, root);
      const adminUrl = `postgres://${SUPERUSER}:${password}@127.0.0.1:${port}/postgres`;
      await untilConnects(adminUrl);
      return {
        adminUrl,
        port,
        dataDir,
        async stop() {
          watchdog.kill();
          const stopped = await runTool(pgCtl, ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '120'], 130_000);
          if (stopped.code !== 0) await runTool(pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w'], 60_000);
          running.delete(dataDir);
          await rm(root, { recursive: true, force: true });
        },
      };
    }
    running.delete(dataDir);
    lastError = `${start.out}\n${await readLog(join(root, 'server.log'))}`;
    if (!/could not bind|Address already in use/i.test(lastError)) break;
  }
  await rm(root, { recursive: true, force: true });
  throw new Error(`PostgreSQL did not start: ${lastError}`);
}

/**
 * The postmaster runs on its own (pg_ctl detaches it): should this process be killed outright, with no exit
 * hook run, a small shell stops the server and removes its directory once this process is gone.
 */
function stopWhenGone(pgCtl: string, dataDir: string, root: string): ChildProcess {
  const [file, argv] = asServerUser(pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w']);
  const stop = [file, ...argv].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 2; done; ${stop} >/dev/null 2>&1; rm -rf '${root}'`;
  const child = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' });
  child.unref();
  return child;
}

function postgresUser(): { uid: number; gid: number } {
  const r = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  const g = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' });
  if (r.status !== 0 || g.status !== 0) throw new Error('running as root, and there is no `postgres` user to run PostgreSQL as');
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

async function readLog(path: string): Promise<string> {
  try {
    const { readFile } = await import('node:fs/promises');
    return await readFile(path, 'utf8');
  } catch {
    return '';
  }
}

/** pg_ctl -w says the server is up; a first connection on a loaded machine may still need a moment. */
async function untilConnects(url: string): Promise<void> {
  const end = Date.now() + START_MS;
  for (;;) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch (err) {
      await client.end().catch(() => {});
      if (Date.now() > end) throw new Error(`PostgreSQL at ${url.replace(/:[^:@/]*@/, ':…@')} never accepted a connection: ${(err as Error).message}`);
      await new Promise((res) => setTimeout(res, 250));
    }
  }
}

declare module 'vitest' {
  export interface ProvidedContext {
    /** The run's PostgreSQL (postgres-global-setup.ts): its superuser URL on the maintenance database. */
    postgresAdminUrl: string;
  }
}

/** This file's own server, when the run has none (started on first use, stopped after the file's tests). */
let ownServer: Promise<PostgresServer> | undefined;

try {
  afterAll(async () => {
    const s = ownServer;
    ownServer = undefined;
    if (s) await (await s).stop();
  });
} catch {
  /* imported outside a vitest collection phase: the exit hook above still stops the server */
}

/** The admin URL of the run's server (see postgres-global-setup.ts), or of one started for this file. */
export async function postgresAdminUrl(): Promise<string> {
  let provided: string | undefined;
  try {
    provided = inject('postgresAdminUrl');
  } catch {
    provided = undefined;
  }
  if (provided) return provided;
  ownServer ??= startPostgres();
  return (await ownServer).adminUrl;
}

/** A new, empty database on the test server; resolves with its URL (same superuser). */
export async function freshDatabase(prefix = 'stowage'): Promise<string> {
  const adminUrl = await postgresAdminUrl();
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name}`);
  } finally {
    await client.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Whether this run's control planes keep their state in PostgreSQL (the `control-postgres` project). */
export function testDatabaseIsPostgres(): boolean {
  return process.env['STOWAGE_TEST_DATABASE'] === 'postgres';
}

/**
 * The control-plane configuration's `database` for a test control plane: a fresh PostgreSQL database in the
 * control-postgres project, nothing (the SQLite file in its data directory) otherwise.
 */
export async function controlDatabase(): Promise<{ database?: string }> {
  return testDatabaseIsPostgres() ? { database: await freshDatabase() } : {};
}
