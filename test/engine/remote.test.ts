import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EngineContext } from '../../src/engine/context.js';
import { defaultPlatform, formatPlatform } from '../../src/oci/platform.js';
import { makeMultiPlatformLayout, makeOciLayout, skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { type CoreEngine, type DockerRunner, apiUrl, dockerFor, jsonMessages as messages, startEngineWithRegistry } from './core-helpers.js';

let setup: Awaited<ReturnType<typeof startEngineWithRegistry>>;
let eng: CoreEngine;
let ctx: EngineContext;
let registry: TestRegistry;
let reg: string;
let xDigest: string;
let docker: DockerRunner;
const cli = (...args: string[]) => docker(args);
const api = (path: string, init?: RequestInit) => fetch(`${apiUrl(eng)}${path}`, init);
const skopeoCopy = (src: string, dest: string) => skopeo(['copy', '--quiet', src, dest]);

beforeAll(async () => {
  setup = await startEngineWithRegistry();
  ({ registry, engine: eng, docker } = setup);
  reg = registry.host;
  ctx = eng.ctx;
  const layout = join(eng.root, 'layout');
  ({ manifestDigest: xDigest } = await makeOciLayout(layout, 'x', [
    { 'etc/os-release': 'ID=stowage-test\n' },
    { 'opt/data.bin': randomBytes(1_500_000).toString('base64') },
  ]));
  await skopeoCopy(`oci:${layout}:x`, `docker://${reg}/x:1`);
  await skopeoCopy(`oci:${layout}:x`, `docker://${reg}/team/raw:2`);
}, 120_000);

afterAll(async () => {
  await setup?.close();
});

describe('docker pull', () => {
  it('pulls from a plain-HTTP loopback registry with Docker progress output', async () => {
    const r = await cli('pull', `${reg}/x:1`);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe('1: Pulling from x');
    expect(r.stdout).toMatch(/^[0-9a-f]{12}: Pull complete$/m);
    expect(r.stdout).toContain(`Digest: ${xDigest}`);
    expect(r.stdout).toContain(`Status: Downloaded newer image for ${reg}/x:1`);
    expect(ctx.images.resolveTag(`${reg}/x:1`)).toBe(xDigest);

    const again = await cli('pull', `${reg}/x:1`);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^[0-9a-f]{12}: Already exists$/m);
    expect(again.stdout).toContain(`Status: Image is up to date for ${reg}/x:1`);
  });

  it('streams dockerd-shaped JSON progress on the API', async () => {
    const res = await api(`/images/create?fromImage=${encodeURIComponent(`${reg}/team/raw`)}&tag=2`, { method: 'POST' });
    expect(res.status).toBe(200);
    const msgs = await messages(res);
    expect(msgs[0]).toEqual({ status: 'Pulling from team/raw', id: '2' });
    // The first layer is shared with x:1, the second one too: everything already exists.
    expect(msgs.filter((m) => m['status'] === 'Already exists')).toHaveLength(2);
    expect(msgs.at(-2)).toEqual({ status: `Digest: ${xDigest}` });
    expect(msgs.at(-1)).toEqual({ status: `Status: Downloaded newer image for ${reg}/team/raw:2` });
  });

  it('shows Downloading progress for layers it fetches', async () => {
    const layout = join(eng.root, 'layout-big');
    await makeOciLayout(layout, 'big', [{ 'big.bin': randomBytes(3_000_000).toString('base64') }]);
    await skopeoCopy(`oci:${layout}:big`, `docker://${reg}/big:1`);
    const res = await api(`/images/create?fromImage=${encodeURIComponent(`${reg}/big:1`)}`, { method: 'POST' });
    const msgs = await messages(res);
    const id = msgs[1]!['id'] as string;
    expect(msgs[1]).toEqual({ status: 'Pulling fs layer', progressDetail: {}, id });
    const downloading = msgs.filter((m) => m['status'] === 'Downloading');
    expect(downloading.length).toBeGreaterThan(0);
    const last = downloading.at(-1)!;
    expect(last['progressDetail'].current).toBe(last['progressDetail'].total);
    expect(last['progress']).toMatch(/^\[=+>\s*\]\s+[\d.]+[kM]B\/[\d.]+[kM]B/);
    const statuses = msgs.filter((m) => m['id'] === id).map((m) => m['status']);
    expect(statuses.indexOf('Download complete')).toBeGreaterThan(statuses.indexOf('Downloading'));
    expect(statuses.at(-1)).toBe('Pull complete');
  });

  it('reports a missing tag as Docker does and exits 1', async () => {
    const r = await cli('pull', `${reg}/x:nope`);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`Error response from daemon: manifest for ${reg}/x:nope not found: manifest unknown: manifest unknown`);
    expect(ctx.images.resolveTag(`${reg}/x:nope`)).toBeUndefined();
  });

  it('answers a bad reference or platform with 400', async () => {
    const res = await api(`/images/create?fromImage=${encodeURIComponent('Bad Name')}&tag=1`, { method: 'POST' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/^invalid reference format/);
    const res2 = await api(`/images/create?fromImage=${encodeURIComponent(`${reg}/x`)}&tag=1&platform=${encodeURIComponent('linux/!!')}`, { method: 'POST' });
    expect(res2.status).toBe(400);
  });
});

