import { gzipSync } from 'node:zlib';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { type TarEntrySpec, tarOf } from '../harness/tar.js';

/**
 * Archive fixtures: layers and images built in memory, written as a legacy `docker save` archive or
 * as Docker 25+ writes it (an OCI layout with manifest.json). Tars, streams and stores come from
 * test/harness/.
 */

export interface TestLayer {
  /** The uncompressed layer tar. */
  tar: Buffer;
  diffId: Digest;
  /** What the archive holds: the tar itself, or its gzip. */
  blob: Buffer;
  digest: Digest;
  gzip: boolean;
}

export async function makeLayer(files: Record<string, string>, gzip = false): Promise<TestLayer> {
  const t = await tarOf(Object.entries(files).map(([name, data]) => ({ name, data })));
  const blob = gzip ? gzipSync(t) : t;
  return { tar: t, diffId: digestOf(t), blob, digest: digestOf(blob), gzip };
}

export interface TestImage {
  layers: TestLayer[];
  config: Buffer;
  configDigest: Digest;
  tags: string[];
}

export function makeImage(layers: TestLayer[], tags: string[], opts: { arch?: string; label?: string } = {}): TestImage {
  const config = Buffer.from(
    JSON.stringify({
      architecture: opts.arch ?? 'amd64',
      os: 'linux',
      created: '2024-01-02T03:04:05Z',
      config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'], Labels: { 'org.example.test': opts.label ?? 'yes' } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((_, i) => ({ created: '2024-01-02T03:04:05Z', created_by: `step ${i}` })),
    }),
  );
  return { layers, config, configDigest: digestOf(config), tags };
}

const hex = (d: Digest): string => d.slice(7);

/**
 * A legacy (Docker < 25) `docker save` archive: <hex>.json configs, <id>/layer.tar, manifest.json.
 * A layer already written for an earlier image is written as a symlink to it, as Docker does.
 */
export async function legacyArchive(images: TestImage[], opts: { extra?: TarEntrySpec[]; manifest?: unknown } = {}): Promise<Buffer> {
  const entries: TarEntrySpec[] = [];
  const written = new Map<Digest, string>();
  const manifest = images.map((img, n) => {
    entries.push({ name: `${hex(img.configDigest)}.json`, data: img.config });
    const layers = img.layers.map((l, i) => {
      const id = hex(digestOf(`${n}/${i}/${l.digest}`));
      entries.push({ name: `${id}/`, type: 'directory' });
      entries.push({ name: `${id}/VERSION`, data: '1.0' });
      const first = written.get(l.digest);
      if (first) entries.push({ name: `${id}/layer.tar`, type: 'symlink', linkname: `../${first}` });
      else {
        entries.push({ name: `${id}/layer.tar`, data: l.blob });
        written.set(l.digest, `${id}/layer.tar`);
      }
      return `${id}/layer.tar`;
    });
    return { Config: `${hex(img.configDigest)}.json`, RepoTags: img.tags, Layers: layers };
  });
  entries.push(...(opts.extra ?? []));
  entries.push({ name: 'manifest.json', data: JSON.stringify(opts.manifest ?? manifest) });
  return tarOf(entries);
}

export function dockerManifestFor(img: TestImage, mediaType: string = MediaType.DockerManifest): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: mediaType === MediaType.OciManifest ? MediaType.OciConfig : MediaType.DockerConfig, size: img.config.length, digest: img.configDigest },
      layers: img.layers.map((l) => ({
        mediaType:
          mediaType === MediaType.OciManifest
            ? l.gzip ? MediaType.OciLayerGzip : MediaType.OciLayer
            : l.gzip ? MediaType.DockerLayerGzip : MediaType.DockerLayer,
        size: l.blob.length,
        digest: l.digest,
      })),
    }),
  );
}

/** A Docker 25+ `docker save` archive: OCI layout plus manifest.json pointing into blobs/. */
export async function docker25Archive(images: TestImage[], opts: { skipBlob?: Digest; extra?: TarEntrySpec[]; withManifestJson?: boolean } = {}): Promise<Buffer> {
  const blobs = new Map<Digest, Buffer>();
  const index: Array<Record<string, unknown>> = [];
  const manifestJson: unknown[] = [];
  for (const img of images) {
    const m = dockerManifestFor(img, MediaType.OciManifest);
    const md = digestOf(m);
    blobs.set(md, m);
    blobs.set(img.configDigest, img.config);
    for (const l of img.layers) blobs.set(l.digest, l.blob);
    for (const t of img.tags) {
      const full = t.includes('/') ? t : `docker.io/library/${t}`;
      index.push({
        mediaType: MediaType.OciManifest,
        digest: md,
        size: m.length,
        annotations: { 'io.containerd.image.name': full, 'org.opencontainers.image.ref.name': t.split(':').pop() },
      });
    }
    if (img.tags.length === 0) index.push({ mediaType: MediaType.OciManifest, digest: md, size: m.length });
    manifestJson.push({ Config: `blobs/sha256/${hex(img.configDigest)}`, RepoTags: img.tags, Layers: img.layers.map((l) => `blobs/sha256/${hex(l.digest)}`) });
  }
  const entries: TarEntrySpec[] = [{ name: 'blobs/', type: 'directory' }, { name: 'blobs/sha256/', type: 'directory' }];
  for (const [d, data] of blobs) if (d !== opts.skipBlob) entries.push({ name: `blobs/sha256/${hex(d)}`, data });
  entries.push({ name: 'index.json', data: JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: index }) });
  if (opts.withManifestJson !== false) entries.push({ name: 'manifest.json', data: JSON.stringify(manifestJson) });
  entries.push({ name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' });
  entries.push(...(opts.extra ?? []));
  return tarOf(entries);
}
