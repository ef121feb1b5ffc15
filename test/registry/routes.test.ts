import { once } from 'node:events';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { digestHex } from '../../src/oci/digest.js';
import { RegistryClient } from '../../src/registry/client.js';
import { pullImage } from '../../src/registry/pull.js';
import { registryRoutes } from '../../src/registry/routes.js';
import type { ContentStoreApi, ImageIndexApi } from '../../src/store/types.js';
import { type TestImageInfo, type TestIndexInfo, pushTestImages, skopeo } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { freshStore } from '../harness/store.js';
import { collect, readAll } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The agent's read-only /v2/ endpoint, served over a store that pulled real images from a real
 * registry, and read by real clients (skopeo, RegistryClient, undici).
 */

let reg: TestRegistry;
let layoutDir: string;
let img: TestImageInfo;
let multi: TestIndexInfo;
let store: ContentStoreApi;
let images: ImageIndexApi;
let app: FastifyInstance;
let agent: string; // "127.0.0.1:<port>"
let base: string;

beforeAll(async () => {
  reg = await startRegistry();
  ({ layoutDir, img, multi } = await pushTestImages(reg.host, { layerBytes: 32 * 1024, platforms: ['linux/amd64', 'linux/arm64'] }));

  ({ store, images } = await freshStore());
  const client = new RegistryClient({ host: reg.host });
  await pullImage(client, `${reg.host}/test/app:1`, { store, images });
  await pullImage(client, `${reg.host}/test/multi:1`, { store, images }, { pullAllPlatforms: true });
  images.tag('docker.io/library/alpine:3', img.manifestDigest);
  for (const t of ['a', 'b', 'c']) images.tag(`docker.io/team/paged:${t}`, img.manifestDigest);

  app = Fastify({ logger: false });
  await app.register(registryRoutes, { store, images });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  base = address;
  agent = new URL(address).host;
});

afterAll(async () => {
  await app?.close();
  images?.close();
  await reg?.stop();
});

async function errorCode(res: Awaited<ReturnType<typeof request>>): Promise<string | undefined> {
  const body = (await res.body.json()) as { errors?: Array<{ code: string }> };
  return body.errors?.[0]?.code;
}

