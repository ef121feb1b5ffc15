import { mkdir, writeFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EngineContext } from '../../src/engine/context.js';
import { makeMultiPlatformLayout, makeOciLayout, skopeo } from '../harness/images.js';
import type { TestRegistry } from '../harness/registry.js';
import { run, runOk } from '../harness/run.js';
import { tarOfFiles } from '../harness/tar.js';
import { type CoreEngine, type DockerRunner, apiUrl, startEngineWithRegistry, tarEntries, writeContext } from './core-helpers.js';

/**
 * Docker Engine API gaps real clients hit (issue 11): each case drives the docker 28 CLI (classic builder) or
 * the exact request docker-py sends, and asserts what dockerd answers.
 */

let setup: Awaited<ReturnType<typeof startEngineWithRegistry>>;
let ctx: EngineContext;
let eng: CoreEngine;
let registry: TestRegistry;
let docker: DockerRunner;

async function inspect(reference: string): Promise<Record<string, any>> {
  const r = await docker(['image', 'inspect', reference]);
  if (r.code !== 0) throw new Error(`docker image inspect ${reference}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as Array<Record<string, any>>)[0]!;
}

/** Runs a python3 script using docker-py against the engine; its stdout is returned. */
async function dockerPy(script: string): Promise<string> {
  const r = await run('python3', ['-c', script], { DOCKER_HOST: eng.host });
  if (r.code !== 0) throw new Error(`docker-py script failed: ${r.stderr}`);
  return r.stdout;
}

beforeAll(async () => {
  setup = await startEngineWithRegistry();
  ({ registry, engine: eng, docker } = setup);
  ctx = eng.ctx;
  const layout = join(eng.root, 'base-layout');
  await makeOciLayout(layout, 'base', [{ 'etc/os-release': 'ID=gaps\n' }], { Env: ['PATH=/bin'] });
  await skopeo(['copy', '--quiet', `oci:${layout}:base`, `docker://${registry.host}/gaps/base:1`]);
}, 120_000);

afterAll(async () => {
  await setup?.close();
});

