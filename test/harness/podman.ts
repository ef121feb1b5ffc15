import { startLocalPodman } from '../../src/runtime/docker/podman-service.js';
import { run, type RunResult } from './run.js';
import { tmpDir } from './tmp.js';

/**
 * A real Podman service per test agent (the one `stowd dev --runtime podman` starts: own root, runroot,
 * tmpdir and socket, runc as the OCI runtime); stop() kills it. `podman(args)` talks to it as a remote client.
 */

export interface PodmanService {
  socket: string;
  podman(args: string[], opts?: { timeoutMs?: number }): Promise<RunResult>;
  stop(): Promise<void>;
}

export async function startPodman(): Promise<PodmanService> {
  // A deadline for a hang, not for speed: a loaded machine starts podman slowly.
  const { socket, stop } = await startLocalPodman(await tmpDir('stowage-podman-'), 180_000);
  return {
    socket,
    podman: (args, opts = {}) => run('podman', ['--url', `unix://${socket}`, ...args], {}, { timeoutMs: opts.timeoutMs ?? 120_000 }),
    stop,
  };
}
