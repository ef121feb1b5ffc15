import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { EngineContext } from '../../src/engine/context.js';
import { buildEngineApp, listenEngine } from '../../src/engine/server.js';
import { openStore } from '../../src/store/index.js';
import { makeTestImage, skopeo, type TestImageOptions, type TestImageInfo } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';

/** A Docker Engine API app over a fresh store, listening on loopback TCP (or a unix socket). */
export interface CoreEngine {
  ctx: EngineContext;
  /** DOCKER_HOST value. */
  host: string;
  close(): Promise<void>;
}

export async function startCoreEngine(opts: { socket?: boolean; insecureRegistries?: string[] } = {}): Promise<CoreEngine> {
  const root = await tmpDir('stowage-engine-core-');
  const { store, images } = await openStore(join(root, 'store'));
  const ctx: EngineContext = {
    store,
    images,
    registries: { insecureRegistries: opts.insecureRegistries ?? [], credentials: {}, searchRegistries: [] },
    workDir: join(root, 'work'),
    version: '0.1.0-test',
  };
  await mkdir(ctx.workDir, { recursive: true });
  const app = await buildEngineApp(ctx);
  const listener = await listenEngine(app, opts.socket ? { socketPath: join(root, 'docker.sock') } : { tcp: { host: '127.0.0.1', port: 0 } });
  return {
    ctx,
    host: listener.addresses[0]!,
    async close() {
      await listener.close();
      images.close();
    },
  };
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a CLI (docker, skopeo) with DOCKER_HOST set; never throws on a non-zero exit. */
export function run(cmd: string, args: string[], env: Record<string, string>, input?: Buffer): Promise<RunResult> {
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
    if (input) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/** A docker runner bound to one engine, with its own empty DOCKER_CONFIG. */
export async function dockerFor(engine: CoreEngine): Promise<(args: string[], input?: Buffer) => Promise<RunResult>> {
  const config = await tmpDir('stowage-docker-config-');
  return (args, input) => run('docker', args, { DOCKER_HOST: engine.host, DOCKER_CONFIG: config }, input);
}

/** A `docker save`-style archive (docker-archive) holding one test image named `name`. */
export async function makeImageTar(name: string, opts: Partial<TestImageOptions> = {}): Promise<{ tar: string; image: TestImageInfo }> {
  const dir = await tmpDir('stowage-img-');
  const image = await makeTestImage(join(dir, 'layout'), { layers: 2, layerBytes: 2048, tag: 'x', ...opts });
  const tar = join(dir, 'image.tar');
  await skopeo(['copy', `oci:${join(dir, 'layout')}:x`, `docker-archive:${tar}:${name}`]);
  return { tar, image };
}
