/**
 * Fan-out benchmark (issue 10), two parts, each printed as ratios to a baseline measured in the same run:
 *
 * 1. Loopback, one link: an image of --loopback-size MiB (default 2048) distributed from agent-1 to agent-2
 *    by the real processes, against `openssl dgst -sha256` hashing the same blob files (the speed limit of
 *    "read, hash once, write"). Also the target agent's peak RSS while it moved the image, against its idle
 *    peak: it must stay flat (< 200 MB).
 * 2. Network (root only; skipped otherwise or with --no-net): bench/fanout-net.sh, every machine in its own
 *    network namespace with a tbf-shaped uplink: Stowage distribute against a docker-registry and N parallel
 *    `skopeo copy`, N = 1, 2, 4, 8 by default, as multiples of one copy at line rate, plus the copies of the
 *    image the source (or the registry) sent. Two more rows at the largest N: `stowctl image push` from a
 *    machine of its own (timed from the upload start; copies stowctl sent), and a distribute in which a
 *    mid-chain target is SIGKILLed halfway (every other target present, the dead one failed).
 *
 *   npm run bench:fanout -- [--loopback-size MiB] [--size MiB] [--rate mbit] [--targets 1,2,4,8] [--no-net] [--no-loopback]
 *     [--repeat R] [--cases distribute,registry,push,kill] [--push-targets 8] [--kill-targets 8] [--kill-at 0.5] [--cpu-prof]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import type { Availability, Operation } from '../src/control/wire.js';
import { type Cluster, startCluster, until } from '../test/harness/cluster.js';
import { dockerSaveArchive } from './generated-image.js';

const MiB = 1024 * 1024;

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

async function loopback(sizeMiB: number): Promise<void> {
  const cluster = await startCluster({ agents: 2, heartbeatIntervalMs: 1000 });
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
    const idle = peakRssMiB(target.process.pid);

    const start = process.hrtime.bigint();
    const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest: record.digest, from: 'agent-1', to: ['agent-2'] });
    const op = await settle(cluster, created.body.operation.id);
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    if (op.status !== 'succeeded') throw new Error(`distribute did not succeed: ${JSON.stringify(op.targets)}`);
    const busy = peakRssMiB(target.process.pid);

    // The same bytes, hashed by openssl: the blob files the target now holds.
    const blobDir = findBlobDir(target.dataDir);
    const files = readdirSync(blobDir).map((f) => join(blobDir, f));
    const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
    opensslSeconds(files); // warm the page cache, as the transfer had it warm on the source
    const hash = opensslSeconds(files);

    const stowage = bytes / MiB / seconds;
    const openssl = bytes / MiB / hash;
    console.log(`loopback, one link: ${(bytes / MiB).toFixed(0)} MiB`);
    console.log(`  openssl dgst -sha256 (baseline)   ${hash.toFixed(2).padStart(7)} s  ${openssl.toFixed(0).padStart(6)} MiB/s`);
    console.log(`  stowage distribute to 1 target    ${seconds.toFixed(2).padStart(7)} s  ${stowage.toFixed(0).padStart(6)} MiB/s  x${(stowage / openssl).toFixed(2)} of openssl`);
    console.log(`  target agent peak RSS             ${busy} MiB after receiving the image (idle ${idle} MiB, x${(busy / idle).toFixed(2)})`);
  } finally {
    await cluster.close();
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

if (!flag('no-loopback')) await loopback(Number(arg('loopback-size', '2048')));
if (!flag('no-net')) network();
