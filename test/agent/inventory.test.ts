import { afterEach, describe, expect, it } from 'vitest';
import { computeInventory, diffInventory } from '../../src/agent/inventory.js';
import type { InventoryItem } from '../../src/control/wire.js';
import type { Digest } from '../../src/oci/digest.js';
import { digestOf } from '../../src/oci/digest.js';
import { type FreshStore, freshStore } from '../harness/store.js';

const d = (s: string): Digest => digestOf(s);

function item(name: string, extra: Partial<InventoryItem> = {}): InventoryItem {
  return { digest: d(name), config_digest: d(`cfg-${name}`), platform: 'linux/amd64', references: [], size_bytes: 10, ...extra };
}

const mapOf = (...items: InventoryItem[]) => new Map(items.map((i) => [i.digest as Digest, i]));

describe('diffInventory', () => {
  it('is empty between equal inventories', () => {
    const a = item('a', { references: ['docker.io/library/a:1'] });
    expect(diffInventory(mapOf(a), mapOf({ ...a, references: [...a.references] }))).toEqual({ upserted: [], removed: [] });
  });

  it('upserts new and changed items and removes the missing ones', () => {
    const a = item('a');
    const b = item('b');
    const c = item('c');
    const b2 = { ...b, references: ['docker.io/library/b:2'] };
    const diff = diffInventory(mapOf(a, b), mapOf(b2, c));
    expect(diff.upserted).toEqual([b2, c]);
    expect(diff.removed).toEqual([a.digest]);
  });

  it('sees a change in any field', () => {
    const a = item('a');
    for (const change of [{ index_digest: d('idx') }, { size_bytes: 11 }, { platform: 'linux/arm64' }, { config_digest: d('other') }, { references: ['x'] }]) {
      expect(diffInventory(mapOf(a), mapOf({ ...a, ...change })).upserted).toHaveLength(1);
    }
  });

  it('from nothing upserts everything; to nothing removes everything', () => {
    const a = item('a');
    expect(diffInventory(new Map(), mapOf(a))).toEqual({ upserted: [a], removed: [] });
    expect(diffInventory(mapOf(a), new Map())).toEqual({ upserted: [], removed: [a.digest] });
  });
});

describe('computeInventory over the image records', () => {
  let s: FreshStore;
  afterEach(() => s?.close());

  it('gives each platform image its index, tags of the manifest and of the index, platform and size', async () => {
    s = await freshStore();
    const { images } = s;
    const amd = d('m-amd');
    const arm = d('m-arm');
    const idx = d('index');
    images.transaction(() => {
      images.putImage({ manifestDigest: amd, manifestMediaType: 'application/vnd.oci.image.manifest.v1+json', configDigest: d('c-amd'), platform: { os: 'linux', architecture: 'amd64' }, layers: [d('l1')], size: 100, created: undefined, labels: {} });
      images.putImage({ manifestDigest: arm, manifestMediaType: 'application/vnd.oci.image.manifest.v1+json', configDigest: d('c-arm'), platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, layers: [d('l2')], size: 200, created: undefined, labels: {} });
      images.putIndex({ indexDigest: idx, mediaType: 'application/vnd.oci.image.index.v1+json', children: [{ digest: amd, platform: { os: 'linux', architecture: 'amd64' }, present: true }, { digest: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, present: true }] });
      images.tag('docker.io/library/multi:1', idx);
      images.tag('docker.io/library/amd-only:1', amd);
    });
    const inv = computeInventory(images);
    expect(inv.get(amd)).toEqual({ digest: amd, index_digest: idx, config_digest: d('c-amd'), platform: 'linux/amd64', references: ['docker.io/library/amd-only:1', 'docker.io/library/multi:1'], size_bytes: 100 });
    expect(inv.get(arm)).toEqual({ digest: arm, index_digest: idx, config_digest: d('c-arm'), platform: 'linux/arm64/v8', references: ['docker.io/library/multi:1'], size_bytes: 200 });
    expect(inv.size).toBe(2);
  });
});

describe('ImageIndex.onChange', () => {
  let s: FreshStore;
  afterEach(() => s?.close());

  it('fires once per committed write, once per outer transaction, never inside it, and not for a rollback', async () => {
    s = await freshStore();
    const { images } = s;
    let calls = 0;
    let insideTransaction = false;
    let firedInside = false;
    // The index swallows listener errors, so record what was seen instead of asserting in here.
    const off = images.onChange(() => {
      calls++;
      if (insideTransaction) firedInside = true;
    });
    const rec = { manifestDigest: d('m'), manifestMediaType: 'application/vnd.oci.image.manifest.v1+json', configDigest: d('c'), platform: { os: 'linux', architecture: 'amd64' }, layers: [], size: 1, created: undefined, labels: {} };
    images.putImage(rec);
    expect(calls).toBe(1);
    images.transaction(() => {
      insideTransaction = true;
      images.tag('docker.io/library/x:1', rec.manifestDigest);
      images.addRepoDigest({ repository: 'docker.io/library/x', digest: rec.manifestDigest, manifestDigest: rec.manifestDigest });
      images.transaction(() => images.tag('docker.io/library/x:2', rec.manifestDigest));
      expect(calls).toBe(1);
      insideTransaction = false;
    });
    expect(calls).toBe(2);
    expect(firedInside).toBe(false);
    expect(() =>
      images.transaction(() => {
        images.untag('docker.io/library/x:1');
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(calls).toBe(2);
    expect(images.resolveTag('docker.io/library/x:1')).toBe(rec.manifestDigest);
    // Untagging nothing changes nothing; reads never fire.
    images.untag('docker.io/library/nope:1');
    images.listImages();
    images.transaction(() => images.getImage(rec.manifestDigest));
    expect(calls).toBe(2);
    images.deleteImage(rec.manifestDigest);
    expect(calls).toBe(3);
    off();
    images.putImage(rec);
    expect(calls).toBe(3);
  });
});
