import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { type IncomingMessage, type Server, type ServerResponse, createServer, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Digest, digestHex, digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { collectGarbage } from '../../src/store/gc.js';
import { ContentStore } from '../../src/store/content-store.js';
import { type TestImageInfo, makeTestImage, skopeo } from '../harness/images.js';
import type { TestRegistry } from '../harness/registry.js';
import { listBlobs } from '../harness/store.js';
import { tarListing, tarOf } from '../harness/tar.js';
import { tmpDir } from '../harness/tmp.js';
import { type CoreEngine, type DockerRunner, startEngineWithRegistry } from './core-helpers.js';

/**
 * A pull that finds layers "Already exists" must not lose them when the image holding them is deleted before
 * the pull records its image. The interleaving is fixed, not timed: the pull goes through a proxy in front of
 * the registry that holds back the one layer the store lacks. The pull asks the registry for it only after it
 * has decided which layers already exist, so while that request is held the test deletes the other image
 * (docker rmi, or GC), then lets the layer through.
 */

let registry: TestRegistry;
let engine: CoreEngine;
let docker: DockerRunner;
let closeAll: () => Promise<void>;

beforeAll(async () => {
  ({ registry, engine, docker, close: closeAll } = await startEngineWithRegistry());
});
afterAll(async () => {
  await closeAll();
});

function ok(r: { code: number; stdout: string; stderr: string }): string {
  if (r.code !== 0) throw new Error(`docker failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout;
}

/** A forwarding proxy to the registry that holds GETs of one blob until `open()` is called. */
async function gatedProxy(target: string, heldBlob: Digest): Promise<{ host: string; reached: Promise<void>; open(): void; close(): Promise<void> }> {
  let reachedResolve!: () => void;
  const reached = new Promise<void>((r) => (reachedResolve = r));
  let openGate!: () => void;
  const gate = new Promise<void>((r) => (openGate = r));
  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const up = httpRequest(`${target}${req.url ?? '/'}`, { method: req.method, headers: { ...req.headers, host: new URL(target).host } }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url ?? '').includes(`/blobs/${heldBlob}`)) {
      reachedResolve();
      void gate.then(() => forward(req, res));
      return;
    }
    forward(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    host: `127.0.0.1:${port}`,
    reached,
    open: openGate,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

interface SharedPair {
  a: TestImageInfo;
  /** B: A's layers plus `extra`. */
  b: { manifestDigest: Digest; configDigest: Digest; layers: Digest[]; extra: Digest };
}

/** Pushes test/<name>-a:1 and test/<name>-b:1 to the registry, B sharing every layer of A plus one more. */
async function pushSharedPair(name: string): Promise<SharedPair> {
  const dir = await tmpDir('stowage-lease-layout-');
  const a = await makeTestImage(dir, { layers: 2, layerBytes: 4096, tag: 'a' });
  await skopeo(['copy', `oci:${dir}:a`, `docker://${registry.host}/test/${name}-a:1`]);

  const write = async (data: Buffer) => {
    const digest = digestOf(data);
    await writeFile(join(dir, 'blobs', 'sha256', digestHex(digest)), data);
    return { digest, size: data.length };
  };
  const tar = await tarOf([{ name: 'extra.bin', data: randomBytes(256 * 1024) }]);
  const extra = await write(gzipSync(tar));
  const config = await write(
    Buffer.from(
      JSON.stringify({
        created: '2024-02-03T04:05:06Z',
        os: 'linux',
        architecture: 'amd64',
        config: { Cmd: ['/bin/sh'] },
        rootfs: { type: 'layers', diff_ids: [...a.layers.map((l) => l.diffId), digestOf(tar)] },
        history: [0, 1, 2].map((i) => ({ created: '2024-02-03T04:05:06Z', created_by: `step ${i}` })),
      }),
    ),
  );
  const layers = [...a.layers.map((l) => ({ digest: l.digest, size: l.size })), extra];
  const manifest = await write(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, ...config },
        layers: layers.map((l) => ({ mediaType: MediaType.OciLayerGzip, ...l })),
      }),
    ),
  );
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [{ mediaType: MediaType.OciManifest, ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'b' } }],
    }),
  );
  await skopeo(['copy', `oci:${dir}:b`, `docker://${registry.host}/test/${name}-b:1`]);
  return { a, b: { manifestDigest: manifest.digest, configDigest: config.digest, layers: layers.map((l) => l.digest), extra: extra.digest } };
}

