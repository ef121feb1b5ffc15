import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { startAgent, type RunningAgent } from './agent.js';
import { parseAgentConfig } from './config.js';

export interface DevClusterOptions {
  dataDir: string;
  agents: number;
  /** First TCP port; agent i uses basePort+2i for /v2/ and basePort+2i+1 for the Docker API. 0 = any free port. */
  basePort: number;
  insecureRegistries: string[];
}

export interface DevCluster {
  agents: Array<{ name: string } & RunningAgent>;
  close(): Promise<void>;
}

/** Everything on one machine for trying Stowage out: N agents on loopback with data under one directory. */
export async function startDevCluster(opts: DevClusterOptions): Promise<DevCluster> {
  const root = resolve(opts.dataDir);
  await mkdir(root, { recursive: true });
  const agents: DevCluster['agents'] = [];
  try {
    for (let i = 0; i < opts.agents; i++) {
      const name = `agent-${i + 1}`;
      const port = (offset: number): number => (opts.basePort === 0 ? 0 : opts.basePort + 2 * i + offset);
      const config = parseAgentConfig({
        dataDir: join(root, name),
        peer: { host: '127.0.0.1', port: port(0) },
        engine: { tcp: { host: '127.0.0.1', port: port(1) } },
        registries: { insecureRegistries: opts.insecureRegistries, searchRegistries: opts.insecureRegistries },
      });
      const agent = await startAgent(config);
      agents.push({ name, ...agent });
    }
  } catch (err) {
    await Promise.allSettled(agents.map((a) => a.close()));
    throw err;
  }
  const summary = agents.map((a) => ({ name: a.name, peer: a.peerUrl, dockerHost: a.engineTcp, socket: a.engineSocket }));
  await writeFile(join(root, 'cluster.json'), JSON.stringify(summary, null, 2));
  return {
    agents,
    async close() {
      await Promise.allSettled(agents.map((a) => a.close()));
    },
  };
}
