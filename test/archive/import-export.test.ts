import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { parseManifestBytes, type ImageManifest } from '../../src/oci/manifest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { exportArchive } from '../../src/store/export-archive.js';
import { importArchive, importOciLayoutDir } from '../../src/store/import-archive.js';
import type { ContentStoreApi, ImageIndexApi } from '../../src/store/types.js';
import { skopeo } from '../harness/images.js';
import { runOk } from '../harness/run.js';
import { type FreshStore, freshStore, listBlobs } from '../harness/store.js';
import { chunked, readAll } from '../harness/streams.js';
import { tarListing, tarOf } from '../harness/tar.js';
import { tmpDir } from '../harness/tmp.js';
import { docker25Archive, legacyArchive, makeImage, makeLayer, type TestImage } from './helpers.js';

type Target = { store: ContentStoreApi; images: ImageIndexApi };

const opened: FreshStore[] = [];
afterEach(() => {
  while (opened.length) opened.pop()!.close();
});

async function store(): Promise<Target> {
  const s = await freshStore('stowage-archive-store-');
  opened.push(s);
  return s;
}

function dir(): Promise<string> {
  return tmpDir('stowage-archive-');
}

async function manifestOf(t: Target, digest: Digest): Promise<ImageManifest> {
  const parsed = parseManifestBytes(await t.store.readBytes(digest));
  if (parsed.kind !== 'manifest') throw new Error('expected a manifest');
  return parsed.manifest;
}

async function exportToFile(t: Target, targets: Array<{ manifestDigest: Digest; references: string[] }>): Promise<string> {
  const file = join(await dir(), 'export.tar');
  await writeFile(file, await readAll(exportArchive(targets, t)));
  return file;
}

let base: TestImage;
let app: TestImage;
let shared: Awaited<ReturnType<typeof makeLayer>>;

beforeAll(async () => {
  shared = await makeLayer({ 'etc/os-release': 'ID=test\n', 'bin/sh': '#!fake shell\n' });
  const gz = await makeLayer({ 'usr/lib/libz.so': 'z'.repeat(20_000) }, true);
  const appLayer = await makeLayer({ 'app/main.js': 'console.log("hi")\n' });
  base = makeImage([shared, gz], ['example.com/base:1.0', 'base:latest'], { label: 'base' });
  app = makeImage([shared, appLayer], ['app:2'], { label: 'app' });
});

