import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EngineContext } from '../../src/engine/context.js';
import type { Digest } from '../../src/oci/digest.js';
import { parseManifestBytes } from '../../src/oci/manifest.js';
import { makeOciLayout, skopeo } from '../harness/images.js';
import type { TestRegistry } from '../harness/registry.js';
import { tarOfFiles as tarOf } from '../harness/tar.js';
import { type CoreEngine, type DockerRunner, apiUrl, startEngineWithRegistry, tarEntries, writeContext } from './core-helpers.js';

let setup: Awaited<ReturnType<typeof startEngineWithRegistry>>;
let root: string;
let ctx: EngineContext;
let eng: CoreEngine;
let registry: TestRegistry;
let docker: DockerRunner;

const build = (dir: string, args: string[] = []) => docker(['build', ...args, dir]);

async function cliJson(args: string[]): Promise<any> {
  const r = await docker(args);
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/**
 * The image as the docker CLI shows it (`docker image inspect`, `docker history`), plus its layer
 * blobs from the store, for checking what the layers hold.
 */
async function imageOf(reference: string) {
  const [inspect] = (await cliJson(['image', 'inspect', reference])) as Array<Record<string, any>>;
  const lines = await docker(['history', '--no-trunc', '--format', '{{json .CreatedBy}}', reference]);
  const createdBy = lines.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as string).reverse();
  const target = ctx.images.resolveTag(reference);
  if (!target) throw new Error(`${reference} is not tagged`);
  const parsed = parseManifestBytes(await ctx.store.readBytes(target));
  if (parsed.kind !== 'manifest') throw new Error('expected a manifest');
  return {
    id: inspect!['Id'] as Digest,
    config: inspect!['Config'] as Record<string, any>,
    author: inspect!['Author'] as string,
    diffIds: inspect!['RootFS']['Layers'] as string[],
    createdBy,
    layers: parsed.manifest.layers,
  };
}

beforeAll(async () => {
  setup = await startEngineWithRegistry();
  ({ registry, engine: eng, docker } = setup);
  ctx = eng.ctx;
  root = eng.root;
  // A base image in the registry: /etc/os-release and a user table for --chown by name.
  const layout = join(root, 'base-layout');
  await makeOciLayout(
    layout,
    'base',
    [
      { 'etc/os-release': 'ID=stowage-test\n', 'etc/passwd': 'root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n', 'etc/group': 'root:x:0:\napp:x:1000:\n' },
      { 'usr/share/base.txt': 'base\n' },
    ],
    { Env: ['PATH=/usr/bin:/bin', 'BASE=1'], Cmd: ['/bin/sh'], Labels: { 'org.base': 'yes' } },
  );
  await skopeo(['copy', '--quiet', `oci:${layout}:base`, `docker://${registry.host}/base:1`]);
}, 120_000);

afterAll(async () => {
  await setup?.close();
});

