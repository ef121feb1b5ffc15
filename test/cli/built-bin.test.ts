import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tmpDir } from '../harness/tmp.js';
import { type CliResult, STATUS_RECORD, cleanEnv, recordingServer, runCli } from './helpers.js';

/**
 * What `npm ci` installs is the built CLI: bin/stowctl.js (CommonJS) requiring dist/stowctl-fast.cjs for
 * `--help` and `image status`, and dist/stowctl.js for the rest. The other tests run the TypeScript
 * source, so this one builds the CLI (tsup, the project's own config) into a directory of its own beside a
 * copy of bin/, and checks the built commands answer as the source does.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: ROOT, env, timeout: 600_000, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const record = STATUS_RECORD;

describe('the built stowctl (bin/ + dist/)', () => {
  let buildRoot: string;
  let builtBin: string;
  let srv: Awaited<ReturnType<typeof recordingServer>>;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    // Inside the checkout (under the ignored .stowage/), so the build's imports resolve node_modules as dist/'s do.
    await mkdir(join(ROOT, '.stowage'), { recursive: true });
    buildRoot = await mkdtemp(join(ROOT, '.stowage', 'built-bin-'));
    const build = await run(process.execPath, [join(ROOT, 'node_modules', 'tsup', 'dist', 'cli-default.js')], {
      ...process.env,
      STOWAGE_BUILD_OUT: join(buildRoot, 'dist'),
    });
    expect(build.code, build.stderr).toBe(0);
    await cp(join(ROOT, 'bin'), join(buildRoot, 'bin'), { recursive: true });
    builtBin = join(buildRoot, 'bin', 'stowctl.js');

    srv = await recordingServer((req, res) => {
      if (req.url.startsWith('/api/v1/images/status')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ records: [record] }));
      } else if (req.url.startsWith('/api/v1/machines')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ machines: [] }));
      }
    });
    const configHome = await tmpDir('built-bin-config-');
    env = cleanEnv(configHome, { STOWAGE_HOST: srv.url, STOWAGE_TOKEN: 'tok' });
  });
  afterAll(async () => {
    await srv?.close();
    if (buildRoot) await rm(buildRoot, { recursive: true, force: true });
  });

  /** The built CLI: STOWAGE_FROM_SOURCE unset, so bin/ runs dist/. */
  const built = (args: string[]): Promise<CliResult> => {
    const { STOWAGE_FROM_SOURCE: _fromSource, ...rest } = env;
    return run(process.execPath, [builtBin, ...args], rest);
  };
  const source = (args: string[]): Promise<CliResult> => runCli(args, { ...env, STOWAGE_FROM_SOURCE: '1' });

  it('answers --help, image status (the fast path) and other commands (the full CLI) as the source does', async () => {
    const cases = [['--help'], ['image', 'status'], ['image', 'status', '--json'], ['-o', 'yaml', 'image', 'status', 'app:1'], ['--version'], ['machine', 'list', '--json']];
    for (const args of cases) {
      const [b, s] = [await built(args), await source(args)];
      expect({ args, ...b }).toEqual({ args, ...s });
    }
    // It asked the server, through the built fast path too.
    const statusAsks = srv.requests.filter((r) => r.url.startsWith('/api/v1/images/status'));
    expect(statusAsks.length).toBe(6);
  });

  it('reports a refused argument the same way from the built fast path', async () => {
    const args = ['--json', 'image', 'status', '--digest', 'sha256:1234'];
    const b = await built(args);
    expect(b.code).not.toBe(0);
    expect(b).toEqual(await source(args));
  });
});
