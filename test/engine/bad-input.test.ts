import { createServer, type Server } from 'node:http';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import Fastify, { type FastifyInstance } from 'fastify';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { registryRoutes } from '../../src/registry/routes.js';
import { makeImageTar } from '../harness/images.js';
import type { RunResult } from '../harness/run.js';
import { type StoreSnapshot, storeSnapshot } from '../harness/store.js';
import { tarOf } from '../harness/tar.js';
import { tmpDir } from '../harness/tmp.js';
import { type CoreEngine, dockerFor, startCoreEngine } from './core-helpers.js';

/**
 * Bad input to the Docker Engine image API and the agent's /v2/ routes: every case gets Docker's status and
 * wording, and leaves the store exactly as it was (image list, tags, blob files, ingest files).
 */

let engine: CoreEngine;
let base: string;
let docker: (args: string[], input?: Buffer) => Promise<RunResult>;
let alpine: Awaited<ReturnType<typeof makeImageTar>>;
let work: string;

/** The store as a user sees it (blobs, ingest dirs, image records, tags) plus the engine's /images/json view. */
type Snapshot = StoreSnapshot & { list: unknown };

async function snapshot(): Promise<Snapshot> {
  const res = await request(`${base}/images/json?all=1`);
  return { list: await res.body.json(), ...(await storeSnapshot(engine.ctx)) };
}

let before: Snapshot;
beforeEach(async () => {
  before = await snapshot();
});
async function expectUnchanged(): Promise<void> {
  expect(await snapshot()).toEqual(before);
}

interface Answer {
  status: number;
  contentType: string | undefined;
  text: string;
}

async function call(method: 'GET' | 'POST' | 'DELETE' | 'PUT' | 'HEAD' | 'PATCH', path: string, body?: Buffer | string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await request(`${base}${path}`, { method, body, headers });
  const text = await res.body.text();
  const ct = res.headers['content-type'];
  return { status: res.statusCode, contentType: Array.isArray(ct) ? ct[0] : ct, text };
}

/** An error answer dockerd-style: the status, JSON content type and exactly {"message": …}. */
async function expectError(a: Answer | Promise<Answer>, status: number, message: string | RegExp): Promise<void> {
  const r = await a;
  expect({ status: r.status, ct: r.contentType }).toEqual({ status, ct: 'application/json' });
  const body = JSON.parse(r.text) as { message: string };
  expect(Object.keys(body)).toEqual(['message']);
  if (typeof message === 'string') expect(body.message).toBe(message);
  else expect(body.message).toMatch(message);
}

/** A 200 JSON stream whose last message is {errorDetail, error}. */
function streamError(r: Answer): string {
  expect(r.status).toBe(200);
  const lines = r.text
    .split(/\r?\n/)
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const last = lines[lines.length - 1] as { error?: string; errorDetail?: { message?: string } } | undefined;
  expect(last?.error, r.text).toBeTypeOf('string');
  expect(last?.errorDetail?.message).toBe(last?.error);
  return last!.error!;
}

