import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fastPath } from '../../src/cli/fast-path.js';
import { tmpDir } from '../harness/tmp.js';
import { Capture, type CliResult, DIGEST_A, STATUS_RECORD, cleanEnv, closedPort, recordingServer, runCli, runMain } from './helpers.js';

/**
 * `stowctl --help` and `image status` are answered without commander (fast-path.ts). Whatever the flags,
 * the answer must be the one commander's main() gives: the same request, output and exit code; spellings
 * the fast path does not know are left to main().
 */

const record = STATUS_RECORD;

async function runFast(args: string[], env: NodeJS.ProcessEnv, helpFile?: URL): Promise<CliResult | undefined> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await fastPath(args, { stdout, stderr, env }, helpFile);
  return code === undefined ? undefined : { code, stdout: stdout.text, stderr: stderr.text };
}

/** --debug prints how long a request took; the rest must match to the byte. */
const steady = (r: CliResult): CliResult => ({ ...r, stderr: r.stderr.replace(/\(\d+ ms,/g, '(N ms,') });

describe('stowctl fast path', () => {
  let srv: Awaited<ReturnType<typeof recordingServer>>;
  let env: NodeJS.ProcessEnv;
  let configHome: string;

  beforeAll(async () => {
    configHome = await tmpDir('stowctl-fast-');
    srv = await recordingServer((req, res) => {
      if (!req.url.startsWith('/api/v1/images/status')) return;
      const machine = new URL(req.url, 'http://x').searchParams.get('machine');
      const [status, body]: [number, unknown] =
        machine === 'refused'
          ? [403, { error: { code: 'FORBIDDEN', message: 'not yours' } }]
          : machine === 'bad'
            ? [200, { records: [{ ...record, presence: { state: 'somewhere' } }] }]
            : [200, { records: machine === 'none' ? [] : [record, { ...record, machine_id: 'm2', machine_status: 'offline' }] }];
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
    env = cleanEnv(configHome, { STOWAGE_HOST: srv.url, STOWAGE_TOKEN: 'tok' });
  });
  afterAll(() => srv?.close());

  it('answers image status exactly as main() does, sending the same request', async () => {
    const cases: string[][] = [
      ['image', 'status'],
      ['image', 'status', '--json'],
      ['-o', 'yaml', 'image', 'status'],
      ['image', '--no-trunc', 'status', '--machine', ' m1 '],
      ['image', 'status', `--digest=${DIGEST_A}`, '-owide'],
      ['--format', '{{.MachineID}} {{.Presence.State}}', 'image', 'status'],
      ['image', 'status', 'app:1'],
      ['image', 'status', '--machine', 'none'],
      ['image', 'status', '--machine', 'refused'],
      ['--output=json', 'image', 'status', '--machine', 'refused'],
      ['image', 'status', '--machine', 'bad', '--json'],
      ['--dry-run', 'image', 'status', '--machine', 'm1'],
      ['--debug', 'image', 'status'],
      // Refused before anything is sent: a bad digest, machine ID, output mode or pair of output flags.
      ['--json', 'image', 'status', '--digest', 'sha256:1234'],
      ['image', 'status', '--machine', 'a/b', '-o', 'yaml'],
      ['-o', 'bogus', 'image', 'status'],
      ['--json', '-o', 'yaml', 'image', 'status'],
      ['--host', 'ftp://x', 'image', 'status'],
    ];
    for (const args of cases) {
      const before = srv.requests.length;
      const fast = await runFast(args, env);
      const sent = srv.requests.slice(before).map((r) => [r.method, r.url, r.headers['authorization']]);
      const viaMain = await runMain(args, env);
      const sentByMain = srv.requests.slice(before + sent.length).map((r) => [r.method, r.url, r.headers['authorization']]);
      expect(fast, args.join(' ')).toBeDefined();
      expect(steady(fast!), args.join(' ')).toEqual(steady(viaMain));
      expect(sent, args.join(' ')).toEqual(sentByMain);
    }
  });

  it('fails as main() does without a token or a reachable control plane', async () => {
    const noToken = cleanEnv(configHome, { STOWAGE_HOST: srv.url });
    const down = cleanEnv(configHome, { STOWAGE_HOST: `http://127.0.0.1:${await closedPort()}`, STOWAGE_TOKEN: 'tok' });
    for (const [args, e] of [
      [['image', 'status'], noToken],
      [['--json', 'image', 'status'], noToken],
      [['image', 'status'], down],
      [['image', 'status', '-ojson'], down],
    ] as const) {
      const fast = await runFast([...args], e);
      expect(fast, args.join(' ')).toBeDefined();
      expect(fast, args.join(' ')).toEqual(await runMain([...args], e));
    }
  });

  it('leaves to main() what it does not read exactly as commander does', async () => {
    const others: string[][] = [
      ['image', 'status', '--help'],
      ['--version'],
      ['image', 'inspect', DIGEST_A],
      ['image', 'status', 'a', 'b'],
      // commander reads command options only after the command
      ['--digest', DIGEST_A, 'image', 'status'],
      ['image', '--machine', 'm1', 'status'],
      // a value that looks like an option, an unknown option, a flag given a value, `--`
      ['image', 'status', '--digest', '--json'],
      ['--host', '-x', 'image', 'status'],
      ['image', 'status', '--bogus'],
      ['--json=yes', 'image', 'status'],
      ['image', 'status', '--', 'x'],
      ['image', 'status', '--machine'],
    ];
    const before = srv.requests.length;
    for (const args of others) expect(await runFast(args, env), args.join(' ')).toBeUndefined();
    expect(srv.requests.length).toBe(before);
  });

  it('prints the help text the build rendered through commander, and only where commander would render the same', async () => {
    const viaMain = await runMain(['--help'], env);
    const helpFile = join(configHome, 'stowctl-help.txt');
    await writeFile(helpFile, viaMain.stdout);
    // The vitest worker's stdout is no terminal: commander's width is 80, the build's.
    expect(await runFast(['--help'], env, pathToFileURL(helpFile))).toEqual(viaMain);
    expect(await runFast(['-h'], env, pathToFileURL(helpFile))).toEqual(await runMain(['-h'], env));
    // From source (no build output), main() renders it.
    expect(await runFast(['--help'], env, pathToFileURL(join(configHome, 'missing.txt')))).toBeUndefined();
    expect(await runFast(['--help', '--json'], env, pathToFileURL(helpFile))).toBeUndefined();
  });

  it('is what bin/stowctl.js runs', async () => {
    const r = await runCli(['image', 'status', '--machine', 'm1', '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ records: [record, { ...record, machine_id: 'm2', machine_status: 'offline' }] });
  });
});
