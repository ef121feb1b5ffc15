/**
 * Fan-out benchmark (issue 10), two parts, each printed as ratios to a baseline measured in the same run:
 *
 * 1. Loopback, one link: an image of --loopback-size MiB (default 2048) distributed from agent-1 to agent-2
 *    by the real processes, against `openssl dgst -sha256` hashing the same blob files (the speed limit of
 *    "read, hash once, write"), and against `dd` writing them into the data directory with an fsync (the
 *    disk's limit). Twice: data directories on the disk (the OS temp dir), then on tmpfs (/dev/shm), which
 *    takes the disk out and measures the software path alone. Each --loopback-repeat times (default 3),
 *    to a fresh agent each time, with the median ratio: the machine's load drifts. Also the target agent's
 *    peak RSS while it moved the image: it must stay flat (< 200 MB).
 * 2. Network (root only; skipped otherwise or with --no-net): bench/fanout-net.sh, every machine in its own
 *    network namespace with a tbf-shaped uplink: Stowage distribute against a docker-registry and N parallel
 *    `skopeo copy`, N = 1, 2, 4, 8 by default, as multiples of one copy at line rate, plus the copies of the
 *    image the source (or the registry) sent. Two more rows at the largest N: `stowctl image push` from a
 *    machine of its own (timed from the upload start; copies stowctl sent), and a distribute in which a
 *    mid-chain target is SIGKILLed halfway (every other target present, the dead one failed).
 *
 *   npm run bench:fanout -- [--loopback-size MiB] [--loopback-repeat N] [--size MiB] [--rate mbit] [--targets 1,2,4,8] [--no-net] [--no-loopback]
 *     [--no-disk] [--no-tmpfs] [--from-source] [--profile DIR]
 *     [--repeat R] [--cases distribute,registry,push,kill] [--push-targets 8] [--kill-targets 8] [--kill-at 0.5] [--cpu-prof]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { request } from 'undici';
import { readSse } from '../src/cli/sse.js';
import type { Availability, Operation } from '../src/control/wire.js';
import { type Cluster, startCluster, until } from '../test/harness/cluster.js';
import { dockerSaveArchive } from './generated-image.js';

const MiB = 1024 * 1024;
const SHM = '/dev/shm';
/**
 * The daemons run the build, as a machine does (from source, tsx's compiler would sit in every agent's memory
 * and inflate its RSS), built from this tree now so that an old build never stands in for the code measured.
 * --from-source runs the TypeScript source instead.
 */
const FROM_SOURCE = process.argv.includes('--from-source');
if (!FROM_SOURCE) execFileSync('npx', ['tsup', '--silent'], { cwd: join(import.meta.dirname, '..'), stdio: 'inherit' });
process.env['STOWAGE_FROM_SOURCE'] = FROM_SOURCE ? '1' : '0';
/** --profile DIR: the daemons write V8 CPU profiles there (open them in Chrome DevTools). */
const PROFILE = arg('profile', '');

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}
const flag = (name: string): boolean => process.argv.includes(`--${name}`);

/** Peak resident set of a process in MiB, from /proc (Linux). */
function peakRssMiB(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024);
}

/** The content store's blob directory under an agent's data directory (where the runtime adapter keeps it). */
function findBlobDir(dir: string): string {
  const candidate = join(dir, 'blobs', 'sha256');
  if (existsSync(candidate)) return candidate;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    try {
      return findBlobDir(join(dir, entry.name));
    } catch {
      // not under this one
    }
  }
  throw new Error(`no blobs/sha256 under ${dir}`);
}

function blobFiles(dataDir: string): string[] {
  const blobDir = findBlobDir(dataDir);
  return readdirSync(blobDir).map((f) => join(blobDir, f));
}

const FINAL_EVENTS = new Set(['bgtask_done', 'bgtask_failed', 'bgtask_cancelled']);

