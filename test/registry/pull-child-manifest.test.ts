import { writeFile } from 'node:fs/promises';
import { type Server, createServer, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Digest, digestHex } from '../../src/oci/digest.js';
import { RegistryClient } from '../../src/registry/client.js';
import { type PullResult, pullImage } from '../../src/registry/pull.js';
import type { ImageIndexApi, ImageRecord } from '../../src/store/types.js';
import { type TestImageInfo, type TestIndexInfo, pushTestImages } from '../harness/images.js';
import { type TestRegistry, startRegistry } from '../harness/registry.js';
import { type FreshStore, freshStore, listBlobs } from '../harness/store.js';

/**
 * Pulling an index whose chosen child manifest is already in the store reads that manifest from the store:
 * a counting proxy in front of a real docker-registry shows the child manifest is fetched once, not on
 * every pull, and the pull's result and records are the same either way.
 */

interface CountingProxy {
  host: string;
  requests: string[];
  count(method: string, path: string): number;
  close(): Promise<void>;
}

async function startCountingProxy(target: TestRegistry): Promise<CountingProxy> {
  const [targetHost, targetPort] = target.host.split(':') as [string, string];
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const upstream = httpRequest(
      { host: targetHost, port: Number(targetPort), method: req.method, path: req.url, headers: { ...req.headers, host: target.host } },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    count: (method, path) => requests.filter((r) => r === `${method} ${path}`).length,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let reg: TestRegistry;
let proxy: CountingProxy;
let multi: TestIndexInfo;
let amd64: TestImageInfo;
let arm64: TestImageInfo;
const stores: FreshStore[] = [];

async function store(): Promise<FreshStore> {
  const s = await freshStore();
  stores.push(s);
  return s;
}

const ARM64 = { os: 'linux', architecture: 'arm64' };
const manifestPath = (ref: string) => `/v2/test/multi/manifests/${ref}`;

/** Records without addedAt (the time a record was first written), to compare two stores' records. */
function timeless(records: readonly ImageRecord[]): Array<Omit<ImageRecord, 'addedAt'>> {
  return records.map(({ addedAt: _, ...rest }) => rest);
}

function resultShape(r: PullResult) {
  return { ...r, images: timeless(r.images) };
}

/** The records, in digest order: listImages orders by arrival, and two platforms recorded together may share a millisecond or not. */
function recordsOf(images: ImageIndexApi) {
  const byDigest = [...images.listImages()].sort((a, b) => a.manifestDigest.localeCompare(b.manifestDigest));
  return {
    images: timeless(byDigest),
    indexes: images.listIndexes().map(({ addedAt: _, ...rest }) => rest),
    tags: images.listTags().map(({ updatedAt: _, ...rest }) => rest),
    repoDigests: byDigest.flatMap((i) => images.repoDigestsFor(i.manifestDigest)),
  };
}

beforeAll(async () => {
  reg = await startRegistry();
  ({ multi } = await pushTestImages(reg.host, { layerBytes: 16 * 1024, platforms: ['linux/amd64', 'linux/arm64/v8'] }));
  [amd64, arm64] = multi.children as [TestImageInfo, TestImageInfo];
  proxy = await startCountingProxy(reg);
}, 120_000);

afterAll(async () => {
  for (const s of stores) s.close();
  await proxy?.close();
  await reg?.stop();
});

describe('pullImage of an index whose child manifest the store holds', () => {
  it('fetches the chosen child manifest once; a re-pull reads it from the store with the same result', async () => {
    const { store: s, images } = await store();
    const client = new RegistryClient({ host: proxy.host });
    const ref = `${proxy.host}/test/multi:1`;

    const first = await pullImage(client, ref, { store: s, images }, { platform: ARM64 });
    expect(first).toMatchObject({ manifestDigest: arm64.manifestDigest, indexDigest: multi.indexDigest, downloaded: true });
    expect(proxy.count('GET', manifestPath(arm64.manifestDigest))).toBe(1);
    const blobsAfterFirst = await listBlobs(s);
    const recordsAfterFirst = recordsOf(images);
    const requestsAfterFirst = proxy.requests.length;

    const second = await pullImage(client, ref, { store: s, images }, { platform: ARM64 });
    const secondRequests = proxy.requests.slice(requestsAfterFirst);
    // The index is asked for again (the tag may have moved); the child manifest is not, nor any blob.
    expect(secondRequests.filter((r) => r.includes('/manifests/'))).toEqual([`GET ${manifestPath('1')}`]);
    expect(secondRequests.filter((r) => r.includes('/blobs/'))).toEqual([]);
    expect(proxy.count('GET', manifestPath(arm64.manifestDigest))).toBe(1);

    expect(second).toEqual(first.downloaded ? { ...first, downloaded: false } : first);
    expect(second.images).toEqual(first.images);
    expect(await listBlobs(s)).toEqual(blobsAfterFirst);
    expect(recordsOf(images)).toEqual(recordsAfterFirst);
  });

  it('a store that holds only the child manifest blob (no records) pulls the rest, records the same, and does not fetch it', async () => {
    const client = new RegistryClient({ host: proxy.host });
    const ref = `${proxy.host}/test/multi:1`;
    // The reference: a pull into an empty store.
    const ref1 = await store();
    const reference = await pullImage(client, ref, { store: ref1.store, images: ref1.images }, { pullAllPlatforms: true, platform: ARM64 });

    const { store: s, images } = await store();
    await s.putBytes(amd64.manifestBytes, { digest: amd64.manifestDigest, size: amd64.manifestSize });
    const before = proxy.requests.length;
    const res = await pullImage(client, ref, { store: s, images }, { pullAllPlatforms: true, platform: ARM64 });
    const made = proxy.requests.slice(before);
    expect(made.filter((r) => r.includes('/manifests/'))).toEqual([`GET ${manifestPath('1')}`, `GET ${manifestPath(arm64.manifestDigest)}`]);
    // Everything else the image needs is fetched as before.
    for (const d of [amd64.configDigest, ...amd64.layers.map((l) => l.digest), arm64.configDigest, ...arm64.layers.map((l) => l.digest)]) {
      expect(made).toContain(`GET /v2/test/multi/blobs/${d}`);
    }

    expect(resultShape(res)).toEqual(resultShape(reference));
    expect(await listBlobs(s)).toEqual(await listBlobs(ref1.store));
    expect(recordsOf(images)).toEqual(recordsOf(ref1.images));
  });

  it('fetches the child manifest from the registry when the stored bytes do not match its digest', async () => {
    const { store: s, images, dir } = await store();
    const client = new RegistryClient({ host: proxy.host });
    await s.putBytes(arm64.manifestBytes, { digest: arm64.manifestDigest, size: arm64.manifestSize });
    // Damage the stored copy behind the store's back (same length, different bytes).
    const damaged = Buffer.from(arm64.manifestBytes);
    const at = damaged.length - 2;
    damaged.writeUInt8(damaged.readUInt8(at) ^ 1, at);
    await writeFile(join(dir, 'blobs', 'sha256', digestHex(arm64.manifestDigest)), damaged);
    const before = proxy.count('GET', manifestPath(arm64.manifestDigest));
    const res = await pullImage(client, `${proxy.host}/test/multi:1`, { store: s, images }, { platform: ARM64 });
    expect(proxy.count('GET', manifestPath(arm64.manifestDigest))).toBe(before + 1);
    expect(res).toMatchObject({ manifestDigest: arm64.manifestDigest, configDigest: arm64.configDigest, indexDigest: multi.indexDigest });
  });

  it('leases the stored child manifest for the whole pull', async () => {
    const { store: s, images } = await store();
    const client = new RegistryClient({ host: proxy.host });
    await s.putBytes(arm64.manifestBytes, { digest: arm64.manifestDigest, size: arm64.manifestSize });
    const deletes: Array<Promise<boolean>> = [];
    let leasedMidPull: boolean | undefined;
    const before = proxy.count('GET', manifestPath(arm64.manifestDigest));
    await pullImage(
      client,
      `${proxy.host}/test/multi:1`,
      { store: s, images },
      {
        platform: ARM64,
        onPlan: () => {
          leasedMidPull = s.isLeased(arm64.manifestDigest as Digest);
          deletes.push(s.delete(arm64.manifestDigest));
        },
      },
    );
    expect(proxy.count('GET', manifestPath(arm64.manifestDigest))).toBe(before);
    expect(leasedMidPull).toBe(true);
    expect(await Promise.all(deletes)).toEqual([false]);
    expect(s.isLeased(arm64.manifestDigest)).toBe(false); // released once the records are in
    expect(await s.has(arm64.manifestDigest)).toBe(true);
    expect(images.getImage(arm64.manifestDigest)?.configDigest).toBe(arm64.configDigest);
  });
});
