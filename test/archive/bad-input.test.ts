import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import { MAX_MANIFEST_BYTES, MediaType } from '../../src/oci/media-types.js';
import { importArchive, importOciLayoutDir, type ImportOptions } from '../../src/store/import-archive.js';
import { type FreshStore, freshStore, storeSnapshot } from '../harness/store.js';
import { chunked } from '../harness/streams.js';
import { type TarEntrySpec, tarOf } from '../harness/tar.js';
import { tmpDir } from '../harness/tmp.js';
import { docker25Archive, dockerManifestFor, legacyArchive, makeImage, makeLayer, type TestImage, type TestLayer } from './helpers.js';

let target: FreshStore;
let plain: TestLayer;
let gz: TestLayer;
let img: TestImage;
let other: TestImage;
const hex = (d: string): string => d.slice(7);

beforeAll(async () => {
  target = await freshStore('stowage-archive-store-');
  plain = await makeLayer({ 'etc/hostname': 'box\n' });
  gz = await makeLayer({ 'opt/data.bin': 'd'.repeat(30_000) }, true);
  img = makeImage([plain, gz], ['victim:1']);
  // The store is not empty: a failed import must leave this image, its blobs and tags alone.
  const pre = makeImage([await makeLayer({ 'pre/file': 'already here' })], ['pre:1'], { label: 'pre' });
  await importArchive(chunked(await legacyArchive([pre])), target);
  other = makeImage([await makeLayer({ 'other/file': 'x' })], ['other:1']);
});

afterAll(() => {
  target.close();
});

async function expectRejected(archive: Buffer, code: ErrorCode, opts?: ImportOptions, message?: RegExp): Promise<void> {
  const before = await storeSnapshot(target);
  const err = await importArchive(chunked(archive), target, opts).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'import should fail').toBeDefined();
  expect(err).toMatchObject({ name: 'StowageError', code });
  if (message) expect((err as Error).message).toMatch(message);
  expect(await storeSnapshot(target)).toEqual(before);
}

/** The entries of a valid legacy archive for `img`, to be broken in one place. */
function legacyEntries(i: TestImage, layerNames = i.layers.map((_, n) => `l${n}/layer.tar`)): TarEntrySpec[] {
  return [
    { name: `${hex(i.configDigest)}.json`, data: i.config },
    ...i.layers.map((l, n) => ({ name: layerNames[n]!, data: l.blob })),
    { name: 'manifest.json', data: JSON.stringify([{ Config: `${hex(i.configDigest)}.json`, RepoTags: i.tags, Layers: layerNames }]) },
  ];
}

