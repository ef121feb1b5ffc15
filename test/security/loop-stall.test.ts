import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoopStallMonitor } from '../../src/metrics/loop-stall.js';
import { writeGzipBomb, writeManyEntriesTar, writeZstdBomb } from '../harness/bombs.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { skopeo } from '../harness/images.js';
import { run } from '../harness/run.js';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Issue 13: "the agent's event loop never stalls more than 100 ms while decompressing hostile input".
 * The stall is measured inside the agent process (stowage_event_loop_stall_max_seconds on its /metrics:
 * the longest time its main thread held the loop on CPU since the previous scrape), so a loaded machine
 * that merely does not schedule the agent does not count, and neither does this test's own work.
 */

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MAX_STALL_MS = 100;

let cluster: Cluster;
let registry: TestRegistry;
let secret: string;
let files: { zstd: string; gzip: string; entries: string };

interface Stall {
  maxStallMs: number;
  ticks: number;
}

/** Scrapes the agent; the stall maximum restarts with each scrape. */
async function scrapeStall(): Promise<Stall> {
  const res = await request(`${cluster.agents[0]!.peerUrl}/metrics`, { headers: { authorization: `Bearer ${secret}` }, headersTimeout: 60_000 });
  const text = await res.body.text();
  expect(res.statusCode, text.slice(0, 200)).toBe(200);
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  return { maxStallMs: value('stowage_event_loop_stall_max_seconds') * 1000, ticks: value('stowage_event_loop_stall_probe_ticks_total') };
}

/** Runs `work` between two scrapes and returns the agent's longest stall during it. */
async function stallDuring(work: () => Promise<void>): Promise<Stall> {
  await scrapeStall();
  await work();
  return scrapeStall();
}

/** An OCI layout of one image whose only layer is `layer` (as zstd), pushed to the registry as `name`. */
async function pushBombImage(layer: Buffer, name: string): Promise<void> {
  const dir = await tmpDir('stowage-bomb-image-');
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const blob = async (bytes: Buffer) => {
    const digest = digestOf(bytes);
    await writeFile(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), bytes);
    return { digest, size: bytes.length };
  };
  const l = await blob(layer);
  const config = await blob(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf(Buffer.alloc(0))] }, config: {} })));
  const manifest = await blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, ...config },
        layers: [{ mediaType: MediaType.OciLayerZstd, ...l }],
      }),
    ),
  );
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'x' } }] }));
  await skopeo(['copy', '--preserve-digests', `oci:${dir}:x`, `docker://${registry.host}/${name}`]);
}

beforeAll(async () => {
  registry = await startRegistry();
  cluster = await startCluster({ agents: 1, agentArgs: () => ['--insecure-registry', registry.host] });
  // The agent writes its identity once the join answer is in, which may be just after it shows online.
  secret = await until('the agent identity file', async () => {
    const identity = JSON.parse(await readFile(join(cluster.agents[0]!.dataDir, 'identity.json'), 'utf8')) as { machine_secret?: string };
    return identity.machine_secret;
  });
  const dir = await tmpDir('stowage-loop-stall-');
  files = { zstd: join(dir, 'bomb.tar.zst'), gzip: join(dir, 'bomb.tar.gz'), entries: join(dir, 'entries.tar.gz') };
  await writeZstdBomb(files.zstd, GiB);
  await writeGzipBomb(files.gzip, 256 * MiB);
  await writeManyEntriesTar(files.entries, 100_001);
  await pushBombImage(await readFile(files.zstd), 'bomb/zst:1');
  // The probe starts on the first scrape; give it a moment of ticks before measuring anything.
  await scrapeStall();
}, 300_000);

afterAll(async () => {
  await cluster?.close();
  await registry?.stop();
});

