/**
 * Fan-out benchmark (issue 10), two parts, each printed as ratios to a baseline measured in the same run:
 *
 * 1. Loopback, one link: an image of --loopback-size MiB (default 2048) distributed from agent-1 to agent-2
 *    by the real processes, against `openssl dgst -sha256` hashing the same blob files (the speed limit of
 *    "read, hash once, write"), and against `dd` writing them into the data directory with an fsync (the
 *    disk's limit). Twice: data directories on the disk (the OS temp dir), then on tmpfs (/dev/shm), which
 *    takes the disk out and measures the software path alone. Also the target agent's peak RSS while it
 *    moved the image, against its idle peak: it must stay flat (< 200 MB).
 * 2. Network (root only; skipped otherwise or with --no-net): bench/fanout-net.sh, every machine in its own
 *    network namespace with a tbf-shaped uplink: Stowage distribute against a docker-registry and N parallel
 *    `skopeo copy`, N = 1, 2, 4, 8 by default, as multiples of one copy at line rate, plus the copies of the
 *    image the source (or the registry) sent.
 *
 *   npm run bench:fanout -- [--loopback-size MiB] [--size MiB] [--rate mbit] [--targets 1,2,4,8] [--no-net] [--no-loopback] [--no-disk] [--no-tmpfs] [--profile DIR]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { request } from 'undici';
import type { Availability, Operation } from '../src/control/wire.js';
import { type Cluster, startCluster, until } from '../test/harness/cluster.js';
import { dockerSaveArchive } from './generated-image.js';

const MiB = 1024 * 1024;
const SHM = '/dev/shm';
// The agents run the TypeScript source, like the tests: an old build must not stand in for the code measured.
process.env['STOWAGE_FROM_SOURCE'] = '1';
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

async function settle(cluster: Cluster, id: string): Promise<Operation> {
  return until(
    `operation ${id} to end`,
    async () => {
      const r = await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`);
      return ['pending', 'running'].includes(r.body.operation.status) ? undefined : r.body.operation;
    },
    { timeoutMs: Number.POSITIVE_INFINITY, everyMs: 20 },
  );
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

interface LoopbackRow {
  where: string;
  bytes: number;
  seconds: number;
  opensslSeconds: number;
  diskSeconds: number;
  idleRss: number;
  busyRss: number;
}

/** One distribute of a --loopback-size image from agent-1 to agent-2, both data directories under `tmpParent`. */
async function loopback(sizeMiB: number, where: string, tmpParent: string | undefined): Promise<LoopbackRow> {
  const cluster = await startCluster({ agents: 2, heartbeatIntervalMs: 1000, ...(tmpParent ? { tmpParent } : {}),
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
    const target = cluster.agents[1]!;
    const idleRss = peakRssMiB(target.process.pid);

    const start = process.hrtime.bigint();
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest: record.digest, from: 'agent-1', to: ['agent-2'] });
    const op = await settle(cluster, created.body.operation.id);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    if (op.status !== 'succeeded') throw new Error(`distribute did not succeed: ${JSON.stringify(op.targets)}`);
    const busyRss = peakRssMiB(target.process.pid);

    // The same bytes, hashed by openssl: the blob files the target now holds.
    const blobDir = findBlobDir(target.dataDir);
    const files = readdirSync(blobDir).map((f) => join(blobDir, f));
    const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
    opensslSeconds(files); // warm the page cache, as the transfer had it warm on the source
    const hash = opensslSeconds(files);
    // And written to the same disk with one fsync per file, as the target must.
    const diskSeconds = diskWriteSeconds(files, target.dataDir);
    if (PROFILE) for (const a of cluster.agents) await cluster.killAgent(a.name, 'SIGTERM'); // a clean exit writes the profile
    return { where, bytes, seconds, opensslSeconds: hash, diskSeconds, idleRss, busyRss };
  } finally {
    await cluster.close();
  }
}

function report(rows: LoopbackRow[]): void {
  const mibs = (bytes: number, s: number): string => `${(bytes / MiB / s).toFixed(0).padStart(6)} MiB/s`;
  const secs = (s: number): string => `${s.toFixed(2).padStart(7)} s`;
  console.log(`loopback, one link: ${(rows[0]!.bytes / MiB).toFixed(0)} MiB, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} on ${cpus().length} cores`);
  for (const r of rows) {
    const ratio = r.opensslSeconds / r.seconds;
    // The lower of the two ceilings is the one a transfer into this data directory meets.
    const limit = r.diskSeconds > r.opensslSeconds ? 'disk write + fsync' : 'hashing';
    console.log(`  data directories on ${r.where}:`);
    console.log(`    openssl dgst -sha256 (baseline)   ${secs(r.opensslSeconds)} ${mibs(r.bytes, r.opensslSeconds)}`);
    console.log(`    dd + fsync into the data dir      ${secs(r.diskSeconds)} ${mibs(r.bytes, r.diskSeconds)}  x${(r.opensslSeconds / r.diskSeconds).toFixed(2)} of openssl`);
    console.log(`    stowage distribute to 1 target    ${secs(r.seconds)} ${mibs(r.bytes, r.seconds)}  x${ratio.toFixed(2)} of openssl (target >= x0.50), x${(r.diskSeconds / r.seconds).toFixed(2)} of dd; limit here: ${limit}`);
    console.log(`    target agent peak RSS             ${r.busyRss} MiB after receiving the image (idle ${r.idleRss} MiB, x${(r.busyRss / r.idleRss).toFixed(2)}; target < 200 MiB)`);
  }
}

function network(): void {
  if (process.getuid?.() !== 0) {
    console.log('network part skipped: it needs root (network namespaces and tc)');
    return;
  }
  const script = join(import.meta.dirname, 'fanout-net.sh');
  const args = ['--size', arg('size', '256'), '--rate', arg('rate', '200'), '--targets', arg('targets', '1,2,4,8')];
  const repeat = arg('repeat', '');
  if (repeat) args.push('--repeat', repeat);
  const result = spawnSync('bash', [script, ...args], { stdio: 'inherit' });
  if (result.status !== 0) throw new Error(`bench/fanout-net.sh exited with ${result.status}`);
}

if (!flag('no-loopback')) {
  const size = Number(arg('loopback-size', '2048'));
  const rows: LoopbackRow[] = [];
  // On the disk (the OS temp dir), as a machine would run; then on tmpfs, which takes the disk out and leaves
  // the software path (copies, read and write sizes, hashing, fsync count).
  if (!flag('no-disk')) rows.push(await loopback(size, `disk (${tmpdir()})`, undefined));
  if (!flag('no-tmpfs') && existsSync(SHM)) rows.push(await loopback(size, `tmpfs (${SHM})`, SHM));
  report(rows);
}
if (!flag('no-net')) network();
