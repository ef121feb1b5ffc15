/**
 * containerd hand-over: the time from "every blob verified in containerd's content store" to "runnable"
 * (Stowage's unpack, labels and image record), against `ctr images import` of the same image (an OCI archive;
 * reading it, writing its content and unpacking) into a second containerd, measured in the same run.
 *
 *   npm run bench:runtime -- --size 256      # MiB of layers (default 256); needs root, containerd, runc, gcc
 *
 * Prints seconds for both and their ratio; a ratio under 1 means the hand-over costs less than an import.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ContainerdRuntime } from '../src/runtime/containerd/adapter.js';
import type { Digest } from '../src/oci/digest.js';
import { parseManifestBytes } from '../src/oci/manifest.js';
import { makeRunnableImage, startContainerd } from '../test/harness/containerd.js';
import { cleanupTmpDirs, tmpDir } from '../test/harness/tmp.js';

const MiB = 1024 * 1024;

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

async function seconds<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const start = process.hrtime.bigint();
  const out = await fn();
  return [Number(process.hrtime.bigint() - start) / 1e9, out];
}

async function main(): Promise<void> {
  const sizeMiB = flag('--size', 256);
  const layers = Math.max(1, Math.round(sizeMiB / 64));
  const ref = 'docker.io/stowage-bench/handover:1';
  const image = await makeRunnableImage(ref, { extraLayers: layers, extraBytes: Math.round((sizeMiB * MiB) / layers) });
  const baselineCtd = await startContainerd();
  const ours = await startContainerd();
  try {
    // Baseline: ctr images import of the OCI archive (named by its index.json; with --index-name, ctr 1.6
    // fails on large layers with "content digest … not found").
    const [importSeconds, imported] = await seconds(() => baselineCtd.ctr(['images', 'import', image.tar], { timeoutMs: 1_800_000 }));
    if (imported.code !== 0) throw new Error(`ctr images import failed: ${imported.stderr}`);

    // Stowage: the blobs go into containerd's content store first (verified as they stream; not timed).
    const runtime = await ContainerdRuntime.open({ socket: ours.socket, namespace: 'k8s.io', snapshotter: 'overlayfs', dataDir: await tmpDir('stowage-bench-agent-') });
    try {
      const blobs = join(image.layout, 'blobs', 'sha256');
      const manifestBytes = await readFile(join(blobs, image.manifestDigest.slice(7)));
      const parsed = parseManifestBytes(manifestBytes, 'application/vnd.oci.image.manifest.v1+json');
      if (parsed.kind !== 'manifest') throw new Error('not a manifest');
      for (const d of [parsed.manifest.config, ...parsed.manifest.layers]) {
        await runtime.store.put(createReadStream(join(blobs, d.digest.slice(7))), { digest: d.digest as Digest, size: d.size });
      }
      await runtime.store.putBytes(manifestBytes, { digest: image.manifestDigest as Digest, size: manifestBytes.length });
      const record = {
        manifestDigest: image.manifestDigest as Digest,
        manifestMediaType: parsed.mediaType,
        configDigest: image.configDigest as Digest,
        platform: { os: 'linux', architecture: 'amd64' },
        layers: parsed.manifest.layers.map((l) => l.digest as Digest),
        size: 0,
        created: undefined,
        labels: {},
        addedAt: new Date().toISOString(),
      };
      const [handOverSeconds] = await seconds(() =>
        runtime.handOver({ target: image.manifestDigest as Digest, mediaType: parsed.mediaType, size: manifestBytes.length, records: [record], names: [ref] }),
      );
      const ran = await ours.ctr(['run', '--rm', ref, 'bench']);
      if (ran.stdout !== image.message) throw new Error(`the handed-over image did not run: ${ran.stderr}`);
      console.log(`image: ${sizeMiB} MiB of layers (${layers + 1} layers)`);
      console.log(`ctr images import (baseline):       ${importSeconds.toFixed(2)} s`);
      console.log(`Stowage hand-over (verified→runnable): ${handOverSeconds.toFixed(2)} s`);
      console.log(`ratio hand-over / ctr import: ${(handOverSeconds / importSeconds).toFixed(2)}`);
    } finally {
      await runtime.close();
    }
  } finally {
    await baselineCtd.stop();
    await ours.stop();
    await cleanupTmpDirs();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