const CONFIG = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${'2'.repeat(64)}`] }, config: {} });

function dockerManifest(layers: string[], config = 'config.json', tags = ['evil:1']): string {
  return JSON.stringify([{ Config: config, RepoTags: tags, Layers: layers }]);
}

beforeAll(async () => {
  engine = await startCoreEngine();
  base = engine.host.replace('tcp:', 'http:');
  docker = await dockerFor(engine);
  alpine = await makeImageTar('alpine:latest');
  const r = await docker(['load', '-i', alpine.tar]);
  expect(r.stdout).toBe('Loaded image: alpine:latest\n');
  work = await tmpDir('stowage-bad-input-');
}, 120_000);

afterAll(async () => {
  await engine?.close();
});

describe('POST /images/{name}/tag', () => {
  it('refuses an upper-case repository with Docker\'s wording', async () => {
    await expectError(call('POST', '/images/alpine/tag?repo=UPPER&tag=1'), 400, 'invalid reference format: repository name (library/UPPER) must be lowercase');
    await expectUnchanged();
  });

  it('refuses a repository with an empty path component', async () => {
    await expectError(call('POST', '/images/alpine/tag?repo=a//b'), 400, 'invalid reference format');
    await expectUnchanged();
  });

  it('refuses a bad tag as "invalid tag format"', async () => {
    await expectError(call('POST', '/images/alpine/tag?repo=ok&tag=-bad'), 400, 'invalid tag format');
    await expectError(call('POST', `/images/alpine/tag?repo=ok&tag=${'a'.repeat(129)}`), 400, 'invalid tag format');
    await expectUnchanged();
  });

  it('refuses a digest repository', async () => {
    await expectError(call('POST', `/images/alpine/tag?repo=ok@${alpine.image.manifestDigest}`), 400, /digest/);
    await expectUnchanged();
  });

  it('answers 404 "No such image" for a missing source, as dockerd words it', async () => {
    await expectError(call('POST', '/images/nosuch/tag?repo=ok&tag=1'), 404, 'No such image: nosuch:latest');
    await expectError(call('POST', '/images/nosuch:2/tag?repo=ok&tag=1'), 404, 'No such image: nosuch:2');
    await expectUnchanged();
  });

  it('docker tag with a bad source reports the daemon error and exits 1', async () => {
    const r = await docker(['tag', 'nosuch:3', 'ok:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('No such image: nosuch:3');
    await expectUnchanged();
  });
});

describe('DELETE /images/{name}', () => {
  it('refuses a malformed name with 400', async () => {
    await expectError(call('DELETE', '/images/UPPER'), 400, 'invalid reference format: repository name (library/UPPER) must be lowercase');
    await expectError(call('DELETE', '/images/a//b'), 400, 'invalid reference format');
    await expectError(call('DELETE', '/images/x:-bad'), 400, /^invalid reference format/);
    await expectUnchanged();
  });

  it('answers 404 for sha256:zzz and unknown IDs', async () => {
    await expectError(call('DELETE', '/images/sha256:zzz'), 404, 'No such image: sha256:zzz');
    await expectError(call('DELETE', `/images/sha256:${'0'.repeat(64)}`), 404, `No such image: sha256:${'0'.repeat(64)}`);
    await expectError(call('DELETE', '/images/deadbeef0123'), 404, 'No such image: deadbeef0123:latest');
    await expectUnchanged();
  });

  it('answers 404 for an ID prefix longer than an ID', async () => {
    await expectError(call('DELETE', `/images/${'a'.repeat(65)}`), 404, /^No such image: a{65}/);
    await expectUnchanged();
  });
});

describe('GET /images/json filters', () => {
  it('refuses malformed filters JSON', async () => {
    await expectError(call('GET', `/images/json?filters=${encodeURIComponent('{"dangling":')}`), 400, 'invalid filter');
    await expectError(call('GET', `/images/json?filters=${encodeURIComponent('[1,2]')}`), 400, 'invalid filter');
    await expectError(call('GET', `/images/json?filters=${encodeURIComponent('{"label":"x"}')}`), 400, 'invalid filter');
  });

  it('refuses an unknown filter key', async () => {
    await expectError(call('GET', `/images/json?filters=${encodeURIComponent('{"x":{"y":true}}')}`), 400, "invalid filter 'x'");
  });

  it('refuses a dangling value that is not a boolean', async () => {
    await expectError(call('GET', `/images/json?filters=${encodeURIComponent('{"dangling":{"maybe":true}}')}`), 400, "invalid filter 'dangling=maybe'");
  });

  it('refuses a before/since that names no image', async () => {
    await expectError(call('GET', `/images/json?filters=${encodeURIComponent('{"before":{"nosuch":true}}')}`), 404, 'No such image: nosuch:latest');
  });

  it('refuses an oversized filters parameter', async () => {
    const big = JSON.stringify({ label: Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}=${'v'.repeat(10)}`, true])) });
    expect(big.length).toBeGreaterThan(64 * 1024);
    await expectError(call('GET', `/images/json?filters=${encodeURIComponent(big)}`), 400, /filters.*larger than 65536 bytes/);
    await expectError(call('POST', `/images/prune?filters=${encodeURIComponent(big)}`), 400, /filters.*larger than 65536 bytes/);
    await expectUnchanged();
  });

  it('refuses an oversized buildargs parameter before reading the context', async () => {
    const big = JSON.stringify(Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`A${i}`, 'v'.repeat(10)])));
    await expectError(call('POST', `/build?buildargs=${encodeURIComponent(big)}`, await tarOf([{ name: 'Dockerfile', data: 'FROM scratch\n' }])), 400, /buildargs.*larger than 65536 bytes/);
    await expectUnchanged();
  });
});

