import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeImageTar } from '../harness/images.js';
import { type RunResult, run } from '../harness/run.js';
import { tmpDir } from '../harness/tmp.js';
import { type CoreEngine, dockerFor, startCoreEngine } from './core-helpers.js';

/** The Docker Engine image API driven by the real docker CLI (and skopeo's docker-daemon: transport). */

let engine: CoreEngine;
let docker: (args: string[], input?: Buffer) => Promise<RunResult>;
let alpine: Awaited<ReturnType<typeof makeImageTar>>;

function ok(r: RunResult): string {
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

function ids(r: RunResult): string[] {
  return ok(r).split('\n').filter((l) => l !== '');
}

beforeAll(async () => {
  engine = await startCoreEngine();
  docker = await dockerFor(engine);
  alpine = await makeImageTar('alpine:latest', { labels: { 'org.example.kind': 'base' } });
  expect(ok(await docker(['load', '-i', alpine.tar]))).toBe('Loaded image: alpine:latest\n');
});

afterAll(async () => {
  await engine?.close();
});

describe('docker CLI against the engine', () => {
  it('docker version negotiates API 1.41', async () => {
    const out = ok(await docker(['version', '--format', '{{.Server.APIVersion}} {{.Server.Os}} {{.Server.MinAPIVersion}}']));
    expect(out.trim()).toBe('1.41 linux 1.12');
    const info = ok(await docker(['info', '--format', '{{.Driver}} {{.OSType}} {{.Containers}}']));
    expect(info.trim()).toBe('stowage linux 0');
  });

  it('a client version above 1.41 gets 400 with Docker\'s message', async () => {
    const res = await fetch(`${engine.host.replace('tcp:', 'http:')}/v1.43/images/json`);
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({ message: 'client version 1.43 is too new. Maximum supported API version is 1.41' });
    const ping = await fetch(`${engine.host.replace('tcp:', 'http:')}/_ping`);
    expect(ping.headers.get('api-version')).toBe('1.41');
    expect(ping.headers.get('ostype')).toBe('linux');
    expect(await ping.text()).toBe('OK');
  });

  it('docker images lists the loaded image with its ID', async () => {
    const out = ok(await docker(['images', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']));
    expect(out).toBe(`alpine:latest ${alpine.image.configDigest}\n`);
    const digests = ok(await docker(['images', '--digests', '--format', '{{.Repository}} {{.Digest}}']));
    expect(digests).toBe('alpine <none>\n');
  });

  it('docker image inspect shows Docker\'s shape and the config', async () => {
    const [img] = JSON.parse(ok(await docker(['image', 'inspect', 'alpine']))) as Array<Record<string, any>>;
    expect(img!.Id).toBe(alpine.image.configDigest);
    expect(img!.RepoTags).toEqual(['alpine:latest']);
    expect(img!.Config.Cmd).toEqual(['/bin/sh']);
    expect(img!.Config.Env).toEqual(['PATH=/usr/bin:/bin']);
    expect(img!.Config.Labels).toEqual({ 'org.example.kind': 'base' });
    expect(img!.Architecture).toBe('amd64');
    expect(img!.Os).toBe('linux');
    expect(img!.RootFS).toEqual({ Type: 'layers', Layers: alpine.image.layers.map((l) => l.diffId) });
    expect(img!.Created).toBe('2024-01-02T03:04:05Z');
    for (const k of ['Parent', 'Comment', 'Container', 'ContainerConfig', 'DockerVersion', 'Author', 'Size', 'VirtualSize', 'GraphDriver', 'Metadata']) {
      expect(img).toHaveProperty(k);
    }
    // By short ID and by full ID too.
    const short = alpine.image.configDigest.slice(7, 19);
    expect(ok(await docker(['image', 'inspect', '-f', '{{.Id}}', short])).trim()).toBe(alpine.image.configDigest);
    expect(ok(await docker(['image', 'inspect', '-f', '{{.Id}}', alpine.image.configDigest])).trim()).toBe(alpine.image.configDigest);
  });

  it('docker history lists config history newest first', async () => {
    const lines = ids(await docker(['history', '--no-trunc', '--format', '{{.ID}}|{{.CreatedBy}}', 'alpine']));
    expect(lines).toEqual([`${alpine.image.configDigest}|step 1`, '<missing>|step 0']);
  });

  it('docker tag works with registry hosts and paths in the name', async () => {
    ok(await docker(['tag', 'alpine', '127.0.0.1:5000/team/app:1']));
    const [img] = JSON.parse(ok(await docker(['image', 'inspect', '127.0.0.1:5000/team/app:1']))) as Array<Record<string, any>>;
    expect(img!.Id).toBe(alpine.image.configDigest);
    const hist = ok(await docker(['history', '-q', '127.0.0.1:5000/team/app:1']));
    expect(hist.split('\n')[0]).toBe(alpine.image.configDigest.slice(7, 19));
    const filtered = ok(await docker(['images', '--filter', 'reference=127.0.0.1:5000/*/*', '--format', '{{.Repository}}:{{.Tag}}']));
    expect(filtered).toBe('127.0.0.1:5000/team/app:1\n');
    const byName = ok(await docker(['images', '--filter', 'reference=alp*', '--format', '{{.Repository}}:{{.Tag}}']));
    expect(byName).toBe('alpine:latest\n');
  });

  it('docker rmi by ID of an image with two tags is refused without -f', async () => {
    const short = alpine.image.configDigest.slice(7, 19);
    const r = await docker(['rmi', short]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`conflict: unable to delete ${short} (must be forced) - image is referenced in multiple repositories`);
    // Nothing changed.
    expect(ids(await docker(['images', '--format', '{{.Repository}}:{{.Tag}}'])).sort()).toEqual(['127.0.0.1:5000/team/app:1', 'alpine:latest']);
    // Removing by tag only untags.
    expect(ok(await docker(['rmi', '127.0.0.1:5000/team/app:1']))).toBe('Untagged: 127.0.0.1:5000/team/app:1\n');
    expect(ids(await docker(['images', '-q']))).toEqual([short]);
  });

  it('docker rmi of a missing image says No such image', async () => {
    const r = await docker(['rmi', 'nosuch:1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('No such image: nosuch:1');
    const i = await docker(['image', 'inspect', 'nosuch']);
    expect(i.code).not.toBe(0);
    expect(i.stderr).toContain('No such image: nosuch');
  });

  it('docker save, rmi, load round-trips to the same image ID', async () => {
    const dir = await tmpDir('stowage-save-');
    const out = join(dir, 'saved.tar');
    ok(await docker(['save', '-o', out, 'alpine']));
    const rmi = ok(await docker(['rmi', 'alpine']));
    expect(rmi).toContain('Untagged: alpine:latest');
    expect(rmi).toContain(`Deleted: ${alpine.image.configDigest}`);
    expect(ok(await docker(['images', '-aq']))).toBe('');
    expect(ok(await docker(['load', '-i', out]))).toBe('Loaded image: alpine:latest\n');
    expect(ok(await docker(['images', '-q', '--no-trunc']))).toBe(`${alpine.image.configDigest}\n`);
  });

  it('docker import stores a rootfs tarball with --change and -m', async () => {
    const dir = await tmpDir('stowage-import-');
    await mkdir(join(dir, 'root', 'etc'), { recursive: true });
    await writeFile(join(dir, 'root', 'etc', 'hello'), 'hello\n');
    execFileSync('tar', ['-C', join(dir, 'root'), '-czf', join(dir, 'root.tgz'), '.']);
    const out = ok(await docker(['import', '--change', 'CMD ["/bin/sh"]', '--change', 'ENV A=b', '-m', 'imported for a test', join(dir, 'root.tgz'), 'imported:1']));
    expect(out).toMatch(/^sha256:[a-f0-9]{64}\n$/);
    const [img] = JSON.parse(ok(await docker(['image', 'inspect', 'imported:1']))) as Array<Record<string, any>>;
    expect(img!.Id).toBe(out.trim());
    expect(img!.Config.Cmd).toEqual(['/bin/sh']);
    expect(img!.Config.Env).toEqual(['A=b']);
    expect(img!.Comment).toBe('imported for a test');
    expect(img!.RootFS.Layers).toHaveLength(1);
    const hist = ok(await docker(['history', '--format', '{{.Comment}}', 'imported:1']));
    expect(hist).toBe('imported for a test\n');
    // Not a tar: refused, nothing recorded.
    await writeFile(join(dir, 'junk'), 'this is not a tar archive at all, just text that goes on for a while'.repeat(20));
    const before = ok(await docker(['images', '-aq']));
    const bad = await docker(['import', join(dir, 'junk'), 'junk:1']);
    expect(bad.code).not.toBe(0);
    expect(ok(await docker(['images', '-aq']))).toBe(before);
    const badChange = await docker(['import', '--change', 'RUN echo', join(dir, 'root.tgz'), 'x:1']);
    expect(badChange.code).not.toBe(0);
    expect(badChange.stderr).toContain('run is not a valid change command');
  });

  it('dangling images are listed with the filter and removed by docker image prune', async () => {
    // Moving alpine:latest onto the imported image leaves the old alpine dangling.
    ok(await docker(['tag', 'imported:1', 'alpine:latest']));
    const dangling = ok(await docker(['images', '--filter', 'dangling=true', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']));
    expect(dangling).toBe(`<none>:<none> ${alpine.image.configDigest}\n`);
    const all = ids(await docker(['images', '-a', '--format', '{{.Repository}}:{{.Tag}}']));
    expect(all).toContain('<none>:<none>');
    const label = ok(await docker(['images', '--filter', 'label=org.example.kind=base', '-q', '--no-trunc']));
    expect(label).toBe(`${alpine.image.configDigest}\n`);
    const pruned = ok(await docker(['image', 'prune', '-f']));
    expect(pruned).toContain(`deleted: ${alpine.image.configDigest}`);
    expect(pruned).toMatch(/Total reclaimed space: [1-9]/);
    expect(ok(await docker(['images', '--filter', 'dangling=true', '-q']))).toBe('');
    expect(ids(await docker(['images', '--format', '{{.Repository}}:{{.Tag}}'])).sort()).toEqual(['alpine:latest', 'imported:1']);
  });

  it('docker save of several images (GET /images/get?names=…) loads back', async () => {
    const dir = await tmpDir('stowage-saveall-');
    const out = join(dir, 'all.tar');
    ok(await docker(['save', '-o', out, 'alpine:latest', 'imported:1']));
    const base = engine.host.replace('tcp:', 'http:');
    const joined = await fetch(`${base}/v1.41/images/get?names=alpine:latest,imported:1`);
    expect(joined.status).toBe(200);
    expect(joined.headers.get('content-type')).toBe('application/x-tar');
    expect((await joined.arrayBuffer()).byteLength).toBeGreaterThan(1024);
    const missing = await fetch(`${base}/v1.41/images/get?names=alpine:latest&names=nosuch:9`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ message: 'No such image: nosuch:9' });
    const loaded = ok(await docker(['load', '-i', out]));
    expect(loaded.split('\n').filter(Boolean).sort()).toEqual(['Loaded image: alpine:latest', 'Loaded image: imported:1']);
  });

  it('docker load of a broken archive fails in-stream and changes nothing', async () => {
    const dir = await tmpDir('stowage-badload-');
    await writeFile(join(dir, 'bad.tar'), Buffer.alloc(4096, 7));
    const before = ok(await docker(['images', '-a', '--no-trunc', '-q']));
    const r = await docker(['load', '-i', join(dir, 'bad.tar')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/invalid tar archive|not an image archive/);
    expect(ok(await docker(['images', '-a', '--no-trunc', '-q']))).toBe(before);
  });

  it('docker commit answers No such container', async () => {
    const r = await docker(['commit', 'abc123', 'x:1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('No such container: abc123');
  });
});

describe('over a unix socket, with skopeo', () => {
  let sock: CoreEngine;
  beforeAll(async () => {
    sock = await startCoreEngine({ socket: true });
  });
  afterAll(async () => {
    await sock?.close();
  });

  it('skopeo docker-daemon: copies out of and into the engine', async () => {
    const d = await dockerFor(sock);
    expect(sock.host.startsWith('unix://')).toBe(true);
    const img = await makeImageTar('x:1');
    ok(await d(['load', '-i', img.tar]));
    const dir = join(await tmpDir('stowage-skopeo-'), 'out');
    ok(await run('skopeo', ['--insecure-policy', 'copy', '--src-daemon-host', sock.host, 'docker-daemon:x:1', `dir:${dir}`], {}));
    ok(await run('skopeo', ['--insecure-policy', 'copy', '--dest-daemon-host', sock.host, `dir:${dir}`, 'docker-daemon:y:2'], {}));
    const out = ok(await d(['images', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']));
    expect(out.split('\n').filter(Boolean).sort()).toEqual([`x:1 ${img.image.configDigest}`, `y:2 ${img.image.configDigest}`]);
  });
});