describe('docker pull of a multi-platform image', () => {
  it('stores the index and the platform it needs; --platform picks another; a missing one is refused', async () => {
    const host = formatPlatform(defaultPlatform());
    const other = host === 'linux/arm64' ? 'linux/amd64' : 'linux/arm64';
    const layout = join(eng.root, 'layout-multi');
    const multi = await makeMultiPlatformLayout(layout, [host, other], { tag: 'multi' });
    const indexDigest = multi.indexDigest;
    const children = { [host]: multi.children[0]!.manifestDigest };
    await skopeo(['copy', '--quiet', '--all', `oci:${layout}:multi`, `docker://${reg}/multi:1`]);

    const r = await cli('pull', `${reg}/multi:1`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Digest: ${indexDigest}`);
    expect(ctx.images.resolveTag(`${reg}/multi:1`)).toBe(indexDigest);
    const index = ctx.images.getIndex(indexDigest as `sha256:${string}`)!;
    expect(index.children.filter((c) => c.present).map((c) => c.digest)).toEqual([children[host]]);

    const r2 = await cli('pull', '--platform', other, `${reg}/multi:1`);
    expect(r2.code, r2.stderr).toBe(0);
    expect(ctx.images.getIndex(indexDigest as `sha256:${string}`)!.children.every((c) => c.present)).toBe(true);

    const r3 = await cli('pull', '--platform', 'linux/s390x', `${reg}/multi:1`);
    expect(r3.code).toBe(1);
    expect(r3.stderr).toContain('no matching manifest for linux/s390x in the manifest list entries');
  });
});

describe('docker push', () => {
  it('pushes a built image and the registry has the same digest; pushing again finds the layers', async () => {
    const dir = join(eng.root, 'push-ctx');
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'Dockerfile'), `FROM ${reg}/x:1\nCOPY app.txt /app/\nCMD ["cat", "/app/app.txt"]\n`);
    await writeFile(join(dir, 'app.txt'), 'pushed\n');
    const b = await cli('build', '-q', '-t', `${reg}/pushed:1`, dir);
    expect(b.code, b.stderr).toBe(0);

    const r = await cli('push', `${reg}/pushed:1`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe(`The push refers to repository [${reg}/pushed]`);
    expect(r.stdout).toMatch(/^[0-9a-f]{12}: Preparing$/m);
    expect(r.stdout).toMatch(/^[0-9a-f]{12}: Pushed$/m);
    const m = /^1: digest: (sha256:[0-9a-f]{64}) size: (\d+)$/m.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(m![1]).toBe(ctx.images.resolveTag(`${reg}/pushed:1`));
    const remote = JSON.parse(await skopeo(['inspect', `docker://${reg}/pushed:1`])) as { Digest: string };
    expect(remote.Digest).toBe(m![1]);

    const again = await cli('push', `${reg}/pushed:1`);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^[0-9a-f]{12}: Layer already exists$/m);
    expect(again.stdout).not.toMatch(/: Pushed$/m);
    expect(again.stdout).toContain(`1: digest: ${m![1]} size: ${m![2]}`);
  });

  it('ends with the aux record on the API', async () => {
    const auth = Buffer.from(JSON.stringify({ username: '', password: '', serveraddress: reg })).toString('base64url');
    const res = await api(`/images/${reg}/pushed/push?tag=1`, { method: 'POST', headers: { 'X-Registry-Auth': auth } });
    expect(res.status).toBe(200);
    const msgs = await messages(res);
    const last = msgs.at(-1)!;
    expect(last['progressDetail']).toEqual({});
    expect(last['aux']).toMatchObject({ Tag: '1', Digest: ctx.images.resolveTag(`${reg}/pushed:1`) });
    expect(typeof last['aux'].Size).toBe('number');
  });

  it('refuses an image that is not there', async () => {
    const r = await cli('push', `${reg}/nothere:1`);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`An image does not exist locally with the tag: ${reg}/nothere`);
    const res = await api(`/images/${reg}/nothere/push?tag=1`, { method: 'POST', headers: { 'X-Registry-Auth': 'e30=' } });
    expect(res.status).toBe(404);
  });
});

