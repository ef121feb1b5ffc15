import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintPeerToken, newSecret } from '../../src/control/peer-token.js';
import { type Digest, digestHex, digestOf } from '../../src/oci/digest.js';
import { MAX_MANIFEST_BYTES, MediaType } from '../../src/oci/media-types.js';
import { RegistryClient } from '../../src/registry/client.js';
import { peerAuthorizer } from '../../src/registry/peer-auth.js';
import { pullImage } from '../../src/registry/pull.js';
import { type PushProgressEvent, pushImage } from '../../src/registry/push.js';
import { registryRoutes } from '../../src/registry/routes.js';
import type { RegistryRoutesOptions } from '../../src/registry/routes.js';
import { ContentStore } from '../../src/store/content-store.js';
import { collectGarbage, deleteUnreferenced } from '../../src/store/gc.js';
import { importOciLayoutDir } from '../../src/store/import-archive.js';
import type { ContentStoreApi } from '../../src/store/types.js';
import { type TestImageInfo, makeImageTar, makeMultiPlatformLayout, makeTestImage, skopeo } from '../harness/images.js';
import { type FreshStore, freshStore, ingestEntries, storeSnapshot } from '../harness/store.js';
import { pseudoRandom } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The agent's /v2/ with authentication and pushes (upload-routes.ts): real skopeo, our RegistryClient and
 * pushImage, undici for the bad input, over a real store, authorised by real peer tokens.
 */

const MACHINE = 'm-upload-test';
const secret = newSecret('sms_');
const hour = () => Math.floor(Date.now() / 1000) + 3600;
const pushToken = mintPeerToken(secret, { m: MACHINE, s: 'push', t: true, exp: hour() });
/** A push token without the right to move tags: what stowctl's upload grants carry. */
const untaggedPushToken = mintPeerToken(secret, { m: MACHINE, s: 'push', exp: hour() });
const pullToken = mintPeerToken(secret, { m: MACHINE, s: 'pull', exp: hour() });

const basic = (token: string) => `Basic ${Buffer.from(`x:${token}`).toString('base64')}`;
const PUSH = { authorization: basic(pushToken) };
const PULL = { authorization: basic(pullToken) };

interface Served {
  app: FastifyInstance;
  base: string;
  host: string;
  /** "METHOD path" of every request, to see which upload path a client took. */
  log: string[];
}

async function serve(fresh: FreshStore, extra: Partial<RegistryRoutesOptions> = {}): Promise<Served> {
  const app = Fastify({ logger: false });
  const log: string[] = [];
  app.addHook('onRequest', async (req) => {
    log.push(`${req.method} ${req.url.split('?')[0]}`);
  });
  await app.register(registryRoutes, { store: fresh.store, images: fresh.images, authorize: peerAuthorizer(MACHINE, secret), ...extra });
  const base = await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, base, host: new URL(base).host, log };
}

async function errorCode(res: Awaited<ReturnType<typeof request>>): Promise<string | undefined> {
  const body = (await res.body.json()) as { errors?: Array<{ code: string }> };
  return body.errors?.[0]?.code;
}

let agent: FreshStore;
let srv: Served;
let layoutDir: string;
let img: TestImageInfo;

beforeAll(async () => {
  agent = await freshStore();
  srv = await serve(agent);
  layoutDir = await tmpDir();
  img = await makeTestImage(layoutDir, { layers: 2, layerBytes: 8 * 1024, tag: 'x', labels: { 'org.example.pushed': 'yes' } });
});

afterAll(async () => {
  await srv?.app.close();
  agent?.close();
});

