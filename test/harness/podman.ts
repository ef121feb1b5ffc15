import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { until } from './cluster.js';
import { run, type RunResult } from './run.js';
import { tmpDir } from './tmp.js';

/**
 * A real Podman service per test agent (`podman system service`) with its own root, runroot, tmpdir and
 * socket, runc as the OCI runtime; stop() kills it. `podman(args)` talks to it as a remote client.
 */

export interface PodmanService {
  socket: string;
  podman(args: string[], opts?: { timeoutMs?: number }): Promise<RunResult>;
  stop(): Promise<void>;
}

export async function startPodman(): Promise<PodmanService> {
  const dir = await tmpDir('stowage-podman-');
  const socket = join(dir, 'podman.sock');
  // Containers get the limits this machine's hard limits allow (podman's defaults exceed them here).
  const conf = join(dir, 'containers.conf');
  await writeFile(conf, '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n');
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const global = ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--tmpdir', join(dir, 'tmp'), '--runtime', 'runc', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file'];
  const env = { ...process.env, CONTAINERS_CONF: conf };
  const child: ChildProcess = spawn('podman', [...global, 'system', 'service', '--time=0', `unix://${socket}`], { stdio: 'ignore', env });
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    // Podman bind-mounts its overlay directory over itself and leaves it mounted: undo that, or the temp
    // directory cannot be removed.
    await run('umount', ['-l', join(dir, 'root', 'overlay')]);
  };
  try {
    await until(
      `podman service at ${socket}`,
      async () => {
        if (child.exitCode !== null) throw new Error('podman service exited');
        return (await run('podman', ['--url', `unix://${socket}`, 'version'], {}, { timeoutMs: 10_000 })).code === 0 ? true : undefined;
      },
      { timeoutMs: 180_000, everyMs: 250 },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    socket,
    podman: (args, opts = {}) => run('podman', ['--url', `unix://${socket}`, ...args], {}, { timeoutMs: opts.timeoutMs ?? 120_000 }),
    stop,
  };
}
