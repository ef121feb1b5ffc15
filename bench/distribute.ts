/**
 * What a distribute costs: one image of --size bytes (default 256 MiB) on a source agent, moved by the
 * real control plane and agent processes on loopback.
 *
 *   baseline   distribute to 1 target      (one copy over the OCI distribution protocol, verified)
 *   fan-out    distribute to --targets targets at once (default 3)
 *   skopeo     skopeo copy of the same image from the source's /v2/ to a dir (an outside reference, when installed)
 *
 * Prints seconds, MiB/s and ratios to the baseline measured in the same run (these machines are noisy),
 * and the targets' peak memory against an idle agent's: it stays flat as the image grows.
 * Today every target pulls from the source, so fan-out costs about targets × one copy of the source's
 * upload bandwidth; pipelined fan-out (targets serving what they are still receiving) is the next step.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { mintPeerToken } from '../src/control/peer-token.js';
import type { Availability, Operation } from '../src/control/wire.js';
import { type Cluster, startCluster, until } from '../test/harness/cluster.js';
import { tmpDir } from '../test/harness/tmp.js';
import { dockerSaveArchive } from './generated-image.js';

const MiB = 1024 * 1024;

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** Polled often, for the timing; as long as the image takes. */
function settle(cluster: Cluster, id: string): Promise<Operation> {
  return until(
    `operation ${id} to end`,
    async () => {
      const r = await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`);
      return ['pending', 'running'].includes(r.body.operation.status) ? undefined : r.body.operation;
    },
    { timeoutMs: Number.POSITIVE_INFINITY, everyMs: 20 },
  );
}

async function distribute(cluster: Cluster, digest: string, to: string[]): Promise<number> {
  const start = process.hrtime.bigint();
  const created = await cluster.api<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest, from: 'agent-1', to });
  const op = await settle(cluster, created.body.operation.id);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (op.status !== 'succeeded' || op.targets.some((t) => t.status !== 'present')) throw new Error(`distribute did not succeed: ${JSON.stringify(op.targets)}`);
  return seconds;
}

function skopeoInstalled(): boolean {
  try {
    execFileSync('skopeo', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const size = arg('size', 256) * MiB;
  const targets = arg('targets', 3);
  const cluster = await startCluster({ agents: 2 + targets, heartbeatIntervalMs: 1000 });
  try {
    const load = await request(`${cluster.agents[0]!.dockerHost.replace('tcp://', 'http://')}/v1.41/images/load`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-tar' },
      body: await dockerSaveArchive(size, 'bench/fanout:1'),
    });
    await load.body.text();
    if (load.statusCode !== 200) throw new Error(`docker load answered ${load.statusCode}`);
    const digest = await until('agent-1 to report the image', async () => {
      const r = await cluster.api<{ records: Availability[] }>('GET', '/api/v1/images/status?machine=agent-1');
      return r.body.records.find((x) => x.references.includes('docker.io/bench/fanout:1'))?.digest;
    });

    // Peak resident memory (VmHWM) of the targets before any transfer: what an idle agent needs.
    const idlePeak = Math.max(...cluster.agents.slice(1).map((a) => peakRssMiB(a.process.pid)));
    const rows: Array<[string, number]> = [];
    const baseline = await distribute(cluster, digest, ['agent-2']);
    rows.push(['baseline: distribute to 1', baseline]);
    const fanout = await distribute(
      cluster,
      digest,
      cluster.agents.slice(2).map((a) => a.name),
    );
    rows.push([`fan-out: distribute to ${targets}`, fanout]);

    if (skopeoInstalled()) {
      // The same bytes with a standard tool, for scale: the source's /v2/ with a pull token, into a dir.
      const dir = await tmpDir('stowage-bench-skopeo-');
      const secret = await secretOf(cluster);
      const token = mintPeerToken(secret, { m: 'agent-1', s: 'pull', exp: Math.floor(Date.now() / 1000) + 600 });
      const start = process.hrtime.bigint();
      execFileSync('skopeo', ['copy', '--src-tls-verify=false', '--src-creds', `stowage:${token}`, `docker://${new URL(cluster.agents[0]!.peerUrl).host}/bench/fanout@${digest}`, `dir:${dir}`], {
        stdio: 'ignore',
      });
      rows.push(['skopeo copy to a dir', Number(process.hrtime.bigint() - start) / 1e9]);
    }

    const mib = size / MiB;
    console.log(`image: ${mib} MiB, ${targets} fan-out targets, loopback`);
    for (const [name, seconds] of rows) {
      const copies = name.startsWith('fan-out') ? targets : 1;
      console.log(`${name.padEnd(28)} ${seconds.toFixed(2).padStart(7)} s  ${((mib * copies) / seconds).toFixed(0).padStart(6)} MiB/s  x${(seconds / baseline).toFixed(2)} of baseline`);
    }
    const busyPeak = Math.max(...cluster.agents.slice(1).map((a) => peakRssMiB(a.process.pid)));
    console.log(`target agents' peak RSS: ${busyPeak} MiB after receiving ${mib} MiB (idle ${idlePeak} MiB, x${(busyPeak / idlePeak).toFixed(2)})`);
  } finally {
    await cluster.close();
  }
}

/** Peak resident set of a process in MiB, from /proc (Linux). */
function peakRssMiB(pid: number | undefined): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024);
}

/** agent-1's machine secret, read from its identity file (the bench plays the control plane's part for skopeo). */
async function secretOf(cluster: Cluster): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const identity = JSON.parse(await readFile(`${cluster.agents[0]!.dataDir}/identity.json`, 'utf8')) as { machine_secret: string };
  return identity.machine_secret;
}

await main();
