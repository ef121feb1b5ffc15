import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { type Dispatcher, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readLocalImage } from '../../src/cli/local-image.js';
import { uploadImage } from '../../src/cli/push-upload.js';
import type { Availability, Operation, UploadGrant } from '../../src/control/wire.js';
import { type Digest, digestHex } from '../../src/oci/digest.js';
import { parseManifestBytes } from '../../src/oci/manifest.js';
import type { ContentStoreApi } from '../../src/store/types.js';
import { type Cluster, startCluster, until } from '../harness/cluster.js';
import { type TestImageInfo, makeImageTar, makeTestImage } from '../harness/images.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * push streams, on real processes: the test is stowctl (it creates the push with the manifest, then uploads
 * to the first target by hand), so it decides how far the upload has got, not a clock. The other targets
 * pull from the first while it is still receiving the image, and end with it whole and verified; an upload
 * cut off in the middle fails them without leaving a truncated blob anywhere. stowctl's own upload code
 * sends blobs in an order the others can follow: with its last layer held back, they already pull.
 */

const MiB = 1024 * 1024;
const SLOW = { timeoutMs: 120_000, everyMs: 50 };

let cluster: Cluster;

beforeAll(async () => {
  cluster = await startCluster({ agents: 3 });
}, 180_000);

afterAll(async () => {
  await cluster?.close();
});

interface Image {
  dir: string;
  img: TestImageInfo;
  blob(digest: string): Promise<Buffer>;
}

async function newImage(): Promise<Image> {
  const dir = await tmpDir('stowage-push-stream-');
  const img = await makeTestImage(dir, { layers: 2, layerBytes: MiB, tag: 'x' });
  return { dir, img, blob: (digest) => readFile(join(dir, 'blobs', 'sha256', digestHex(digest as `sha256:${string}`))) };
}

async function op(id: string): Promise<Operation> {
  return (await cluster.api<{ operation: Operation }>('GET', `/api/v1/operations/${id}`)).body.operation;
}

/** What stowctl does first: the push operation, with the manifest, and the grant to upload with. */
async function createPush(image: Image, reference: string): Promise<{ operation: Operation; grant: UploadGrant }> {
  const { img } = image;
  const size = img.manifestSize + img.configSize + img.layers.reduce((n, l) => n + l.size, 0);
  const res = await cluster.api<{ operation: Operation; upload: UploadGrant | null }>('POST', '/api/v1/operations/push', {
    digest: img.manifestDigest,
    reference,
    platform: 'linux/amd64',
    size_bytes: size,
    to: ['agent-1', 'agent-2', 'agent-3'],
    manifest: img.manifestBytes.toString('utf8'),
  });
  expect(res.status).toBe(201);
  expect(res.body.upload?.machine_id).toBe('agent-1');
  return { operation: res.body.operation, grant: res.body.upload! };
}

function auth(grant: UploadGrant): Record<string, string> {
  return { authorization: `Basic ${Buffer.from(`${grant.username}:${grant.password}`).toString('base64')}` };
}

