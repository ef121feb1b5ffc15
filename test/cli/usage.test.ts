import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tmpDir } from '../harness/tmp.js';
import { DIGEST_A, STATUS_RECORD, cleanEnv, closedPort, recordingServer, runCli } from './helpers.js';

/** stowctl as a child process: usage errors, local validation, --dry-run and the config precedence. */
describe('stowctl usage, dry-run and config', () => {
  let env: NodeJS.ProcessEnv;
  let configHome: string;
  let srv: Awaited<ReturnType<typeof recordingServer>>;

  beforeAll(async () => {
    configHome = await tmpDir('stowctl-cfg-');
    env = cleanEnv(configHome);
    srv = await recordingServer((req, res) => {
      if (req.url === '/api/v1/machines') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ machines: [] }));
      }
    });
  });
  afterAll(() => srv?.close());

  it('exits 2 on an unknown command, a missing required flag, or no command at all', async () => {
    const unknown = await runCli(['bogus'], env);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown command 'bogus'");

    const missing = await runCli(['image', 'distribute', '--digest', DIGEST_A, '--to', 'b'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("required option '--from <id>' not specified");
    const noImage = await runCli(['image', 'distribute', '--from', 'a', '--to', 'b'], env);
    expect(noImage.code).toBe(2);
    expect(noImage.stderr).toContain('image distribute takes an image or --digest');

    const bare = await runCli(['image'], env);
    expect(bare.code).toBe(2);

    const inspect = await runCli(['--json', 'image', 'inspect'], env);
    expect(inspect.code).toBe(2);
    expect(JSON.parse(inspect.stdout)).toEqual({ error: { code: 'USAGE', message: 'image inspect needs an image, --digest or --reference' } });

    const help = await runCli(['image', 'distribute', '--help'], env);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--to <id>');
  });

  it('refuses a malformed digest with exit 2 before sending anything', async () => {
    const before = srv.connections();
    const r = await runCli(['--host', srv.url, '--token', 't', 'image', 'distribute', '--digest', 'sha256:1234', '--from', 'a', '--to', 'b'], env);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--digest "sha256:1234" is not a digest: expected sha256:<64 lowercase hex>');
    expect(r.stderr).toContain('[INVALID_DIGEST]');

    const j = await runCli(['--json', '--host', srv.url, '--token', 't', 'image', 'status', '--digest', `sha256:${'A'.repeat(64)}`], env);
    expect(j.code).toBe(2);
    expect(JSON.parse(j.stdout).error.code).toBe('INVALID_DIGEST');
    expect(srv.connections()).toBe(before);
  });

  it('--dry-run prints the request and sends nothing, even with no control plane listening', async () => {
    const host = `http://127.0.0.1:${await closedPort()}`;
    const r = await runCli(
      ['--dry-run', '--json', '--host', host, 'image', 'distribute', '--digest', DIGEST_A, '--from', 'm1', '--to', 'm2,m3', '--to', 'm4', '--platform', 'linux/arm64'],
      env,
    );
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      dry_run: true,
      request: {
        method: 'POST',
        url: `${host}/api/v1/operations/distribute`,
        body: { digest: DIGEST_A, from: 'm1', to: ['m2', 'm3', 'm4'], platform: 'linux/arm64' },
      },
    });

    const human = await runCli(['--dry-run', '--host', host, 'image', 'operation', 'list', '--kind', 'push', '--limit', '5'], env);
    expect(human.code).toBe(0);
    expect(human.stdout).toBe(`GET ${host}/api/v1/operations?kind=push&limit=5\n`);
  });

  it('takes host and token from the flag, else the environment, else the config file, else the default', async () => {
    const file = join(configHome, 'stowage', 'stowctl.json');
    await import('node:fs/promises').then((fs) => fs.mkdir(join(configHome, 'stowage'), { recursive: true }));
    await writeFile(file, JSON.stringify({ host: 'http://file.example:1', token: 'from-file' }));
    const dry = async (args: string[], extra: Record<string, string> = {}) => {
      const r = await runCli(['--dry-run', '--json', ...args, 'machine', 'list'], { ...env, ...extra });
      expect(r.code, r.stderr).toBe(0);
      return new URL(JSON.parse(r.stdout).request.url as string).origin;
    };
    expect(await dry([])).toBe('http://file.example:1');
    expect(await dry([], { STOWAGE_HOST: 'http://env.example:2' })).toBe('http://env.example:2');
    expect(await dry(['--host', 'http://flag.example:3'], { STOWAGE_HOST: 'http://env.example:2' })).toBe('http://flag.example:3');
    const other = join(configHome, 'other.json');
    await writeFile(other, JSON.stringify({ host: 'http://other.example:4' }));
    expect(await dry(['--config', other])).toBe('http://other.example:4');
    expect(await dry([], { XDG_CONFIG_HOME: await tmpDir('stowctl-empty-') })).toBe('http://127.0.0.1:5070');

    // The token actually sent, seen by a real server: flag > env > file.
    const sent = async (args: string[], extra: Record<string, string> = {}) => {
      const n = srv.requests.length;
      const r = await runCli(['--host', srv.url, ...args, 'machine', 'list'], { ...env, ...extra });
      expect(r.code, r.stderr).toBe(0);
      return srv.requests.slice(n).map((q) => q.headers['authorization']);
    };
    expect(await sent([])).toEqual(['Bearer from-file']);
    expect(await sent([], { STOWAGE_TOKEN: 'from-env' })).toEqual(['Bearer from-env']);
    expect(await sent(['--token', 'from-flag'], { STOWAGE_TOKEN: 'from-env' })).toEqual(['Bearer from-flag']);
  });

  it('says what is wrong with the configuration, with exit 2', async () => {
    const missing = await runCli(['--config', '/nonexistent/stowctl.json', 'machine', 'list'], env);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('cannot read config file /nonexistent/stowctl.json');

    const bad = join(await tmpDir('stowctl-bad-'), 'c.json');
    await writeFile(bad, '{"host": 5}');
    const r = await runCli(['--json', '--config', bad, 'machine', 'list'], env);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout).error.code).toBe('CONFIG_ERROR');

    const host = await runCli(['--host', 'ftp://x', '--token', 't', 'machine', 'list'], env);
    expect(host.code).toBe(2);
    expect(host.stderr).toContain('only http:// and https:// are supported');

    const noToken = await runCli(['--host', srv.url, 'machine', 'list'], { ...env, XDG_CONFIG_HOME: await tmpDir('stowctl-empty-') });
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain('no API token');
  });

  it('--debug logs request and response lines with the token redacted', async () => {
    const r = await runCli(['--debug', '--host', srv.url, '--token', 'sekrit-token', 'machine', 'list'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`> GET ${srv.url}/api/v1/machines (authorization: Bearer ***)`);
    expect(r.stderr).toMatch(/< 200 GET .*\/api\/v1\/machines/);
    expect(r.stderr + r.stdout).not.toContain('sekrit-token');
    expect(r.stdout).toBe('No machines have joined.\n');
  });

  it('image status checks the answer it prints: a malformed record is BAD_RESPONSE, an error body keeps the server\'s code', async () => {
    const record = { ...STATUS_RECORD, machine_status: 'unknown' };
    const answers: Record<string, [number, unknown]> = {
      good: [200, { records: [record] }],
      bad: [200, { records: [record, { ...record, presence: { state: 'somewhere' } }] }],
      refused: [403, { error: { code: 'FORBIDDEN', message: 'not yours' } }],
    };
    const server = await recordingServer((req, res) => {
      const machine = new URL(req.url, 'http://x').searchParams.get('machine') ?? '';
      const [status, body] = answers[machine] ?? [404, {}];
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
    try {
      const status = (machine: string, ...flags: string[]) => runCli([...flags, '--host', server.url, '--token', 't', 'image', 'status', '--machine', machine], env);
      const good = await status('good');
      expect(good.code, good.stderr).toBe(0);
      expect(good.stdout).toMatch(/^m1 +aaaaaaaaaaaa +linux\/amd64 +present \(unknown\) +2\.00 KiB +docker\.io\/library\/app:1 /m);
      const goodJson = await status('good', '--json');
      expect(JSON.parse(goodJson.stdout)).toEqual({ records: [record] });

      const bad = await status('bad', '--json');
      expect(bad.code).toBe(1);
      const error = JSON.parse(bad.stdout).error;
      expect(error.code).toBe('BAD_RESPONSE');
      expect(error.message).toContain('unexpected answer at records.1.presence.state');

      const refused = await status('refused');
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('stowctl: not yours [FORBIDDEN]');
    } finally {
      await server.close();
    }
  });

  it('reports an unreachable control plane with exit 1, as JSON with --json', async () => {
    const host = `http://127.0.0.1:${await closedPort()}`;
    const r = await runCli(['--json', '--host', host, '--token', 't', 'machine', 'list'], env);
    expect(r.code).toBe(1);
    const body = JSON.parse(r.stdout);
    expect(body.error.code).toBe('CONNECTION_FAILED');
    expect(body.error.message).toContain('ECONNREFUSED');
  });
});
