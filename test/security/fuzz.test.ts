import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStowageError } from '../../src/errors.js';
import { readTar } from '../../src/oci/archive/tar.js';
import { parseImageConfig, parseManifestBytes } from '../../src/oci/manifest.js';
import { formatReference, parseReference } from '../../src/oci/reference.js';
import { importArchive } from '../../src/store/import-archive.js';
import { createHash } from 'node:crypto';
import type { UploadGrant } from '../../src/control/wire.js';
import { type Cluster, type StandaloneAgent, startCluster, startStandaloneAgent } from '../harness/cluster.js';
import { makeImageTar } from '../harness/images.js';
import { freshStore } from '../harness/store.js';
import { storeSnapshot } from '../harness/store.js';
import { tarOf } from '../harness/tar.js';

/**
 * Property-based fuzzing (issue 13): the reference, manifest, config and tar parsers in process, and the
 * /v2/ and Docker API routes of a real agent process, with generated hostile input. Every input must end in
 * a clear refusal (a StowageError in process; 4xx with a message, or an in-stream error, over HTTP), never a
 * crash, a 5xx or a hang, and the agent's store must be as it was. Counts (runs) add up to over 10,000.
 */

/** Each request's deadline: a hang fails the property that made it instead of timing out the suite. */
const REQUEST_DEADLINE_MS = 15_000;
// Fixed by default so CI runs are repeatable; STOWAGE_FUZZ_SEED=<n> explores other inputs.
const SEED = Number(process.env['STOWAGE_FUZZ_SEED'] ?? 13);
let total = 0;

function runs(n: number): { numRuns: number; seed: number; endOnFailure: true } {
  total += n;
  return { numRuns: n, seed: SEED, endOnFailure: true };
}

/** Runs `fn`; a throw must be a StowageError with a message (a refusal), anything else fails the property. */
function refusedCleanly(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (!isStowageError(err)) throw new Error(`not a clean refusal: ${String(err)}`, { cause: err });
    expect(err.message.length).toBeGreaterThan(0);
  }
}

/** Settles within `ms` or fails: a parser that never settles is the bug this suite exists to catch. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle in ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Characters that break naive parsers: separators, escapes, dots, unicode, control bytes. */
const nasty = fc.constantFrom('/', ':', '@', '.', '..', '-', '_', '%2F', '%2e', '%', '\\', ' ', '\u0000', '\n', 'é', '😀', 'sha256', 'A', 'a', '0', 'f', '#', '?', '&', '=');
const nastyString = fc.array(fc.oneof(nasty, fc.string({ maxLength: 8 })), { maxLength: 24 }).map((parts) => parts.join(''));
const hexDigest = fc.stringMatching(/^[0-9a-f]{64}$/).map((h) => `sha256:${h}`);
const referenceLike = fc
  .tuple(
    fc.option(fc.constantFrom('docker.io', 'localhost:5000', 'Registry.Example:443', 'a.b', '[::1]:80', 'x_y'), { nil: undefined }),
    fc.array(fc.stringMatching(/^[a-zA-Z0-9._-]{0,12}$/), { minLength: 1, maxLength: 5 }),
    fc.option(fc.stringMatching(/^[\w.-]{0,140}$/), { nil: undefined }),
    fc.option(fc.oneof(hexDigest, nastyString), { nil: undefined }),
  )
  .map(([domain, path, tag, digest]) => `${domain ? `${domain}/` : ''}${path.join('/')}${tag !== undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}`);