describe('docker search', () => {
  it('finds repositories in the search registries by substring', async () => {
    const r = await cli('search', 'push');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${reg}/pushed`);
    expect(r.stdout).not.toContain(`${reg}/x `);
    const res = await api(`/images/search?term=raw`);
    expect(await res.json()).toEqual([{ name: `${reg}/team/raw`, description: '', star_count: 0, is_official: false, is_automated: false }]);
    const scoped = await api(`/images/search?term=${encodeURIComponent(`${reg}/x`)}&limit=1`);
    expect(((await scoped.json()) as unknown[]).length).toBe(1);
  });

  it('validates limit and filters', async () => {
    const res = await api('/images/search?term=x&limit=101');
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toBe('Limit 101 is outside the range of [1, 100]');
    const bad = await api(`/images/search?term=x&filters=${encodeURIComponent('{"nope":["1"]}')}`);
    expect(bad.status).toBe(400);
    const official = await api(`/images/search?term=x&filters=${encodeURIComponent('{"is-official":["true"]}')}`);
    expect(await official.json()).toEqual([]);
  });
});

describe('registry credentials', () => {
  it('pulls and pushes through an htpasswd registry with the credentials docker login stores; POST /auth checks them', async () => {
    const secured = await startRegistry({ htpasswd: { user: 'u', password: 'p' } });
    try {
      const layout = join(eng.root, 'layout');
      await skopeo(['copy', '--quiet', '--dest-creds', 'u:p', `oci:${layout}:x`, `docker://${secured.host}/private:1`]);

      const anonymous = await cli('pull', `${secured.host}/private:1`);
      expect(anonymous.code).toBe(1);
      expect(anonymous.stderr).toContain(`pull access denied for ${secured.host}/private, repository does not exist or may require 'docker login': unauthorized`);

      // The real `docker login` checks the credentials through POST /auth and stores them; pull and push send them.
      const loggedIn = await dockerFor(eng, { DOCKER_BUILDKIT: '0' });
      const refused = await loggedIn(['login', secured.host, '-u', 'u', '--password-stdin'], Buffer.from('wrong\n'));
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('unauthorized');
      const login = await loggedIn(['login', secured.host, '-u', 'u', '--password-stdin'], Buffer.from('p\n'));
      expect(login.code, login.stderr).toBe(0);
      expect(login.stdout).toContain('Login Succeeded');
      const pulled = await loggedIn(['pull', `${secured.host}/private:1`]);
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(pulled.stdout).toContain(`Status: Downloaded newer image for ${secured.host}/private:1`);
      expect(ctx.images.resolveTag(`${secured.host}/private:1`)).toBe(xDigest);
      expect((await loggedIn(['tag', `${secured.host}/private:1`, `${secured.host}/private:2`])).code).toBe(0);
      const pushed = await loggedIn(['push', `${secured.host}/private:2`]);
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(pushed.stdout).toContain(`2: digest: ${xDigest}`);

      // POST /auth's exact answers, which the CLI only paraphrases.
      const auth = (username: string, password: string) =>
        api('/auth', { method: 'POST', body: JSON.stringify({ username, password, serveraddress: secured.host }), headers: { 'content-type': 'application/json' } });
      const good = await auth('u', 'p');
      expect(good.status).toBe(200);
      expect(await good.json()).toEqual({ Status: 'Login Succeeded', IdentityToken: '' });
      const bad = await auth('u', 'wrong');
      expect(bad.status).toBe(401);
      expect(bad.headers.get('content-type')).toBe('application/json');
      expect(((await bad.json()) as { message: string }).message).toBe(`Get "http://${secured.host}/v2/": unauthorized: authentication required`);
    } finally {
      await secured.stop();
    }
  });

  it('passes an identity token from X-Registry-Auth to a bearer-token registry', async () => {
    const secured = await startRegistry({ tokenAuth: { user: 'bob', password: 'pw', refreshToken: 'refresh-me' } });
    try {
      await skopeo(['copy', '--quiet', '--dest-creds', 'bob:pw', `oci:${join(eng.root, 'layout')}:x`, `docker://${secured.host}/tok:1`]);
      const auth = Buffer.from(JSON.stringify({ identitytoken: 'refresh-me', serveraddress: secured.host })).toString('base64url');
      const res = await api(`/images/create?fromImage=${encodeURIComponent(`${secured.host}/tok`)}&tag=1`, { method: 'POST', headers: { 'X-Registry-Auth': auth } });
      expect(res.status).toBe(200);
      expect((await messages(res)).at(-2)).toEqual({ status: `Digest: ${xDigest}` });
      expect(secured.tokenServer!.requests.filter((r) => r.oauth)).toEqual([{ scopes: [`repository:tok:pull`], user: 'bob', oauth: true }]);

      // The next pull with the same credentials reuses the token; other credentials get their own.
      const tokensSoFar = secured.tokenServer!.requests.length;
      const again = await api(`/images/create?fromImage=${encodeURIComponent(`${secured.host}/tok`)}&tag=1`, { method: 'POST', headers: { 'X-Registry-Auth': auth } });
      expect((await messages(again)).at(-1)).toEqual({ status: `Status: Image is up to date for ${secured.host}/tok:1` });
      expect(secured.tokenServer!.requests).toHaveLength(tokensSoFar);
      const basic = Buffer.from(JSON.stringify({ username: 'bob', password: 'pw', serveraddress: secured.host })).toString('base64url');
      const other = await api(`/images/create?fromImage=${encodeURIComponent(`${secured.host}/tok`)}&tag=1`, { method: 'POST', headers: { 'X-Registry-Auth': basic } });
      expect(other.status).toBe(200);
      await messages(other);
      expect(secured.tokenServer!.requests).toHaveLength(tokensSoFar + 1);
    } finally {
      await secured.stop();
    }
  });
});