describe('registry routes (read-only /v2/)', () => {
  it('serves an image that skopeo copies out byte for byte', async () => {
    const out = await tmpDir();
    await skopeo(['copy', `docker://${agent}/test/app:1`, `dir:${out}`]);
    expect((await readFile(join(out, 'manifest.json'))).equals(img.manifestBytes)).toBe(true);
    for (const l of img.layers) {
      const original = await readFile(join(layoutDir, 'blobs/sha256', digestHex(l.digest)));
      expect((await readFile(join(out, digestHex(l.digest)))).equals(original)).toBe(true);
    }
    const files = await readdir(out);
    expect(files).toContain(digestHex(img.configDigest));
  });

  it('resolves names the way the documented rule says', async () => {
    // "alpine" and "library/alpine" are docker.io/library/alpine.
    for (const name of ['alpine', 'library/alpine']) {
      expect(JSON.parse(await skopeo(['inspect', `docker://${agent}/${name}:3`])).Digest).toBe(img.manifestDigest);
    }
    // The repository path of a tag made on another registry.
    expect(JSON.parse(await skopeo(['inspect', `docker://${agent}/test/app:1`])).Digest).toBe(img.manifestDigest);
    // A multi-platform index comes back as the index; skopeo picks a platform from it.
    const raw = await skopeo(['inspect', '--raw', `docker://${agent}/test/multi:1`]);
    expect(Buffer.from(raw).equals(multi.indexBytes)).toBe(true);
    const out = await tmpDir();
    await skopeo(['copy', '--all', `docker://${agent}/test/multi:1`, `oci:${out}:y`]);
  });

  it('lets a peer pull from it with RegistryClient (agent to agent)', async () => {
    const peer = await freshStore();
    const res = await pullImage(new RegistryClient({ host: agent }), `${agent}/test/app:1`, peer);
    expect(res.manifestDigest).toBe(img.manifestDigest);
    for (const l of img.layers) expect(await peer.store.has(l.digest)).toBe(true);
    peer.images.close();
  });

  it('answers the version check and HEAD of manifests with the right headers', async () => {
    const v = await request(`${base}/v2/`);
    expect(v.statusCode).toBe(200);
    expect(v.headers['docker-distribution-api-version']).toBe('registry/2.0');
    await v.body.dump();

    const h = await request(`${base}/v2/test/app/manifests/1`, { method: 'HEAD' });
    expect(h.statusCode).toBe(200);
    expect(h.headers['content-type']).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(h.headers['docker-content-digest']).toBe(img.manifestDigest);
    expect(h.headers['content-length']).toBe(String(img.manifestBytes.length));
    expect(h.headers['etag']).toBe(`"${img.manifestDigest}"`);
    await h.body.dump();

    const byDigest = await request(`${base}/v2/whatever/manifests/${multi.indexDigest}`);
    expect(byDigest.headers['content-type']).toBe('application/vnd.oci.image.index.v1+json');
    expect(Buffer.from(await byDigest.body.arrayBuffer()).equals(multi.indexBytes)).toBe(true);
  });

  it('serves blobs with Range, 206 and 416', async () => {
    const layer = img.layers[0]!;
    const whole = await readFile(join(layoutDir, 'blobs/sha256', digestHex(layer.digest)));
    const url = `${base}/v2/test/app/blobs/${layer.digest}`;

    const head = await request(url, { method: 'HEAD' });
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBe(String(whole.length));
    expect(head.headers['accept-ranges']).toBe('bytes');
    expect(head.headers['docker-content-digest']).toBe(layer.digest);
    await head.body.dump();

    const part = await request(url, { headers: { range: 'bytes=100-199' } });
    expect(part.statusCode).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 100-199/${whole.length}`);
    expect(Buffer.from(await part.body.arrayBuffer()).equals(whole.subarray(100, 200))).toBe(true);

    const open = await request(url, { headers: { range: 'bytes=1000-' } });
    expect(open.statusCode).toBe(206);
    expect(Buffer.from(await open.body.arrayBuffer()).equals(whole.subarray(1000))).toBe(true);

    const suffix = await request(url, { headers: { range: 'bytes=-10' } });
    expect(Buffer.from(await suffix.body.arrayBuffer()).equals(whole.subarray(whole.length - 10))).toBe(true);

    const beyond = await request(url, { headers: { range: `bytes=${whole.length}-` } });
    expect(beyond.statusCode).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${whole.length}`);
    await beyond.body.dump();

    // The client resumes through it too.
    const client = new RegistryClient({ host: agent });
    const resumed = await readAll((await client.getBlob('test/app', layer.digest, { start: 5 })) as AsyncIterable<Buffer>);
    expect(resumed.equals(whole.subarray(5))).toBe(true);
  });

  it('answers unknown things and bad input with distribution error codes', async () => {
    const missingBlob = await request(`${base}/v2/test/app/blobs/sha256:${'0'.repeat(64)}`);
    expect(missingBlob.statusCode).toBe(404);
    expect(await errorCode(missingBlob)).toBe('BLOB_UNKNOWN');

    const missingTag = await request(`${base}/v2/test/app/manifests/nope`);
    expect(missingTag.statusCode).toBe(404);
    expect(await errorCode(missingTag)).toBe('MANIFEST_UNKNOWN');

    const missingDigest = await request(`${base}/v2/test/app/manifests/sha256:${'0'.repeat(64)}`);
    expect(missingDigest.statusCode).toBe(404);
    expect(await errorCode(missingDigest)).toBe('MANIFEST_UNKNOWN');

    // A layer is a blob, not a manifest.
    const layerAsManifest = await request(`${base}/v2/test/app/manifests/${img.layers[0]!.digest}`);
    expect(layerAsManifest.statusCode).toBe(404);
    await layerAsManifest.body.dump();

    for (const bad of ['sha256:xyz', 'md5:abc', `sha256:${'A'.repeat(64)}`]) {
      const res = await request(`${base}/v2/test/app/blobs/${bad}`);
      expect(res.statusCode).toBe(400);
      expect(await errorCode(res)).toBe('DIGEST_INVALID');
    }
    const badManifestDigest = await request(`${base}/v2/test/app/manifests/sha256:xyz`);
    expect(badManifestDigest.statusCode).toBe(400);
    expect(await errorCode(badManifestDigest)).toBe('DIGEST_INVALID');

    const badName = await request(`${base}/v2/Test/App/manifests/1`);
    expect(badName.statusCode).toBe(400);
    expect(await errorCode(badName)).toBe('NAME_INVALID');

    const unknownRepo = await request(`${base}/v2/no/such/tags/list`);
    expect(unknownRepo.statusCode).toBe(404);
    expect(await errorCode(unknownRepo)).toBe('NAME_UNKNOWN');

    const writes: Array<[string, string]> = [
      ['POST', '/v2/test/app/blobs/uploads/'],
      ['PUT', '/v2/test/app/manifests/2'],
      ['PATCH', '/v2/test/app/blobs/uploads/x'],
      ['DELETE', `/v2/test/app/manifests/${img.manifestDigest}`],
    ];
    for (const [method, path] of writes) {
      const res = await request(`${base}${path}`, { method: method as 'POST', body: '{"a":1}', headers: { 'content-type': 'application/json' } });
      expect(res.statusCode).toBe(405);
      expect(await errorCode(res)).toBe('UNSUPPORTED');
    }
    // Nothing was written.
    expect(images.resolveTag(`${reg.host}/test/app:2`)).toBeUndefined();
  });

  it('lists the catalog and tags with Link pagination', async () => {
    const client = new RegistryClient({ host: agent });
    const first = await request(`${base}/v2/_catalog?n=1`);
    expect(first.headers['link']).toMatch(/^<\/v2\/_catalog\?n=1&last=[^>]+>; rel="next"$/);
    expect(((await first.body.json()) as { repositories: string[] }).repositories).toHaveLength(1);
    expect(await collect(client.catalog({ pageSize: 1 }))).toEqual(['library/alpine', 'team/paged', 'test/app', 'test/multi']);

    const tags = await request(`${base}/v2/team/paged/tags/list?n=2`);
    expect(tags.headers['link']).toBe('</v2/team/paged/tags/list?n=2&last=b>; rel="next"');
    expect(await tags.body.json()).toEqual({ name: 'team/paged', tags: ['a', 'b'] });
    expect(await collect(client.tags('team/paged', { pageSize: 1 }))).toEqual(['a', 'b', 'c']);
    expect(await collect(client.tags('alpine'))).toEqual(['3']);

    const bad = await request(`${base}/v2/_catalog?n=x`);
    expect(bad.statusCode).toBe(400);
    await bad.body.dump();
  });
});

