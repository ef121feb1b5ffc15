/**
 * The control plane with a fleet: N simulated agents (default 1,000) against a real `stowd control`
 * process on loopback.
 *
 * Each simulated agent is an HTTP server of its own (its agent_url) that joins with the join token and its
 * full inventory (images drawn from --images images, each for --platforms platforms; an agent holds the
 * images of its own platform), heartbeats every --heartbeat-ms like a real agent, and answers transfer
 * requests at once (a progress line with the total, then the result): what is measured is the control
 * plane, not the network.
 *
 *   image status    GET /api/v1/images/status?digest=<an image's index digest>, one after another, while the
 *                   fleet heartbeats: p50 and p99
 *   distribute      one image from one agent to every other: planned (the 202 with the operation recorded),
 *                   tracked (the last target's agent has its transfer request), finished (the SSE stream's
 *                   bgtask_done)
 *   /metrics        the control plane's scrape with the fleet's series (median of 5)
 *   heartbeats      CPU the control-plane process used over --window seconds of heartbeats alone, as a
 *                   share of one core (/proc/<pid>/stat), and per heartbeat answered in that window
 *
 *   npm run bench:fleet -- [--agents 1000] [--images 1000] [--platforms 10] [--per-agent 100]
 *                          [--heartbeat-ms 5000] [--window 30] [--status-requests 500]
 *                          [--database postgres://user:pw@host/db] [--store sqlite|postgresql] [--heartbeats-only]
 *                          [--profile DIR]
 *
 * With --database (an empty PostgreSQL database the bench may fill), the fleet runs twice, on SQLite and
 * then on PostgreSQL, and the table has a column for each; --store runs only one of them.
 *
 * --heartbeats-only ends the run after the heartbeat window (to compare builds quickly). --profile DIR: the
 * control plane writes a V8 CPU profile there (--cpu-prof), heartbeats only (a clean stop writes the
 * profile); the window's start and end are printed as offsets into the profile, so its samples can be
 * told from the joins'.
 *
 * Targets (issue 15): status p99 < 50 ms; distribute to 1,000 < 10 s; heartbeats < 10 % of a core.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import type { InventoryItem, Operation } from '../src/control/wire.js';
import { freePort } from '../test/harness/registry.js';
import { tmpDir } from '../test/harness/tmp.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
  return value;
}

const AGENTS = arg('agents', 1000);
const IMAGES = arg('images', 1000);
const PLATFORMS = arg('platforms', 10);
const PER_AGENT = Math.min(arg('per-agent', 100), IMAGES);
const HEARTBEAT_MS = arg('heartbeat-ms', 5000);
const WINDOW_S = arg('window', 30);
const STATUS_REQUESTS = arg('status-requests', 500);
const DATABASE = (() => {
  const i = process.argv.indexOf('--database');
  const url = i >= 0 ? process.argv[i + 1] : undefined;
  if (i >= 0 && !/^postgres(ql)?:\/\//.test(url ?? '')) throw new Error('--database takes a postgres:// URL');
  return url;
})();
const STORE = (() => {
  const i = process.argv.indexOf('--store');
  const store = i >= 0 ? process.argv[i + 1] : undefined;
  if (i >= 0 && store !== 'sqlite' && store !== 'postgresql') throw new Error('--store takes sqlite or postgresql');
  if (store === 'postgresql' && !DATABASE) throw new Error('--store postgresql needs --database');
  return store;
})();
const PROFILE = (() => {
  const i = process.argv.indexOf('--profile');
  return i >= 0 ? process.argv[i + 1] : undefined;
})();
const HEARTBEATS_ONLY = process.argv.includes('--heartbeats-only') || PROFILE !== undefined;
const IMAGE_BYTES = 64 * 1024 * 1024;

const STOWD = join(import.meta.dirname, '..', 'bin', 'stowd.js');
const PLATFORM_NAMES = ['linux/amd64', 'linux/arm64', 'linux/arm/v7', 'linux/arm/v6', 'linux/386', 'linux/ppc64le', 'linux/s390x', 'linux/riscv64', 'linux/mips64le', 'linux/loong64'];
const http = new Agent({ connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });

const digestOf = (text: string): string => `sha256:${createHash('sha256').update(text).digest('hex')}`;
const platformOf = (p: number): string => PLATFORM_NAMES[p % PLATFORM_NAMES.length] ?? `linux/p${p}`;
const indexDigest = (image: number): string => digestOf(`index ${image}`);
const manifestDigest = (image: number, platform: number): string => digestOf(`manifest ${image} ${platform}`);

/** A small deterministic PRNG: the same fleet every run. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function inventoryOf(agent: number): InventoryItem[] {
  const platform = agent % PLATFORMS;
  const next = random(agent + 1);
  const images = new Set<number>([0]); // image 0 is everywhere (the distribute's source holds it)
  while (images.size < PER_AGENT) images.add(Math.floor(next() * IMAGES));
  return [...images].map((image) => ({
    digest: manifestDigest(image, platform),
    index_digest: indexDigest(image),
    config_digest: digestOf(`config ${image} ${platform}`),
    platform: platformOf(platform),
    references: [`bench.test/app-${image}:1`],
    size_bytes: IMAGE_BYTES,
  }));
}

interface SimAgent {
  index: number;
  name: string;
  url: string;
  server: Server;
  secret: string;
  platform: string;
  transferRequestedAt?: number;
}

/** An agent that answers a transfer at once: the total, then the result. */
function simServer(agent: () => SimAgent): Server {
  return createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const me = agent();
      if (req.headers.authorization !== `Bearer ${me.secret}`) {
        res.writeHead(401).end();
        return;
      }
      if (req.method === 'POST' && req.url === '/agent/v1/transfers') {
        me.transferRequestedAt = performance.now();
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { ref: string; platform?: string };
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(`${JSON.stringify({ type: 'progress', bytes_transferred: 0, bytes_total: IMAGE_BYTES })}\n`);
        res.end(
          `${JSON.stringify({
            type: 'result',
            status: 'present',
            digest: body.ref,
            config_digest: digestOf(`config for ${body.ref}`),
            platform: body.platform ?? me.platform,
            bytes_transferred: IMAGE_BYTES,
            size_bytes: IMAGE_BYTES,
          })}\n`,
        );
        return;
      }
      if (req.method === 'POST' && req.url === '/agent/v1/transfers/refresh') {
        res.writeHead(204).end();
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"NOT_FOUND","message":"simulated agent"}}');
    });
  });
}