describe('authenticated /v2/ pushes with real clients', () => {
  it('takes a skopeo copy with a push token and serves it back unchanged, tagged by the name rule', async () => {
    await skopeo(['copy', '--dest-creds', `x:${pushToken}`, `oci:${layoutDir}:x`, `docker://${srv.host}/library/alpine:3.19`]);

    // Rule 1: library/alpine:3.19 is docker.io/library/alpine:3.19 (what `docker images` shows as alpine:3.19).
    expect(agent.images.resolveTag('docker.io/library/alpine:3.19')).toBe(img.manifestDigest);
    const rec = agent.images.getImage(img.manifestDigest)!;
    expect(rec.configDigest).toBe(img.configDigest);
    expect(rec.platform).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(rec.labels).toEqual({ 'org.example.pushed': 'yes' });
    expect(rec.created).toBe('2024-01-02T03:04:05Z');
    expect(rec.size).toBe(img.manifestSize + img.configSize + img.layers.reduce((n, l) => n + l.size, 0));
    expect(agent.images.repoDigestsFor(img.manifestDigest)).toEqual([
      { repository: 'docker.io/library/alpine', digest: img.manifestDigest, manifestDigest: img.manifestDigest },
    ]);

    // Read back with a pull token: skopeo sees the same digest, and the bytes are the ones pushed.
    const inspected = JSON.parse(await skopeo(['inspect', '--creds', `x:${pullToken}`, `docker://${srv.host}/alpine:3.19`])) as { Digest: string };
    expect(inspected.Digest).toBe(img.manifestDigest);
    const client = new RegistryClient({ host: srv.host, credentials: { username: 'peer', password: pullToken } });
    const m = await client.getManifest('library/alpine', '3.19');
    expect(m.bytes.equals(img.manifestBytes)).toBe(true);
    // A peer pulls it with credentials (agent to agent).
    const peer = await freshStore();
    const pulled = await pullImage(client, `${srv.host}/library/alpine:3.19`, peer);
    expect(pulled.manifestDigest).toBe(img.manifestDigest);
    for (const l of img.layers) {
      const original = await readFile(join(layoutDir, 'blobs/sha256', digestHex(l.digest)));
      expect((await peer.store.readBytes(l.digest)).equals(original)).toBe(true);
    }
    peer.close();
  });

  it('takes a Docker schema2 image (skopeo from a docker save archive)', async () => {
    const { tar, image } = await makeImageTar('saved/app:1');
    await skopeo(['copy', '--dest-creds', `x:${pushToken}`, `docker-archive:${tar}`, `docker://${srv.host}/saved/app:1`]);
    const digest = agent.images.resolveTag('docker.io/saved/app:1')!;
    expect(digest).toBeDefined();
    const rec = agent.images.getImage(digest)!;
    expect(rec.manifestMediaType).toBe(MediaType.DockerManifest);
    expect(rec.configDigest).toBe(image.configDigest); // the Docker image ID survives the trip
    const inspected = JSON.parse(await skopeo(['inspect', '--creds', `x:${pullToken}`, `docker://${srv.host}/saved/app:1`])) as { Digest: string };
    expect(inspected.Digest).toBe(digest);
  });

  it('takes a multi-platform index from skopeo --all, recording the index and its children', async () => {
    const dir = await tmpDir();
    const multi = await makeMultiPlatformLayout(dir, ['linux/amd64', 'linux/arm64/v8'], { tag: 'x' });
    await skopeo(['copy', '--all', '--dest-creds', `x:${pushToken}`, `oci:${dir}:x`, `docker://${srv.host}/team/multi:1`]);
    expect(agent.images.resolveTag('docker.io/team/multi:1')).toBe(multi.indexDigest);
    const index = agent.images.getIndex(multi.indexDigest)!;
    expect(index.children.map((c) => [c.digest, c.present, c.platform])).toEqual([
      [multi.children[0]!.manifestDigest, true, { os: 'linux', architecture: 'amd64' }],
      [multi.children[1]!.manifestDigest, true, { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ]);
    expect(agent.images.getImage(multi.children[1]!.manifestDigest)?.platform).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });
    const raw = await skopeo(['inspect', '--raw', '--creds', `x:${pullToken}`, `docker://${srv.host}/team/multi:1`]);
    expect(Buffer.from(raw).equals(multi.indexBytes)).toBe(true);
  });

  it('takes a push from RegistryClient + pushImage, chunked above the threshold, and only the missing blobs the second time', async () => {
    // The source: another machine's store holding an image with a layer well above the chunk threshold.
    const dir = await tmpDir();
    const big = await makeTestImage(dir, { layers: 2, layerBytes: 300 * 1024, tag: 'x' });
    const source = await freshStore();
    await importOciLayoutDir(dir, source);
    const threshold = 64 * 1024;
    expect(big.layers.every((l) => l.size > threshold)).toBe(true);

    const client = new RegistryClient({
      host: srv.host,
      credentials: { username: 'stowctl', password: pushToken },
      chunkThreshold: threshold,
      chunkSize: 100 * 1024,
    });
    const events: PushProgressEvent[] = [];
    srv.log.length = 0;
    const first = await pushImage(client, source, big.manifestDigest, 'team/app', 'v1', { onProgress: (e) => events.push(e) });
    expect(first.digest).toBe(big.manifestDigest);
    // Each layer went in PATCH chunks of at most 100 KiB, so at least 3 per layer.
    const patches = srv.log.filter((l) => l.startsWith('PATCH /v2/team/app/blobs/uploads/'));
    expect(patches.length).toBeGreaterThanOrEqual(6);
    expect(events.filter((e) => e.status === 'Pushed')).toHaveLength(2);
    expect(agent.images.resolveTag('docker.io/team/app:v1')).toBe(big.manifestDigest);
    for (const l of big.layers) expect((await agent.store.stat(l.digest))?.size).toBe(l.size);

    // Again, under another tag: every layer is already there and no upload starts.
    events.length = 0;
    srv.log.length = 0;
    await pushImage(client, source, big.manifestDigest, 'team/app', 'v2', { onProgress: (e) => events.push(e) });
    expect(events.filter((e) => e.status === 'Layer already exists')).toHaveLength(2);
    expect(srv.log.filter((l) => l.startsWith('POST') || l.startsWith('PATCH'))).toEqual([]);
    expect(agent.images.resolveTag('docker.io/team/app:v2')).toBe(big.manifestDigest);
    source.close();
  });
});

