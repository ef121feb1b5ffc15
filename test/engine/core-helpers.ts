import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import type { EngineContext, RegistrySettings } from '../../src/engine/context.js';
import { buildEngineApp, listenEngine } from '../../src/engine/server.js';
import { openStore } from '../../src/store/index.js';
import { makeTestImage, skopeo, type TestImageOptions, type TestImageInfo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Helpers for the Docker Engine API tests: an engine (buildEngineApp over a fresh store) on loopback
 * TCP or a unix socket, the real docker CLI bound to it, and test images (docker-archive tars, OCI
 * layouts with given file contents). Registries come from test/harness/registry.ts.
 */

export interface CoreEngine {
  ctx: EngineContext;
  /** DOCKER_HOST value. */
  host: string;
  /** A temp dir for the test's own files (removed after the test file). */
  root: string;
  close(): Promise<void>;
}

export async function startCoreEngine(opts: { socket?: boolean; insecureRegistries?: string[]; registries?: Partial<RegistrySettings> } = {}): Promise<CoreEngine> {
  const root = await tmpDir('stowage-engine-core-');
  const { store, images } = await openStore(join(root, 'store'));
  const ctx: EngineContext = {
    store,
    images,
    registries: { insecureRegistries: opts.insecureRegistries ?? [], credentials: {}, searchRegistries: [], ...opts.registries },
    workDir: join(root, 'work'),
    version: '0.1.0-test',
  };
  await mkdir(ctx.workDir, { recursive: true });
  const app = await buildEngineApp(ctx);
  const listener = await listenEngine(app, opts.socket ? { socketPath: join(root, 'docker.sock') } : { tcp: { host: '127.0.0.1', port: 0 } });
  return {
    ctx,
    host: listener.addresses[0]!,
    root,
    async close() {
      await listener.close();
      images.close();
    },
  };
}

/**
 * A registry (the agent's search registry) and an engine, with a docker runner using the classic
 * builder: what the pull/push/search/build tests share. `close` stops both.
 */
export async function startEngineWithRegistry(): Promise<{ registry: TestRegistry; engine: CoreEngine; docker: DockerRunner; close(): Promise<void> }> {
  const registry = await startRegistry();
  const engine = await startCoreEngine({ registries: { searchRegistries: [registry.host] } });
  const docker = await dockerFor(engine, { DOCKER_BUILDKIT: '0' });
  return {
    registry,
    engine,
    docker,
    async close() {
      await engine.close();
      await registry.stop();
    },
  };
}

/** The engine's HTTP base URL for direct API calls ("http://127.0.0.1:<port>/v1.41"). */
export function apiUrl(engine: CoreEngine): string {
  return `${engine.host.replace(/^tcp:/, 'http:')}/v1.41`;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a CLI (docker, skopeo) with DOCKER_HOST set; never throws on a non-zero exit. */
export function run(cmd: string, args: string[], env: Record<string, string>, input?: Buffer | string): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      {
        env: { ...process.env, DOCKER_CONFIG: env['DOCKER_CONFIG'] ?? process.env['DOCKER_CONFIG'], ...env },
        maxBuffer: 64 * 1024 * 1024,
        timeout: 60_000,
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

export type DockerRunner = ((args: string[], input?: Buffer | string) => Promise<RunResult>) & {
  /** The runner's DOCKER_CONFIG directory (config.json goes here). */
  configDir: string;
};

/** A docker runner bound to one engine, with its own empty DOCKER_CONFIG and optional extra environment. */
export async function dockerFor(engine: CoreEngine, env: Record<string, string> = {}): Promise<DockerRunner> {
  const configDir = await tmpDir('stowage-docker-config-');
  const runner = (args: string[], input?: Buffer | string) =>
    run('docker', args, { DOCKER_HOST: engine.host, DOCKER_CONFIG: configDir, DOCKER_CLI_HINTS: 'false', ...env }, input);
  return Object.assign(runner, { configDir });
}

/** A `docker save`-style archive (docker-archive) holding one test image named `name`. */
export async function makeImageTar(name: string, opts: Partial<TestImageOptions> = {}): Promise<{ tar: string; image: TestImageInfo }> {
  const dir = await tmpDir('stowage-img-');
  const image = await makeTestImage(join(dir, 'layout'), { layers: 2, layerBytes: 2048, tag: 'x', ...opts });
  const tar = join(dir, 'image.tar');
  await skopeo(['copy', `oci:${join(dir, 'layout')}:x`, `docker-archive:${tar}:${name}`]);
  return { tar, image };
}

/** A tar of the given files (parent directories included), with fixed times. */
export async function tarBytes(files: Record<string, string>): Promise<Buffer> {
  const pack = tar.pack();
  const dirs = new Set<string>();
  for (const name of Object.keys(files).sort()) {
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        pack.entry({ name: `${d}/`, type: 'directory', mode: 0o755, mtime: new Date(0) });
      }
    }
    pack.entry({ name, mode: 0o644, mtime: new Date(0) }, files[name]!);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/**
 * Writes an OCI image layout with one gzip layer per entry of `layers` (file name -> content), tagged
 * `tag`, for `skopeo copy oci:<dir>:<tag> docker://…`. test/harness/images.ts makes random-byte layers;
 * this one is for tests that need particular files (/etc/passwd for --chown by name, …).
 */
export async function makeOciLayout(
  dir: string,
  tag: string,
  layers: Array<Record<string, string>>,
  config: Record<string, unknown> = {},
): Promise<{ manifestDigest: string }> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const put = async (b: Buffer) => {
    await writeFile(join(blobs, sha(b)), b);
    return { digest: `sha256:${sha(b)}`, size: b.length };
  };
  const layerDescs = [];
  const diffIds = [];
  for (const files of layers) {
    const raw = await tarBytes(files);
    layerDescs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...(await put(gzipSync(raw))) });
    diffIds.push(`sha256:${sha(raw)}`);
  }
  const cfg = await put(
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
  const manifest = await put(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
        layers: layerDescs,
      }),
    ),
  );
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { manifestDigest: manifest.digest };
}

/** Lists the entries of a layer tar (plain or gzip). */
export async function tarEntries(data: AsyncIterable<Uint8Array>): Promise<Map<string, { type: string; content: string; uid: number; gid: number; mode: number }>> {
  const chunks: Buffer[] = [];
  for await (const c of data) chunks.push(Buffer.from(c));
  let buf = Buffer.concat(chunks);
  if (buf[0] === 0x1f && buf[1] === 0x8b) buf = gunzipSync(buf);
  const ex = tar.extract();
  const out = new Map<string, { type: string; content: string; uid: number; gid: number; mode: number }>();
  const done = (async () => {
    for await (const e of ex) {
      const parts: Buffer[] = [];
      for await (const c of e) parts.push(c as Buffer);
      out.set(e.header.name, { type: e.header.type, content: Buffer.concat(parts).toString(), uid: e.header.uid, gid: e.header.gid, mode: e.header.mode });
    }
  })();
  ex.end(buf);
  await done;
  return out;
}

/** Newline-delimited JSON messages of a progress response (pull, push, build). */
export async function jsonMessages(res: Response): Promise<Array<Record<string, any>>> {
  const text = await res.text();
  return text
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, any>);
}
