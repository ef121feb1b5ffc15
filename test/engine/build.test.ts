import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildEngineApp } from '../../src/engine/server.js';
import type { EngineContext } from '../../src/engine/context.js';
import { parseManifestBytes } from '../../src/oci/manifest.js';
import { openStore } from '../../src/store/index.js';
import { startRegistry } from '../harness/registry.js';
import { docker, makeOciLayout, skopeoCopy, tarEntries } from './remote-helpers.js';

let root: string;
let ctx: EngineContext;
let app: FastifyInstance;
let engine: string;
let registry: { host: string; stop(): Promise<void> };
let closeStore: () => void;
const cfgDir = () => join(root, 'docker-config');

async function writeContext(dir: string, files: Record<string, string>): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), content);
  }
  return dir;
}

const build = (dir: string, args: string[] = []) => docker(engine, cfgDir(), ['build', ...args, dir], { DOCKER_BUILDKIT: '0' });

async function inspect(name: string): Promise<Record<string, any>> {
  const r = await docker(engine, cfgDir(), ['image', 'inspect', name]);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as Array<Record<string, any>>)[0]!;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'stowage-build-'));
  await mkdir(cfgDir(), { recursive: true });
  registry = await startRegistry();
  const opened = await openStore(join(root, 'store'));
  closeStore = () => opened.images.close();
  ctx = {
    store: opened.store,
    images: opened.images,
    registries: { insecureRegistries: [registry.host], credentials: {}, searchRegistries: [registry.host] },
    workDir: join(root, 'work'),
    version: 'test',
  };
  await mkdir(ctx.workDir, { recursive: true });
  app = await buildEngineApp(ctx);
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  engine = address.replace(/^http:/, 'tcp:');
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
  await skopeoCopy(`oci:${layout}:base`, `docker://${registry.host}/base:1`);
}, 120_000);

afterAll(async () => {
  await app?.close();
  closeStore?.();
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
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
    expect(r.stdout).toContain('Step 1/18 : ARG BASE=');
    expect(r.stdout).toContain(`Step 4/18 : FROM $BASE`);
    expect(r.stdout).toMatch(/Pulling from base/);
    expect(r.stdout).toMatch(/Successfully built [0-9a-f]{12}/);
    expect(r.stdout).toContain('Successfully tagged app:1');
    expect(r.stdout).toContain('Successfully tagged app:latest');

    const img = await inspect('app:1');
    const c = img['Config'];
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

    // The layers: base (2) + WORKDIR + three COPYs.
    const target = ctx.images.resolveTag('docker.io/library/app:1')!;
    const manifest = parseManifestBytes(await ctx.store.readBytes(target));
    if (manifest.kind !== 'manifest') throw new Error('expected a manifest');
    const layers = manifest.manifest.layers;
    expect(layers).toHaveLength(6);
    const hello = await tarEntries(await ctx.store.createReadStream(layers[3]!.digest));
    expect(hello.get('srv/app/hello.txt')).toMatchObject({ content: 'hello from the context\n', uid: 1000, gid: 1000 });
    const whole = await tarEntries(await ctx.store.createReadStream(layers[4]!.digest));
    expect(whole.has('ctx/hello.txt')).toBe(true);
    expect(whole.has('ctx/secret.env')).toBe(false);
    const last = await tarEntries(await ctx.store.createReadStream(layers[5]!.digest));
    expect(last.get('srv/app/static/logo.txt')?.content).toBe('LOGO\n');

    const history = (await docker(engine, cfgDir(), ['image', 'history', '--no-trunc', '--format', '{{.CreatedBy}}', 'app:1'])).stdout;
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
    const img = await inspect('target:1');
    expect(img['RootFS'].Layers).toHaveLength(2);

    const prune = await docker(engine, cfgDir(), ['builder', 'prune', '-f']);
    expect(prune.code, prune.stderr).toBe(0);
    const m = /Total:?\s*(?:reclaimed space:)?\s*([\d.]+)\s*([kMG]?B)/i.exec(prune.stdout);
    expect(m, prune.stdout).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    // The result image is untouched.
    expect((await inspect('target:1'))['Id']).toBe(img['Id']);
  });
});
