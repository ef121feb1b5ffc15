import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StowageError } from '../../errors.js';

/**
 * A Podman service of its own for `stowd dev --runtime podman`: `podman system service` with root, runroot,
 * tmpdir and socket under one directory, runc as the OCI runtime, cgroupfs and file events (no systemd needed).
 */

export interface LocalPodman {
  socket: string;
  stop(): Promise<void>;
}

function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => execFile('podman', ['--url', `unix://${socket}`, 'version'], { timeout: 10_000 }, (err) => resolve(!err)));
}

export async function startLocalPodman(dir: string, timeoutMs = 120_000): Promise<LocalPodman> {
  await mkdir(join(dir, 'tmp'), { recursive: true });
  const socket = join(dir, 'podman.sock');
  // Containers get limits a host's hard limits allow (podman's defaults exceed them on some machines, and
  // `podman run` then fails).
  const conf = join(dir, 'containers.conf');
  await writeFile(conf, '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n');
  const global = ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--tmpdir', join(dir, 'tmp'), '--runtime', 'runc', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file'];
  const env = { ...process.env, CONTAINERS_CONF: conf };
  const child: ChildProcess = spawn('podman', [...global, 'system', 'service', '--time=0', `unix://${socket}`], { stdio: 'ignore', env });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(new StowageError('UNSUPPORTED', `cannot start podman (is it installed?): ${err.message}`)));
    child.once('exit', (code) => reject(new StowageError('RUNTIME_UNAVAILABLE', `podman service under ${dir} exited with ${code}`)));
  });
  failed.catch(() => undefined);
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }
    // Podman leaves its overlay directory bind-mounted over itself.
    await new Promise((resolve) => execFile('umount', ['-l', join(dir, 'root', 'overlay')], () => resolve(undefined)));
  };
  const end = Date.now() + timeoutMs;
  try {
    while (!(await Promise.race([answers(socket), failed]))) {
      if (Date.now() > end) throw new StowageError('RUNTIME_UNAVAILABLE', `podman service under ${dir} did not answer in time`);
      await new Promise((r) => setTimeout(r, 250));
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return { socket, stop };
}