async function settle(cluster: Cluster, id: string): Promise<Operation> {
  // Followed over its event stream to the final event, as stowctl follows it: polling the operation 50 times
  // a second took CPU from the very transfer being measured (the bench and the control plane together used
  // about a tenth of the machine's CPU during a loopback transfer).
  const res = await request(`${cluster.controlUrl}/api/v1/operations/${encodeURIComponent(id)}/events`, {
    headers: { authorization: `Bearer ${cluster.adminToken}`, accept: 'text/event-stream' },
  });
  if (res.statusCode !== 200) throw new Error(`operation events answered ${res.statusCode}: ${await res.body.text()}`);
  try {
    for await (const ev of readSse(res.body)) if (FINAL_EVENTS.has(ev.event)) break;
  } finally {
    res.body.destroy();
  }
  return (await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`)).body.operation;
}

/** Seconds openssl takes to hash the files (all of them, one process per file, in turn). */
function opensslSeconds(files: string[]): number {
  const start = process.hrtime.bigint();
  for (const f of files) execFileSync('openssl', ['dgst', '-sha256', f], { stdio: 'ignore' });
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Seconds `dd` takes to copy the files into `dir` and fsync each copy: what the data directory's disk can take. */
function diskWriteSeconds(files: string[], dir: string): number {
  const start = process.hrtime.bigint();
  for (const f of files) {
    const copy = join(dir, `dd-${basename(f)}`);
    execFileSync('dd', [`if=${f}`, `of=${copy}`, 'bs=4M', 'conv=fsync'], { stdio: 'ignore' });
    rmSync(copy);
  }
  return Number(process.hrtime.bigint() - start) / 1e9;
}

interface LoopbackRun {
  bytes: number;
  seconds: number;
  opensslSeconds: number;
  diskSeconds: number;
  idleRss: number;
  busyRss: number;
}

interface LoopbackRow {
  where: string;
  runs: LoopbackRun[];
}

/**
 * `repeat` distributes of a --loopback-size image from agent-1, each to a fresh agent of its own (agent-2,
 * agent-3, ...), one at a time, every data directory under `tmpParent`. Each target is stopped and its
 * copy removed once measured, so a tmpfs holds two copies at most.
 */
async function loopback(sizeMiB: number, where: string, tmpParent: string | undefined, repeat: number): Promise<LoopbackRow> {
  const cluster = await startCluster({
    agents: 1 + repeat,
    heartbeatIntervalMs: 1000,
    ...(tmpParent ? { tmpParent } : {}),
    ...(PROFILE ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${PROFILE}`] } : {}),
  });
  try {
    const load = await request(`${cluster.agents[0]!.dockerHost.replace('tcp://', 'http://')}/v1.41/images/load`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-tar' },
      body: await dockerSaveArchive(sizeMiB * MiB, 'bench/fanout-loopback:1'),
    });
    await load.body.text();
    if (load.statusCode !== 200) throw new Error(`docker load answered ${load.statusCode}`);
    const record = await until('agent-1 to report the image', async () => {
      const r = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-1');
      return r.body.records.find((x) => x.references.includes('docker.io/bench/fanout-loopback:1'));
    });
    const sourceFiles = blobFiles(cluster.agents[0]!.dataDir);
    opensslSeconds(sourceFiles); // warm the page cache, as it is warm for the transfer
    const runs: LoopbackRun[] = [];
    for (const target of cluster.agents.slice(1)) {
      const idleRss = peakRssMiB(target.process.pid);
      // openssl on the same bytes just before and just after the transfer (the source's copy, then the
      // target's): the machine's load drifts, the mean of the two is the baseline.
      const hashBefore = opensslSeconds(sourceFiles);

      const start = process.hrtime.bigint();
      const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', {
        digest: record.digest,
        from: 'agent-1',
        to: [target.name],
      });
      const op = await settle(cluster, created.body.operation.id);
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      if (op.status !== 'succeeded') throw new Error(`distribute did not succeed: ${JSON.stringify(op.targets)}`);
      const busyRss = peakRssMiB(target.process.pid);

      // The bytes moved: the blob files the target now holds.
      const files = blobFiles(target.dataDir);
      const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
      const hash = (hashBefore + opensslSeconds(files)) / 2;
      // And written to the same disk with one fsync per file, as the target must.
      const diskSeconds = diskWriteSeconds(files, target.dataDir);
      runs.push({ bytes, seconds, opensslSeconds: hash, diskSeconds, idleRss, busyRss });
      // A clean exit (SIGTERM) writes the profile; then its copy goes, to keep the tmpfs small.
      await cluster.killAgent(target.name, PROFILE ? 'SIGTERM' : 'SIGKILL');
      rmSync(target.dataDir, { recursive: true, force: true });
    }
    if (PROFILE) await cluster.killAgent('agent-1', 'SIGTERM');
    return { where, runs };
  } finally {
    await cluster.close();
  }
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function report(rows: LoopbackRow[]): void {
  const mibs = (bytes: number, s: number): string => `${(bytes / MiB / s).toFixed(0).padStart(6)} MiB/s`;
  const secs = (s: number): string => `${s.toFixed(2).padStart(7)} s`;
  const label = (text: string): string => `    ${text.padEnd(34)}`;
  const daemons = FROM_SOURCE ? 'daemons from source (tsx)' : 'daemons built (dist/)';
  const first = rows[0]?.runs[0];
  if (!first) return;
  console.log(`loopback, one link: ${(first.bytes / MiB).toFixed(0)} MiB, ${daemons}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} on ${cpus().length} cores`);
  console.log('  each transfer to a fresh agent; openssl is the mean of a run just before and one just after it, on the same bytes');
  for (const { where, runs } of rows) {
    console.log(`  data directories on ${where}:`);
    for (const [i, r] of runs.entries()) {
      // The lower of the two ceilings is the one a transfer into this data directory meets.
      const limit = r.diskSeconds > r.opensslSeconds ? 'disk write + fsync' : 'hashing';
      console.log(`   run ${i + 1}:`);
      console.log(`${label('openssl dgst -sha256 (baseline)')}${secs(r.opensslSeconds)} ${mibs(r.bytes, r.opensslSeconds)}`);
      console.log(`${label('dd + fsync into the data dir')}${secs(r.diskSeconds)} ${mibs(r.bytes, r.diskSeconds)}  x${(r.opensslSeconds / r.diskSeconds).toFixed(2)} of openssl`);
      console.log(
        `${label('stowage distribute to 1 target')}${secs(r.seconds)} ${mibs(r.bytes, r.seconds)}  x${(r.opensslSeconds / r.seconds).toFixed(2)} of openssl, x${(r.diskSeconds / r.seconds).toFixed(2)} of dd; the lower limit: ${limit}`,
      );
      console.log(`${label('target agent peak RSS')}${String(r.busyRss).padStart(7)} MiB after receiving the image (idle ${r.idleRss} MiB)`);
    }
    const ratio = median(runs.map((r) => r.opensslSeconds / r.seconds));
    const ofDd = median(runs.map((r) => r.diskSeconds / r.seconds));
    const rss = Math.max(...runs.map((r) => r.busyRss));
    console.log(`   median: x${ratio.toFixed(2)} of openssl (target >= x0.50), x${ofDd.toFixed(2)} of dd; peak RSS ${rss} MiB (target < 200 MiB)`);
  }
}