describe('parsers, in process', () => {
  it('parseReference: a valid reference, which formats and re-parses to itself, or INVALID_REFERENCE', () => {
    fc.assert(
      fc.property(fc.oneof(referenceLike, nastyString, fc.string({ unit: 'binary', maxLength: 300 })), (input) => {
        let ref;
        try {
          ref = parseReference(input);
        } catch (err) {
          if (!isStowageError(err, 'INVALID_REFERENCE')) throw new Error(`parseReference(${JSON.stringify(input)}) threw ${String(err)}`);
          return;
        }
        expect(parseReference(formatReference(ref))).toEqual(ref);
      }),
      runs(3000),
    );
  });

  const descriptor = fc.record(
    {
      mediaType: fc.oneof(fc.constantFrom('application/vnd.oci.image.layer.v1.tar+gzip', 'application/vnd.oci.image.config.v1+json'), fc.string()),
      digest: fc.oneof(hexDigest, nastyString),
      size: fc.oneof(fc.nat(), fc.integer(), fc.double(), fc.constant(1e300), fc.string()),
      platform: fc.record({ os: fc.oneof(fc.constant('linux'), nastyString), architecture: fc.oneof(fc.constant('amd64'), nastyString) }, { requiredKeys: [] }),
      annotations: fc.dictionary(fc.string(), fc.oneof(fc.string(), fc.integer())),
    },
    { requiredKeys: [] },
  );
  const manifestLike = fc.record(
    {
      schemaVersion: fc.oneof(fc.constant(2), fc.constant(1), fc.integer(), fc.string()),
      mediaType: fc.constantFrom(
        'application/vnd.oci.image.manifest.v1+json',
        'application/vnd.oci.image.index.v1+json',
        'application/vnd.docker.distribution.manifest.v2+json',
        'application/vnd.docker.distribution.manifest.list.v2+json',
        'application/vnd.docker.distribution.manifest.v1+json',
        'text/plain',
      ),
      config: fc.oneof(descriptor, fc.jsonValue()),
      layers: fc.oneof(fc.array(descriptor, { maxLength: 4 }), fc.jsonValue()),
      manifests: fc.oneof(fc.array(descriptor, { maxLength: 4 }), fc.jsonValue()),
      subject: descriptor,
    },
    { requiredKeys: [] },
  );
  const jsonBytes = fc.oneof(manifestLike, fc.jsonValue({ maxDepth: 6 })).map((v) => Buffer.from(JSON.stringify(v) ?? 'null'));
  const anyBytes = fc.oneof(jsonBytes, fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)));

  it('parseManifestBytes: a manifest or index, or INVALID_MANIFEST / UNSUPPORTED / TOO_LARGE', () => {
    fc.assert(
      fc.property(anyBytes, fc.option(fc.string(), { nil: undefined }), (bytes, contentType) => refusedCleanly(() => parseManifestBytes(bytes, contentType))),
      runs(2500),
    );
  });

  it('parseImageConfig: a config or a clean refusal', () => {
    const configLike = fc
      .record(
        {
          architecture: fc.oneof(fc.constant('amd64'), nastyString),
          os: fc.oneof(fc.constant('linux'), nastyString),
          rootfs: fc.oneof(fc.record({ type: fc.constant('layers'), diff_ids: fc.array(fc.oneof(hexDigest, nastyString), { maxLength: 3 }) }), fc.jsonValue()),
          config: fc.jsonValue({ maxDepth: 4 }),
          history: fc.jsonValue({ maxDepth: 3 }),
        },
        { requiredKeys: [] },
      )
      .map((v) => Buffer.from(JSON.stringify(v)));
    fc.assert(fc.property(fc.oneof(configLike, anyBytes), (bytes) => refusedCleanly(() => parseImageConfig(bytes))), runs(1500));
  });

  /** A valid tar, then damaged: bytes overwritten, cut short, or padded with garbage. */
  const damagedTar = (base: Buffer) =>
    fc.oneof(
      fc.uint8Array({ maxLength: 4096 }).map((b) => Buffer.from(b)),
      fc.nat({ max: base.length }).map((n) => base.subarray(0, n)),
      fc.array(fc.tuple(fc.nat({ max: base.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 16 }).map((flips) => {
        const b = Buffer.from(base);
        for (const [at, v] of flips) b[at] = v;
        return b;
      }),
      fc.uint8Array({ maxLength: 1024 }).map((g) => Buffer.concat([base.subarray(0, 1024), Buffer.from(g)])),
    );

  it('readTar: every damaged or random tar settles with its entries or a clean refusal', async () => {
    const base = await tarOf([
      { name: 'dir/', type: 'directory' },
      { name: 'dir/file', data: 'x'.repeat(700) },
      { name: 'link', type: 'symlink', linkname: 'dir/file' },
      { name: 'hard', type: 'link', linkname: 'dir/file' },
    ]);
    await fc.assert(
      fc.asyncProperty(damagedTar(base), async (bytes) => {
        try {
          await within(10_000, 'readTar', readTar(Readable.from([bytes]), { maxEntries: 100, maxEntryBytes: 1 << 20 }, async (e) => {
            for await (const _ of e.body) void _;
          }));
        } catch (err) {
          if (!isStowageError(err)) throw new Error(`readTar failed unclean: ${String(err)}`, { cause: err });
        }
      }),
      runs(1500),
    );
  });

  it('importArchive: a damaged image archive is refused and leaves the store as it was', async () => {
    const { tar } = await makeImageTar('fuzz/base:1', { layers: 1 });
    const base = await readFile(tar);
    const target = await freshStore('stowage-fuzz-store-');
    await fc.assert(
      fc.asyncProperty(fc.oneof(damagedTar(base), damagedTar(base).map((b) => gzipSync(b))), async (bytes) => {
        const before = await storeSnapshot(target);
        try {
          await within(15_000, 'importArchive', importArchive(Readable.from([bytes]), target));
        } catch (err) {
          if (!isStowageError(err)) throw new Error(`importArchive failed unclean: ${String(err)}`, { cause: err });
          expect(await storeSnapshot(target)).toEqual(before);
        }
      }),
      runs(400),
    );
  }, 120_000);
});