describe('docker build (classic builder) against a Stowage engine', () => {
  it('builds a multi-stage image FROM a registry base, honouring .dockerignore', async () => {
    const dir = await writeContext(join(root, 'ctx-app'), {
      Dockerfile: [
        `ARG BASE=${registry.host}/base:1`,
        'FROM scratch AS assets',
        'COPY assets/ /assets/',
        'FROM $BASE',
        'ARG VERSION=0',
        'ENV APP_VERSION=$VERSION \\',
        '    GREETING="hello world"',
        'LABEL org.example.name="app" version=${VERSION}',
        'WORKDIR /srv/app',
        'COPY --chown=app:app hello.txt ./',
        'COPY . /ctx/',
        'COPY --from=assets /assets/logo.txt /srv/app/static/',
        'EXPOSE 8080 53/udp',
        'VOLUME ["/data"]',
        'USER app',
        'STOPSIGNAL SIGINT',
        'HEALTHCHECK --interval=10s --retries=2 CMD ["true"]',
        'ENTRYPOINT ["/bin/app"]',
        'CMD ["--serve"]',
      ].join('\n'),
      'hello.txt': 'hello from the context\n',
      'secret.env': 'TOKEN=do-not-ship\n',
      'assets/logo.txt': 'LOGO\n',
      '.dockerignore': 'secret.env\n',
    });
    const r = await build(dir, ['-t', 'app:1', '-t', 'app:latest', '--build-arg', 'VERSION=2.5', '--label', 'from.cli=1']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toContain('Step 1/19 : ARG BASE=');
    expect(r.stdout).toContain(`Step 4/19 : FROM $BASE`);
    // --label is one more LABEL step, as dockerd adds it.
    expect(r.stdout).toContain(`Step 19/19 : LABEL "from.cli"='1'`);
    expect(r.stdout).toMatch(/Pulling from base/);
    expect(r.stdout).toMatch(/Successfully built [0-9a-f]{12}/);
    expect(r.stdout).toContain('Successfully tagged app:1');
    expect(r.stdout).toContain('Successfully tagged app:latest');

    const img = await imageOf('docker.io/library/app:1');
    const c = img.config;
    expect(c.Env).toEqual(['PATH=/usr/bin:/bin', 'BASE=1', 'APP_VERSION=2.5', 'GREETING=hello world']);
    expect(c.Entrypoint).toEqual(['/bin/app']);
    expect(c.Cmd).toEqual(['--serve']);
    expect(c.WorkingDir).toBe('/srv/app');
    expect(c.User).toBe('app');
    expect(c.Labels).toEqual({ 'org.base': 'yes', 'org.example.name': 'app', version: '2.5', 'from.cli': '1' });
    expect(Object.keys(c.ExposedPorts).sort()).toEqual(['53/udp', '8080/tcp']);
    expect(Object.keys(c.Volumes)).toEqual(['/data']);
    expect(c.StopSignal).toBe('SIGINT');
    expect(c.Healthcheck).toMatchObject({ Test: ['CMD', 'true'], Interval: 10e9, Retries: 2 });

    expect(r.stdout).toContain(`Successfully built ${img.id.slice(7, 19)}`);
    // The layers: base (2) + WORKDIR + three COPYs.
    const layers = img.layers;
    expect(layers).toHaveLength(6);
    const hello = await tarEntries(await ctx.store.createReadStream(layers[3]!.digest));
    expect(hello.get('srv/app/hello.txt')).toMatchObject({ content: 'hello from the context\n', uid: 1000, gid: 1000 });
    const whole = await tarEntries(await ctx.store.createReadStream(layers[4]!.digest));
    expect(whole.has('ctx/hello.txt')).toBe(true);
    expect(whole.has('ctx/secret.env')).toBe(false);
    const last = await tarEntries(await ctx.store.createReadStream(layers[5]!.digest));
    expect(last.get('srv/app/static/logo.txt')?.content).toBe('LOGO\n');

    const history = img.createdBy.join('\n');
    expect(history).toMatch(/#\(nop\) COPY file:[0-9a-f]{64} in \/srv\/app\/ /);
    expect(history).toContain('#(nop)  ENV APP_VERSION=2.5 GREETING=hello world');
  });

  it('fails a RUN step with a clear message and exit code 1', async () => {
    const dir = await writeContext(join(root, 'ctx-run'), { Dockerfile: 'FROM scratch\nCOPY a /a\nRUN echo hi\n', a: 'a' });
    const r = await build(dir, ['-t', 'run:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('RUN needs a container runtime: this Stowage agent has none (step: RUN echo hi)');
    expect(ctx.images.resolveTag('docker.io/library/run:1')).toBeUndefined();
  });

  it('refuses COPY sources outside the context', async () => {
    const dir = await writeContext(join(root, 'ctx-escape', 'inner'), { Dockerfile: 'FROM scratch\nCOPY ../outside.txt /x\n' });
    await writeFile(join(root, 'ctx-escape', 'outside.txt'), 'nope');
    const r = await build(dir, ['-t', 'escape:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('forbidden path outside the build context: ../outside.txt');
    expect(ctx.images.resolveTag('docker.io/library/escape:1')).toBeUndefined();
  });

  it('reports a missing COPY source and a Dockerfile syntax error', async () => {
    const missing = await writeContext(join(root, 'ctx-missing'), { Dockerfile: 'FROM scratch\nCOPY nothere /x\n' });
    const r1 = await build(missing);
    expect(r1.code).toBe(1);
    expect(r1.stderr).toContain('file not found in build context or excluded by .dockerignore: stat nothere: file does not exist');
    const bad = await writeContext(join(root, 'ctx-bad'), { Dockerfile: 'FROM scratch\nBOGUS x\n' });
    const r2 = await build(bad);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('dockerfile parse error line 2: unknown instruction: BOGUS');
  });

  it('builds a --target stage and prunes the build cache', async () => {
    const dir = await writeContext(join(root, 'ctx-target'), {
      Dockerfile: 'FROM scratch AS one\nCOPY one.txt /\nFROM scratch AS two\nCOPY --from=one /one.txt /copied.txt\nCOPY two.txt /\nFROM scratch\nCOPY two.txt /never\n',
      'one.txt': 'one'.repeat(1000),
      'two.txt': 'two',
    });
    const r = await build(dir, ['--target', 'two', '-t', 'target:1', '-q']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^sha256:[0-9a-f]{64}$/);
    const img = await imageOf('docker.io/library/target:1');
    expect(img.diffIds).toHaveLength(2);
    expect(r.stdout.trim()).toBe(img.id);

    const prune = await docker(['builder', 'prune', '-f']);
    expect(prune.code, prune.stderr).toBe(0);
    const m = /Total:?\s*(?:reclaimed space:)?\s*([\d.]+)\s*([kMG]?B)/i.exec(prune.stdout);
    expect(m, prune.stdout).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    // The result image is untouched.
    expect((await imageOf('docker.io/library/target:1')).id).toBe(img.id);
    expect(await ctx.store.has(img.layers[1]!.digest)).toBe(true);
  });

  it('unpacks local archives with ADD, refuses ADD of a link-local URL, records metadata instructions', async () => {
    const dir = await writeContext(join(root, 'ctx-add'), {
      Dockerfile: [
        'FROM scratch',
        'MAINTAINER someone@example.com',
        'SHELL ["/bin/bash", "-c"]',
        'ADD bundle.tar.gz /opt/',
        'ADD plain.txt /opt/plain.txt',
        'ONBUILD COPY . /app',
        'HEALTHCHECK NONE',
      ].join('\n'),
      'plain.txt': 'plain',
    });
    await writeFile(join(dir, 'bundle.tar.gz'), gzipSync(await tarOf({ 'inner/a.txt': 'A', 'b.txt': 'B' })));
    const r = await build(dir, ['-t', 'add:1']);
    expect(r.code, r.stderr).toBe(0);
    const img = await imageOf('docker.io/library/add:1');
    const entries = await tarEntries(await ctx.store.createReadStream(img.layers[0]!.digest));
    expect(entries.get('opt/inner/a.txt')?.content).toBe('A');
    expect(entries.get('opt/b.txt')?.content).toBe('B');
    expect(entries.has('opt/bundle.tar.gz')).toBe(false);
    const c = img.config;
    expect(c.Shell).toEqual(['/bin/bash', '-c']);
    expect(c.OnBuild).toEqual(['COPY . /app']);
    expect(c.Healthcheck).toEqual({ Test: ['NONE'] });
    expect(img.author).toBe('someone@example.com');
    expect(img.createdBy.at(-1)).toBe('/bin/bash -c #(nop)  HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" \'\\x00\'}');

    // URLs are downloaded under the fetch policy (docker-gaps.test.ts): the cloud metadata address is refused.
    const url = await writeContext(join(root, 'ctx-url'), { Dockerfile: 'FROM scratch\nADD http://169.254.169.254/latest/meta-data /x\n' });
    const r2 = await build(url);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain('refusing to download http://169.254.169.254/latest/meta-data: 169.254.169.254 is a loopback, link-local or private address');
  });

  it('applies .dockerignore (with ! re-includes) to raw API contexts too', async () => {
    const body = await tarOf({
      Dockerfile: 'FROM scratch\nCOPY . /ctx/\n',
      '.dockerignore': 'logs\n!logs/keep.log\n*.tmp\n',
      'logs/a.log': 'a',
      'logs/keep.log': 'keep',
      'x.tmp': 't',
      'y.txt': 'y',
    });
    const res = await fetch(`${apiUrl(eng)}/build?t=ignore:1`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-tar' },
      body: new Uint8Array(body),
    });
    expect(res.status).toBe(200);
    const lines = (await res.text()).split(/\r?\n/).filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    expect(lines.find((l) => l['aux'])).toMatchObject({ id: 'moby.image.id', aux: { ID: expect.stringMatching(/^sha256:/) } });
    expect(lines.at(-1)).toEqual({ stream: 'Successfully tagged ignore:1\n' });
    const img = await imageOf('docker.io/library/ignore:1');
    const entries = await tarEntries(await ctx.store.createReadStream(img.layers[0]!.digest));
    expect([...entries.keys()].filter((k) => !k.endsWith('/')).sort()).toEqual(['ctx/.dockerignore', 'ctx/Dockerfile', 'ctx/logs/keep.log', 'ctx/y.txt']);
  });

  it('answers bad build parameters with 400 before reading the context', async () => {
    const base = `${apiUrl(eng)}/build`;
    const bad = await fetch(`${base}?t=${encodeURIComponent('Not Valid')}`, { method: 'POST', body: new Uint8Array(await tarOf({ Dockerfile: 'FROM scratch\n' })) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toMatch(/^invalid reference format/);
    const args = await fetch(`${base}?buildargs=notjson`, { method: 'POST', body: new Uint8Array(await tarOf({ Dockerfile: 'FROM scratch\n' })) });
    expect(args.status).toBe(400);
    const missing = await fetch(`${base}?dockerfile=nope/Dockerfile`, { method: 'POST', body: new Uint8Array(await tarOf({ Dockerfile: 'FROM scratch\n' })) });
    expect(missing.status).toBe(400);
    expect(((await missing.json()) as { message: string }).message).toBe('Cannot locate specified Dockerfile: nope/Dockerfile');
  });

  it('reads a zstd-compressed context, as dockerd does', async () => {
    const context = await tarOf({ Dockerfile: 'FROM scratch\nCOPY hello.txt /\n', 'hello.txt': 'zstd context' });
    const res = await fetch(`${apiUrl(eng)}/build?t=zstdctx:1`, { method: 'POST', body: new Uint8Array(execFileSync('zstd', ['-q', '-c'], { input: context })) });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('Successfully tagged zstdctx:1');
    const img = await imageOf('docker.io/library/zstdctx:1');
    const entries = await tarEntries(await ctx.store.createReadStream(img.layers[0]!.digest));
    expect(entries.get('hello.txt')?.content).toBe('zstd context');
  });

  it('builds from a Dockerfile on stdin and from a bare Dockerfile body', async () => {
    const r = await docker(['build', '-t', 'stdin:1', '-'], 'FROM scratch\nLABEL from=stdin\n');
    expect(r.code, r.stderr).toBe(0);
    expect((await imageOf('docker.io/library/stdin:1')).config.Labels).toEqual({ from: 'stdin' });
    const res = await fetch(`${apiUrl(eng)}/build?t=plain:1`, { method: 'POST', body: 'FROM scratch\nENV PLAIN=1\n' });
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('Successfully tagged plain:1');
    expect((await imageOf('docker.io/library/plain:1')).config.Env).toContain('PLAIN=1');
  });
});
