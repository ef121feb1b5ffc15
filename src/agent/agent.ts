import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import Fastify from 'fastify';
import { buildEngineApp, listenEngine } from '../engine/server.js';
import type { EngineContext } from '../engine/context.js';
import { registryRoutes } from '../registry/routes.js';
import { openStore } from '../store/index.js';
import type { AgentConfig } from './config.js';
import { STOWAGE_VERSION } from './version.js';

export interface RunningAgent {
  /** Base URL of the read-only /v2/ endpoint. */
  peerUrl: string;
  /** Unix socket of the Docker Engine API (DOCKER_HOST=unix://…). */
  engineSocket: string;
  /** TCP address of the Docker Engine API when configured (DOCKER_HOST=tcp://…). */
  engineTcp: string | undefined;
  close(): Promise<void>;
}

export { STOWAGE_VERSION };

/** Starts one machine's agent: its store, the /v2/ peer endpoint and the Docker Engine API. */
export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  await mkdir(config.dataDir, { recursive: true });
  const { store, images } = await openStore(join(config.dataDir, 'store'));
  const workDir = join(config.dataDir, 'work');
  await mkdir(workDir, { recursive: true });
  const ctx: EngineContext = { store, images, registries: config.registries, workDir, version: STOWAGE_VERSION };

  const closers: Array<() => Promise<unknown>> = [];
  const closeAll = async (): Promise<void> => {
    await Promise.allSettled(closers.map((close) => close()));
    images.close();
  };
  try {
    const peer = Fastify({ logger: false });
    closers.push(() => peer.close());
    await peer.register(registryRoutes, { store, images });
    const peerAddress = await peer.listen({ host: config.peer.host, port: config.peer.port });

    const engineSocket = config.engine.socketPath ?? join(config.dataDir, 'docker.sock');
    const engineApp = await buildEngineApp(ctx);
    const engine = await listenEngine(engineApp, { socketPath: engineSocket, tcp: config.engine.tcp });
    closers.push(() => engine.close());
    const engineTcp = engine.addresses.find((a) => a.startsWith('tcp://'));

    return {
      peerUrl: peerAddress,
      engineSocket,
      engineTcp,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
