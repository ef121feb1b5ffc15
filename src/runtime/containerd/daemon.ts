import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StowageError } from '../../errors.js';

/**
 * A containerd of its own for `stowd dev --runtime containerd` (and the tests): root, state, sockets and
 * plugin directory under one directory, from a generated config file, with the CRI plugin off (nothing
 * here runs a kubelet). Needs root, like any containerd that runs containers.
 */

export interface LocalContainerd {
  socket: string;
  dir: string;
  process: ChildProcess;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** The config file's text for a containerd living under `dir`. */
export function containerdConfig(dir: string): string {
  return [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${JSON.stringify(join(dir, 'containerd.sock'))}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(join(dir, 'containerd.ttrpc.sock'))}`,
    '[debug]',
    '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${JSON.stringify(join(dir, 'opt'))}`,
    '',
  ].join('\n');
}

function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => execFile('ctr', ['-a', socket, 'version'], { timeout: 5_000 }, (err) => resolve(!err)));
}

/** Starts containerd under `dir` and resolves once its socket answers (ctr version). */
export async function startLocalContainerd(dir: string, timeoutMs = 60_000): Promise<LocalContainerd> {
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'config.toml');
  await writeFile(config, containerdConfig(dir));
  const socket = join(dir, 'containerd.sock');
  const child = spawn('containerd', ['--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr?.on('data', (b: Buffer) => {
    log = (log + b.toString()).slice(-4096);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(new StowageError('UNSUPPORTED', `cannot start containerd (is it installed?): ${err.message}`)));
    child.once('exit', (code) => reject(new StowageError('RUNTIME_UNAVAILABLE', `containerd under ${dir} exited with ${code}: ${log.trim().split('\n').slice(-3).join(' | ')}`)));
  });
  failed.catch(() => undefined);
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    await exited;
  };
  const end = Date.now() + timeoutMs;
  try {
    while (!(await Promise.race([answers(socket), failed]))) {
      if (Date.now() > end) throw new StowageError('RUNTIME_UNAVAILABLE', `containerd under ${dir} did not answer in time`);
      await new Promise((r) => setTimeout(r, 200));
    }
  } catch (err) {
    await stop('SIGKILL');
    throw err;
  }
  return { socket, dir, process: child, stop };
}