describe('importArchive refuses bad input and changes nothing', () => {
  it('accepts the untouched fixtures (so the failures below are about what was broken)', async () => {
    const s = await freshStore('stowage-archive-store-');
    try {
      await importArchive(chunked(await tarOf(legacyEntries(img))), s);
      await importArchive(chunked(await docker25Archive([img])), s);
      expect(s.images.listImages()).toHaveLength(2);
    } finally {
      s.close();
    }
  });

  it('not a tar, empty, truncated, corrupt gzip', async () => {
    const good = await legacyArchive([img]);
    await expectRejected(Buffer.from('this is not a tar file at all, just some text'.repeat(20)), 'INVALID_ARCHIVE');
    await expectRejected(Buffer.alloc(0), 'INVALID_ARCHIVE');
    await expectRejected(good.subarray(0, Math.floor(good.length / 2) + 100), 'INVALID_ARCHIVE');
    const zipped = gzipSync(good);
    await expectRejected(zipped.subarray(0, zipped.length - 64), 'INVALID_ARCHIVE');
    // A tar of something else entirely.
    await expectRejected(await tarOf([{ name: 'hello.txt', data: 'hi' }]), 'INVALID_ARCHIVE', undefined, /not an image archive/);
  });

  it('entries that escape the archive', async () => {
    await expectRejected(await tarOf([...legacyEntries(img), { name: '../evil', data: 'x' }]), 'UNSAFE_PATH');
    await expectRejected(await tarOf([{ name: '/etc/evil', data: 'x' }, ...legacyEntries(img)]), 'UNSAFE_PATH');
    await expectRejected(await tarOf([...legacyEntries(img), { name: 'a/../../evil', data: 'x' }]), 'UNSAFE_PATH');
  });

  it('links that escape, loop or dangle', async () => {
    const [cfg, l0, l1, manifest] = legacyEntries(img) as [TarEntrySpec, TarEntrySpec, TarEntrySpec, TarEntrySpec];
    await expectRejected(await tarOf([cfg, l0, l1, { name: 'l2/layer.tar', type: 'symlink', linkname: '../../etc/passwd' }, manifest]), 'UNSAFE_PATH');
    await expectRejected(await tarOf([cfg, l0, l1, { name: 'l2/layer.tar', type: 'symlink', linkname: '/etc/passwd' }, manifest]), 'UNSAFE_PATH');
    await expectRejected(await tarOf([cfg, l0, l1, { name: 'l2/layer.tar', type: 'link', linkname: '../outside' }, manifest]), 'UNSAFE_PATH');
    // Layers named through links: a loop, and a link to nothing.
    const viaLinks = (extra: TarEntrySpec[]): TarEntrySpec[] => [
      cfg,
      l0,
      ...extra,
      { name: 'manifest.json', data: JSON.stringify([{ Config: `${hex(img.configDigest)}.json`, RepoTags: [], Layers: ['l0/layer.tar', 'x/layer.tar'] }]) },
    ];
    await expectRejected(
      await tarOf(viaLinks([{ name: 'x/layer.tar', type: 'symlink', linkname: '../y/layer.tar' }, { name: 'y/layer.tar', type: 'symlink', linkname: '../x/layer.tar' }])),
      'INVALID_ARCHIVE',
      undefined,
      /loop/,
    );
    await expectRejected(await tarOf(viaLinks([{ name: 'x/layer.tar', type: 'symlink', linkname: '../nowhere/layer.tar' }])), 'INVALID_ARCHIVE', undefined, /missing/);
  });

  it('manifest.json naming paths outside the archive', async () => {
    const entries = legacyEntries(img);
    entries[3] = { name: 'manifest.json', data: JSON.stringify([{ Config: `${hex(img.configDigest)}.json`, RepoTags: [], Layers: ['l0/layer.tar', '../l1/layer.tar'] }]) };
    await expectRejected(await tarOf(entries), 'UNSAFE_PATH');
  });

  it('a missing layer, a missing config, an extra layer', async () => {
    const entries = legacyEntries(img);
    await expectRejected(await tarOf(entries.filter((e) => e.name !== 'l1/layer.tar')), 'INVALID_ARCHIVE', undefined, /layer "l1\/layer.tar" is missing/);
    await expectRejected(await tarOf(entries.filter((e) => !e.name.endsWith('.json') || e.name === 'manifest.json')), 'INVALID_ARCHIVE', undefined, /config .* is missing/);
    await expectRejected(await tarOf([...entries, { name: 'l9/layer.tar', data: other.layers[0]!.blob }]), 'INVALID_ARCHIVE', undefined, /not used by any image/);
  });

  it('layers that do not match the config', async () => {
    // One layer too few for the diff_ids.
    const short = legacyEntries(img);
    short[3] = { name: 'manifest.json', data: JSON.stringify([{ Config: `${hex(img.configDigest)}.json`, RepoTags: [], Layers: ['l0/layer.tar'] }]) };
    await expectRejected(await tarOf(short.filter((e) => e.name !== 'l1/layer.tar')), 'INVALID_ARCHIVE', undefined, /diff_ids/);
    // Layers swapped: each layer's content is not its diff_id.
    await expectRejected(await tarOf(legacyEntries(img, ['l1/layer.tar', 'l0/layer.tar']).map((e) =>
      e.name === 'manifest.json' ? { ...e, data: JSON.stringify([{ Config: `${hex(img.configDigest)}.json`, RepoTags: [], Layers: ['l0/layer.tar', 'l1/layer.tar'] }]) } : e,
    )), 'DIGEST_MISMATCH');
    // A gzip layer whose content was changed.
    const tampered = await makeLayer({ 'opt/data.bin': 'e'.repeat(30_000) }, true);
    await expectRejected(await tarOf(legacyEntries({ ...img, layers: [plain, tampered] })), 'DIGEST_MISMATCH');
    // A corrupt gzip layer.
    const broken = Buffer.from(gz.blob);
    broken.fill(0xff, 20, 60);
    await expectRejected(await tarOf(legacyEntries({ ...img, layers: [plain, { ...gz, blob: broken }] })), 'INVALID_ARCHIVE', undefined, /gzip/);
  });

  it('a config whose file name is not its digest', async () => {
    const entries = legacyEntries(img);
    const wrong = hex(digestOf('something else'));
    entries[0] = { name: `${wrong}.json`, data: img.config };
    entries[3] = { name: 'manifest.json', data: JSON.stringify([{ Config: `${wrong}.json`, RepoTags: [], Layers: ['l0/layer.tar', 'l1/layer.tar'] }]) };
    await expectRejected(await tarOf(entries), 'DIGEST_MISMATCH');
  });

  it('malformed metadata: manifest.json, config, tags, duplicates, devices', async () => {
    const entries = legacyEntries(img);
    const withManifest = (data: string): TarEntrySpec[] => [...entries.slice(0, 3), { name: 'manifest.json', data }];
    await expectRejected(await tarOf(withManifest('{not json')), 'INVALID_ARCHIVE');
    await expectRejected(await tarOf(withManifest('[]')), 'INVALID_ARCHIVE');
    await expectRejected(await tarOf(withManifest('[{"Config": 5}]')), 'INVALID_ARCHIVE');
    await expectRejected(
      await tarOf(withManifest(JSON.stringify([{ Config: `${hex(img.configDigest)}.json`, RepoTags: ['Not A Valid:Ref!'], Layers: ['l0/layer.tar', 'l1/layer.tar'] }]))),
      'INVALID_ARCHIVE',
      undefined,
      /invalid reference/,
    );
    const badConfig = Buffer.from('{"architecture":"amd64"}');
    await expectRejected(
      await tarOf([
        { name: `${hex(digestOf(badConfig))}.json`, data: badConfig },
        ...entries.slice(1, 3),
        { name: 'manifest.json', data: JSON.stringify([{ Config: `${hex(digestOf(badConfig))}.json`, RepoTags: [], Layers: [] }]) },
      ]),
      'INVALID_ARCHIVE',
    );
    await expectRejected(await tarOf([...entries, { name: 'l0/layer.tar', data: 'again' }]), 'INVALID_ARCHIVE', undefined, /twice/);
    await expectRejected(await tarOf([...entries, { name: 'dev/null', type: 'character-device' }]), 'INVALID_ARCHIVE');
  });

  it('limits: entry count, entry size, metadata size', async () => {
    const archive = await legacyArchive([img]);
    await expectRejected(archive, 'TOO_LARGE', { maxEntries: 3 });
    await expectRejected(archive, 'TOO_LARGE', { maxEntryBytes: 1024 });
    const huge = Buffer.alloc(MAX_MANIFEST_BYTES + 10, 0x20);
    huge[0] = 0x5b;
    await expectRejected(await tarOf([...legacyEntries(img).slice(0, 3), { name: 'manifest.json', data: huge }]), 'TOO_LARGE');
  });

  it('extra tags that are invalid or ambiguous', async () => {
    await expectRejected(await legacyArchive([img]), 'INVALID_REFERENCE', { tag: ['NotLower:1'] });
    await expectRejected(await legacyArchive([img, other]), 'BAD_REQUEST', { tag: ['both:1'] });
  });

  it('OCI layouts: missing or corrupt blobs, bad index.json, missing oci-layout', async () => {
    const m = dockerManifestFor(img, MediaType.OciManifest);
    await expectRejected(await docker25Archive([img], { skipBlob: img.layers[1]!.digest }), 'INVALID_ARCHIVE', undefined, /missing/);
    await expectRejected(await docker25Archive([img], { skipBlob: digestOf(m) }), 'INVALID_ARCHIVE', undefined, /missing/);
    await expectRejected(await docker25Archive([img], { skipBlob: img.configDigest }), 'INVALID_ARCHIVE', undefined, /missing/);
    // A blob whose content is not what its name says.
    const lying = await docker25Archive([img], {
      skipBlob: plain.digest,
      extra: [{ name: `blobs/sha256/${hex(plain.digest)}`, data: Buffer.concat([plain.blob.subarray(0, 100), Buffer.alloc(plain.blob.length - 100)]) }],
    });
    await expectRejected(lying, 'DIGEST_MISMATCH');
    // manifest.json (Docker 25+) naming a layer that is not there.
    const base = await docker25Archive([img], { withManifestJson: false });
    const layoutOnly = await tarOf([
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
      { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [] }) },
    ]);
    await expectRejected(layoutOnly, 'INVALID_ARCHIVE', undefined, /no images/);
    await expectRejected(
      await tarOf([{ name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, digest: digestOf(m), size: m.length }] }) }]),
      'INVALID_ARCHIVE',
      undefined,
      /oci-layout/,
    );
    expect(base.length).toBeGreaterThan(0);
    const extraEntry = await docker25Archive([img], {
      withManifestJson: false,
      extra: [{ name: 'manifest.json', data: JSON.stringify([{ Config: `blobs/sha256/${hex(img.configDigest)}`, RepoTags: ['x:1'], Layers: [`blobs/sha256/${hex(digestOf('gone'))}`] }]) }],
    });
    await expectRejected(extraEntry, 'INVALID_ARCHIVE');
  });

  it('importOciLayoutDir refuses a corrupt blob and changes nothing', async () => {
    const dir = await tmpDir('stowage-archive-');
    const m = dockerManifestFor(img, MediaType.OciManifest);
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, digest: digestOf(m), size: m.length }] }));
    await writeFile(join(dir, 'blobs', 'sha256', hex(digestOf(m))), m);
    await writeFile(join(dir, 'blobs', 'sha256', hex(img.configDigest)), img.config);
    await writeFile(join(dir, 'blobs', 'sha256', hex(plain.digest)), plain.blob);
    await writeFile(join(dir, 'blobs', 'sha256', hex(gz.digest)), Buffer.from(gz.blob).fill(0, 30));
    const before = await storeSnapshot(target);
    await expect(importOciLayoutDir(dir, target)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(await storeSnapshot(target)).toEqual(before);
    await writeFile(join(dir, 'blobs', 'sha256', hex(gz.digest)), gz.blob);
    const r = await importOciLayoutDir(dir, target);
    expect(r.images[0]!.configDigest).toBe(img.configDigest);
  });
});