describe('legacy docker save archives', () => {
  it('imports two images with a symlinked shared layer and a gzip layer', async () => {
    const t = await store();
    const archive = await legacyArchive([base, app]);
    // The second image's shared layer is a symlink to the first image's file.
    expect((await tarListing(archive)).filter((e) => e.type === 'symlink')).toHaveLength(1);

    const result = await importArchive(chunked(archive), t);
    expect(result.format).toBe('docker-legacy');
    expect(result.images).toHaveLength(2);
    const [a, b] = result.images;
    expect(a!.configDigest).toBe(base.configDigest);
    expect(b!.configDigest).toBe(app.configDigest);
    expect(a!.references.sort()).toEqual(['docker.io/library/base:latest', 'example.com/base:1.0']);
    expect(b!.references).toEqual(['docker.io/library/app:2']);

    const rec = t.images.getImage(a!.manifestDigest)!;
    expect(rec.platform).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(rec.layers).toEqual(base.layers.map((l) => l.digest));
    expect(rec.labels).toEqual({ 'org.example.test': 'base' });
    expect(rec.created).toBe('2024-01-02T03:04:05Z');
    expect(t.images.resolveTag('example.com/base:1.0')).toBe(a!.manifestDigest);
    expect(t.images.resolveTag('docker.io/library/app:2')).toBe(b!.manifestDigest);

    // A Docker schema2 manifest; the gzip layer stored as it was, as tar.gzip.
    const m = await manifestOf(t, a!.manifestDigest);
    expect(m.mediaType).toBe(MediaType.DockerManifest);
    expect(m.config.digest).toBe(base.configDigest);
    expect(m.layers.map((l) => l.mediaType)).toEqual([MediaType.DockerLayer, MediaType.DockerLayerGzip]);
    expect((await t.store.readBytes(base.layers[1]!.digest)).equals(base.layers[1]!.blob)).toBe(true);

    // Exactly the blobs the images need: 2 manifests, 2 configs, 3 distinct layers.
    const blobs = (await listBlobs(t.store)).map((blob) => blob.digest);
    expect(blobs.sort()).toEqual(
      [a!.manifestDigest, b!.manifestDigest, base.configDigest, app.configDigest, shared.digest, base.layers[1]!.digest, app.layers[1]!.digest].sort(),
    );
    expect(rec.size).toBe(
      (await t.store.stat(a!.manifestDigest))!.size + base.config.length + base.layers.reduce((n, l) => n + l.blob.length, 0),
    );
  });

  it('follows hard links between layer files', async () => {
    const t = await store();
    const hexOf = (d: Digest): string => d.slice(7);
    const archive = await tarOf([
      { name: `${hexOf(app.configDigest)}.json`, data: app.config },
      { name: 'one/layer.tar', data: app.layers[0]!.blob },
      { name: 'two/layer.tar', data: app.layers[1]!.blob },
      { name: 'three/layer.tar', type: 'link', linkname: 'one/layer.tar' },
      {
        name: 'manifest.json',
        data: JSON.stringify([{ Config: `${hexOf(app.configDigest)}.json`, RepoTags: ['linked:1'], Layers: ['three/layer.tar', 'two/layer.tar'] }]),
      },
    ]);
    const r = await importArchive(chunked(archive), t);
    expect(r.images[0]!.configDigest).toBe(app.configDigest);
    expect(t.images.getImage(r.images[0]!.manifestDigest)!.layers).toEqual(app.layers.map((l) => l.digest));
  });

  it('accepts the whole archive gzip-compressed', async () => {
    const t = await store();
    const result = await importArchive(chunked(gzipSync(await legacyArchive([base]))), t);
    expect(result.images.map((i) => i.configDigest)).toEqual([base.configDigest]);
  });

  it('applies extra tags to a single image', async () => {
    const t = await store();
    const r = await importArchive(chunked(await legacyArchive([app])), t, { tag: ['registry.example:5000/team/app:v9', 'plain'] });
    expect(r.images[0]!.references.sort()).toEqual(['docker.io/library/app:2', 'docker.io/library/plain:latest', 'registry.example:5000/team/app:v9']);
  });

  it('exports as Docker 25+ writes it, readable by skopeo, and re-imports to the same image', async () => {
    const t = await store();
    const [img] = (await importArchive(chunked(await legacyArchive([base]), 65536), t)).images;
    const file = await exportToFile(t, [{ manifestDigest: img!.manifestDigest, references: img!.references }]);

    const listing = await tarListing(await readFile(file));
    const names = listing.map((e) => e.name);
    expect(names).toContain('oci-layout');
    expect(names).toContain('index.json');
    expect(names).toContain('manifest.json');
    expect(names).toContain(`blobs/sha256/${img!.manifestDigest.slice(7)}`);
    const manifestJson = JSON.parse(listing.find((e) => e.name === 'manifest.json')!.data.toString());
    expect(manifestJson).toEqual([
      {
        Config: `blobs/sha256/${base.configDigest.slice(7)}`,
        RepoTags: expect.arrayContaining(['example.com/base:1.0', 'base:latest']),
        Layers: base.layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`),
      },
    ]);
    const index = JSON.parse(listing.find((e) => e.name === 'index.json')!.data.toString());
    expect(index.manifests).toContainEqual({
      mediaType: MediaType.DockerManifest,
      digest: img!.manifestDigest,
      size: expect.any(Number),
      annotations: { 'io.containerd.image.name': 'example.com/base:1.0', 'org.opencontainers.image.ref.name': '1.0' },
    });

    // skopeo reads it as a docker-archive: the config is the same.
    const stdout = await skopeo(['inspect', '--raw', `docker-archive:${file}`]);
    expect(JSON.parse(stdout).config.digest).toBe(base.configDigest);
    const cfg = await skopeo(['inspect', '--config', '--raw', `docker-archive:${file}`]);
    expect(digestOf(cfg)).toBe(base.configDigest);
    const oci = join(await dir(), 'oci');
    await skopeo(['copy', '--quiet', '--preserve-digests', `docker-archive:${file}`, `oci:${oci}:copied`]);
    const ociIndex = JSON.parse(await readFile(join(oci, 'index.json'), 'utf8'));
    const ociManifest = JSON.parse(await readFile(join(oci, 'blobs', 'sha256', ociIndex.manifests[0].digest.slice(7)), 'utf8'));
    expect(ociManifest.config.digest).toBe(base.configDigest);

    // Re-import into a fresh store: same manifest, config, tags.
    const t2 = await store();
    const again = await importArchive(chunked(await readFile(file)), t2);
    expect(again.format).toBe('docker-oci');
    expect(again.images).toHaveLength(1);
    expect(again.images[0]!.manifestDigest).toBe(img!.manifestDigest);
    expect(again.images[0]!.configDigest).toBe(base.configDigest);
    expect(again.images[0]!.references.sort()).toEqual([...img!.references].sort());
    expect(t2.images.getImage(img!.manifestDigest)).toMatchObject({ layers: base.layers.map((l) => l.digest), configDigest: base.configDigest });
  });

  it('exports several images with shared blobs written once', async () => {
    const t = await store();
    const r = await importArchive(chunked(await legacyArchive([base, app])), t);
    const file = await exportToFile(
      t,
      r.images.map((i) => ({ manifestDigest: i.manifestDigest, references: i.references })),
    );
    const blobs = (await tarListing(await readFile(file))).filter((e) => e.name.startsWith('blobs/sha256/') && e.type === 'file');
    expect(blobs).toHaveLength(7);
    for (const b of blobs) expect(digestOf(b.data)).toBe(`sha256:${b.name.slice('blobs/sha256/'.length)}`);
    const stdout = await skopeo(['inspect', '--raw', `docker-archive:${file}:app:2`]);
    expect(JSON.parse(stdout).config.digest).toBe(app.configDigest);

    const t2 = await store();
    const again = await importArchive(chunked(await readFile(file)), t2);
    expect(again.images.map((i) => i.manifestDigest).sort()).toEqual(r.images.map((i) => i.manifestDigest).sort());
    expect(t2.images.listTags().map((x) => x.reference)).toEqual(t.images.listTags().map((x) => x.reference));
  });

  it('fails the export stream for an unknown image', async () => {
    const t = await store();
    const s = exportArchive([{ manifestDigest: digestOf('nope'), references: [] }], t);
    await expect(readAll(s)).rejects.toMatchObject({ code: 'IMAGE_NOT_FOUND' });
  });
});

describe('Docker 25+ archives', () => {
  it('imports blobs, index.json names and manifest.json RepoTags', async () => {
    const t = await store();
    const r = await importArchive(chunked(await docker25Archive([base, app])), t);
    expect(r.format).toBe('docker-oci');
    expect(r.images.map((i) => i.configDigest)).toEqual([base.configDigest, app.configDigest]);
    expect(r.images[0]!.references.sort()).toEqual(['docker.io/library/base:latest', 'example.com/base:1.0']);
    const rec = t.images.getImage(r.images[0]!.manifestDigest)!;
    expect(rec.manifestMediaType).toBe(MediaType.OciManifest);
    expect(rec.layers).toEqual(base.layers.map((l) => l.digest));
  });

  it('imports an index.json-only layout with nested index and a missing platform', async () => {
    const t = await store();
    const arm = makeImage([shared], [], { arch: 'arm64' });
    const amdManifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, size: app.config.length, digest: app.configDigest },
        layers: app.layers.map((l) => ({ mediaType: MediaType.OciLayer, size: l.blob.length, digest: l.digest })),
      }),
    );
    const armManifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, size: arm.config.length, digest: arm.configDigest },
        layers: [{ mediaType: MediaType.OciLayer, size: shared.blob.length, digest: shared.digest }],
      }),
    );
    const list = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciIndex,
        manifests: [
          { mediaType: MediaType.OciManifest, size: amdManifest.length, digest: digestOf(amdManifest), platform: { os: 'linux', architecture: 'amd64' } },
          { mediaType: MediaType.OciManifest, size: armManifest.length, digest: digestOf(armManifest), platform: { os: 'linux', architecture: 'arm64' } },
        ],
      }),
    );
    const blob = (b: Buffer): { name: string; data: Buffer } => ({ name: `blobs/sha256/${digestOf(b).slice(7)}`, data: b });
    const archive = await tarOf([
      { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
      // arm64's manifest is absent: only amd64 was saved.
      blob(amdManifest),
      blob(app.config),
      ...app.layers.map((l) => blob(l.blob)),
      blob(list),
      {
        name: 'index.json',
        data: JSON.stringify({
          schemaVersion: 2,
          manifests: [{ mediaType: MediaType.OciIndex, size: list.length, digest: digestOf(list), annotations: { 'org.opencontainers.image.ref.name': '3.1' } }],
        }),
      },
    ]);
    const r = await importArchive(chunked(archive), t, { tag: ['registry.example/team/multi'] });
    expect(r.format).toBe('oci-layout');
    expect(r.indexes).toEqual([digestOf(list)]);
    expect(r.images).toHaveLength(1);
    expect(r.images[0]).toMatchObject({ manifestDigest: digestOf(amdManifest), indexDigest: digestOf(list), references: ['registry.example/team/multi:3.1'] });
    expect(t.images.getIndex(digestOf(list))!.children.map((c) => c.present)).toEqual([true, false]);
    expect(t.images.resolveTag('registry.example/team/multi:3.1')).toBe(digestOf(list));

    // Without a repository the bare ref name leaves the image untagged.
    const t2 = await store();
    const r2 = await importArchive(chunked(archive), t2);
    expect(r2.images[0]!.references).toEqual([]);
    expect(t2.images.listTags()).toEqual([]);
    expect(t2.images.getImage(digestOf(amdManifest))).toBeDefined();
  });
});

describe('OCI layouts made by skopeo', () => {
  it('imports an oci: directory and its tar', async () => {
    const t = await store();
    const [img] = (await importArchive(chunked(await legacyArchive([base])), t)).images;
    const file = await exportToFile(t, [{ manifestDigest: img!.manifestDigest, references: [] }]);
    const oci = join(await dir(), 'layout');
    await skopeo(['copy', '--quiet', '--preserve-digests', `docker-archive:${file}`, `oci:${oci}:1.0`]);
    // The export is an OCI layout tar too.
    const viaOci = await skopeo(['inspect', '--raw', `oci-archive:${file}`]);
    expect(JSON.parse(viaOci).config.digest).toBe(base.configDigest);

    const t2 = await store();
    const r = await importOciLayoutDir(oci, t2, { tag: ['example.com/copied'] });
    expect(r.format).toBe('oci-layout');
    expect(r.images[0]!.configDigest).toBe(base.configDigest);
    expect(r.images[0]!.references).toEqual(['example.com/copied:1.0']);

    const layoutTar = join(await dir(), 'layout.tar');
    await runOk('tar', ['-C', oci, '-cf', layoutTar, '.']);
    const t3 = await store();
    const r3 = await importArchive(chunked(await readFile(layoutTar)), t3);
    expect(r3.format).toBe('oci-layout');
    expect(r3.images[0]!.configDigest).toBe(base.configDigest);
    expect(r3.images[0]!.manifestDigest).toBe(r.images[0]!.manifestDigest);
    expect(r3.images[0]!.references).toEqual([]);

    // skopeo's oci-archive: tars the layout itself.
    const ociArchive = join(await dir(), 'skopeo-oci.tar');
    await skopeo(['copy', '--quiet', '--preserve-digests', `docker-archive:${file}`, `oci-archive:${ociArchive}:example.com/full/name:7`]);
    const t4 = await store();
    const r4 = await importArchive(chunked(await readFile(ociArchive)), t4);
    expect(r4.images[0]!.configDigest).toBe(base.configDigest);
    expect(r4.images[0]!.references).toEqual(['example.com/full/name:7']);
  });
});