describe('routes of a real agent process', () => {
  let agent: StandaloneAgent;
  let base: string;
  let dispatcher: Agent;
  let seededId: string;
  let imagesBefore: unknown;

  interface Answer {
    status: number;
    text: string;
  }

  async function call(method: string, path: string, body?: Buffer): Promise<Answer> {
    const res = await request(`${base}${path}`, {
      method: method as 'GET',
      ...(body === undefined ? {} : { body }),
      dispatcher,
      headersTimeout: REQUEST_DEADLINE_MS,
      bodyTimeout: REQUEST_DEADLINE_MS,
    });
    return { status: res.statusCode, text: await res.body.text() };
  }

  /** Not a 5xx; an error answer carries a message (Docker's {message} or the registry's {errors:[{message}]}). */
  function expectClean(method: string, path: string, a: Answer): void {
    const where = `${method} ${path} → ${a.status} ${a.text.slice(0, 300)}`;
    expect(a.status, where).toBeLessThan(500);
    if (a.status < 400 || method === 'HEAD') return;
    const body = JSON.parse(a.text) as { message?: string; errors?: Array<{ message?: string }> };
    const message = body.message ?? body.errors?.[0]?.message;
    expect(typeof message === 'string' && message.length > 0, where).toBe(true);
  }

  /** A 200 JSON stream must end in success or an {error} line; a 4xx is fine too. */
  function expectStreamClean(path: string, a: Answer): void {
    expectClean('POST', path, a);
    if (a.status !== 200) return;
    const lines = a.text.split(/\r?\n/).filter((l) => l !== '').map((l) => JSON.parse(l) as { error?: string; status?: string; stream?: string });
    const last = lines[lines.length - 1];
    expect(last, `${path}: ${a.text.slice(0, 300)}`).toBeDefined();
    if (last?.error !== undefined) expect(last.error.length).toBeGreaterThan(0);
  }

  beforeAll(async () => {
    agent = await startStandaloneAgent();
    base = agent.dockerHost.replace('tcp://', 'http://');
    dispatcher = new Agent({ connections: 8 });
    const { tar } = await makeImageTar('keep/me:1', { layers: 1 });
    const load = await call('POST', '/images/load', await readFile(tar));
    expect(load.text).toContain('Loaded image: keep/me:1');
    seededId = ((await call('GET', '/images/keep/me:1/json')).text.match(/"Id":"(sha256:[0-9a-f]{64})"/) ?? [])[1]!;
    expect(seededId).toBeDefined();
    imagesBefore = JSON.parse((await call('GET', '/images/json')).text);
  }, 180_000);

  afterAll(async () => {
    await dispatcher?.close();
    await agent?.close();
  });

  const segment = fc.oneof(nastyString, fc.constantFrom('manifests', 'blobs', 'uploads', 'tags', 'list', '_catalog', 'referrers', 'latest', 'sha256:', 'library', 'keep', 'me'), hexDigest);
  const v2Path = fc
    .tuple(fc.array(segment, { minLength: 0, maxLength: 7 }), fc.option(fc.dictionary(fc.constantFrom('n', 'last', 'digest', 'mount', 'from', 'artifactType'), nastyString), { nil: undefined }))
    .map(([segs, q]) => `/v2/${segs.map((s) => encodeURIComponent(s).replace(/%25(2F|2e)/gi, '%$1')).join('/')}${q ? `?${new URLSearchParams(q).toString()}` : ''}`);

  it('/v2/: any method on any path is a 2xx/3xx/4xx with a message, never a 5xx or a hang', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('GET', 'HEAD', 'DELETE', 'POST', 'PUT', 'PATCH'), v2Path, fc.option(fc.uint8Array({ maxLength: 256 }), { nil: undefined }), async (method, path, body) => {
        const a = await call(method, path, method === 'GET' || method === 'HEAD' || body === undefined ? undefined : Buffer.from(body));
        expectClean(method, path, a);
      }),
      runs(2500),
    );
  }, 120_000);

  // Names never name the seeded image ("x" first, so neither its tag nor a prefix of its ID): the routes
  // that would reach a registry (pull, push, search, build, distribution) are left out, they would leave the box.
  const name = nastyString.map((s) => `x${s}`);
  const encodedName = name.map((n) => encodeURIComponent(n).replace(/%2F/g, '/'));
  const query = fc.dictionary(fc.constantFrom('filters', 'all', 'digests', 'force', 'noprune', 'repo', 'tag', 'names', 'quiet', 'platform', 'shared-size'), nastyString, { maxKeys: 4 });
  const dockerCall = fc.oneof(
    fc.tuple(fc.constant('GET'), fc.constant('/images/json'), query),
    fc.tuple(fc.constant('GET'), encodedName.map((n) => `/images/${n}/json`), query),
    fc.tuple(fc.constant('GET'), encodedName.map((n) => `/images/${n}/history`), query),
    fc.tuple(fc.constant('GET'), encodedName.map((n) => `/images/${n}/get`), query),
    fc.tuple(fc.constant('GET'), fc.constant('/images/get'), query),
    fc.tuple(fc.constant('POST'), encodedName.map((n) => `/images/${n}/tag`), query),
    fc.tuple(fc.constant('POST'), encodedName.map((n) => `/images/${n}/push`), query),
    fc.tuple(fc.constant('DELETE'), encodedName.map((n) => `/images/${n}`), query),
    fc.tuple(fc.constantFrom('GET', 'POST', 'DELETE', 'HEAD'), fc.tuple(fc.constantFrom('', '/v1.41', '/v1.12', '/v9.99', '/vx'), fc.array(segment, { maxLength: 4 })).map(([v, segs]) => `${v}/${segs.map(encodeURIComponent).join('/')}`), query),
    fc.tuple(fc.constantFrom('GET', 'HEAD'), fc.constantFrom('/_ping', '/version', '/info', '/v1.41/_ping'), query),
  );

  it('Docker API: image routes with hostile names and parameters answer 4xx with a message, never 5xx or a hang', async () => {
    await fc.assert(
      fc.asyncProperty(dockerCall, async ([method, path, q]) => {
        // A route that would go out to a registry (an unknown-name pull) is not what this fuzzes.
        if (/^\/(v[^/]*\/)?(images\/create|images\/search|build|auth|distribution|images\/prune)/.test(path)) return;
        const qs = new URLSearchParams(q).toString();
        const full = `${path}${qs ? `?${qs}` : ''}`;
        const a = await call(method, full);
        expectClean(method, full, a);
      }),
      runs(2000),
    );
  }, 120_000);

  it('docker load and import: damaged archives of every size end in a clean error', async () => {
    const { tar } = await makeImageTar('fuzz/load:1', { layers: 1 });
    const good = await readFile(tar);
    const bodies = fc.oneof(
      fc.uint8Array({ maxLength: 1500 }).map((b) => Buffer.from(b)),
      fc.nat({ max: good.length - 1 }).map((n) => good.subarray(0, n)),
      fc.array(fc.tuple(fc.nat({ max: good.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }).map((flips) => {
        const b = Buffer.from(good);
        for (const [at, v] of flips) b[at] = v;
        return b;
      }),
      fc.uint8Array({ maxLength: 600 }).map((b) => gzipSync(Buffer.from(b))),
      fc.constant(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])),
    );
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('/images/load', '/images/create?fromSrc=-&repo=xfuzz&tag=1'), bodies, async (path, body) => {
        const a = await call('POST', path, body);
        expectStreamClean(path, a);
        // Whatever got in (a flip that hit padding loads fine) is removed again, so the next run starts equal.
        if (a.status === 200 && /Loaded image|sha256:/.test(a.text) && !/"error"/.test(a.text)) {
          for (const ref of ['fuzz/load:1', 'xfuzz:1']) await call('DELETE', `/images/${ref}?noprune=0`);
        }
      }),
      runs(700),
    );
  }, 180_000);

  it('afterwards the store is intact: the seeded image, its tag and blobs, no leftover ingests; the agent answers', async () => {
    const ping = await call('GET', '/_ping');
    expect(ping).toEqual({ status: 200, text: 'OK' });
    expect(JSON.parse((await call('GET', '/images/json')).text)).toEqual(imagesBefore);
    const inspect = JSON.parse((await call('GET', '/images/keep/me:1/json')).text) as { Id: string };
    expect(inspect.Id).toBe(seededId);
    const save = await call('GET', '/images/keep/me:1/get');
    expect(save.status).toBe(200);
    const { readdir } = await import('node:fs/promises');
    const { join } = await import('node:path');
    expect(await readdir(join(agent.dataDir, 'store', 'ingest')).catch(() => [])).toEqual([]);
    console.info(`fuzz: ${total} generated inputs (seed ${SEED})`);
    expect(total).toBeGreaterThanOrEqual(10_000);
  });
});

