import { writeFile } from 'node:fs/promises';
import { ensurePrivateDir } from '../private-files.js';
import { join, resolve } from 'node:path';
import { parseControlConfig } from '../control/config.js';
import { type RunningControl, startControl } from '../control/control.js';
import { startLocalContainerd } from '../runtime/containerd/daemon.js';
import { startLocalPodman } from '../runtime/docker/podman-service.js';
import { type RunningAgent, startAgent } from './agent.js';
import { parseAgentConfig } from './config.js';
import { hasClusterCa, initCluster } from '../cluster/tls-files.js';

export interface DevClusterOptions {
  dataDir: string;
  agents: number;
  /** Port of the control plane's API. 0 = any free port. */
  controlPort: number;
  /** First agent port; agent i uses basePort+2i for /v2/ + /agent/v1 and basePort+2i+1 for the Docker API. 0 = any. */
  basePort: number;
  insecureRegistries: string[];
  /** none (default); containerd or podman: each agent beside a runtime of its own under <agent>/<runtime>. */
  runtime?: 'none' | 'containerd' | 'podman';
  /** Shorter heartbeats for tests. */
  heartbeatIntervalMs?: number;
  /** Every link over TLS, as a cluster made with `stowd init` (the CA made under control/ the first time). */
  tls?: boolean;
}

export interface DevCluster {
  control: RunningControl;
  agents: Array<{ name: string; runtimeSocket?: string } & RunningAgent>;
  close(): Promise<void>;
}

/**
 * Everything on one machine for trying Stowage out: a control plane and N agents on loopback, with data
 * under one directory (control/, agent-1/, …). The agents join with the control plane's join token.
 */
export async function startDevCluster(opts: DevClusterOptions): Promise<DevCluster> {
  const root = resolve(opts.dataDir);
  await ensurePrivateDir(root);
  const controlDir = join(root, 'control');
  if (opts.tls && !(await hasClusterCa(controlDir))) await initCluster(controlDir, ['localhost', '127.0.0.1', '::1']);
  const control = await startControl(
    parseControlConfig({
      dataDir: controlDir,
      // Plain unless asked: a directory once run with --tls keeps its CA for the next --tls run.
      insecureHttp: opts.tls !== true,
      listen: { host: '127.0.0.1', port: opts.controlPort },
      ...(opts.heartbeatIntervalMs ? { heartbeatIntervalMs: opts.heartbeatIntervalMs, offlineAfterMs: opts.heartbeatIntervalMs * 4 } : {}),
      // The registries named on the command line are the catalog's too (rescan_images).
      seed: { registries: opts.insecureRegistries.map((host) => ({ name: host, url: `http://${host}`, insecure: true })) },
    }),
  );
  const agents: DevCluster['agents'] = [];
  const containerds: Array<{ stop(): Promise<void> }> = [];
  const stopContainerds = (): Promise<unknown> => Promise.allSettled(containerds.map((c) => c.stop()));
  try {
    for (let i = 0; i < opts.agents; i++) {
      const name = `agent-${i + 1}`;
      const port = (offset: number): number => (opts.basePort === 0 ? 0 : opts.basePort + 2 * i + offset);
      const config = parseAgentConfig({
        dataDir: join(root, name),
        peer: { host: '127.0.0.1', port: port(0) },
        engine: { tcp: { host: '127.0.0.1', port: port(1) } },
        registries: { insecureRegistries: opts.insecureRegistries, searchRegistries: opts.insecureRegistries },
        control: { url: control.url, joinToken: control.joinToken, name, labels: { dev: 'true' }, scalingGroup: 'default' },
      });
      if (opts.runtime === 'containerd') {
        const ctd = await startLocalContainerd(join(root, name, 'containerd'));
        containerds.push(ctd);
        config.runtime = { ...config.runtime, kind: 'containerd', containerd: { ...config.runtime.containerd, socket: ctd.socket } };
      } else if (opts.runtime === 'podman') {
        const podman = await startLocalPodman(join(root, name, 'podman'));
        containerds.push(podman);
        config.runtime = { ...config.runtime, kind: 'docker', docker: { socket: podman.socket } };
      }
      const agent = await startAgent(config);
      const socket = config.runtime.kind === 'containerd' ? config.runtime.containerd.socket : config.runtime.kind === 'docker' ? config.runtime.docker.socket : undefined;
      agents.push({ name, ...agent, ...(socket ? { runtimeSocket: socket } : {}) });
    }
  } catch (err) {
    await Promise.allSettled(agents.map((a) => a.close()));
    await stopContainerds();
    await control.close();
    throw err;
  }
  const summary = {
    control: control.url,
    agents: agents.map((a) => ({ name: a.name, peer: a.peerUrl, dockerHost: a.engineTcp, socket: a.engineSocket })),
  };
  await writeFile(join(root, 'cluster.json'), JSON.stringify(summary, null, 2));
  return {
    control,
    agents,
    async close() {
      await Promise.allSettled(agents.map((a) => a.close()));
      await stopContainerds();
      await control.close();
    },
  };
}