function network(): void {
  if (process.getuid?.() !== 0) {
    console.log('network part skipped: it needs root (network namespaces and tc)');
    return;
  }
  const script = join(import.meta.dirname, 'fanout-net.sh');
  const args = ['--size', arg('size', '256'), '--rate', arg('rate', '200'), '--targets', arg('targets', '1,2,4,8')];
  for (const name of ['repeat', 'cases', 'push-targets', 'kill-targets', 'kill-at']) {
    const value = arg(name, '');
    if (value) args.push(`--${name}`, value);
  }
  if (flag('cpu-prof')) args.push('--cpu-prof');
  const result = spawnSync('bash', [script, ...args], { stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`bench/fanout-net.sh exited with ${result.status}`);
}

if (!flag('no-loopback')) {
  const size = Number(arg('loopback-size', '2048'));
  const repeat = Math.max(1, Number(arg('loopback-repeat', '3')));
  const rows: LoopbackRow[] = [];
  // On the disk (the OS temp dir), as a machine would run; then on tmpfs, which takes the disk out and leaves
  // the software path (copies, read and write sizes, hashing, fsync count).
  if (!flag('no-disk')) rows.push(await loopback(size, `disk (${tmpdir()})`, undefined, repeat));
  if (!flag('no-tmpfs') && existsSync(SHM)) rows.push(await loopback(size, `tmpfs (${SHM})`, SHM, repeat));
  report(rows);
}
if (!flag('no-net')) network();
