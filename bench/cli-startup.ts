/**
 * How fast stowctl answers: wall time of `stowctl --help` and `stowctl image status` (against a real
 * control plane on loopback with a few machines' records) against `node -e 0`, the floor any Node CLI
 * pays, measured in the same run. Runs are interleaved (baseline, help, status, baseline, …) so a noisy
 * neighbour slows all three alike; the median of each is printed with its ratio to the baseline's, and
 * the median of the ratios within each round (which a load that comes and goes during the run moves
 * less). The load average is printed too: on a busy machine every figure is higher and looser.
 *
 *   npm run bench:cli -- --runs 30
 *
 * Measures bin/stowctl.js as operators run it: the built dist/ (npm ci runs the build through `prepare`).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { type Cluster, startCluster } from '../test/harness/cluster.js';

const ROOT = join(import.meta.dirname, '..');
const STOWCTL = join(ROOT, 'bin', 'stowctl.js');

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

/** Milliseconds of one run of `node args…`; a non-zero exit is an error (the bench must measure real work). */
function timed(args: string[], env: NodeJS.ProcessEnv): number {
  const start = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function main(): Promise<void> {
  const runs = arg('runs', 25);
  if (!['stowctl.js', 'stowctl-fast.cjs', 'stowctl-help.txt'].every((f) => existsSync(join(ROOT, 'dist', f)))) {
    console.log('dist/ is missing: building it (npm run build) so the bench measures what operators run');
    const b = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
    if (b.status !== 0) throw new Error('npm run build failed');
  }
  let cluster: Cluster | undefined;
  try {
    cluster = await startCluster({ agents: 2 });
    const env = { ...process.env, STOWAGE_HOST: cluster.controlUrl, STOWAGE_TOKEN: cluster.adminToken };
    const cases: Array<{ name: string; args: string[]; times: number[] }> = [
      { name: 'node -e 0', args: ['-e', '0'], times: [] },
      { name: 'stowctl --help', args: [STOWCTL, '--help'], times: [] },
      { name: 'stowctl image status', args: [STOWCTL, 'image', 'status'], times: [] },
    ];
    // One warm-up round (file-system cache), not counted.
    for (const c of cases) timed(c.args, env);
    const load = (): string => loadavg().map((l) => l.toFixed(2)).join(' ');
    const loadBefore = load();
    for (let i = 0; i < runs; i++) for (const c of cases) c.times.push(timed(c.args, env));
    const base = cases[0]!.times;
    console.log(`${runs} interleaved runs each; load average ${loadBefore} before, ${load()} after`);
    console.log(`${''.padEnd(22)} ${'median'.padStart(10)}   ${'ratio of medians'.padStart(16)}   median ratio in a round`);
    for (const c of cases) {
      const m = median(c.times);
      const perRound = median(c.times.map((t, i) => t / base[i]!));
      console.log(`${c.name.padEnd(22)} ${m.toFixed(1).padStart(7)} ms   ${`${(m / median(base)).toFixed(2)}×`.padStart(16)}   ${perRound.toFixed(2)}×`);
    }
  } finally {
    await cluster?.close();
  }
}

await main();
