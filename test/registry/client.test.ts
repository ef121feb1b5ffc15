import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStowageError } from '../../src/errors.js';
import { type Digest, digestHex } from '../../src/oci/digest.js';
import { parseTokenResponse, parseWwwAuthenticate, TokenCache } from '../../src/registry/auth.js';
import { RegistryClient, parseNextLink } from '../../src/registry/client.js';
import { shortId } from '../../src/oci/digest.js';
import { type PullProgressEvent, pullImage } from '../../src/registry/pull.js';
import { type PushProgressEvent, pushImage } from '../../src/registry/push.js';
import { type TestImageInfo, type TestIndexInfo, makeTestImage, pushTestImages, skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { freshStore } from '../harness/store.js';
import { collect } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** A layer blob file inside docker-registry's filesystem storage. */
function registryBlobPath(reg: TestRegistry, digest: Digest): string {
  const hex = digestHex(digest);
  return join(reg.storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
}

let reg: TestRegistry;
let layoutDir: string;
let img: TestImageInfo;
let multi: TestIndexInfo;

beforeAll(async () => {
  reg = await startRegistry();
  ({ layoutDir, img, multi } = await pushTestImages(reg.host, { layerBytes: 64 * 1024, platforms: ['linux/amd64', 'linux/arm64/v8'] }));
});

afterAll(async () => {
  await reg?.stop();
});

describe('RegistryClient against docker-registry', () => {
  it('pings, reads manifests and blobs, and maps missing things to stable codes', async () => {
    const client = new RegistryClient({ host: reg.host });
    expect(client.baseUrl).toBe(`http://${reg.host}`);
    await client.ping();

    const m = await client.getManifest('test/app', '1');
    expect(m.digest).toBe(img.manifestDigest);
    expect(m.bytes.equals(img.manifestBytes)).toBe(true);
    expect(m.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    const byDigest = await client.getManifest('test/app', img.manifestDigest);
    expect(byDigest.digest).toBe(img.manifestDigest);

    const head = await client.headManifest('test/app', '1');
    expect(head).toMatchObject({ digest: img.manifestDigest, size: img.manifestBytes.length });
    expect(await client.headManifest('test/app', 'nope')).toBeUndefined();

    const layer = img.layers[0]!;
    expect(await client.blobExists('test/app', layer.digest)).toBe(true);
    expect(await client.blobExists('test/app', `sha256:${'0'.repeat(64)}`)).toBe(false);

    expect(await rejection(client.getManifest('test/app', 'nope'))).toMatchObject({ code: 'MANIFEST_NOT_FOUND' });
    expect(await rejection(client.getBlob('test/app', `sha256:${'0'.repeat(64)}`))).toMatchObject({ code: 'BLOB_NOT_FOUND' });
    expect(await rejection(collect(client.tags('no/such/repo')))).toMatchObject({ code: 'IMAGE_NOT_FOUND' });
    expect(await rejection(client.getManifest('Bad/Name', '1'))).toMatchObject({ code: 'INVALID_REFERENCE' });
    expect(await rejection(client.getManifest('test/app', 'sha256:abc'))).toMatchObject({ code: 'INVALID_DIGEST' });
  });

  it('resumes a blob with Range', async () => {
    const client = new RegistryClient({ host: reg.host });
    const layer = img.layers[1]!;
    const whole = await readFile(join(layoutDir, 'blobs/sha256', digestHex(layer.digest)));
    const start = 1000;
    const tail = Buffer.concat(await collect((await client.getBlob('test/app', layer.digest, { start })) as AsyncIterable<Buffer>));
    expect(tail.equals(whole.subarray(start))).toBe(true);
  });

  it('pulls an image into a store, then reports every layer as already there', async () => {
    const { store, images } = await freshStore();
    const client = new RegistryClient({ host: reg.host });
    const events: PullProgressEvent[] = [];
    const res = await pullImage(client, `${reg.host}/test/app:1`, { store, images }, { onProgress: (e) => events.push(e) });
    expect(res).toMatchObject({ manifestDigest: img.manifestDigest, configDigest: img.configDigest, platform: { os: 'linux', architecture: 'amd64' } });
    expect(res.indexDigest).toBeUndefined();
    for (const l of img.layers) {
      expect(await store.has(l.digest)).toBe(true);
      const mine = events.filter((e) => e.id === shortId(l.digest)).map((e) => e.status);
      expect(mine[0]).toBe('Pulling fs layer');
      expect(mine).toContain('Downloading');
      expect(mine.at(-1)).toBe('Pull complete');
    }
    expect(await store.has(img.configDigest)).toBe(true);
    expect((await store.readBytes(img.manifestDigest)).equals(img.manifestBytes)).toBe(true);
    expect(images.resolveTag(`${reg.host}/test/app:1`)).toBe(img.manifestDigest);
    const rec = images.getImage(img.manifestDigest)!;
    expect(rec.layers).toEqual(img.layers.map((l) => l.digest));
    expect(rec.labels).toEqual({ 'org.example.test': 'yes' });
    expect(images.repoDigestsFor(img.manifestDigest)).toEqual([
      { repository: `${reg.host}/test/app`, digest: img.manifestDigest, manifestDigest: img.manifestDigest },
    ]);

    const again: PullProgressEvent[] = [];
    await pullImage(client, `${reg.host}/test/app:1`, { store, images }, { onProgress: (e) => again.push(e) });
    expect(again.map((e) => e.status)).toEqual(['Already exists', 'Already exists', 'Already exists']);
  });

  it('resumes an interrupted layer download from the ingest offset', async () => {
    const { store, images } = await freshStore();
    const client = new RegistryClient({ host: reg.host });
    const layer = img.layers[2]!;
    const whole = await readFile(join(layoutDir, 'blobs/sha256', digestHex(layer.digest)));
    const half = Math.floor(whole.length / 2);
    // A previous pull got half the layer before the connection dropped.
    const ingest = await store.openIngest(layer.digest);
    await ingest.write(Readable.from([whole.subarray(0, half)]));

    const events: PullProgressEvent[] = [];
    await pullImage(client, `${reg.host}/test/app:1`, { store, images }, { onProgress: (e) => events.push(e) });
    const first = events.find((e) => e.id === shortId(layer.digest) && e.status === 'Downloading');
    expect(first).toMatchObject({ current: half, total: whole.length });
    expect((await store.readBytes(layer.digest)).equals(whole)).toBe(true);
  });

  it('pulls one platform of a multi-platform index, then all of them', async () => {
    const { store, images } = await freshStore();
    const client = new RegistryClient({ host: reg.host });
    const [amd64, arm64] = multi.children as [TestImageInfo, TestImageInfo];
    const res = await pullImage(client, `${reg.host}/test/multi:1`, { store, images }, { platform: { os: 'linux', architecture: 'arm64' } });
    expect(res).toMatchObject({ manifestDigest: arm64.manifestDigest, configDigest: arm64.configDigest, indexDigest: multi.indexDigest });
    expect(res.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(images.getIndex(multi.indexDigest)?.children.map((c) => c.present)).toEqual([false, true]);
    expect(images.resolveTag(`${reg.host}/test/multi:1`)).toBe(multi.indexDigest);
    expect(await store.has(amd64.layers[0]!.digest)).toBe(false);
    expect((await store.readBytes(multi.indexDigest)).equals(multi.indexBytes)).toBe(true);

    expect(await rejection(pullImage(client, `${reg.host}/test/multi:1`, { store, images }, { platform: { os: 'linux', architecture: 's390x' } }))).toMatchObject({
      code: 'PLATFORM_NOT_FOUND',
    });

    const all = await pullImage(client, `${reg.host}/test/multi:1`, { store, images }, { pullAllPlatforms: true, platform: { os: 'linux', architecture: 'amd64' } });
    expect(all.manifestDigest).toBe(amd64.manifestDigest);
    expect(all.images.map((i) => i.manifestDigest)).toEqual([amd64.manifestDigest, arm64.manifestDigest]);
    expect(images.getIndex(multi.indexDigest)?.children.map((c) => c.present)).toEqual([true, true]);
  });

  it('pushes a stored image and index to other repositories, skipping and mounting blobs', async () => {
    const { store, images } = await freshStore();
    const client = new RegistryClient({ host: reg.host });
    await pullImage(client, `${reg.host}/test/app:1`, { store, images });

    const events: PushProgressEvent[] = [];
    const pushed = await pushImage(client, { store, images }, img.manifestDigest, 'test/copy', '2', { onProgress: (e) => events.push(e) });
    expect(pushed).toMatchObject({ digest: img.manifestDigest, size: img.manifestBytes.length });
    // Same registry, so the blobs are already known to it... but not linked into test/copy: they are uploaded.
    expect(events.filter((e) => e.status === 'Pushed').length).toBe(3);
    const raw = await skopeo(['inspect', '--raw', `docker://${reg.host}/test/copy:2`]);
    expect(Buffer.from(raw).equals(img.manifestBytes)).toBe(true);
    const inspected = JSON.parse(await skopeo(['inspect', `docker://${reg.host}/test/copy:2`])) as { Digest: string; Layers: string[] };
    expect(inspected.Digest).toBe(img.manifestDigest);
    expect(inspected.Layers).toEqual(img.layers.map((l) => l.digest));

    const again: PushProgressEvent[] = [];
    await pushImage(client, { store, images }, img.manifestDigest, 'test/copy', '3', { onProgress: (e) => again.push(e) });
    expect(again.filter((e) => e.status !== 'Preparing').map((e) => e.status)).toEqual(['Layer already exists', 'Layer already exists', 'Layer already exists']);

    const mounted: PushProgressEvent[] = [];
    await pushImage(client, { store, images }, img.manifestDigest, 'test/mounted', '1', { mountFrom: 'test/app', onProgress: (e) => mounted.push(e) });
    expect(mounted.filter((e) => e.status === 'Mounted from').length).toBe(3);
    expect(JSON.parse(await skopeo(['inspect', `docker://${reg.host}/test/mounted:1`])).Digest).toBe(img.manifestDigest);

    // A whole index: children first, then the index under the tag.
    await pullImage(client, `${reg.host}/test/multi:1`, { store, images }, { pullAllPlatforms: true });
    const idx = await pushImage(client, { store, images }, multi.indexDigest, 'test/multicopy', 'v1');
    expect(idx.manifests).toEqual(multi.children.map((c) => c.manifestDigest));
    const rawIdx = await skopeo(['inspect', '--raw', `docker://${reg.host}/test/multicopy:v1`]);
    expect(Buffer.from(rawIdx).equals(multi.indexBytes)).toBe(true);
  });

  it('refuses to push an index whose platform images are missing everywhere', async () => {
    const { store, images } = await freshStore();
    const client = new RegistryClient({ host: reg.host });
    await pullImage(client, `${reg.host}/test/multi:1`, { store, images }, { platform: { os: 'linux', architecture: 'amd64' } });
    expect(await rejection(pushImage(client, { store, images }, multi.indexDigest, 'test/partial', '1'))).toMatchObject({ code: 'PLATFORM_NOT_FOUND' });
    expect(await client.headManifest('test/partial', '1')).toBeUndefined();
    expect(await rejection(pushImage(client, { store, images }, `sha256:${'1'.repeat(64)}`, 'test/partial', '1'))).toMatchObject({ code: 'IMAGE_NOT_FOUND' });
  });

  it('uploads big blobs in PATCH chunks', async () => {
    const dir = await tmpDir();
    const big = await makeTestImage(dir, { layers: 2, layerBytes: 50_000, tag: 'x' });
    await skopeo(['copy', `oci:${dir}:x`, `docker://${reg.host}/test/chunksrc:1`]);
    const { store, images } = await freshStore();
    await pullImage(new RegistryClient({ host: reg.host }), `${reg.host}/test/chunksrc:1`, { store, images });

    // Another registry, so that nothing can be skipped; chunks that do not divide the blob size.
    const other = await startRegistry();
    try {
      const client = new RegistryClient({ host: other.host, chunkThreshold: 1000, chunkSize: 7001 });
      const sent: number[] = [];
      await pushImage(client, { store, images }, big.manifestDigest, 'test/chunked', '1', {
        onProgress: (e) => {
          if (e.status === 'Pushing' && e.current !== undefined) sent.push(e.current);
        },
      });
      expect(sent.at(-1)).toBeGreaterThan(50_000);
      const fresh = await freshStore();
      const back = await pullImage(new RegistryClient({ host: other.host }), `${other.host}/test/chunked:1`, fresh);
      expect(back.manifestDigest).toBe(big.manifestDigest);
      for (const l of big.layers) expect(await fresh.store.has(l.digest)).toBe(true);
    } finally {
      await other.stop();
    }
  });

  it('follows Link pagination for _catalog and tags/list', async () => {
    const client = new RegistryClient({ host: reg.host });
    for (const t of ['a', 'b', 'c']) await skopeo(['copy', `oci:${layoutDir}:x`, `docker://${reg.host}/test/paged:${t}`]);
    // The registry really pages the catalog with n=1 (distribution 2.8 does not page tags/list;
    // the agent's own /v2/ does, see routes.test.ts).
    const first = await request(`${reg.url}/v2/_catalog?n=1`);
    expect(first.headers['link']).toMatch(/rel="next"/);
    expect(((await first.body.json()) as { repositories: string[] }).repositories).toHaveLength(1);

    expect((await collect(client.tags('test/paged', { pageSize: 1 }))).sort()).toEqual(['a', 'b', 'c']);
    const repos = await collect(client.catalog({ pageSize: 1 }));
    expect(repos).toEqual(expect.arrayContaining(['test/app', 'test/multi', 'test/paged']));
    expect(new Set(repos).size).toBe(repos.length);
    expect(repos).toEqual(await collect(client.catalog()));
  });

  it('rejects a registry that serves bytes not matching the digest, leaving nothing visible', async () => {
    const dir = await tmpDir();
    const bad = await makeTestImage(dir, { layers: 2, layerBytes: 8192, tag: 'x' });
    await skopeo(['copy', `oci:${dir}:x`, `docker://${reg.host}/test/corrupt:1`]);
    // The peer's disk rots: same length, different bytes.
    const path = registryBlobPath(reg, bad.layers[1]!.digest);
    const data = await readFile(path);
    data[data.length - 10] = (data[data.length - 10] ?? 0) ^ 0xff;
    await writeFile(path, data);

    const { store, images } = await freshStore();
    const err = await rejection(pullImage(new RegistryClient({ host: reg.host }), `${reg.host}/test/corrupt:1`, { store, images }));
    expect(isStowageError(err, 'DIGEST_MISMATCH')).toBe(true);
    expect(await store.has(bad.layers[1]!.digest)).toBe(false);
    expect(await store.has(bad.manifestDigest)).toBe(false);
    expect(images.resolveTag(`${reg.host}/test/corrupt:1`)).toBeUndefined();
    expect(images.listImages()).toEqual([]);

    // A manifest whose bytes are not what the registry says they are.
    const mpath = registryBlobPath(reg, bad.manifestDigest);
    const m = await readFile(mpath);
    await writeFile(mpath, Buffer.from(m.toString('utf8').replace('"schemaVersion":2', '"schemaVersion": 2')));
    expect(await rejection(new RegistryClient({ host: reg.host }).getManifest('test/corrupt', '1'))).toMatchObject({ code: 'DIGEST_MISMATCH' });
  });
});

describe('basic auth (htpasswd)', () => {
  it('works with the right credentials and says UNAUTHORIZED otherwise', async () => {
    const secured = await startRegistry({ htpasswd: { user: 'alice', password: 's3cret' } });
    try {
      await skopeo(['copy', '--dest-creds', 'alice:s3cret', `oci:${layoutDir}:x`, `docker://${secured.host}/test/private:1`]);
      const good = new RegistryClient({ host: secured.host, credentials: { username: 'alice', password: 's3cret' } });
      await good.ping();
      const { store, images } = await freshStore();
      const res = await pullImage(good, `${secured.host}/test/private:1`, { store, images });
      expect(res.manifestDigest).toBe(img.manifestDigest);
      await pushImage(good, { store, images }, img.manifestDigest, 'test/private2', 'x');
      expect(await collect(good.catalog())).toEqual(['test/private', 'test/private2']);

      const wrong = new RegistryClient({ host: secured.host, credentials: { username: 'alice', password: 'nope' } });
      expect(await rejection(wrong.ping())).toMatchObject({ code: 'UNAUTHORIZED' });
      expect(await rejection(wrong.getManifest('test/private', '1'))).toMatchObject({ code: 'UNAUTHORIZED' });
      const anonymous = new RegistryClient({ host: secured.host });
      expect(await rejection(pullImage(anonymous, `${secured.host}/test/private:1`, await freshStore()))).toMatchObject({ code: 'UNAUTHORIZED' });
    } finally {
      await secured.stop();
    }
  });
});

describe('bearer token auth (token server + docker-registry)', () => {
  it('fetches a token per scope, caches it, and says UNAUTHORIZED for wrong or missing credentials', async () => {
    const secured = await startRegistry({ tokenAuth: { user: 'bob', password: 'pw' } });
    try {
      await skopeo(['copy', '--dest-creds', 'bob:pw', `oci:${layoutDir}:x`, `docker://${secured.host}/test/tok:1`]);
      const tokens = secured.tokenServer!;
      tokens.requests.length = 0;
      const client = new RegistryClient({ host: secured.host, credentials: { username: 'bob', password: 'pw' } });
      const { store, images } = await freshStore();
      const res = await pullImage(client, `${secured.host}/test/tok:1`, { store, images });
      expect(res.manifestDigest).toBe(img.manifestDigest);
      // One token for the whole pull: cached by scope.
      expect(tokens.requests).toEqual([{ scopes: ['repository:test/tok:pull'], user: 'bob' }]);

      tokens.requests.length = 0;
      await pushImage(client, { store, images }, img.manifestDigest, 'test/tok2', '1', { mountFrom: 'test/tok' });
      // Layers go up three at once; their concurrent 401s share one token request per scope set.
      // (The registry's challenge may name the actions in either order: "pull,push" or "push,pull".)
      const scopeSet = (scopes: string[]) => [...new Set(scopes.map((sc) => sc.replace(/[^:]+$/, (a) => a.split(',').sort().join(','))))].sort().join(' ');
      expect(tokens.requests.map((r) => scopeSet(r.scopes)).sort()).toEqual([
        'repository:test/tok2:pull',
        'repository:test/tok2:pull,push',
        'repository:test/tok2:pull,push repository:test/tok:pull',
      ]);
      expect(JSON.parse(await skopeo(['inspect', '--creds', 'bob:pw', `docker://${secured.host}/test/tok2:1`])).Digest).toBe(img.manifestDigest);
      expect(await collect(client.catalog())).toEqual(['test/tok', 'test/tok2']);

      const wrong = new RegistryClient({ host: secured.host, credentials: { username: 'bob', password: 'nope' } });
      expect(await rejection(wrong.getManifest('test/tok', '1'))).toMatchObject({ code: 'UNAUTHORIZED' });
      // Anonymous: the token server hands out a token without access; the registry still says no.
      const anonymous = new RegistryClient({ host: secured.host });
      expect(await rejection(anonymous.getManifest('test/tok', '1'))).toMatchObject({ code: 'UNAUTHORIZED' });
    } finally {
      await secured.stop();
    }
  });
});

describe('identity and registry tokens (Docker\'s identitytoken / registrytoken)', () => {
  it('exchanges an identity token with an OAuth2 POST, falls back to Basic without OAuth, and sends a registry token as is', async () => {
    const oauth = await startRegistry({ tokenAuth: { user: 'bob', password: 'pw', refreshToken: 'refresh-me' } });
    try {
      await skopeo(['copy', '--dest-creds', 'bob:pw', `oci:${layoutDir}:x`, `docker://${oauth.host}/test/oauth:1`]);
      const tokens = oauth.tokenServer!;
      tokens.requests.length = 0;
      const client = new RegistryClient({ host: oauth.host, credentials: { username: '', password: '', identityToken: 'refresh-me' } });
      expect((await client.getManifest('test/oauth', '1')).digest).toBe(img.manifestDigest);
      expect(tokens.requests).toEqual([{ scopes: ['repository:test/oauth:pull'], user: 'bob', oauth: true }]);
      const stale = new RegistryClient({ host: oauth.host, credentials: { username: '', password: '', identityToken: 'stale' } });
      expect(await rejection(stale.getManifest('test/oauth', '1'))).toMatchObject({ code: 'UNAUTHORIZED' });

      // A token obtained elsewhere goes out as is: no token request at all.
      const got = await request(`${tokens.realm}?service=${tokens.service}&scope=repository:test/oauth:pull`, {
        headers: { authorization: `Basic ${Buffer.from('bob:pw').toString('base64')}` },
      });
      const { token } = (await got.body.json()) as { token: string };
      tokens.requests.length = 0;
      const passThrough = new RegistryClient({ host: oauth.host, credentials: { username: '', password: '', registryToken: token } });
      expect((await passThrough.getManifest('test/oauth', '1')).digest).toBe(img.manifestDigest);
      expect(tokens.requests).toEqual([]);
    } finally {
      await oauth.stop();
    }

    const noOauth = await startRegistry({ tokenAuth: { user: 'bob', password: 'pw' } });
    try {
      await skopeo(['copy', '--dest-creds', 'bob:pw', `oci:${layoutDir}:x`, `docker://${noOauth.host}/test/basic:1`]);
      noOauth.tokenServer!.requests.length = 0;
      const client = new RegistryClient({ host: noOauth.host, credentials: { username: 'bob', password: 'pw', identityToken: 'unknown-here' } });
      expect((await client.getManifest('test/basic', '1')).digest).toBe(img.manifestDigest);
      expect(noOauth.tokenServer!.requests).toEqual([{ scopes: ['repository:test/basic:pull'], user: 'bob' }]);
    } finally {
      await noOauth.stop();
    }
  });
});

describe('auth helpers', () => {
  it('parses WWW-Authenticate challenges with quoted commas and several schemes', () => {
    expect(
      parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push"'),
    ).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/alpine:pull,push' } },
    ]);
    expect(parseWwwAuthenticate('Basic realm="a \\"b\\"", Bearer realm=https://x/t, error="insufficient_scope"')).toEqual([
      { scheme: 'basic', params: { realm: 'a "b"' } },
      { scheme: 'bearer', params: { realm: 'https://x/t', error: 'insufficient_scope' } },
    ]);
    expect(parseWwwAuthenticate(undefined)).toEqual([]);
    expect(parseWwwAuthenticate('Negotiate abc==')).toEqual([{ scheme: 'negotiate', params: { token68: 'abc==' } }]);
  });

  it('caches tokens per scope set until they expire', () => {
    const cache = new TokenCache();
    cache.set(['repository:a:pull', 'repository:b:pull'], 't1', 60, 1_000_000);
    expect(cache.get(['repository:b:pull', 'repository:a:pull'], 1_000_000 + 10_000)).toBe('t1');
    expect(cache.get(['repository:a:pull'], 1_000_000)).toBeUndefined();
    expect(cache.get(['repository:a:pull', 'repository:b:pull'], 1_000_000 + 60_000)).toBeUndefined();
    expect(parseTokenResponse({ access_token: 'x', expires_in: 300 })).toEqual({ token: 'x', expiresIn: 300 });
    expect(parseTokenResponse({ token: 'y' })).toEqual({ token: 'y', expiresIn: undefined });
    expect(parseTokenResponse({})).toBeUndefined();
  });

  it('finds the next page in a Link header', () => {
    expect(parseNextLink('</v2/_catalog?last=b&n=1>; rel="next"')).toBe('/v2/_catalog?last=b&n=1');
    expect(parseNextLink('<https://r/a>; rel="prev", <https://r/b>; rel=next')).toBe('https://r/b');
    expect(parseNextLink(undefined)).toBeUndefined();
  });

  it('talks HTTPS to remote hosts, HTTP to loopback and insecure ones', () => {
    expect(new RegistryClient({ host: 'docker.io' }).baseUrl).toBe('https://registry-1.docker.io');
    expect(new RegistryClient({ host: 'localhost:5000' }).baseUrl).toBe('http://localhost:5000');
    expect(new RegistryClient({ host: '[::1]:5000' }).baseUrl).toBe('http://[::1]:5000');
    expect(new RegistryClient({ host: 'reg.lan:5000', insecure: (h) => h === 'reg.lan:5000' }).baseUrl).toBe('http://reg.lan:5000');
    expect(new RegistryClient({ host: 'docker.io' }).repoPath('alpine')).toBe('library/alpine');
  });
});
