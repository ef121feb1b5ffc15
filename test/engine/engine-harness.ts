import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import type { EngineContext } from '../../src/engine/context.js';
import { registerBuildRoutes } from '../../src/engine/routes/build.js';
import { handlePull } from '../../src/engine/routes/pull.js';
import { registerPushRoutes } from '../../src/engine/routes/push.js';
import { registerSearchRoutes } from '../../src/engine/routes/search.js';
import { openStore } from '../../src/store/index.js';

export interface TestRegistry {
  host: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** A real registry (the shared harness when present, else docker-registry on a loopback port). */
export async function startTestRegistry(): Promise<TestRegistry> {
  const harness = '../harness/registry.js';
  try {
    const mod = (await import(/* @vite-ignore */ harness)) as { startRegistry?: () => Promise<TestRegistry> };
    if (mod.startRegistry) return await mod.startRegistry();
  } catch {
    /* fall back below */
  }
  const dir = await mkdtemp(join(tmpdir(), 'stowage-registry-'));
  const port = await freePort();
  const config = join(dir, 'config.yml');
  await writeFile(
    config,
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const child = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`http://${host}/v2/`);
      if (res.status === 200) break;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host,
    async stop() {
      child.kill('SIGTERM');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface TestEngine {
  ctx: EngineContext;
  /** DOCKER_HOST value. */
  url: string;
  root: string;
  close(): Promise<void>;
}

/** The Docker Engine API over a fresh store (engine-core's app when available, else just these routes). */
export async function startTestEngine(registries: EngineContext['registries']): Promise<TestEngine> {
  const root = await mkdtemp(join(tmpdir(), 'stowage-engine-'));
  const { store, images } = await openStore(join(root, 'store'));
  const ctx: EngineContext = { store, images, registries, workDir: join(root, 'work'), version: 'test' };
  await mkdir(ctx.workDir, { recursive: true });
  let app: FastifyInstance;
  const server = '../../src/engine/server.js';
  let mod: { buildEngineApp?: (c: EngineContext) => Promise<FastifyInstance> } = {};
  try {
    mod = (await import(/* @vite-ignore */ server)) as typeof mod;
  } catch {
    /* not there yet */
  }
  if (mod.buildEngineApp) {
    app = await mod.buildEngineApp(ctx);
  } else {
    app = Fastify({ rewriteUrl: (req) => (req.url ?? '/').replace(/^\/v1\.\d+(?=\/)/, '') });
    app.get('/_ping', async (_req, reply) => reply.header('API-Version', '1.41').header('OSType', 'linux').type('text/plain').send('OK'));
    app.get('/version', async () => ({ ApiVersion: '1.41', MinAPIVersion: '1.12', Version: ctx.version, Os: 'linux', Arch: 'amd64' }));
    app.post('/images/create', (req, reply) => handlePull(req, reply, ctx));
    registerBuildRoutes(app, ctx);
    registerPushRoutes(app, ctx);
    registerSearchRoutes(app, ctx);
  }
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    ctx,
    url: address.replace(/^http:/, 'tcp:'),
    root,
    async close() {
      await app.close();
      images.close();
      await rm(root, { recursive: true, force: true });
    },
  };
}