describe('authenticated /v2/: the upload protocol', () => {
  const blobUrl = (name: string) => `${srv.base}/v2/${name}/blobs/uploads/`;

  it('accepts Bearer tokens too, reports progress, and cancels', async () => {
    const bearer = { authorization: `Bearer ${pushToken}` };
    const started = await request(blobUrl('team/x'), { method: 'POST', headers: bearer });
    expect(started.statusCode).toBe(202);
    await started.body.dump();
    const location = started.headers['location'] as string;
    expect(location).toMatch(/^\/v2\/team\/x\/blobs\/uploads\/[0-9a-f-]{36}$/);
    expect(started.headers['docker-upload-uuid']).toBe(location.split('/').pop());
    expect(started.headers['range']).toBe('0-0');

    const data = pseudoRandom(1000);
    const patched = await request(`${srv.base}${location}`, { method: 'PATCH', headers: { ...bearer, 'content-range': '0-999', 'content-type': 'application/octet-stream' }, body: data });
    expect(patched.statusCode).toBe(202);
    expect(patched.headers['range']).toBe('0-999');
    await patched.body.dump();

    // Reading an upload's state needs the push scope.
    const asPull = await request(`${srv.base}${location}`, { headers: PULL });
    expect(asPull.statusCode).toBe(401);
    await asPull.body.dump();
    const status = await request(`${srv.base}${location}`, { headers: bearer });
    expect(status.statusCode).toBe(204);
    expect(status.headers['range']).toBe('0-999');
    await status.body.dump();

    const ingestsBefore = (await ingestEntries(agent.store.root)).length;
    const cancelled = await request(`${srv.base}${location}`, { method: 'DELETE', headers: bearer });
    expect(cancelled.statusCode).toBe(204);
    await cancelled.body.dump();
    expect((await ingestEntries(agent.store.root)).length).toBe(ingestsBefore - 1);
    const gone = await request(`${srv.base}${location}`, { headers: bearer });
    expect(gone.statusCode).toBe(404);
    expect(await errorCode(gone)).toBe('BLOB_UPLOAD_UNKNOWN');
    expect(await agent.store.has(digestOf(data))).toBe(false);
  });

  it('takes a monolithic POST ?digest= and a final PUT with a body, and mounts blobs it holds', async () => {
    const a = pseudoRandom(5000, 1);
    const mono = await request(`${blobUrl('team/y')}?digest=${digestOf(a)}`, { method: 'POST', headers: { ...PUSH, 'content-type': 'application/octet-stream' }, body: a });
    expect(mono.statusCode).toBe(201);
    expect(mono.headers['location']).toBe(`/v2/team/y/blobs/${digestOf(a)}`);
    expect(mono.headers['docker-content-digest']).toBe(digestOf(a));
    await mono.body.dump();
    expect((await agent.store.readBytes(digestOf(a))).equals(a)).toBe(true);

    const b = pseudoRandom(3000, 2);
    const started = await request(blobUrl('team/y'), { method: 'POST', headers: PUSH });
    await started.body.dump();
    const loc = `${srv.base}${started.headers['location'] as string}`;
    const p1 = await request(loc, { method: 'PATCH', headers: PUSH, body: b.subarray(0, 1000) });
    expect(p1.statusCode).toBe(202);
    await p1.body.dump();
    const put = await request(`${loc}?digest=${digestOf(b)}`, { method: 'PUT', headers: { ...PUSH, 'content-type': 'application/octet-stream' }, body: b.subarray(1000) });
    expect(put.statusCode).toBe(201);
    expect(put.headers['docker-content-digest']).toBe(digestOf(b));
    await put.body.dump();
    expect((await agent.store.readBytes(digestOf(b))).equals(b)).toBe(true);

    const mounted = await request(`${blobUrl('other/repo')}?mount=${digestOf(a)}&from=team/y`, { method: 'POST', headers: PUSH });
    expect(mounted.statusCode).toBe(201);
    expect(mounted.headers['location']).toBe(`/v2/other/repo/blobs/${digestOf(a)}`);
    await mounted.body.dump();
    const notHeld = await request(`${blobUrl('other/repo')}?mount=sha256:${'1'.repeat(64)}&from=team/y`, { method: 'POST', headers: PUSH });
    expect(notHeld.statusCode).toBe(202);
    await notHeld.body.dump();
    const cancel = await request(`${srv.base}${notHeld.headers['location'] as string}`, { method: 'DELETE', headers: PUSH });
    await cancel.body.dump();
  });

  it('records an index whose children it lacks as not present', async () => {
    const child = digestOf('not here');
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [{ mediaType: MediaType.OciManifest, digest: child, size: 8, platform: { os: 'linux', architecture: 's390x' } }],
      }),
    );
    const res = await request(`${srv.base}/v2/team/partial/manifests/1`, { method: 'PUT', headers: { ...PUSH, 'content-type': MediaType.OciIndex }, body: bytes });
    expect(res.statusCode).toBe(201);
    await res.body.dump();
    expect(agent.images.getIndex(digestOf(bytes))?.children).toEqual([{ digest: child, platform: { os: 'linux', architecture: 's390x' }, present: false }]);
    expect(agent.images.resolveTag('docker.io/team/partial:1')).toBe(digestOf(bytes));
  });
});