describe('POST /images/load with bad archives', () => {
  const cases: Array<[string, () => Promise<Buffer>, RegExp]> = [
    ['not a tar', async () => Buffer.from('hello, this is not a tar archive at all\n'.repeat(40)), /invalid tar archive|not an image archive/],
    ['a truncated tar', async () => (await readFileBuf(alpine.tar)).subarray(0, 3000), /invalid tar archive|ended early|truncated/],
    ['a tar with a ../evil entry', async () => tarOf([{ name: '../evil', data: 'x' }, { name: 'manifest.json', data: '[]' }]), /unsafe archive path "\.\.\/evil"/],
    ['a tar with an absolute entry', async () => tarOf([{ name: '/etc/evil', data: 'x' }]), /unsafe archive path "\/etc\/evil": absolute paths are not allowed/],
    [
      'a symlink escaping the archive',
      async () =>
        tarOf([
          { name: 'config.json', data: CONFIG },
          { name: 'layer.tar', type: 'symlink', linkname: '../../../etc/passwd' },
          { name: 'manifest.json', data: dockerManifest(['layer.tar']) },
        ]),
      /points outside the archive/,
    ],
    [
      'a manifest.json naming a missing layer',
      async () =>
        tarOf([
          { name: 'config.json', data: CONFIG },
          { name: 'manifest.json', data: dockerManifest(['nothere/layer.tar']) },
        ]),
      /layer "nothere\/layer.tar" is missing from the archive/,
    ],
    ['gzip garbage', async () => Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0x00]), Buffer.alloc(4000, 0x5a)]), /invalid gzip stream|invalid tar archive/],
    ['a gzip of a non-tar', async () => gzipSync(Buffer.from('not a tar\n'.repeat(200))), /invalid tar archive|not an image archive/],
  ];
  for (const [what, make, message] of cases) {
    it(`${what}: 200 with an in-stream error, store unchanged`, async () => {
      const r = await call('POST', '/images/load?quiet=1', await make(), { 'content-type': 'application/x-tar' });
      expect(streamError(r)).toMatch(message);
      await expectUnchanged();
    });
  }

  it('docker load -i of a bad archive exits 1 and prints the message', async () => {
    const bad = join(work, 'evil.tar');
    await writeFile(bad, await tarOf([{ name: '../evil', data: 'x' }]));
    const r = await docker(['load', '-i', bad]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unsafe archive path "\.\.\/evil"/);
    await expectUnchanged();
  });

  it('an archive whose blob lies about its digest is refused (digest checked before visible)', async () => {
    const layer = await tarOf([{ name: 'hello', data: 'hi' }]);
    const wrong = `blobs/sha256/${'1'.repeat(64)}`;
    const t = await tarOf([
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
      { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [] }) },
      { name: wrong, data: layer },
    ]);
    const r = await call('POST', '/images/load', t);
    expect(streamError(r)).toMatch(/holds content with digest/);
    await expectUnchanged();
  });
});

