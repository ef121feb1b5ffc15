import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EngineContext, RegistrySettings } from '../../src/engine/context.js';
import { buildEngineApp, listenEngine } from '../../src/engine/server.js';
import { openStore } from '../../src/store/index.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { type RunResult, run } from '../harness/run.js';
import { readAll } from '../harness/streams.js';
import { tarListing } from '../harness/tar.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * Helpers for the Docker Engine API tests: an engine (buildEngineApp over a fresh store) on loopback
 * TCP or a unix socket and the real docker CLI bound to it. Registries, test images and process
 * runners come from test/harness/.
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

export type DockerRunner = ((args: string[], input?: Buffer | string) => Promise<RunResult>) & {
  /** The runner's DOCKER_CONFIG directory (config.json goes here). */
  configDir: string;
};

/** A docker runner bound to one engine, with its own empty DOCKER_CONFIG and optional extra environment. */
export async function dockerFor(engine: CoreEngine, env: Record<string, string> = {}): Promise<DockerRunner> {
  const configDir = await tmpDir('stowage-docker-config-');
  const runner = (args: string[], input?: Buffer | string) =>
    run('docker', args, { DOCKER_HOST: engine.host, DOCKER_CONFIG: configDir, DOCKER_CLI_HINTS: 'false', ...env }, { input });
  return Object.assign(runner, { configDir });
}

/** The entries of a layer tar (plain or gzip) by name, contents as text. */
export async function tarEntries(data: AsyncIterable<Uint8Array>): Promise<Map<string, { type: string; content: string; uid: number; gid: number; mode: number }>> {
  const entries = await tarListing(await readAll(data));
  return new Map(entries.map((e) => [e.name, { type: e.type, content: e.data.toString(), uid: e.uid, gid: e.gid, mode: e.mode }]));
}

/** Newline-delimited JSON messages of a progress response (pull, push, build). */
export async function jsonMessages(res: Response): Promise<Array<Record<string, any>>> {
  const text = await res.text();
  return text
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, any>);
}

/** A build context directory holding `files` (path → content), made under `dir`. */
export async function writeContext(dir: string, files: Record<string, string>): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), content);
  }
  return dir;
}
