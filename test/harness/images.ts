import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { digestHex, digestOf, type Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { runOk } from './run.js';
import { tarOf, tarOfFiles } from './tar.js';
import { tmpDir } from './tmp.js';

export { freePort } from './registry.js';

/**
 * Real OCI image layouts for tests, docker-archive tars made from them, and a skopeo runner.
 *
 *   const img = await makeTestImage(dir, { layers: 3, layerBytes: 4096, tag: 'x' });
 *   await skopeo(['copy', `oci:${dir}:x`, `docker://${reg.host}/test/app:1`]);
 *   const multi = await makeMultiPlatformLayout(dir2, ['linux/amd64', 'linux/arm64/v8'], { tag: 'x' });
 *   await skopeo(['copy', '--all', `oci:${dir2}:x`, `docker://${reg.host}/test/multi:1`]);
 *
 * Layers are gzip tars holding one file of random bytes, so every call makes distinct blobs.
 */

export interface TestBlob {
  digest: Digest;
  size: number;
}

export interface TestLayerInfo extends TestBlob {
  /** sha256 of the uncompressed tar (the config's rootfs.diff_ids entry). */
  diffId: Digest;
}

export interface TestImageInfo {
  manifestDigest: Digest;
  manifestSize: number;
  manifestBytes: Buffer;
  configDigest: Digest;
  configSize: number;
  layers: TestLayerInfo[];
  platform: { os: string; architecture: string; variant?: string };
}

export interface TestImageOptions {
  layers: number;
  /** Random payload bytes per layer (default 1024). */
  layerBytes?: number;
  arch?: string;
  os?: string;
  variant?: string;
  /** org.opencontainers.image.ref.name in index.json (default "latest"): use `oci:<dir>:<tag>`. */
  tag?: string;
  labels?: Record<string, string>;
}

async function writeBlob(dir: string, data: Buffer): Promise<TestBlob> {
  const digest = digestOf(data);
  await writeFile(join(dir, 'blobs', 'sha256', digestHex(digest)), data);
  return { digest, size: data.length };
}

async function initLayout(dir: string): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}

/** Writes config, layers and manifest blobs of one image into an initialised layout. */
async function writeImageBlobs(dir: string, opts: TestImageOptions): Promise<TestImageInfo> {
  const layers: TestLayerInfo[] = [];
  for (let i = 0; i < opts.layers; i++) {
    const t = await tarOf([{ name: `layer-${i}.bin`, data: randomBytes(opts.layerBytes ?? 1024) }]);
    const blob = await writeBlob(dir, gzipSync(t));
    layers.push({ ...blob, diffId: digestOf(t) });
  }
  const platform: TestImageInfo['platform'] = { os: opts.os ?? 'linux', architecture: opts.arch ?? 'amd64' };
  if (opts.variant) platform.variant = opts.variant;
  const config = Buffer.from(
    JSON.stringify({
      created: '2024-01-02T03:04:05Z',
      ...platform,
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'], Labels: opts.labels ?? { 'org.example.test': 'yes' } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({ created: '2024-01-02T03:04:05Z', created_by: `step ${i}` })),
    }),
  );
  const cfg = await writeBlob(dir, config);
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
      layers: layers.map((l) => ({ mediaType: MediaType.OciLayerGzip, digest: l.digest, size: l.size })),
    }),
  );
  const m = await writeBlob(dir, manifestBytes);
  return {
    manifestDigest: m.digest,
    manifestSize: m.size,
    manifestBytes,
    configDigest: cfg.digest,
    configSize: cfg.size,
    layers,
    platform,
  };
}

async function writeIndexJson(dir: string, desc: { mediaType: string; digest: Digest; size: number }, tag: string): Promise<void> {
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [{ ...desc, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
}

/** Writes a single-platform OCI image layout at `dir` (created if needed). */
export async function makeTestImage(dir: string, opts: TestImageOptions): Promise<TestImageInfo> {
  await initLayout(dir);
  const img = await writeImageBlobs(dir, opts);
  await writeIndexJson(dir, { mediaType: MediaType.OciManifest, digest: img.manifestDigest, size: img.manifestSize }, opts.tag ?? 'latest');
  return img;
}

export interface TestIndexInfo {
  indexDigest: Digest;
  indexSize: number;
  indexBytes: Buffer;
  /** One image per platform, in the order given. */
  children: TestImageInfo[];
}

/**
 * Writes an OCI layout whose tag points at an OCI image index with one manifest per platform
 * ("linux/amd64", "linux/arm64/v8", …). Copy it with `skopeo copy --all`.
 */
export async function makeMultiPlatformLayout(
  dir: string,
  platforms: string[],
  opts: Omit<TestImageOptions, 'arch' | 'os' | 'variant' | 'layers'> & { layers?: number } = {},
): Promise<TestIndexInfo> {
  await initLayout(dir);
  const children: TestImageInfo[] = [];
  for (const p of platforms) {
    const [os, arch, variant] = p.split('/');
    children.push(await writeImageBlobs(dir, { ...opts, layers: opts.layers ?? 2, os, arch, ...(variant ? { variant } : {}) }));
  }
  const indexBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: children.map((c) => ({ mediaType: MediaType.OciManifest, digest: c.manifestDigest, size: c.manifestSize, platform: c.platform })),
    }),
  );
  const idx = await writeBlob(dir, indexBytes);
  await writeIndexJson(dir, { mediaType: MediaType.OciIndex, digest: idx.digest, size: idx.size }, opts.tag ?? 'latest');
  return { indexDigest: idx.digest, indexSize: idx.size, indexBytes, children };
}

