import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { buildEngineApp } from '../engine/server.js';
import type { EngineContext } from '../engine/context.js';
import { registryRoutes } from '../registry/routes.js';
import { openStore } from '../store/index.js';
import type { AgentConfig } from './config.js';

export interface RunningAgent {
  /** Base URL of the read-only /v2/ endpoint. */
  peerUrl: string;
  /** Unix socket of the Docker Engine API (DOCKER_HOST=unix://…). */
  engineSocket: string;
  /** TCP address of the Docker Engine API when configured (DOCKER_HOST=tcp://…). */
  engineTcp: string | undefined;
  close(): Promise<void>;
}

export const STOWAGE_VERSION = '0.1.0';

/** Starts one machine's agent: its store, the /v2/ peer endpoint and the Docker Engine API. */
export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  await mkdir(config.dataDir, { recursive: true });
  const { store, images } = await openStore(join(config.dataDir, 'store'));
  const workDir = join(config.dataDir, 'work');
  await mkdir(workDir, { recursive: true });
  const ctx: EngineContext = { store, images, registries: config.registries, workDir, version: STOWAGE_VERSION };

  const apps: FastifyInstance[] = [];
  try {
    const peer = Fastify({ logger: false });
    apps.push(peer);
    await peer.register(registryRoutes, { store, images });
    const peerAddress = await peer.listen({ host: config.peer.host, port: config.peer.port });

    // A Fastify instance listens once, so the socket and the TCP listener each get their own app over one context.
    const engineSocket = config.engine.socketPath ?? join(config.dataDir, 'docker.sock');
    await rm(engineSocket, { force: true });
    const socketApp = await buildEngineApp(ctx);
    apps.push(socketApp);
    await socketApp.listen({ path: engineSocket });

    let engineTcp: string | undefined;
    if (config.engine.tcp) {
      const tcpApp = await buildEngineApp(ctx);
      apps.push(tcpApp);
      const address = await tcpApp.listen({ host: config.engine.tcp.host, port: config.engine.tcp.port });
      engineTcp = address.replace(/^http:/, 'tcp:');
    }

    return {
      peerUrl: peerAddress,
      engineSocket,
      engineTcp,
      async close() {
        await Promise.allSettled(apps.map((app) => app.close()));
        images.close();
      },
    };
  } catch (err) {
    await Promise.allSettled(apps.map((app) => app.close()));
    images.close();
    throw err;
  }
}