describe('authenticated /v2/: manifest PUT and deleters', () => {
  it('leases the blobs it found until the records are written, so a delete in between takes nothing', async () => {
    const fresh = await freshStore();
    // Uploaded blobs no record names yet: exactly what a deleter would take.
    const layer = await fresh.store.putBytes(pseudoRandom(2000, 7));
    const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf('diff')] } }));
    const config = await fresh.store.putBytes(configBytes);
    const deletedMidway: unknown[] = [];
    // The manifest PUT reads the config once it has found every blob: a delete runs right then.
    const wrapped = new Proxy(fresh.store, {
      get(target, prop, receiver) {
        if (prop === 'readBytes') {
          return async (d: Digest, limit?: number) => {
            if (d === config.digest) deletedMidway.push(...(await deleteUnreferenced(target, fresh.images, [layer, config])));
            return target.readBytes(d, limit);
          };
        }
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    }) as ContentStoreApi;
    const served = await serve({ ...fresh, store: wrapped });
    try {
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MediaType.OciManifest,
          config: { mediaType: MediaType.OciConfig, ...config },
          layers: [{ mediaType: MediaType.OciLayerGzip, ...layer }],
        }),
      );
      const res = await request(`${served.base}/v2/team/leased/manifests/1`, { method: 'PUT', headers: { ...PUSH, 'content-type': MediaType.OciManifest }, body: manifest });
      expect(res.statusCode).toBe(201);
      expect(res.headers['docker-content-digest']).toBe(digestOf(manifest));
      await res.body.dump();
      expect(deletedMidway).toEqual([]);
      expect(await fresh.store.has(layer.digest)).toBe(true);
      // Recorded now: a full collection keeps every blob of the image.
      if (!(fresh.store instanceof ContentStore)) throw new Error('freshStore opens a ContentStore');
      const gc = await collectGarbage(fresh.store, fresh.images, { graceMs: 0 });
      expect(gc.removed).toEqual([]);
      expect(fresh.images.resolveTag('docker.io/team/leased:1')).toBe(digestOf(manifest));
    } finally {
      await served.app.close();
      fresh.close();
    }
  });
});