/**
 * Writes an OCI image layout with one gzip layer per entry of `layers` (file name -> content), tagged
 * `tag`, for `skopeo copy oci:<dir>:<tag> docker://…`. makeTestImage makes random-byte layers; this one
 * is for tests that need particular files (/etc/passwd for --chown by name, …). `config` is merged
 * into the image config's `config` object.
 */
export async function makeOciLayout(
  dir: string,
  tag: string,
  layers: Array<Record<string, string>>,
  config: Record<string, unknown> = {},
): Promise<{ manifestDigest: Digest }> {
  await initLayout(dir);
  const layerDescs: Array<{ mediaType: string } & TestBlob> = [];
  const diffIds: Digest[] = [];
  for (const files of layers) {
    const raw = await tarOfFiles(files);
    layerDescs.push({ mediaType: MediaType.OciLayerGzip, ...(await writeBlob(dir, gzipSync(raw))) });
    diffIds.push(digestOf(raw));
  }
  const cfg = await writeBlob(
    dir,
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        created: '2024-01-01T00:00:00Z',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'], ...config },
        rootfs: { type: 'layers', diff_ids: diffIds },
        history: layers.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `layer ${i}` })),
      }),
    ),
  );
  const manifest = await writeBlob(
    dir,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, ...cfg },
        layers: layerDescs,
      }),
    ),
  );
  await writeIndexJson(dir, { mediaType: MediaType.OciManifest, ...manifest }, tag);
  return { manifestDigest: manifest.digest };
}

/**
 * Runs skopeo with `--insecure-policy`; returns stdout. Loopback registries speak plain HTTP, so for
 * `copy` the matching `--src-tls-verify=false` / `--dest-tls-verify=false` is added for docker://
 * arguments, and `--tls-verify=false` for `inspect`/`list-tags`/`delete`, unless the caller gave one.
 */
export async function skopeo(args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const [cmd, ...rest] = args;
  const extra: string[] = [];
  const has = (flag: string) => rest.some((a) => a.startsWith(flag));
  if (cmd === 'copy') {
    const positional = rest.filter((a) => !a.startsWith('-'));
    const [src, dest] = positional.slice(-2);
    if (src?.startsWith('docker://') && !has('--src-tls-verify')) extra.push('--src-tls-verify=false');
    if (dest?.startsWith('docker://') && !has('--dest-tls-verify')) extra.push('--dest-tls-verify=false');
  } else if ((cmd === 'inspect' || cmd === 'list-tags' || cmd === 'delete') && rest.some((a) => a.startsWith('docker://')) && !has('--tls-verify')) {
    extra.push('--tls-verify=false');
  }
  const full = ['--insecure-policy', ...(cmd ? [cmd] : []), ...extra, ...rest];
  return runOk('skopeo', full, { timeoutMs: opts.timeoutMs ?? 120_000 });
}

export interface PushedTestImages {
  /** The OCI layout `img` was copied from (tag `x`), for reading its blobs or copying it again. */
  layoutDir: string;
  img: TestImageInfo;
  multi: TestIndexInfo;
}

/**
 * Fills a registry at `host` with `test/app:1` (one image of three layers of `layerBytes` random bytes)
 * and `test/multi:1` (an index with one two-layer image per platform), what the registry tests pull.
 */
export async function pushTestImages(host: string, opts: { layerBytes: number; platforms: string[] }): Promise<PushedTestImages> {
  const layoutDir = await tmpDir();
  const img = await makeTestImage(layoutDir, { layers: 3, layerBytes: opts.layerBytes, tag: 'x' });
  await skopeo(['copy', `oci:${layoutDir}:x`, `docker://${host}/test/app:1`]);
  const multiDir = await tmpDir();
  const multi = await makeMultiPlatformLayout(multiDir, opts.platforms, { tag: 'x', layers: 2 });
  await skopeo(['copy', '--all', `oci:${multiDir}:x`, `docker://${host}/test/multi:1`]);
  return { layoutDir, img, multi };
}

/** A `docker save`-style archive (docker-archive) holding one test image named `name`. */
export async function makeImageTar(name: string, opts: Partial<TestImageOptions> = {}): Promise<{ tar: string; image: TestImageInfo }> {
  const dir = await tmpDir('stowage-img-');
  const image = await makeTestImage(join(dir, 'layout'), { layers: 2, layerBytes: 2048, tag: 'x', ...opts });
  const tar = join(dir, 'image.tar');
  await skopeo(['copy', `oci:${join(dir, 'layout')}:x`, `docker-archive:${tar}:${name}`]);
  return { tar, image };
}