describe('the stall probe', () => {
  it('reports a loop held for 300 ms of CPU', async () => {
    const monitor = new LoopStallMonitor();
    monitor.start();
    try {
      await new Promise((r) => setTimeout(r, 50));
      monitor.take();
      const cpuMs = () => process.cpuUsage().user / 1000;
      const start = cpuMs();
      while (cpuMs() - start < 300) {
        /* hold the loop */
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(monitor.take().maxStallMs).toBeGreaterThan(200);
    } finally {
      monitor.stop();
    }
  });
});

describe('the agent event loop under hostile compressed input', () => {
  const docker = (args: string[]) => run('docker', args, { DOCKER_HOST: cluster.agents[0]!.dockerHost }, { timeoutMs: 240_000 });

  it.each([
    ['a zstd bomb (32 KiB to 1 GiB)', 'zstd', /decompression bomb/],
    ['a gzip bomb (256 MiB of zeros)', 'gzip', /manifest\.json|index\.json|not an image archive|no images/i],
    ['a tar of 100,001 entries', 'entries', /more than 100000 entries/],
  ] as const)('docker load of %s is refused and no stall passes 100 ms', async (_what, file, message) => {
    let out = '';
    const stall = await stallDuring(async () => {
      const r = await docker(['load', '-i', files[file]]);
      expect(r.code).not.toBe(0);
      out = r.stderr + r.stdout;
    });
    expect(out).toMatch(message);
    console.info(`${file}: agent's longest stall ${stall.maxStallMs.toFixed(1)} ms over ${stall.ticks} probe ticks`);
    expect(stall.ticks).toBeGreaterThan(0);
    expect(stall.maxStallMs).toBeLessThan(MAX_STALL_MS);
  }, 300_000);

  it('docker pull of a registry image whose layer is a zstd bomb: no stall passes 100 ms, the agent answers', async () => {
    let out = '';
    const stall = await stallDuring(async () => {
      const r = await docker(['pull', `${registry.host}/bomb/zst:1`]);
      out = `exit ${r.code}: ${r.stderr}${r.stdout}`;
    });
    // The pull stores the layer as it is (nothing decompresses it yet); the build below unpacks it.
    console.info(`pull zstd bomb (${out.trim().slice(0, 200)}): agent's longest stall ${stall.maxStallMs.toFixed(1)} ms`);
    expect(stall.maxStallMs).toBeLessThan(MAX_STALL_MS);
    expect((await docker(['version', '--format', '{{.Server.Version}}'])).code).toBe(0);
  }, 300_000);

  it('docker build FROM that image (its layers unpacked for COPY): no stall passes 100 ms', async () => {
    const context = await tmpDir('stowage-bomb-build-');
    await writeFile(join(context, 'Dockerfile'), `FROM ${registry.host}/bomb/zst:1\nCOPY a /a\nRUN ls /\n`);
    await writeFile(join(context, 'a'), 'a\n');
    let out = '';
    const stall = await stallDuring(async () => {
      const r = await run('docker', ['build', '-q', context], { DOCKER_HOST: cluster.agents[0]!.dockerHost, DOCKER_BUILDKIT: '0' }, { timeoutMs: 240_000 });
      out = `exit ${r.code}: ${r.stderr}${r.stdout}`;
    });
    console.info(`build FROM zstd bomb: agent's longest stall ${stall.maxStallMs.toFixed(1)} ms`);
    expect(out).toMatch(/^exit 1: [\s\S]*decompression bomb/);
    expect(stall.maxStallMs).toBeLessThan(MAX_STALL_MS);
    expect((await docker(['version', '--format', '{{.Server.Version}}'])).code).toBe(0);
  }, 300_000);

  it('docker import (fromSrc) of a zstd bomb is refused and no stall passes 100 ms', async () => {
    let out = '';
    const stall = await stallDuring(async () => {
      const r = await docker(['import', files.zstd, 'xbomb:1']);
      expect(r.code).not.toBe(0);
      out = r.stderr + r.stdout;
    });
    expect(out).toMatch(/decompression bomb|larger than/);
    console.info(`import zstd: agent's longest stall ${stall.maxStallMs.toFixed(1)} ms`);
    expect(stall.maxStallMs).toBeLessThan(MAX_STALL_MS);
  }, 300_000);
});