describe('authenticated /v2/: bad input changes nothing', () => {
  it('refuses requests without a valid token for the scope with 401 and a Basic challenge', async () => {
    const expired = mintPeerToken(secret, { m: MACHINE, s: 'push', exp: Math.floor(Date.now() / 1000) - 1 });
    const otherMachine = mintPeerToken(secret, { m: 'm-other', s: 'push', exp: hour() });
    const otherSecret = mintPeerToken(newSecret('sms_'), { m: MACHINE, s: 'push', exp: hour() });
    const before = await storeSnapshot(agent);
    const cases: Array<[string, 'GET' | 'POST' | 'PUT', string, Record<string, string>]> = [
      ['no credentials, version check', 'GET', '/v2/', {}],
      ['no credentials, read', 'GET', `/v2/library/alpine/manifests/3.19`, {}],
      ['no credentials, write', 'POST', '/v2/team/z/blobs/uploads/', {}],
      ['pull token on a write', 'POST', '/v2/team/z/blobs/uploads/', PULL],
      ['pull token on a manifest PUT', 'PUT', '/v2/team/z/manifests/1', PULL],
      ['push token without tag rights on a tag PUT', 'PUT', '/v2/library/alpine/manifests/latest', { authorization: basic(untaggedPushToken) }],
      ['token for another machine', 'GET', '/v2/', { authorization: basic(otherMachine) }],
      ['expired token', 'POST', '/v2/team/z/blobs/uploads/', { authorization: basic(expired) }],
      ['token signed with another secret', 'GET', '/v2/', { authorization: `Bearer ${otherSecret}` }],
      ['garbage', 'GET', '/v2/', { authorization: 'Basic !!!' }],
    ];
    for (const [what, method, path, headers] of cases) {
      const res = await request(`${srv.base}${path}`, { method, headers: { ...headers, 'content-type': 'application/json' }, body: method === 'GET' ? null : '{"a":1}' });
      expect(res.statusCode, what).toBe(401);
      expect(res.headers['www-authenticate'], what).toBe('Basic realm="stowage"');
      expect(await errorCode(res), what).toBe('UNAUTHORIZED');
    }
    expect(await storeSnapshot(agent)).toEqual(before);
    // A push token without tag rights still uploads: manifests by digest are content-addressed.
    const upload = await request(`${srv.base}/v2/team/z/blobs/uploads/`, { method: 'POST', headers: { authorization: basic(untaggedPushToken) } });
    expect(upload.statusCode).toBe(202);
    await upload.body.dump();
    // The same reads succeed with a pull token.
    const ok = await request(`${srv.base}/v2/`, { headers: PULL });
    expect(ok.statusCode).toBe(200);
    await ok.body.dump();
  });

  it('refuses a blob whose bytes do not match the digest, leaving nothing behind', async () => {
    const before = await storeSnapshot(agent);
    const data = pseudoRandom(4096, 3);
    const wrong = digestOf('something else');

    const started = await request(`${srv.base}/v2/team/bad/blobs/uploads/`, { method: 'POST', headers: PUSH });
    await started.body.dump();
    const loc = `${srv.base}${started.headers['location'] as string}`;
    const patched = await request(loc, { method: 'PATCH', headers: PUSH, body: data });
    await patched.body.dump();
    const put = await request(`${loc}?digest=${wrong}`, { method: 'PUT', headers: PUSH });
    expect(put.statusCode).toBe(400);
    expect(await errorCode(put)).toBe('DIGEST_INVALID');
    expect(await agent.store.has(digestOf(data))).toBe(false);
    expect(await agent.store.has(wrong)).toBe(false);
    // The upload is over: its bytes are gone and it cannot be finished with the right digest either.
    const retry = await request(`${loc}?digest=${digestOf(data)}`, { method: 'PUT', headers: PUSH });
    expect(retry.statusCode).toBe(404);
    await retry.body.dump();

    const mono = await request(`${srv.base}/v2/team/bad/blobs/uploads/?digest=${wrong}`, { method: 'POST', headers: PUSH, body: data });
    expect(mono.statusCode).toBe(400);
    expect(await errorCode(mono)).toBe('DIGEST_INVALID');

    const noDigest = await request(`${srv.base}/v2/team/bad/blobs/uploads/?digest=md5:abc`, { method: 'POST', headers: PUSH, body: data });
    expect(noDigest.statusCode).toBe(400);
    await noDigest.body.dump();
    expect(await storeSnapshot(agent)).toEqual(before);
  });

  it('answers a PATCH at the wrong offset with 416 and the current range', async () => {
    const started = await request(`${srv.base}/v2/team/off/blobs/uploads/`, { method: 'POST', headers: PUSH });
    await started.body.dump();
    const loc = `${srv.base}${started.headers['location'] as string}`;
    const first = await request(loc, { method: 'PATCH', headers: { ...PUSH, 'content-range': '0-99' }, body: pseudoRandom(100) });
    expect(first.statusCode).toBe(202);
    await first.body.dump();
    for (const range of ['0-99', '200-299', '100-50', 'nonsense']) {
      const res = await request(loc, { method: 'PATCH', headers: { ...PUSH, 'content-range': range }, body: pseudoRandom(100) });
      expect(res.statusCode, range).toBe(416);
      expect(res.headers['range'], range).toBe('0-99');
      expect(await errorCode(res)).toBe('RANGE_INVALID');
    }
    // A length that disagrees with the range.
    const short = await request(loc, { method: 'PATCH', headers: { ...PUSH, 'content-range': '100-199' }, body: pseudoRandom(50) });
    expect(short.statusCode).toBe(416);
    await short.body.dump();
    const status = await request(loc, { headers: PUSH });
    expect(status.headers['range']).toBe('0-99');
    await status.body.dump();
    const cancel = await request(loc, { method: 'DELETE', headers: PUSH });
    await cancel.body.dump();
  });

  it('refuses a manifest naming a blob it lacks, a wrong digest, and an oversized one, recording nothing', async () => {
    const before = await storeSnapshot(agent);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [digestOf('x')] } }));
    const held = await request(`${srv.base}/v2/team/m/blobs/uploads/?digest=${digestOf(config)}`, { method: 'POST', headers: PUSH, body: config });
    await held.body.dump();
    const afterConfig = await storeSnapshot(agent);
    const missingLayer = digestOf('a layer nobody uploaded');
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, digest: digestOf(config), size: config.length },
        layers: [{ mediaType: MediaType.OciLayerGzip, digest: missingLayer, size: 23 }],
      }),
    );
    const put = (ref: string, body: Buffer | Readable, headers: Record<string, string> = {}) =>
      request(`${srv.base}/v2/team/m/manifests/${ref}`, { method: 'PUT', headers: { ...PUSH, 'content-type': MediaType.OciManifest, ...headers }, body });

    const missing = await put('1', manifest);
    expect(missing.statusCode).toBe(400);
    expect(await errorCode(missing)).toBe('MANIFEST_BLOB_UNKNOWN');

    const wrongDigest = await put(digestOf('other'), manifest);
    expect(wrongDigest.statusCode).toBe(400);
    expect(await errorCode(wrongDigest)).toBe('DIGEST_INVALID');

    const notJson = await put('1', Buffer.from('{not json'));
    expect(notJson.statusCode).toBe(400);
    expect(await errorCode(notJson)).toBe('MANIFEST_INVALID');

    // A config size that disagrees with the blob.
    const lying = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: digestOf(config), size: 1 }, layers: [] }),
    );
    const lied = await put('1', lying);
    expect(lied.statusCode).toBe(400);
    expect(await errorCode(lied)).toBe('MANIFEST_INVALID');

    const huge = Buffer.alloc(MAX_MANIFEST_BYTES + 1, 0x20);
    const tooBig = await put('1', huge);
    expect(tooBig.statusCode).toBe(413);
    expect(await errorCode(tooBig)).toBe('SIZE_INVALID');
    // Without a Content-Length (chunked), the limit is found while reading.
    const tooBigChunked = await put('1', Readable.from([huge.subarray(0, 3_000_000), huge.subarray(3_000_000)]));
    expect(tooBigChunked.statusCode).toBe(413);
    await tooBigChunked.body.dump();

    const badTag = await put('-bad', manifest);
    expect(badTag.statusCode).toBe(400);
    expect(await errorCode(badTag)).toBe('TAG_INVALID');

    expect(await storeSnapshot(agent)).toEqual(afterConfig);
    expect(afterConfig.images).toEqual(before.images);
    expect(afterConfig.tags).toEqual(before.tags);
    expect(agent.images.resolveTag('docker.io/team/m:1')).toBeUndefined();
  });

  it('refuses a blob above the size limit and drops its upload', async () => {
    const fresh = await freshStore();
    const small = await serve(fresh, { maxBlobBytes: 1000 });
    try {
      const mono = await request(`${small.base}/v2/team/big/blobs/uploads/?digest=${digestOf(pseudoRandom(2000))}`, { method: 'POST', headers: PUSH, body: pseudoRandom(2000) });
      expect(mono.statusCode).toBe(413);
      expect(await errorCode(mono)).toBe('SIZE_INVALID');
      const started = await request(`${small.base}/v2/team/big/blobs/uploads/`, { method: 'POST', headers: PUSH });
      await started.body.dump();
      const loc = `${small.base}${started.headers['location'] as string}`;
      const ok = await request(loc, { method: 'PATCH', headers: PUSH, body: pseudoRandom(600) });
      expect(ok.statusCode).toBe(202);
      await ok.body.dump();
      const over = await request(loc, { method: 'PATCH', headers: PUSH, body: pseudoRandom(600) });
      expect(over.statusCode).toBe(413);
      expect(await errorCode(over)).toBe('SIZE_INVALID');
      const gone = await request(loc, { headers: PUSH });
      expect(gone.statusCode).toBe(404);
      await gone.body.dump();
      expect(await storeSnapshot(fresh)).toEqual({ blobs: [], ingests: [], images: [], indexes: [], tags: [] });
    } finally {
      await small.app.close();
      fresh.close();
    }
  });

  it('bounds the open uploads and expires idle ones, aborting their ingests', async () => {
    const fresh = await freshStore();
    // A clock of the test's own: expiry happens when the test moves it, never because the machine was slow.
    let clock = 1_000_000;
    const small = await serve(fresh, { uploads: { maxSessions: 2, idleMs: 60_000, now: () => clock } });
    try {
      const start = () => request(`${small.base}/v2/team/s/blobs/uploads/`, { method: 'POST', headers: PUSH });
      for (let i = 0; i < 2; i++) {
        const res = await start();
        expect(res.statusCode).toBe(202);
        await res.body.dump();
      }
      expect(await ingestEntries(fresh.store.root)).toHaveLength(2);
      const refused = await start();
      expect(refused.statusCode).toBe(429);
      expect(await errorCode(refused)).toBe('TOOMANYREQUESTS');
      clock += 60_001;
      const later = await start();
      expect(later.statusCode).toBe(202);
      await later.body.dump();
      // The two idle ones were aborted: only the new upload's ingest is left.
      expect(await ingestEntries(fresh.store.root)).toHaveLength(1);
    } finally {
      await small.app.close();
    }
    // Closing the endpoint aborts what is still open.
    expect(await ingestEntries(fresh.store.root)).toHaveLength(0);
    fresh.close();
  });
});

describe('anonymous /v2/ (no authorize)', () => {
  it('stays read-only: writes are 405 and nothing is stored', async () => {
    const fresh = await freshStore();
    const app = Fastify({ logger: false });
    await app.register(registryRoutes, { store: fresh.store, images: fresh.images });
    const base = await app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const data = pseudoRandom(100);
      const d: Digest = digestOf(data);
      const writes: Array<[string, string]> = [
        ['POST', '/v2/team/a/blobs/uploads/'],
        ['POST', `/v2/team/a/blobs/uploads/?digest=${d}`],
        ['PATCH', '/v2/team/a/blobs/uploads/x'],
        ['PUT', '/v2/team/a/manifests/1'],
      ];
      for (const [method, path] of writes) {
        const res = await request(`${base}${path}`, { method: method as 'POST', headers: PUSH, body: data });
        expect(res.statusCode).toBe(405);
        expect(await errorCode(res)).toBe('UNSUPPORTED');
      }
      const v = await request(`${base}/v2/`);
      expect(v.statusCode).toBe(200);
      await v.body.dump();
      expect(await fresh.store.has(d)).toBe(false);
      expect(await ingestEntries(fresh.store.root)).toEqual([]);
    } finally {
      await app.close();
      fresh.close();
    }
  });
});
