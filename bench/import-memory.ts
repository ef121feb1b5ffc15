/**
 * Memory stays flat as images grow: stream a generated layer of --size bytes (default 1 GiB) into a
 * content store, and a docker-save archive holding it through importArchive, and compare peak RSS
 * with a baseline measured in the same run (hashing the same generated stream, storing nothing).
 *
 * Each measurement runs in its own child process so peaks do not mix. Prints ratios; exits 1 when a
 * store path's peak RSS exceeds the baseline by more than --max-extra-mib.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore } from '../src/store/index.js';
import { importArchive } from '../src/store/import-archive.js';
import { digestLayer, dockerSaveArchive, layerTar } from './generated-image.js';

const MiB = 1024 * 1024;

async function measure(mode: string, size: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'stowage-bench-'));
  const started = process.hrtime.bigint();
  try {
    if (mode === 'baseline') {
      await digestLayer(size);
    } else if (mode === 'store-put') {
      const { store, images } = await openStore(dir);
      await store.put(layerTar(size));
      images.close();
    } else if (mode === 'import-archive') {
      const { store, images } = await openStore(dir);
      await importArchive(await dockerSaveArchive(size), { store, images });
      images.close();
    } else {
      throw new Error(`unknown mode ${mode}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  // maxRSS is in KiB.
  console.log(JSON.stringify({ mode, peakRssMiB: process.resourceUsage().maxRSS / 1024, seconds }));
}

function runChild(mode: string, size: number): { mode: string; peakRssMiB: number; seconds: number } {
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', mode, String(size)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').pop() ?? '{}');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    await measure(args[1] ?? '', Number(args[2]));
    return;
  }
  const sizeArg = args.indexOf('--size');
  const size = sizeArg >= 0 ? Number(args[sizeArg + 1]) : 1024 * MiB;
  const extraArg = args.indexOf('--max-extra-mib');
  const maxExtra = extraArg >= 0 ? Number(args[extraArg + 1]) : 128;

  const baseline = runChild('baseline', size);
  console.log(`layer ${(size / MiB).toFixed(0)} MiB; baseline (hash only): peak RSS ${baseline.peakRssMiB.toFixed(0)} MiB, ${baseline.seconds.toFixed(1)} s`);
  let failed = false;
  for (const mode of ['store-put', 'import-archive']) {
    const r = runChild(mode, size);
    const extra = r.peakRssMiB - baseline.peakRssMiB;
    console.log(
      `${mode}: peak RSS ${r.peakRssMiB.toFixed(0)} MiB (x${(r.peakRssMiB / baseline.peakRssMiB).toFixed(2)} of baseline, +${extra.toFixed(0)} MiB), time x${(r.seconds / baseline.seconds).toFixed(2)} of baseline`,
    );
    if (extra > maxExtra) {
      console.log(`  FAIL: ${mode} used ${extra.toFixed(0)} MiB more than the baseline (limit ${maxExtra} MiB): memory is not flat`);
      failed = true;
    }
  }
  process.exit(failed ? 1 : 0);
}

await main();
