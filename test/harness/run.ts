import { execFile } from 'node:child_process';

/**
 * Runs command-line tools (docker, skopeo, tar) for tests.
 *
 *   const r = await run('docker', ['images'], { DOCKER_HOST: host });   // never throws: check r.code
 *   const out = await runOk('tar', ['-C', dir, '-cf', file, '.']);      // throws with stderr on failure
 */

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the child's stdin (which is closed either way). */
  input?: Buffer | string;
  /** Default 60 s. */
  timeoutMs?: number;
}

/** Runs `cmd` with `env` added to this process's environment; never throws on a non-zero exit. */
export function run(cmd: string, args: string[], env: Record<string, string> = {}, opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 60_000, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    child.stdin?.end(opts.input);
  });
}

/** Like run, but a non-zero exit throws an Error naming the command and its stderr; returns stdout. */
export async function runOk(cmd: string, args: string[], opts: RunOptions & { env?: Record<string, string> } = {}): Promise<string> {
  const r = await run(cmd, args, opts.env, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout;
}