describe('POST /images/create?fromSrc', () => {
  it('refuses a body that is not a tar', async () => {
    const r = await call('POST', '/images/create?fromSrc=-&repo=imp&tag=1', Buffer.from('definitely not a tar\n'.repeat(100)));
    expect(r.status === 200 ? streamError(r) : JSON.parse(r.text).message).toMatch(/invalid tar archive/);
    await expectUnchanged();
  });

  // A body shorter than one tar block once left the import waiting forever: each one must settle, quickly.
  for (const [what, body] of [
    ['one byte', Buffer.from('x')],
    ['100 bytes of text', Buffer.alloc(100, 'A')],
    ['511 zero bytes', Buffer.alloc(511)],
    ['a truncated tar header', Buffer.alloc(300, 0x30)],
    ['a gzip header alone', Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3])],
    ['a zstd magic alone', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ] as const) {
    it(`settles on ${what} with an error, store unchanged`, async () => {
      const res = await request(`${base}/images/create?fromSrc=-&repo=short&tag=1`, { method: 'POST', body, headersTimeout: 20_000, bodyTimeout: 20_000 });
      const text = await res.body.text();
      const r: Answer = { status: res.statusCode, contentType: undefined, text };
      const message = r.status === 200 ? streamError(r) : (JSON.parse(r.text) as { message: string }).message;
      expect(message).toMatch(/invalid tar archive|empty|truncated|unexpected end/i);
      await expectUnchanged();
    });
  }

  it('refuses a tar with a .. entry', async () => {
    const t = await tarOf([
      { name: 'ok', data: 'fine' },
      { name: 'a/../../evil', data: 'x' },
    ]);
    const r = await call('POST', '/images/create?fromSrc=-&repo=imp&tag=2', t);
    expect(r.status === 200 ? streamError(r) : JSON.parse(r.text).message).toMatch(/unsafe archive path "a\/\.\.\/\.\.\/evil"/);
    await expectUnchanged();
  });

  it('refuses a hard link pointing outside the root', async () => {
    const t = await tarOf([{ name: 'h', type: 'link', linkname: '../../etc/shadow' }]);
    const r = await call('POST', '/images/create?fromSrc=-&repo=imp&tag=3', t);
    expect(r.status === 200 ? streamError(r) : JSON.parse(r.text).message).toMatch(/unsafe archive path/);
    await expectUnchanged();
  });

  it('refuses an invalid repo or tag before reading the body', async () => {
    await expectError(call('POST', '/images/create?fromSrc=-&repo=UPPER', await tarOf([{ name: 'a', data: 'x' }])), 400, /must be lowercase/);
    await expectError(call('POST', '/images/create?fromSrc=-&repo=ok&tag=-x', await tarOf([{ name: 'a', data: 'x' }])), 400, 'invalid tag format');
    await expectUnchanged();
  });

  it('refuses a root filesystem over the size bound, keeping nothing of it', async () => {
    engine.ctx.maxImportBytes = 64 * 1024;
    try {
      const t = await tarOf([{ name: 'big', data: 'x'.repeat(100 * 1024) }]);
      const r = await call('POST', '/images/create?fromSrc=-&repo=imp&tag=big', gzipSync(t));
      expect(r.status === 200 ? streamError(r) : JSON.parse(r.text).message).toMatch(/larger than 65536 bytes uncompressed/);
      await expectUnchanged();
    } finally {
      engine.ctx.maxImportBytes = undefined;
    }
  });

  it('refuses a non-http fromSrc with 400', async () => {
    await expectError(call('POST', `/images/create?fromSrc=${encodeURIComponent('file:///etc/passwd')}`), 400, /unsupported URL scheme file:/);
    await expectError(call('POST', `/images/create?fromSrc=${encodeURIComponent('not a url')}`), 400, /neither "-" nor a URL/);
    await expectUnchanged();
  });

  describe('from a URL', () => {
    let server: Server;
    let url: string;
    beforeAll(async () => {
      const good = await tarOf([{ name: 'etc/hostname', data: 'x\n' }]);
      const evil = await tarOf([{ name: '../evil', data: 'x' }]);
      server = createServer((req, res) => {
        if (req.url === '/good.tar') res.end(good);
        else if (req.url === '/evil.tar') res.end(evil);
        else if (req.url === '/redirect') res.writeHead(302, { location: '/good.tar' }).end();
        else if (req.url === '/garbage') res.end('garbage'.repeat(200));
        else res.writeHead(404).end('no');
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
      const a = server.address();
      url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
      // Loopback is refused by default (see docker-gaps.test.ts): this server is named in the allow-list.
      engine.ctx.fetch = { allow: [url.slice('http://'.length)], maxBytes: 1024 * 1024 };
    });
    afterAll(async () => {
      engine.ctx.fetch = undefined;
      await new Promise<void>((r) => server.close(() => r()));
    });

    it('a 404 download is a clear error, store unchanged', async () => {
      const r = await call('POST', `/images/create?fromSrc=${encodeURIComponent(`${url}/missing`)}`);
      expect(r.status === 200 ? streamError(r) : JSON.parse(r.text).message).toMatch(/HTTP 404/);
      await expectUnchanged();
    });

    it('garbage and escaping entries are refused, store unchanged', async () => {
      const g = await call('POST', `/images/create?fromSrc=${encodeURIComponent(`${url}/garbage`)}`);
      expect(g.status === 200 ? streamError(g) : JSON.parse(g.text).message).toMatch(/invalid tar archive/);
      const e = await call('POST', `/images/create?fromSrc=${encodeURIComponent(`${url}/evil.tar`)}`);
      expect(e.status === 200 ? streamError(e) : JSON.parse(e.text).message).toMatch(/unsafe archive path/);
      await expectUnchanged();
    });

    it('a redirect is followed', async () => {
      const r = await call('POST', `/images/create?fromSrc=${encodeURIComponent(`${url}/redirect`)}&repo=fromurl&tag=1`);
      expect(r.status).toBe(200);
      const id = (JSON.parse(r.text.trim().split(/\r?\n/).pop()!) as { status: string }).status;
      expect(id).toMatch(/^sha256:[a-f0-9]{64}$/);
      const rm = await call('DELETE', '/images/fromurl:1');
      expect(rm.status).toBe(200);
    });
  });
});

describe('POST /images/create?fromImage', () => {
  it('refuses an invalid reference with 400 "invalid reference format"', async () => {
    await expectError(call('POST', '/images/create?fromImage=a//b&tag=1'), 400, /^invalid reference format/);
    await expectError(call('POST', '/images/create?fromImage=UPPER'), 400, /^invalid reference format/);
    await expectUnchanged();
  });

  it('refuses neither fromImage nor fromSrc', async () => {
    await expectError(call('POST', '/images/create'), 400, /fromImage|fromSrc/);
  });
});

describe('query parameters', () => {
  it('/images/search refuses limit=0 and limit=101', async () => {
    await expectError(call('GET', '/images/search?term=x&limit=0'), 400, 'Limit 0 is outside the range of [1, 100]');
    await expectError(call('GET', '/images/search?term=x&limit=101'), 400, 'Limit 101 is outside the range of [1, 100]');
  });

  it('/images/get with no names is 400', async () => {
    await expectError(call('GET', '/images/get'), 400, /no images specified/);
    await expectError(call('GET', '/images/get?names='), 400, /no images specified/);
  });

  it('/images/get of a missing or malformed name is an HTTP error, not a broken tar', async () => {
    await expectError(call('GET', '/images/get?names=nosuch'), 404, 'No such image: nosuch:latest');
    await expectError(call('GET', '/images/get?names=UPPER'), 400, /must be lowercase/);
  });
});

describe('API version prefix', () => {
  it('too new, too old and malformed versions answer as dockerd does', async () => {
    await expectError(call('GET', '/v1.99/version'), 400, 'client version 1.99 is too new. Maximum supported API version is 1.41');
    await expectError(
      call('GET', '/v1.5/images/json'),
      400,
      'client version 1.5 is too old. Minimum supported API version is 1.12, please upgrade your client to a newer version',
    );
    await expectError(call('GET', '/v1/version'), 400, /client version 1 is too old/);
    await expectError(call('GET', '/vabc/version'), 404, 'page not found');
    await expectError(call('GET', '/v1.41.x/version'), 404, 'page not found');
    const ok = await call('GET', '/v1.41/version');
    expect(ok.status).toBe(200);
  });
});

describe('archive escape via names', () => {
  it('image names with traversal are references, never paths', async () => {
    await expectError(call('GET', '/images/..%2F..%2Fetc%2Fpasswd/json'), 400, /invalid reference format/);
    await expectError(call('GET', `/images/get?names=${encodeURIComponent('../../etc/passwd')}`), 400, /invalid reference format/);
    await expectUnchanged();
  });
});

describe('malformed requests', () => {
  it('a malformed percent-escape answers in Docker\'s shape', async () => {
    await expectError(call('GET', '/images/%ZZ/json'), 400, /not a valid url component/);
    await expectError(call('DELETE', '/images/%ZZ'), 400, /not a valid url component/);
    await expectUnchanged();
  });

  it('docker images with an oversized filter exits 1 with the daemon\'s message', async () => {
    const r = await docker(['images', '--filter', `label=${'x'.repeat(70 * 1024)}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/query parameter "filters" is \d+ bytes, larger than 65536 bytes/);
  });
});

describe('/v2/ routes over a store with an image', () => {
  let app: FastifyInstance;
  let v2: string;
  beforeAll(async () => {
    app = Fastify({ logger: false });
    await app.register(registryRoutes, { store: engine.ctx.store, images: engine.ctx.images });
    v2 = await app.listen({ host: '127.0.0.1', port: 0 });
  });
  afterAll(async () => {
    await app.close();
  });

  async function v2call(method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, headers: Record<string, string> = {}, body?: string) {
    const res = await request(`${v2}${path}`, { method, headers, body });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, json: text && String(res.headers['content-type']).startsWith('application/json') ? (JSON.parse(text) as { errors?: Array<{ code: string }> }) : undefined };
  }

  it('invalid digests are 400 DIGEST_INVALID', async () => {
    for (const d of ['sha256:zzz', 'sha256:ABC', `sha512:${'a'.repeat(128)}`, `sha256:${'a'.repeat(63)}`]) {
      const b = await v2call('GET', `/v2/library/alpine/blobs/${d}`);
      expect(b.status, d).toBe(400);
      expect(b.json?.errors?.[0]?.code).toBe('DIGEST_INVALID');
      const m = await v2call('GET', `/v2/library/alpine/manifests/${d}`);
      expect(m.status, d).toBe(400);
      expect(m.json?.errors?.[0]?.code).toBe('DIGEST_INVALID');
    }
    await expectUnchanged();
  });

  it('invalid names are 400 NAME_INVALID', async () => {
    for (const n of ['UPPER', 'a//b', 'a/_b', '-x', 'a%2F..%2Fb']) {
      const r = await v2call('GET', `/v2/${n}/manifests/latest`);
      expect(r.status, n).toBe(400);
      expect(r.json?.errors?.[0]?.code).toBe('NAME_INVALID');
    }
    const long = await v2call('GET', `/v2/${'a'.repeat(300)}/tags/list`);
    expect(long.status).toBe(400);
  });

  it('a Range beyond the blob is 416 with Content-Range */size', async () => {
    // The config blob is stored as the test image made it.
    const info = await engine.ctx.store.stat(alpine.image.configDigest);
    expect(info).toBeDefined();
    const layer = { digest: alpine.image.configDigest, size: info!.size };
    const r = await v2call('GET', `/v2/library/alpine/blobs/${layer.digest}`, { range: `bytes=${layer.size}-` });
    expect(r.status).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${layer.size}`);
    const huge = await v2call('GET', `/v2/library/alpine/blobs/${layer.digest}`, { range: 'bytes=99999999999999999999-' });
    expect(huge.status).toBe(416);
    const ok = await v2call('GET', `/v2/library/alpine/blobs/${layer.digest}`, { range: 'bytes=0-0' });
    expect(ok.status).toBe(206);
  });

  it('write methods are 405 and change nothing', async () => {
    for (const m of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
      const r = await v2call(m, `/v2/library/alpine/blobs/uploads/`, { 'content-type': 'application/octet-stream' }, 'x'.repeat(1000));
      expect(r.status, m).toBe(405);
      const d = await v2call(m, `/v2/library/alpine/manifests/latest`);
      expect(d.status, m).toBe(405);
    }
    await expectUnchanged();
  });
});

async function readFileBuf(path: string): Promise<Buffer> {
  const { readFile } = await import('node:fs/promises');
  return readFile(path);
}