describe('build contexts the docker CLI and docker-py send', () => {
  it('builds with -f <Dockerfile outside the context> (a context tar without end-of-archive blocks)', async () => {
    const dir = await writeContext(join(eng.root, 'outside', 'ctx'), { 'hello.txt': 'hello\n' });
    const dockerfile = join(eng.root, 'outside', 'Dockerfile.out');
    await writeFile(dockerfile, 'FROM scratch\nCOPY hello.txt /\n');
    const r = await docker(['build', '-f', dockerfile, '-t', 'outside:1', dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('Successfully tagged outside:1');
    expect((await inspect('outside:1'))['RootFS']['Layers']).toHaveLength(1);
  });

  it('builds with -f - (the Dockerfile on stdin, the context from a directory)', async () => {
    const dir = await writeContext(join(eng.root, 'stdin-df'), { 'a.txt': 'a' });
    const r = await docker(['build', '-f', '-', '-t', 'stdindf:1', dir], 'FROM scratch\nCOPY a.txt /\nLABEL via=stdin\n');
    expect(r.code, r.stderr).toBe(0);
    expect((await inspect('stdindf:1'))['Config']['Labels']).toEqual({ via: 'stdin' });
  });

  it('still refuses a context whose last entry is cut short', async () => {
    const whole = await tarOfFiles({ Dockerfile: 'FROM scratch\nCOPY big /\n', big: 'x'.repeat(4000) });
    // Cut inside the data of the second entry (headers are 512 bytes, the first entry's data one block).
    const cut = whole.subarray(0, 512 * 3 + 1000);
    const res = await fetch(`${apiUrl(eng)}/build?t=cut:1`, { method: 'POST', body: new Uint8Array(cut) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/failed to read the build context: invalid tar archive/);
    expect(ctx.images.resolveTag('docker.io/library/cut:1')).toBeUndefined();
  });

  it("builds docker-py's out-of-context Dockerfile request (dockerfile= sent twice: the first value is the name)", async () => {
    const dir = await writeContext(join(eng.root, 'py-outside', 'ctx'), { 'f.txt': 'f' });
    await writeFile(join(eng.root, 'py-outside', 'Dockerfile'), 'FROM scratch\nCOPY f.txt /\nLABEL by=docker-py\n');
    const out = await dockerPy(
      [
        'import docker, json, sys',
        'c = docker.from_env()',
        `img, logs = c.images.build(path=${JSON.stringify(dir)}, dockerfile="../Dockerfile", tag="pyoutside:1")`,
        'print(json.dumps(img.labels))',
      ].join('\n'),
    );
    expect(JSON.parse(out.trim())).toEqual({ by: 'docker-py' });
  });

  it('takes the first value of any repeated query parameter, as Go does', async () => {
    const body = new Uint8Array(await tarOfFiles({ Dockerfile: 'FROM scratch\nLABEL n=1\n', Other: 'FROM scratch\nLABEL n=2\n' }));
    const res = await fetch(`${apiUrl(eng)}/build?dockerfile=Dockerfile&dockerfile=Other&t=first:1&q=1&q=0`, { method: 'POST', body });
    expect(res.status).toBe(200);
    const text = await res.text();
    // q=1 first: quiet output, only the image ID.
    expect(text).not.toContain('Step 1/');
    expect((await inspect('first:1'))['Config']['Labels']).toEqual({ n: '1' });
    const list = await fetch(`${apiUrl(eng)}/images/json?all=0&all=1&filters=${encodeURIComponent('{"reference":["first"]}')}&filters=bogus`);
    expect(list.status).toBe(200);
    expect(((await list.json()) as Array<{ RepoTags: string[] }>).map((i) => i.RepoTags)).toEqual([['first:1']]);
  });
});

describe('docker builder prune', () => {
  it('-a removes build cache but never a tagged image, even one a FROM pulled', async () => {
    const dir = await writeContext(join(eng.root, 'prune-ctx'), { Dockerfile: `FROM ${registry.host}/gaps/base:1\nFROM scratch AS out\nCOPY a /\n`, a: 'a' });
    const r = await docker(['build', '-t', 'prunes:1', dir]);
    expect(r.code, r.stderr).toBe(0);
    const base = await inspect(`${registry.host}/gaps/base:1`);
    const built = await inspect('prunes:1');
    const prune = await docker(['builder', 'prune', '-a', '-f']);
    expect(prune.code, prune.stderr).toBe(0);
    expect((await inspect(`${registry.host}/gaps/base:1`))['Id']).toBe(base['Id']);
    expect((await inspect('prunes:1'))['Id']).toBe(built['Id']);
    const baseRecord = ctx.images.getImage(ctx.images.resolveTag(`${registry.host}/gaps/base:1`)!)!;
    for (const d of [baseRecord.configDigest, ...baseRecord.layers]) expect(await ctx.store.has(d)).toBe(true);
    const images = await docker(['images', '--format', '{{.Repository}}:{{.Tag}}']);
    expect(images.stdout.split('\n')).toContain(`${registry.host}/gaps/base:1`);
  });
});

describe('build cache (classic builder)', () => {
  const stepIds = (out: string) => [...out.matchAll(/^ ---> ([0-9a-f]{12})$/gm)].map((m) => m[1]!);
  const builtId = (out: string) => /Successfully built ([0-9a-f]{12})/.exec(out)?.[1];
  const dangling = async () => (await docker(['images', '--filter', 'dangling=true', '-q'])).stdout.trim();

  it('identical inputs give the identical image, every step from the cache, and leave no dangling image', async () => {
    const dir = await writeContext(join(eng.root, 'cache-ctx'), {
      Dockerfile: [`FROM ${registry.host}/gaps/base:1`, 'ENV MODE=cached', 'COPY a.txt /srv/', 'WORKDIR /srv/work', 'COPY b.txt ./', 'LABEL stage=last'].join('\n'),
      'a.txt': 'a',
      'b.txt': 'b',
    });
    const first = await docker(['build', '-t', 'cached:1', dir]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).not.toContain('Using cache');
    const second = await docker(['build', '-t', 'cached:1', dir]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout.match(/ ---> Using cache\n/g)).toHaveLength(5);
    expect(builtId(second.stdout)).toBe(builtId(first.stdout));
    expect(stepIds(second.stdout)).toEqual(stepIds(first.stdout));
    expect(await dangling()).toBe('');

    // Every ID printed after a step is an image; the last is the one built.
    const ids = stepIds(second.stdout);
    expect(ids.at(-1)).toBe(builtId(second.stdout));
    for (const id of ids) {
      const r = await docker(['image', 'inspect', '--format', '{{.Id}}', id]);
      expect(r.code, `${id}: ${r.stderr}`).toBe(0);
      expect(r.stdout.trim().slice(7, 19)).toBe(id);
    }
    expect((await inspect(ids[2]!))['Config']['Env']).toContain('MODE=cached');

    // A changed file: the steps before it come from the cache, it and the later ones do not.
    await writeFile(join(dir, 'b.txt'), 'b2');
    const third = await docker(['build', '-t', 'cached:2', dir]);
    expect(third.code, third.stderr).toBe(0);
    expect(third.stdout.match(/ ---> Using cache\n/g)).toHaveLength(3);
    expect(stepIds(third.stdout).slice(0, 4)).toEqual(ids.slice(0, 4));
    expect(builtId(third.stdout)).not.toBe(builtId(second.stdout));

    // --no-cache runs every step.
    const fresh = await docker(['build', '--no-cache', '-t', 'cached:3', dir]);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(fresh.stdout).not.toContain('Using cache');
  });

  it('honours --cache-from once the local cache is gone', async () => {
    const dir = await writeContext(join(eng.root, 'cachefrom-ctx'), {
      Dockerfile: [`FROM ${registry.host}/gaps/base:1`, 'COPY c.txt /', 'ENV FROM_CACHE=1', 'COPY d.txt /'].join('\n'),
      'c.txt': 'c',
      'd.txt': 'd',
    });
    const first = await docker(['build', '-t', 'cachefrom:1', dir]);
    expect(first.code, first.stderr).toBe(0);
    expect((await docker(['builder', 'prune', '-a', '-f'])).code).toBe(0);

    const viaCacheFrom = await docker(['build', '--cache-from', 'cachefrom:1', '-t', 'cachefrom:1', dir]);
    expect(viaCacheFrom.code, viaCacheFrom.stderr).toBe(0);
    expect(viaCacheFrom.stdout.match(/ ---> Using cache\n/g)).toHaveLength(3);
    expect(builtId(viaCacheFrom.stdout)).toBe(builtId(first.stdout));
    expect(await dangling()).toBe('');

    expect((await docker(['builder', 'prune', '-a', '-f'])).code).toBe(0);
    const without = await docker(['build', '-t', 'cachefrom:2', dir]);
    expect(without.code, without.stderr).toBe(0);
    expect(without.stdout).not.toContain('Using cache');
  });
});

describe('downloads on a client\'s behalf (docker import <url>, ADD <url>) under the fetch policy', () => {
  let serverA: Server;
  let serverB: Server;
  let a: string;
  let b: string;
  const rootfs = () => tarOfFiles({ 'etc/hostname': 'from-url\n' });

  beforeAll(async () => {
    const body = await rootfs();
    const listen = async (handler: (req: IncomingMessage, res: ServerResponse) => void) => {
      const s = createServer(handler);
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
      return { s, hostPort: `127.0.0.1:${(s.address() as AddressInfo).port}` };
    };
    const sa = await listen((req, res) => {
      if (req.url === '/rootfs.tar') res.end(body);
      else if (req.url === '/hello.txt') res.writeHead(200, { 'last-modified': 'Tue, 01 Dec 2026 10:00:00 GMT' }).end('hello from a URL\n');
      else if (req.url === '/big') res.end(Buffer.alloc(64 * 1024, 1));
      else if (req.url === '/to-b') res.writeHead(302, { location: `http://${b}/rootfs.tar` }).end();
      else if (req.url === '/to-self') res.writeHead(302, { location: '/rootfs.tar' }).end();
      else res.writeHead(404).end();
    });
    const sb = await listen((_req, res) => res.end(body));
    serverA = sa.s;
    serverB = sb.s;
    a = sa.hostPort;
    b = sb.hostPort;
  });

  afterAll(async () => {
    ctx.fetch = undefined;
    await Promise.all([serverA, serverB].map((s) => new Promise<void>((r) => s.close(() => r()))));
  });

  const importUrl = (url: string, repo: string) => fetch(`${apiUrl(eng)}/images/create?fromSrc=${encodeURIComponent(url)}&repo=${repo}`, { method: 'POST' });
  /** The error of a failed import: a JSON message with a status before any output, else the stream's error line. */
  const importError = async (res: Response) => {
    const lines = (await res.text()).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { error?: string; message?: string });
    return res.status === 200 ? lines.find((m) => m.error)?.error : lines[0]?.message;
  };

  it('refuses loopback (also behind a name that resolves to it) and link-local addresses by default', async () => {
    ctx.fetch = undefined;
    const before = ctx.images.listImages().length;
    const cli = await docker(['import', `http://${a}/rootfs.tar`, 'refused:1']);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toContain(`refusing to download http://${a}/rootfs.tar: 127.0.0.1 is a loopback, link-local or private address`);
    const port = a.split(':')[1];
    const named = await importUrl(`http://localhost:${port}/rootfs.tar`, 'refused');
    expect(await importError(named)).toMatch(/refusing to download http:\/\/localhost:\d+\/rootfs.tar: (127\.0\.0\.1|::1) is a loopback/);
    const metadata = await importUrl('http://169.254.169.254/latest/meta-data/', 'refused');
    expect(await importError(metadata)).toContain('169.254.169.254 is a loopback, link-local or private address');
    const mapped = await importUrl(`http://[::ffff:127.0.0.1]:${port}/rootfs.tar`, 'refused');
    expect(await importError(mapped)).toContain('is a loopback, link-local or private address');
    expect(ctx.images.listImages()).toHaveLength(before);
  });

  it('takes an allowed host, re-checks every redirect and bounds the size', async () => {
    ctx.fetch = { allow: [a], maxBytes: 32 * 1024 };
    const ok = await docker(['import', `http://${a}/to-self`, 'fromurl:1']);
    expect(ok.code, ok.stderr).toBe(0);
    expect((await inspect('fromurl:1'))['Comment']).toBe(`Imported from http://${a}/to-self`);
    const redirected = await docker(['import', `http://${a}/to-b`, 'fromurl:2']);
    expect(redirected.code).toBe(1);
    expect(redirected.stderr).toContain(`refusing to download http://${b}/rootfs.tar: 127.0.0.1 is a loopback, link-local or private address`);
    const big = await docker(['import', `http://${a}/big`, 'fromurl:3']);
    expect(big.code).toBe(1);
    expect(big.stderr).toContain(`refusing to download http://${a}/big: larger than 32768 bytes`);
    expect(ctx.images.resolveTag('docker.io/library/fromurl:2')).toBeUndefined();
    expect(ctx.images.resolveTag('docker.io/library/fromurl:3')).toBeUndefined();
  });

  it('ADD <url> downloads the file as dockerd does (0600, not unpacked), under the same policy', async () => {
    ctx.fetch = { allow: [a], maxBytes: 1024 * 1024 };
    const dir = await writeContext(join(eng.root, 'add-url'), {
      Dockerfile: `FROM scratch\nADD http://${a}/hello.txt /downloads/\nADD http://${a}/rootfs.tar /rootfs.tar\n`,
    });
    const r = await docker(['build', '-t', 'addurl:1', dir]);
    expect(r.code, r.stderr).toBe(0);
    const record = ctx.images.getImage(ctx.images.resolveTag('docker.io/library/addurl:1')!)!;
    const first = await tarEntries(await ctx.store.createReadStream(record.layers[0]!));
    expect(first.get('downloads/hello.txt')).toMatchObject({ content: 'hello from a URL\n', mode: 0o600 });
    const second = await tarEntries(await ctx.store.createReadStream(record.layers[1]!));
    expect(second.get('rootfs.tar')?.content.length).toBeGreaterThan(512);
    // The same download again comes from the cache.
    const again = await docker(['build', '-t', 'addurl:1', dir]);
    expect(again.stdout.match(/ ---> Using cache\n/g)).toHaveLength(2);

    const refused = await writeContext(join(eng.root, 'add-url-refused'), { Dockerfile: `FROM scratch\nADD http://${b}/rootfs.tar /x\n` });
    const r2 = await docker(['build', '-t', 'addurl:2', refused]);
    expect(r2.code).toBe(1);
    expect(r2.stderr).toContain(`refusing to download http://${b}/rootfs.tar: 127.0.0.1 is a loopback, link-local or private address`);
  });
});

describe('pull', () => {
  it('--platform moves the tag to that platform, with its Variant, as dockerd does', async () => {
    const multiDir = join(eng.root, 'multi-layout');
    await makeMultiPlatformLayout(multiDir, ['linux/amd64', 'linux/arm64/v8'], { tag: 'x', layers: 1 });
    await skopeo(['copy', '--quiet', '--all', `oci:${multiDir}:x`, `docker://${registry.host}/gaps/multi:1`]);
    const name = `${registry.host}/gaps/multi:1`;
    const arch = async () => (await docker(['image', 'inspect', '--format', '{{.Architecture}} {{.Variant}}', name])).stdout.trim();

    expect((await docker(['pull', '--platform', 'linux/amd64', name])).code).toBe(0);
    expect(await arch()).toBe('amd64');
    const arm = await docker(['pull', '--platform', 'linux/arm64', name]);
    expect(arm.code, arm.stderr).toBe(0);
    expect(await arch()).toBe('arm64 v8');
    const again = await docker(['pull', '--platform', 'linux/arm64', name]);
    expect(again.stdout).toContain(`Status: Image is up to date for ${name}`);
    expect((await docker(['pull', '--platform', 'linux/amd64', name])).code).toBe(0);
    expect(await arch()).toBe('amd64');
  });
});

describe('every tag of a repository, and the small ones', () => {
  const readManifestJson = async (archive: string) => JSON.parse(await runOk('tar', ['-xOf', archive, 'manifest.json'])) as Array<{ RepoTags: string[] | null }>;

  beforeAll(async () => {
    for (const tag of ['1', '2']) {
      const layout = join(eng.root, `app-layout-${tag}`);
      await makeOciLayout(layout, 'x', [{ [`app-${tag}.txt`]: tag }]);
      await skopeo(['copy', '--quiet', `oci:${layout}:x`, `docker://${registry.host}/gaps/app:${tag}`]);
    }
  }, 120_000);

  it('docker pull -a pulls every tag; docker save <repo> exports every tag', async () => {
    const pull = await docker(['pull', '-a', `${registry.host}/gaps/app`]);
    expect(pull.code, pull.stderr).toBe(0);
    const listed = await docker(['images', '--format', '{{.Repository}}:{{.Tag}}', `${registry.host}/gaps/app`]);
    expect(listed.stdout.split('\n').filter(Boolean).sort()).toEqual([`${registry.host}/gaps/app:1`, `${registry.host}/gaps/app:2`]);

    const archive = join(eng.root, 'app-all.tar');
    const save = await docker(['save', '-o', archive, `${registry.host}/gaps/app`]);
    expect(save.code, save.stderr).toBe(0);
    const tags = (await readManifestJson(archive)).flatMap((m) => m.RepoTags ?? []).sort();
    expect(tags).toEqual([`${registry.host}/gaps/app:1`, `${registry.host}/gaps/app:2`]);
  });

  it('docker save <ID> writes RepoTags null', async () => {
    const id = (await inspect(`${registry.host}/gaps/app:1`))['Id'] as string;
    const archive = join(eng.root, 'by-id.tar');
    const save = await docker(['save', '-o', archive, id.slice(7, 19)]);
    expect(save.code, save.stderr).toBe(0);
    expect((await readManifestJson(archive)).map((m) => m.RepoTags)).toEqual([null]);
  });

  it('docker push of a missing tag answers with dockerd\'s wording', async () => {
    const other = await docker(['push', `${registry.host}/gaps/app:nope`]);
    expect(other.code).toBe(1);
    expect(other.stdout + other.stderr).toContain(`tag does not exist: ${registry.host}/gaps/app:nope`);
    const none = await docker(['push', `${registry.host}/gaps/none:1`]);
    expect(none.code).toBe(1);
    expect(none.stdout + none.stderr).toContain(`An image does not exist locally with the tag: ${registry.host}/gaps/none`);
  });

  it('GET /distribution/{name}/json answers docker-py\'s inspect_distribution', async () => {
    const out = await dockerPy(
      [
        'import docker, json',
        'c = docker.from_env()',
        `print(json.dumps([c.api.inspect_distribution("${registry.host}/gaps/multi:1"), c.api.inspect_distribution("${registry.host}/gaps/app:2")]))`,
      ].join('\n'),
    );
    const [multi, single] = JSON.parse(out) as Array<{ Descriptor: { mediaType: string; digest: string; size: number }; Platforms: Array<Record<string, string>> }>;
    expect(multi!.Descriptor.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(multi!.Platforms).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux', variant: 'v8' },
    ]);
    const pulled = ctx.images.resolveTag(`${registry.host}/gaps/app:2`);
    expect(single!.Descriptor.digest).toBe(pulled);
    expect(single!.Platforms).toHaveLength(1);
    const missing = await fetch(`${apiUrl(eng)}/distribution/${registry.host}/gaps/nothing:1/json`);
    expect(missing.status).toBe(404);
  });
});

describe('docker push of a built image', () => {
  it('sends gzip-compressed layers, as dockerd does, under the same image ID', async () => {
    const dir = await writeContext(join(eng.root, 'push-built'), { Dockerfile: 'FROM scratch\nCOPY big.txt /\n', 'big.txt': 'compressible '.repeat(10_000) });
    const name = `${registry.host}/gaps/built:1`;
    const b = await docker(['build', '-t', name, dir]);
    expect(b.code, b.stderr).toBe(0);
    const id = (await inspect(name))['Id'] as string;
    const p = await docker(['push', name]);
    expect(p.code, p.stderr).toBe(0);
    const res = await fetch(`http://${registry.host}/v2/gaps/built/manifests/1`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
    });
    const manifest = (await res.json()) as { config: { digest: string }; layers: Array<{ mediaType: string; size: number }> };
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(['application/vnd.docker.image.rootfs.diff.tar.gzip']);
    expect(manifest.layers[0]!.size).toBeLessThan(10_000);
    expect(manifest.config.digest).toBe(id);
  });
});