async function call<T>(base: string, method: 'GET' | 'POST', path: string, token: string, body?: unknown): Promise<{ status: number; body: T; ms: number }> {
  const start = performance.now();
  const res = await request(`${base}${path}`, {
    method,
    dispatcher: http,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as T, ms: performance.now() - start };
}

/** Runs fn over items, `limit` at once. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / 100; // USER_HZ is 100 on Linux
}

async function startControl(database: string | undefined): Promise<{ url: string; child: ChildProcess; adminToken: string; joinToken: string }> {
  const dir = await tmpDir('stowage-fleet-');
  const port = await freePort();
  const config = join(dir, 'control.json');
  await writeFile(
    config,
    JSON.stringify({ dataDir: join(dir, 'control'), ...(database ? { database } : {}), listen: { host: '127.0.0.1', port }, insecureHttp: true, heartbeatIntervalMs: HEARTBEAT_MS, offlineAfterMs: HEARTBEAT_MS * 4 }),
  );
  const profile = PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE}`] : [];
  const child = spawn(process.execPath, [...profile, STOWD, 'control', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, STOWAGE_FROM_SOURCE: '1' } });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (/control plane ready/.test(out)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`stowd control exited with ${code}`)));
  });
  const adminToken = (await readFile(join(dir, 'control', 'admin.token'), 'utf8')).trim();
  const joinToken = (await readFile(join(dir, 'control', 'join.token'), 'utf8')).trim();
  return { url: `http://127.0.0.1:${port}`, child, adminToken, joinToken };
}

/** Waits for the operation's final SSE event; resolves with the time it arrived. */
async function finalEventAt(base: string, token: string, opId: string): Promise<{ at: number; event: string }> {
  const res = await request(`${base}/api/v1/operations/${opId}/events`, { dispatcher: http, headers: { authorization: `Bearer ${token}` } });
  let buffer = '';
  for await (const chunk of res.body) {
    buffer += chunk.toString();
    const m = /event: (bgtask_done|bgtask_failed|bgtask_cancelled)\n/.exec(buffer);
    if (m) {
      const at = performance.now();
      res.body.destroy();
      return { at, event: m[1] as string };
    }
    buffer = buffer.slice(-200);
  }
  throw new Error('the event stream ended without a final event');
}

type Row = [measure: string, value: string, target: string];

/** One fleet against one control plane (SQLite, or PostgreSQL at `database`): the table's rows. */
async function measure(database: string | undefined): Promise<{ rows: Row[]; note: string }> {
  const controlStarted = performance.now();
  const control = await startControl(database);
  const pid = control.child.pid as number;
  console.error(`control plane: pid ${pid}`);
  const agents: SimAgent[] = [];
  const heartbeats: NodeJS.Timeout[] = [];
  let heartbeatErrors = 0;
  let heartbeatsAnswered = 0;
  try {
    // The simulated agents: a server each, then a real join with the full inventory.
    const joinStart = performance.now();
    for (let i = 0; i < AGENTS; i++) {
      const agent = { index: i, name: `sim-${i}`, url: '', secret: '', platform: platformOf(i % PLATFORMS) } as SimAgent;
      agent.server = simServer(() => agent);
      await new Promise<void>((resolve) => agent.server.listen(0, '127.0.0.1', resolve));
      agent.url = `http://127.0.0.1:${(agent.server.address() as AddressInfo).port}`;
      agents.push(agent);
    }
    await pool(agents, 16, async (agent) => {
      const r = await call<{ machine_secret: string }>(control.url, 'POST', '/api/v1/machines/join', control.joinToken, {
        join_token: control.joinToken,
        name: agent.name,
        agent_url: agent.url,
        platform: agent.platform,
        labels: { rack: `r${agent.index % 40}` },
        version: 'bench',
        inventory: inventoryOf(agent.index),
        inventory_seq: 1,
      });
      if (r.status !== 201) throw new Error(`join of ${agent.name} answered ${r.status}: ${JSON.stringify(r.body)}`);
      agent.secret = r.body.machine_secret;
    });
    const joinSeconds = (performance.now() - joinStart) / 1000;
    console.error(`${AGENTS} agents joined with ${PER_AGENT} images each in ${joinSeconds.toFixed(1)} s`);

    // Heartbeats, spread evenly over the interval as a real fleet's are.
    for (const agent of agents) {
      const beat = () =>
        void call(control.url, 'POST', `/api/v1/machines/${agent.name}/heartbeat`, agent.secret, {
          agent_url: agent.url,
          platform: agent.platform,
          labels: { rack: `r${agent.index % 40}` },
          version: 'bench',
          inventory_seq: 1,
          disk_used_bytes: PER_AGENT * IMAGE_BYTES,
        })
          .then((r) => {
            if (r.status !== 200) heartbeatErrors++;
            else heartbeatsAnswered++;
          })
          .catch(() => heartbeatErrors++);
      const offset = (agent.index / AGENTS) * HEARTBEAT_MS;
      heartbeats.push(
        setTimeout(() => {
          beat();
          heartbeats.push(setInterval(beat, HEARTBEAT_MS));
        }, offset),
      );
    }

    // Heartbeats alone: the control plane's CPU over the window (after one full interval to settle).
    await new Promise((r) => setTimeout(r, HEARTBEAT_MS));
    const cpu0 = cpuSeconds(pid);
    const wall0 = performance.now();
    const beats0 = heartbeatsAnswered;
    await new Promise((r) => setTimeout(r, WINDOW_S * 1000));
    const heartbeatCpu = cpuSeconds(pid) - cpu0;
    const heartbeatShare = heartbeatCpu / ((performance.now() - wall0) / 1000);
    const beatsInWindow = heartbeatsAnswered - beats0;
    const cpuPerBeat = `${((heartbeatCpu / beatsInWindow) * 1e6).toFixed(0)} µs`;
    const load = `load average ${loadavg()[0]?.toFixed(1)} (1 min) at the window's end`;
    if (HEARTBEATS_ONLY) {
      if (PROFILE) {
        console.error(`heartbeat window: ${((wall0 - controlStarted) / 1000).toFixed(1)} s to ${((performance.now() - controlStarted) / 1000).toFixed(1)} s after the control plane started`);
        control.child.kill('SIGTERM');
        await new Promise((r) => control.child.once('exit', r));
      }
      const rows: Row[] = [
        [`heartbeats of ${AGENTS} every ${HEARTBEAT_MS / 1000} s`, `${(heartbeatShare * 100).toFixed(1)} % of a core`, 'target < 10 %'],
        ['control-plane CPU per heartbeat', cpuPerBeat, ''],
      ];
      return { rows, note: `${database ? 'postgresql' : 'sqlite'}: heartbeats only; ${beatsInWindow} heartbeats in the window, ${heartbeatErrors} heartbeat errors; ${load}` };
    }

    // image status, one request after another, by index digest (every platform's records of the image).
    const next = random(42);
    const latencies: number[] = [];
    let records = 0;
    for (let i = 0; i < STATUS_REQUESTS; i++) {
      const image = Math.floor(next() * IMAGES);
      const r = await call<{ records: unknown[] }>(control.url, 'GET', `/api/v1/images/status?digest=${indexDigest(image)}`, control.adminToken);
      if (r.status !== 200) throw new Error(`image status answered ${r.status}`);
      latencies.push(r.ms);
      records += r.body.records.length;
    }
    latencies.sort((a, b) => a - b);

    // A Prometheus scrape of the control plane (its gauges read the state store).
    const scrapes: number[] = [];
    for (let i = 0; i < 5; i++) {
      const start = performance.now();
      const res = await request(`${control.url}/metrics`, { dispatcher: http, headers: { authorization: `Bearer ${control.adminToken}` } });
      await res.body.text();
      if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}`);
      scrapes.push(performance.now() - start);
    }
    scrapes.sort((a, b) => a - b);

    // distribute image 0 from sim-0 to every other agent (its platform manifest: the same for all).
    const source = agents[0] as SimAgent;
    const targets = agents.slice(1).map((a) => a.name);
    const t0 = performance.now();
    const created = await call<{ operation: Operation }>(control.url, 'POST', '/api/v1/operations/distribute', control.adminToken, {
      digest: manifestDigest(0, 0),
      from: source.name,
      to: targets,
    });
    const planned = performance.now();
    if (created.status !== 202) throw new Error(`distribute answered ${created.status}: ${JSON.stringify(created.body)}`);
    const final = await finalEventAt(control.url, control.adminToken, created.body.operation.id);
    const op = await call<{ operation: Operation }>(control.url, 'GET', `/api/v1/operations/${created.body.operation.id}`, control.adminToken);
    const present = op.body.operation.targets.filter((t) => t.status === 'present').length;
    const tracked = Math.max(...agents.slice(1).map((a) => a.transferRequestedAt ?? Number.NaN));

    const rows: Row[] = [
      ['image status p50', `${percentile(latencies, 50).toFixed(1)} ms`, ''],
      ['image status p99', `${percentile(latencies, 99).toFixed(1)} ms`, 'target < 50 ms'],
      [`distribute to ${targets.length}: planned`, `${((planned - t0) / 1000).toFixed(2)} s`, ''],
      [`distribute to ${targets.length}: tracked`, `${((tracked - t0) / 1000).toFixed(2)} s`, ''],
      [`distribute to ${targets.length}: finished`, `${((final.at - t0) / 1000).toFixed(2)} s`, 'target < 10 s'],
      ['GET /metrics (median of 5)', `${percentile(scrapes, 50).toFixed(1)} ms`, ''],
      [`heartbeats of ${AGENTS} every ${HEARTBEAT_MS / 1000} s`, `${(heartbeatShare * 100).toFixed(1)} % of a core`, 'target < 10 %'],
      ['control-plane CPU per heartbeat', cpuPerBeat, ''],
    ];
    const note = `${database ? 'postgresql' : 'sqlite'}: status answers carried ${(records / STATUS_REQUESTS).toFixed(0)} records on average; distribute ended ${final.event} with ${present}/${targets.length} present; ${beatsInWindow} heartbeats in the window, ${heartbeatErrors} heartbeat errors; ${load}`;
    return { rows, note };
  } finally {
    for (const t of heartbeats) clearInterval(t);
    control.child.kill('SIGKILL');
    await Promise.all(agents.map((a) => new Promise((resolve) => a.server.close(resolve))));
  }
}

async function main(): Promise<void> {
  const stores: Array<{ name: string; database: string | undefined }> = [];
  if (STORE !== 'postgresql') stores.push({ name: 'sqlite', database: undefined });
  if (DATABASE && STORE !== 'sqlite') stores.push({ name: 'postgresql', database: DATABASE });
  const results: Array<{ rows: Row[]; note: string }> = [];
  for (const store of stores) {
    console.error(`fleet on ${store.name}…`);
    results.push(await measure(store.database));
  }
  await http.close();
  console.log(`\nfleet: ${AGENTS} agents, ${IMAGES} images × ${PLATFORMS} platforms, ${PER_AGENT} images per agent`);
  for (const r of results) console.log(`(${r.note})`);
  console.log('');
  const first = results[0] as { rows: Row[]; note: string };
  const width = Math.max(...first.rows.map((r) => r[0].length));
  console.log(`${'measure'.padEnd(width)}  ${stores.map((s) => s.name.padStart(18)).join('  ')}  `);
  first.rows.forEach(([name, , target], i) => {
    console.log(`${name.padEnd(width)}  ${results.map((r) => (r.rows[i]?.[1] ?? '').padStart(18)).join('  ')}  ${target}`);
  });
}

await main();