/** A monolithic upload of one blob whose body the test feeds. */
function uploadBlob(grant: UploadGrant, digest: string, size: number): { feed: PassThrough; done: Promise<Dispatcher.ResponseData | Error> } {
  const feed = new PassThrough();
  const done = request(`${grant.registry_url}/v2/${grant.repository}/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    headers: { ...auth(grant), 'content-type': 'application/octet-stream', 'content-length': String(size) },
    body: feed,
  }).catch((err: unknown) => err as Error);
  return { feed, done };
}

async function uploadWhole(grant: UploadGrant, digest: string, bytes: Buffer): Promise<void> {
  const up = uploadBlob(grant, digest, bytes.length);
  up.feed.end(bytes);
  const res = (await up.done) as Dispatcher.ResponseData;
  expect(res.statusCode).toBe(201);
  await res.body.dump();
}

async function reportUpload(opId: string, body: { outcome: string } & Record<string, unknown>): Promise<void> {
  const res = await cluster.api('POST', `/api/v1/operations/${opId}/upload-finished`, body);
  // The control plane also looks for the manifest on its own: it may have seen the upload whole first.
  if (body.outcome === 'uploaded' && res.status === 409) return;
  expect(res.status).toBe(200);
}

/** Bytes a target has reported receiving in this operation. */
async function received(opId: string, machine: string): Promise<number> {
  return (await op(opId)).targets.find((t) => t.machine_id === machine)?.bytes_transferred ?? 0;
}

function storedBlob(machine: string, digest: string): string {
  const agent = cluster.agents.find((a) => a.name === machine)!;
  return join(agent.dataDir, 'store', 'blobs', 'sha256', digestHex(digest as `sha256:${string}`));
}

describe('push streams', () => {
  it('the other targets pull from the first while the upload to it is still under way, and end with the image whole', async () => {
    const image = await newImage();
    const { img } = image;
    const [first, last] = img.layers as [TestImageInfo['layers'][0], TestImageInfo['layers'][0]];
    const { operation, grant } = await createPush(image, 'example.test/stream/app:1');
    await uploadWhole(grant, img.configDigest, await image.blob(img.configDigest));
    await uploadWhole(grant, first.digest, await image.blob(first.digest));
    const lastBytes = await image.blob(last.digest);
    const held = uploadBlob(grant, last.digest, lastBytes.length);
    held.feed.write(lastBytes.subarray(0, lastBytes.length / 2));

    // The upload is not finished (the test holds the rest of the last layer), yet both other targets have
    // received more than the config and the first layer: they pull while it arrives.
    const before = img.configSize + first.size;
    for (const machine of ['agent-2', 'agent-3']) {
      await until(`${machine} to receive bytes during the upload`, async () => ((await received(operation.id, machine)) > before ? true : undefined), SLOW);
    }
    expect((await op(operation.id)).targets.find((t) => t.machine_id === 'agent-1')?.status).toBe('running');

    held.feed.end(lastBytes.subarray(lastBytes.length / 2));
    const res = (await held.done) as Dispatcher.ResponseData;
    expect(res.statusCode).toBe(201);
    await res.body.dump();
    const put = await request(`${grant.registry_url}/v2/${grant.repository}/manifests/${img.manifestDigest}`, {
      method: 'PUT',
      headers: { ...auth(grant), 'content-type': 'application/vnd.oci.image.manifest.v1+json' },
      body: img.manifestBytes,
    });
    expect(put.statusCode).toBe(201);
    await put.body.dump();
    await reportUpload(operation.id, { outcome: 'uploaded', bytes_transferred: img.manifestSize + img.configSize + first.size + last.size });

    const final = await cluster.settle(operation.id, SLOW.timeoutMs);
    expect(final.status, JSON.stringify(final, null, 1)).toBe('succeeded');
    expect(final.targets.map((t) => [t.machine_id, t.status])).toEqual([
      ['agent-1', 'present'],
      ['agent-2', 'present'],
      ['agent-3', 'present'],
    ]);
    const uploadEnded = Date.parse(final.targets[0]!.finished_at!);
    for (const t of final.targets.slice(1)) expect(Date.parse(t.started_at!)).toBeLessThan(uploadEnded);
    for (const machine of ['agent-1', 'agent-2', 'agent-3']) await cluster.waitForImage(machine, img.manifestDigest);
    const status = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${img.manifestDigest}`);
    for (const r of status.body.records) expect(r.references).toContain('example.test/stream/app:1');
  }, 240_000);

  it("stowctl's upload feeds the others as it goes: with its last layer held back, they have planned and pull the layers before it", async () => {
    const name = 'example.test/stream/order:1';
    const { tar } = await makeImageTar(name, { layers: 3, layerBytes: MiB });
    const local = await readLocalImage({ image: name, archive: tar });
    try {
      const manifestBytes = await local.handles.store.readBytes(local.digest);
      const parsed = parseManifestBytes(manifestBytes);
      if (parsed.kind !== 'manifest') throw new Error('expected a platform manifest');
      const layers = parsed.manifest.layers;
      const top = layers.at(-1)!;
      const res = await cluster.api<{ operation: Operation; upload: UploadGrant | null }>('POST', '/api/v1/operations/push', {
        digest: local.digest,
        reference: name,
        platform: 'linux/amd64',
        size_bytes: local.sizeBytes,
        to: ['agent-1', 'agent-2', 'agent-3'],
        manifest: manifestBytes.toString('utf8'),
      });
      expect(res.status).toBe(201);
      const operation = res.body.operation;
      const grant = res.body.upload!;

      // The local store as stowctl reads it, except that the top layer (the one a pull reads last) waits for the test.
      let release!: () => void;
      const held = new Promise<void>((resolve) => (release = resolve));
      const real = local.handles.store;
      const store = new Proxy(real, {
        get(target, prop) {
          if (prop === 'createReadStream') {
            return async (digest: Digest, range?: { start: number; end?: number }) => {
              if (digest === top.digest) await held;
              return target.createReadStream(digest, range);
            };
          }
          const value = Reflect.get(target, prop, target) as unknown;
          return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
        },
      }) as ContentStoreApi;
      const uploading = uploadImage(grant, { store, images: local.handles.images }, local.digest);

      // The upload cannot be whole (the top layer has not begun), yet both other targets have planned the
      // image (they know their total) and received the layers below the top one.
      const below = layers.slice(0, -1).reduce((n, l) => n + l.size, 0);
      for (const machine of ['agent-2', 'agent-3']) {
        await until(
          `${machine} to pull the layers below the held one`,
          async () => {
            const t = (await op(operation.id)).targets.find((x) => x.machine_id === machine);
            return t?.bytes_total != null && t.bytes_transferred >= below ? true : undefined;
          },
          SLOW,
        );
      }
      expect((await op(operation.id)).targets.find((t) => t.machine_id === 'agent-1')?.status).toBe('running');

      release();
      await uploading;
      await reportUpload(operation.id, { outcome: 'uploaded', bytes_transferred: local.sizeBytes });
      const final = await cluster.settle(operation.id, SLOW.timeoutMs);
      expect(final.status, JSON.stringify(final, null, 1)).toBe('succeeded');
      expect(final.targets.map((t) => t.status)).toEqual(['present', 'present', 'present']);
      for (const machine of ['agent-1', 'agent-2', 'agent-3']) await cluster.waitForImage(machine, local.digest);
    } finally {
      await local.close();
    }
  }, 240_000);

  it("stowctl's report that comes while the push still announces its fan-out is acted on, not lost", async () => {
    const image = await newImage();
    const uploadTarget = cluster.agents.find((a) => a.name === 'agent-1')!.process;
    // Frozen, the upload target holds the announcement (and so the push handler) while the report arrives.
    uploadTarget.kill('SIGSTOP');
    let operation: Operation;
    try {
      ({ operation } = await createPush(image, 'example.test/stream/early-report:1'));
      await reportUpload(operation.id, { outcome: 'failed', failure: { code: 'CONNECTION_FAILED', message: 'stowctl gave up at once', stage: 'upload' } });
    } finally {
      uploadTarget.kill('SIGCONT');
    }
    // Its own deadline is an hour away: only the report can end it.
    const final = await cluster.settle(operation.id, SLOW.timeoutMs);
    expect(final.status).toBe('failed');
    expect(final.targets.find((t) => t.machine_id === 'agent-1')?.failure?.code).toBe('CONNECTION_FAILED');
  }, 240_000);

  it('an upload cut off in the middle fails the targets pulling from it, and leaves no truncated blob anywhere', async () => {
    const image = await newImage();
    const { img } = image;
    const [first, last] = img.layers as [TestImageInfo['layers'][0], TestImageInfo['layers'][0]];
    const { operation, grant } = await createPush(image, 'example.test/stream/cut:1');
    await uploadWhole(grant, img.configDigest, await image.blob(img.configDigest));
    await uploadWhole(grant, first.digest, await image.blob(first.digest));
    const lastBytes = await image.blob(last.digest);
    const held = uploadBlob(grant, last.digest, lastBytes.length);
    held.feed.write(lastBytes.subarray(0, lastBytes.length / 2));
    await until('agent-2 to receive bytes during the upload', async () => ((await received(operation.id, 'agent-2')) > img.configSize + first.size ? true : undefined), SLOW);

    held.feed.destroy(new Error('stowctl went away'));
    await held.done;
    await reportUpload(operation.id, { outcome: 'failed', failure: { code: 'CONNECTION_FAILED', message: 'the upload was cut off', stage: 'upload' } });

    const final = await cluster.settle(operation.id, SLOW.timeoutMs);
    expect(final.status).toBe('failed');
    expect(final.targets.map((t) => t.status)).toEqual(['failed', 'failed', 'failed']);
    for (const machine of ['agent-1', 'agent-2', 'agent-3']) {
      const records = await cluster.api<{ records: Availability[] }>('GET', `/api/v1/images/status?digest=${img.manifestDigest}&machine=${machine}`);
      expect(records.body.records.filter((r) => r.presence.state === 'present')).toEqual([]);
      const lastHeld = await access(storedBlob(machine, last.digest)).then(
        () => true,
        () => false,
      );
      expect(lastHeld).toBe(false);
    }
  }, 240_000);
});
