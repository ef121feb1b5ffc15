import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { digestOf } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import type { Platform } from '../../src/oci/platform.js';
import { ingestDirName } from '../../src/store/ingest.js';
import { collectGarbage, openStore, type ContentStore, type ImageIndex } from '../../src/store/index.js';
import { ingestEntries, listBlobs } from '../harness/store.js';
import { chunked } from '../harness/streams.js';
import { tmpDir } from '../harness/tmp.js';

let dir: string;
let store: ContentStore;
let images: ImageIndex;

beforeEach(async () => {
  dir = await tmpDir('stowage-gc-');
  ({ store, images } = await openStore(dir));
});
afterEach(() => {
  images.close();
});

const put = async (s: string) => (await store.putBytes(Buffer.from(s))).digest;

describe('collectGarbage', () => {
  it('removes only blobs that no image, index or tag needs', async () => {
    const manifest = await put('manifest');
    const config = await put('config');
    const layer = await put('layer');
    const shared = await put('shared layer');
    const idx = await put('index');
    const orphanA = await put('orphan a');
    const orphanB = await put('orphan bb');
    images.putImage({
      manifestDigest: manifest,
      manifestMediaType: MediaType.OciManifest,
      configDigest: config,
      platform: { os: 'linux', architecture: 'amd64' } as Platform,
      layers: [layer, shared],
      size: 100,
      created: undefined,
      labels: {},
    });
    images.putIndex({ indexDigest: idx, mediaType: MediaType.OciIndex, children: [{ digest: manifest, platform: undefined, present: true }] });

    // graceMs: 0 — an explicit full sweep: these blobs were all committed just now.
    const dry = await collectGarbage(store, images, { dryRun: true, graceMs: 0 });
    expect(dry.removed.map((b) => b.digest).sort()).toEqual([orphanA, orphanB].sort());
    expect(await listBlobs(store)).toHaveLength(7);

    const result = await collectGarbage(store, images, { graceMs: 0 });
    expect(result.removed.map((b) => b.digest).sort()).toEqual([orphanA, orphanB].sort());
    expect(result.reclaimedBytes).toBe('orphan a'.length + 'orphan bb'.length);
    expect((await listBlobs(store)).map((b) => b.digest).sort()).toEqual([manifest, config, layer, shared, idx].sort());

    // Once the image and index go, everything they held goes too.
    images.deleteIndex(idx);
    images.deleteImage(manifest);
    const rest = await collectGarbage(store, images, { graceMs: 0 });
    expect(rest.removed).toHaveLength(5);
    expect(await listBlobs(store)).toEqual([]);
    expect(await store.has(digestOf('manifest'))).toBe(false);
  });

  it('removes stale ingests and keeps fresh ones', async () => {
    const fresh = await store.openIngest('fresh');
    await fresh.write(chunked(Buffer.from('in progress')));
    const old = await store.openIngest('abandoned');
    await old.write(chunked(Buffer.from('left behind')));
    // A put temp left by a crashed process.
    await mkdir(join(dir, 'ingest', 'put-crashed'));
    await writeFile(join(dir, 'ingest', 'put-crashed', 'data'), 'partial');
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    for (const name of [ingestDirName('abandoned'), 'put-crashed']) {
      await utimes(join(dir, 'ingest', name, 'data'), twoDaysAgo, twoDaysAgo);
    }

    const dry = await collectGarbage(store, images, { dryRun: true });
    expect(dry.staleIngests).toHaveLength(2);
    expect(await ingestEntries(dir)).toHaveLength(3);

    const result = await collectGarbage(store, images);
    expect(result.staleIngests).toHaveLength(2);
    expect(result.staleIngests).toContain('put-crashed');
    expect(await ingestEntries(dir)).toHaveLength(1);
    expect((await store.openIngest('fresh')).offset).toBe('in progress'.length);
    expect((await store.openIngest('abandoned')).offset).toBe(0);
  });

  describe('grace period (a pull or import that has committed blobs but not yet written its records)', () => {
    const blobFile = (digest: string) => join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
    const anHourAgo = () => new Date(Date.now() - 3600 * 1000);

    it('keeps an unreferenced blob just put with the default grace, and removes it with graceMs: 0', async () => {
      const d = await put('committed, not yet recorded');
      const dry = await collectGarbage(store, images, { dryRun: true });
      expect(dry.removed).toEqual([]);
      expect((await collectGarbage(store, images)).removed).toEqual([]);
      expect(await store.has(d)).toBe(true);

      const swept = await collectGarbage(store, images, { graceMs: 0 });
      expect(swept.removed).toEqual([{ digest: d, size: 'committed, not yet recorded'.length }]);
      expect(await store.has(d)).toBe(false);
    });

    it('removes an unreferenced blob committed longer ago than the grace period', async () => {
      const d = await put('old orphan');
      await utimes(blobFile(d), anHourAgo(), anHourAgo());
      expect((await collectGarbage(store, images)).removed.map((b) => b.digest)).toEqual([d]);
      expect(await store.has(d)).toBe(false);
    });

    it('refreshes an existing blob that is put again', async () => {
      const d = await put('put twice');
      await utimes(blobFile(d), anHourAgo(), anHourAgo());
      expect(await put('put twice')).toBe(d);
      expect((await collectGarbage(store, images)).removed).toEqual([]);
      expect(await store.has(d)).toBe(true);
    });

    it('dates a blob committed through an ingest by its commit, not its last write', async () => {
      const ingest = await store.openIngest('slow');
      await ingest.write(chunked(Buffer.from('written long ago')));
      await utimes(join(dir, 'ingest', ingestDirName('slow'), 'data'), anHourAgo(), anHourAgo());
      const { digest } = await ingest.commit();
      expect((await collectGarbage(store, images)).removed).toEqual([]);
      expect(await store.has(digest)).toBe(true);
      // And committing it again through another ingest refreshes it too.
      await utimes(blobFile(digest), anHourAgo(), anHourAgo());
      const again = await store.openIngest('again');
      await again.write(chunked(Buffer.from('written long ago')));
      await again.commit({ digest });
      expect((await collectGarbage(store, images)).removed).toEqual([]);
    });
  });
});