describe('registry routes: blob reads under trouble', () => {
  /** A /v2/ app over a fresh store holding one blob, with the store's blob reads wrapped by `wrap`. */
  async function serveOne(size: number, wrap: (s: ContentStoreApi) => Partial<ContentStoreApi>) {
    const fresh = await freshStore();
    const { digest } = await fresh.store.putBytes(Buffer.alloc(size, 0x5a));
    const overrides = wrap(fresh.store);
    const wrapped = new Proxy(fresh.store, {
      get(target, prop, receiver) {
        if (prop in overrides) return overrides[prop as keyof ContentStoreApi];
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const server = Fastify({ logger: false });
    await server.register(registryRoutes, { store: wrapped, images: fresh.images });
    const url = `${await server.listen({ host: '127.0.0.1', port: 0 })}/v2/any/blobs/${digest}`;
    return {
      url,
      digest,
      store: fresh.store,
      async close() {
        await server.close();
        fresh.close();
      },
    };
  }

  /** Resolves once `stream` has closed (its file handle released); rejects after `ms`. */
  async function closedWithin(stream: Readable, ms: number): Promise<void> {
    if (stream.closed) return;
    await Promise.race([once(stream, 'close'), new Promise((_, reject) => setTimeout(() => reject(new Error('the blob stream was never closed')), ms))]);
  }

  it('answers a plain 404 when the blob goes away between its stat and its read', async () => {
    const one = await serveOne(4096, (s) => ({
      // A collection (GC) right after the stat.
      stat: async (d) => {
        const info = await s.stat(d);
        await s.delete(d);
        return info;
      },
    }));
    try {
      const res = await request(one.url);
      expect(res.statusCode).toBe(404);
      expect(await errorCode(res)).toBe('BLOB_UNKNOWN');
      expect(res.headers['cache-control']).toBeUndefined();
      expect(res.headers['docker-content-digest']).toBeUndefined();
      expect(res.headers['content-type']).toMatch(/^application\/json/);
    } finally {
      await one.close();
    }
  });

  it('closes the blob file when the client goes away mid-download', async () => {
    const opened: Readable[] = [];
    const one = await serveOne(32 * 1024 * 1024, (s) => ({
      createReadStream: async (d, range) => {
        const stream = await s.createReadStream(d, range);
        opened.push(stream);
        return stream;
      },
    }));
    try {
      const res = await request(one.url);
      expect(res.statusCode).toBe(200);
      for await (const _chunk of res.body) break; // one chunk, then hang up
      expect(opened).toHaveLength(1);
      await closedWithin(opened[0]!, 5000);
    } finally {
      await one.close();
    }
  });

  it('closes the blob file when the client went away before it was opened', async () => {
    const opened: Readable[] = [];
    let entered!: () => void;
    const inRead = new Promise<void>((resolve) => (entered = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const one = await serveOne(32 * 1024 * 1024, (s) => ({
      createReadStream: async (d, range) => {
        entered();
        await gate;
        const stream = await s.createReadStream(d, range);
        opened.push(stream);
        return stream;
      },
    }));
    try {
      const abort = new AbortController();
      const pending = request(one.url, { signal: abort.signal }).catch((err: unknown) => err);
      await inRead;
      abort.abort();
      await pending;
      await new Promise((resolve) => setTimeout(resolve, 50)); // the server sees the socket close
      release();
      for (let i = 0; i < 100 && opened.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      expect(opened).toHaveLength(1);
      await closedWithin(opened[0]!, 5000);
    } finally {
      await one.close();
    }
  });
});