/** Every blob B's records name is in the store, and `docker save` of B writes an archive with all its layers. */
async function expectWhole(ref: string, b: SharedPair['b']): Promise<void> {
  const { store, images } = engine.ctx;
  const record = images.getImage(b.manifestDigest);
  expect(record).toBeDefined();
  expect(record!.layers).toEqual(b.layers);
  for (const d of [record!.manifestDigest, record!.configDigest, ...record!.layers]) expect(await store.has(d), `blob ${d} of B`).toBe(true);
  const out = join(engine.root, `save-${digestHex(b.manifestDigest).slice(0, 12)}.tar`);
  ok(await docker(['save', '-o', out, ref]));
  const names = (await tarListing(await readFile(out))).map((e) => e.name);
  for (const d of b.layers) expect(names.some((n) => n.includes(digestHex(d))), `layer ${d} in the saved archive`).toBe(true);
}

describe('a pull racing the deletion of the image whose layers it reuses', () => {
  it('docker rmi of A while a pull of B (sharing A\'s layers) is under way: B ends whole, rmi reports only what it deleted', async () => {
    const { a, b } = await pushSharedPair('rmi');
    ok(await docker(['pull', `${registry.host}/test/rmi-a:1`]));
    const proxy = await gatedProxy(registry.url, b.extra);
    try {
      const bRef = `${proxy.host}/test/rmi-b:1`;
      const pulling = docker(['pull', bRef]);
      // The pull has found A's layers present and asked for the one it lacks.
      await proxy.reached;

      const rmi = ok(await docker(['rmi', `${registry.host}/test/rmi-a:1`]));
      expect(rmi).toContain(`Untagged: ${registry.host}/test/rmi-a:1`);
      expect(rmi).toContain(`Deleted: ${a.configDigest}`);
      expect(rmi).toContain(`Deleted: ${a.manifestDigest}`);
      // The shared layers are leased by the pull: not deleted, and not reported as deleted.
      for (const l of a.layers) {
        expect(rmi).not.toContain(l.digest);
        expect(await engine.ctx.store.has(l.digest)).toBe(true);
      }
      expect(await engine.ctx.store.has(a.configDigest)).toBe(false);

      proxy.open();
      const pulled = ok(await pulling);
      expect(pulled).toContain('Already exists');
      await expectWhole(bRef, b);

      // The lease went with the pull: removing B now frees every blob.
      ok(await docker(['rmi', bRef]));
      expect(await listBlobs(engine.ctx.store)).toEqual([]);
    } finally {
      proxy.open();
      await proxy.close();
    }
  });

  it('GC with no grace period during the pull leaves the layers it found present', async () => {
    const { a, b } = await pushSharedPair('gc');
    ok(await docker(['pull', `${registry.host}/test/gc-a:1`]));
    // A's records go but its blobs stay (--no-prune): the pull will find them present, unreferenced.
    ok(await docker(['rmi', '--no-prune', `${registry.host}/test/gc-a:1`]));
    const proxy = await gatedProxy(registry.url, b.extra);
    try {
      const bRef = `${proxy.host}/test/gc-b:1`;
      const pulling = docker(['pull', bRef]);
      await proxy.reached;

      const gc = await collectGarbage(engine.ctx.store as ContentStore, engine.ctx.images, { graceMs: 0 });
      const removed = gc.removed.map((r) => r.digest);
      expect(removed).toContain(a.configDigest);
      expect(removed).toContain(a.manifestDigest);
      for (const l of a.layers) expect(removed).not.toContain(l.digest);
      expect(gc.reclaimedBytes).toBe(gc.removed.reduce((n, r) => n + r.size, 0));

      proxy.open();
      const pulled = ok(await pulling);
      expect(pulled).toContain('Already exists');
      await expectWhole(bRef, b);
      ok(await docker(['rmi', bRef]));
      expect(await listBlobs(engine.ctx.store)).toEqual([]);
    } finally {
      proxy.open();
      await proxy.close();
    }
  });

  it('a push whose blob was deleted meanwhile fails saying which blob went', async () => {
    const { a } = await pushSharedPair('push');
    const aRef = `${registry.host}/test/push-a:1`;
    ok(await docker(['pull', aRef]));
    // What a deletion during the push does (a push holds no lease): the record stays, one layer goes.
    expect(await engine.ctx.store.delete(a.layers[1]!.digest)).toBe(true);
    ok(await docker(['tag', aRef, `${registry.host}/test/push-elsewhere:1`]));
    const r = await docker(['push', `${registry.host}/test/push-elsewhere:1`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`${a.layers[1]!.digest} is no longer in the local store`);
  });
});