describe('/v2/ writes with an upload grant, on a cluster agent', () => {
  let cluster: Cluster;
  let peer: string;
  let auth: string;
  let repository: string;
  let seeded: string;
  const MANIFEST_ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';

  async function call(method: string, path: string, headers: Record<string, string> = {}, body?: Buffer): Promise<{ status: number; text: string; location?: string }> {
    const res = await request(`${peer}${path}`, {
      method: method as 'GET',
      headers: { authorization: auth, ...headers },
      ...(body === undefined ? {} : { body }),
      headersTimeout: REQUEST_DEADLINE_MS,
      bodyTimeout: REQUEST_DEADLINE_MS,
    });
    const location = res.headers['location'];
    return { status: res.statusCode, text: await res.body.text(), ...(typeof location === 'string' ? { location } : {}) };
  }

  async function tagTarget(): Promise<string | undefined> {
    const r = await request(`${peer}/v2/test/app/manifests/1`, { method: 'HEAD', headers: { authorization: auth, accept: MANIFEST_ACCEPT } });
    await r.body.dump();
    return r.statusCode === 200 ? String(r.headers['docker-content-digest']) : undefined;
  }

  beforeAll(async () => {
    cluster = await startCluster({ agents: 1 });
    peer = cluster.agents[0]!.peerUrl;
    const { tar } = await makeImageTar('test/app:1', { layers: 1 });
    seeded = await cluster.loadImage('agent-1', tar, 'docker.io/test/app:1');
    const pushed = await cluster.api<{ upload: UploadGrant | null }>('POST', '/api/v1/operations/push', { digest: `sha256:${'a'.repeat(64)}`, size_bytes: 1, to: ['agent-1'] });
    expect(pushed.status).toBe(201);
    repository = pushed.body.upload!.repository;
    auth = `Basic ${Buffer.from(`stowage:${pushed.body.upload!.password}`).toString('base64')}`;
    expect(await tagTarget()).toBe(seeded);
  }, 240_000);

  afterAll(async () => {
    await cluster?.close();
  });

  it('uploads and manifest PUTs with hostile ranges, digests and bodies: 4xx with a message or success, never 5xx', async () => {
    const body = fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b));
    const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
    const digestFor = (b: Buffer) => fc.oneof(fc.constant(sha(b)), hexDigest, nastyString);
    const range = fc.oneof(fc.constant(undefined), fc.tuple(fc.integer({ min: -5, max: 5000 }), fc.integer({ min: -5, max: 5000 })).map(([a, b]) => `${a}-${b}`), nastyString.filter((h) => /^[\x20-\x7e]*$/.test(h)));
    const step = fc.oneof(
      // A chunked upload: start, append a chunk (maybe with a Content-Range), finish with some digest.
      fc.tuple(fc.constant('chunked' as const), body, range, fc.boolean()).chain(([kind, b, r, extra]) => fc.tuple(fc.constant(kind), fc.constant(b), fc.constant(r), fc.constant(extra), digestFor(b))),
      // A monolithic upload with some digest.
      fc.tuple(fc.constant('monolithic' as const), body, fc.constant(undefined), fc.constant(false)).chain(([kind, b, r, extra]) => fc.tuple(fc.constant(kind), fc.constant(b), fc.constant(r), fc.constant(extra), digestFor(b))),
      // A manifest PUT by digest (by tag is refused to a grant) with a JSON body that may or may not be one.
      fc.tuple(fc.constant('manifest' as const), fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.record({ schemaVersion: fc.constant(2), mediaType: fc.constant('application/vnd.oci.image.manifest.v1+json'), config: fc.jsonValue({ maxDepth: 2 }), layers: fc.jsonValue({ maxDepth: 2 }) })).map((v) => Buffer.from(JSON.stringify(v) ?? 'null')), fc.constant(undefined), fc.boolean()).chain(([kind, b, r, byTag]) => fc.tuple(fc.constant(kind), fc.constant(b), fc.constant(r), fc.constant(byTag), digestFor(b))),
    );
    const clean = (what: string, a: { status: number; text: string }) => {
      expect(a.status, `${what} → ${a.status} ${a.text.slice(0, 300)}`).toBeLessThan(500);
      if (a.status >= 400) {
        const m = (JSON.parse(a.text) as { errors?: Array<{ message?: string }> }).errors?.[0]?.message;
        expect(typeof m === 'string' && m.length > 0, `${what}: ${a.text.slice(0, 300)}`).toBe(true);
      }
    };
    await fc.assert(
      fc.asyncProperty(step, async ([kind, b, r, flag, digest]) => {
        const base = `/v2/${repository}`;
        if (kind === 'monolithic') {
          clean('monolithic', await call('POST', `${base}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, {}, b));
          return;
        }
        if (kind === 'manifest') {
          const ref = flag ? '1' : encodeURIComponent(digest);
          const a = await call('PUT', `/v2/test/app/manifests/${ref}`, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, b);
          expect(a.status, a.text.slice(0, 300)).toBeLessThan(500);
          return;
        }
        const start = await call('POST', `${base}/blobs/uploads/`);
        clean('start', start);
        if (start.status !== 202 || !start.location) return;
        const path = new URL(start.location, peer).pathname;
        clean('patch', await call('PATCH', path, r === undefined ? {} : { 'content-range': r }, b));
        const put = await call('PUT', `${path}?digest=${encodeURIComponent(digest)}`, {}, flag ? b.subarray(0, 7) : undefined);
        clean('put', put);
        if (put.status >= 400) await call('DELETE', path);
      }),
      runs(600),
    );
    // The tag the grant may not move still names the seeded image, and the agent answers.
    expect(await tagTarget()).toBe(seeded);
    expect((await call('GET', '/v2/')).status).toBe(200);
  }, 180_000);
});
