import { describe, expect, it } from 'vitest';
import { isStowageError, type ErrorCode } from '../../src/errors.js';
import { digestOf } from '../../src/oci/digest.js';
import {
  buildManifest,
  canonicalJson,
  manifestBlobs,
  parseDescriptor,
  parseImageConfig,
  parseManifestBytes,
  type Descriptor,
} from '../../src/oci/manifest.js';
import { MAX_MANIFEST_BYTES, MediaType } from '../../src/oci/media-types.js';
import { choosePlatform } from '../../src/oci/platform.js';

const enc = (v: unknown): Uint8Array => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));
const d = (s: string): `sha256:${string}` => digestOf(s);

const config: Descriptor = { mediaType: MediaType.DockerConfig, size: 1469, digest: d('config') };
const layer: Descriptor = { mediaType: MediaType.DockerLayerGzip, size: 3623807, digest: d('layer') };

const dockerManifest = { schemaVersion: 2, mediaType: MediaType.DockerManifest, config, layers: [layer] };
const ociManifest = {
  schemaVersion: 2,
  mediaType: MediaType.OciManifest,
  config: { mediaType: MediaType.OciConfig, digest: d('config'), size: 1469 },
  layers: [{ mediaType: MediaType.OciLayerGzip, digest: d('layer'), size: 10, annotations: { 'org.opencontainers.image.title': 'l' } }],
  annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
};
const dockerList = {
  schemaVersion: 2,
  mediaType: MediaType.DockerManifestList,
  manifests: [
    { mediaType: MediaType.DockerManifest, digest: d('amd64'), size: 528, platform: { architecture: 'amd64', os: 'linux' } },
    { mediaType: MediaType.DockerManifest, digest: d('arm64'), size: 528, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
  ],
};
const ociIndex = {
  schemaVersion: 2,
  mediaType: MediaType.OciIndex,
  manifests: [
    { mediaType: MediaType.OciManifest, digest: d('amd64'), size: 528, platform: { architecture: 'amd64', os: 'linux' } },
    {
      mediaType: MediaType.OciManifest,
      digest: d('att'),
      size: 840,
      platform: { architecture: 'unknown', os: 'unknown' },
      annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
    },
  ],
};

function codeOf(fn: () => unknown): ErrorCode | undefined {
  try {
    fn();
  } catch (err) {
    if (isStowageError(err)) return err.code;
    throw err;
  }
  return undefined;
}

function withoutMediaType(doc: Record<string, unknown>): Record<string, unknown> {
  const { mediaType: _drop, ...rest } = doc;
  return rest;
}

describe('parseManifestBytes detects all four kinds', () => {
  it.each([
    ['Docker schema2 manifest', dockerManifest, 'manifest', MediaType.DockerManifest],
    ['OCI manifest', ociManifest, 'manifest', MediaType.OciManifest],
    ['Docker manifest list', dockerList, 'index', MediaType.DockerManifestList],
    ['OCI index', ociIndex, 'index', MediaType.OciIndex],
  ] as const)('%s, from the content type, the mediaType field, or the shape', (_name, doc, kind, mediaType) => {
    const fromHeader = parseManifestBytes(enc(doc), `${mediaType}; charset=utf-8`);
    const fromField = parseManifestBytes(enc(doc), 'application/json');
    const noHeader = parseManifestBytes(enc(doc));
    for (const parsed of [fromHeader, fromField, noHeader]) {
      expect(parsed.kind).toBe(kind);
      expect(parsed.mediaType).toBe(mediaType);
    }
    // Only the content type says what a field-less document is; otherwise the shape does (OCI by default).
    const bare = withoutMediaType(doc);
    expect(parseManifestBytes(enc(bare), mediaType).mediaType).toBe(mediaType);
    expect(parseManifestBytes(enc(bare)).mediaType).toBe(kind === 'index' ? MediaType.OciIndex : MediaType.OciManifest);
  });

  it('gives typed access to the parsed document', () => {
    const m = parseManifestBytes(enc(dockerManifest));
    if (m.kind !== 'manifest') throw new Error('expected a manifest');
    expect(manifestBlobs(m.manifest).map((b) => b.digest)).toEqual([d('config'), d('layer')]);

    const i = parseManifestBytes(enc(dockerList));
    if (i.kind !== 'index') throw new Error('expected an index');
    expect(choosePlatform(i.index.manifests, { os: 'linux', architecture: 'arm64' }).digest).toBe(d('arm64'));
  });

  it('keeps unknown fields so re-serialisation is lossless', () => {
    const doc = {
      ...ociManifest,
      artifactType: 'application/x.example',
      subject: { mediaType: MediaType.OciManifest, digest: d('subject'), size: 1, 'x-extra': [1, 2] },
      'x-vendor': { nested: true },
      layers: [{ ...ociManifest.layers[0], data: 'aGk=', 'x-layer': 1 }],
    };
    const text = JSON.stringify(doc);
    const parsed = parseManifestBytes(enc(text));
    if (parsed.kind !== 'manifest') throw new Error('expected a manifest');
    expect(canonicalJson(parsed.manifest)).toBe(text);
  });
});

describe('parseManifestBytes rejects bad input', () => {
  it('refuses more than MAX_MANIFEST_BYTES with TOO_LARGE', () => {
    const big = new Uint8Array(MAX_MANIFEST_BYTES + 1).fill(0x20);
    expect(codeOf(() => parseManifestBytes(big))).toBe('TOO_LARGE');
    expect(codeOf(() => parseImageConfig(big))).toBe('TOO_LARGE');
  });

  it.each([
    ['not JSON', '{"schemaVersion": 2,', /not valid JSON/],
    ['not an object', '[1,2]', /expected a JSON object/],
    ['JSON null', 'null', /expected a JSON object/],
    ['invalid UTF-8', new Uint8Array([0x7b, 0xff, 0x7d]), /UTF-8/],
    ['neither layers nor manifests', { schemaVersion: 2 }, /cannot tell a manifest from an index/],
    ['both layers and manifests', { schemaVersion: 2, layers: [], manifests: [] }, /cannot tell/],
    ['unknown mediaType', { ...dockerManifest, mediaType: 'application/x-nope' }, /unknown mediaType/],
    ['wrong schemaVersion', { ...dockerManifest, schemaVersion: 3 }, /schemaVersion/],
    ['bad layer digest', { ...dockerManifest, layers: [{ ...layer, digest: 'sha256:abc' }] }, /layers\.0\.digest/],
    ['negative size', { ...dockerManifest, config: { ...config, size: -1 } }, /config\.size/],
    ['missing config', { schemaVersion: 2, mediaType: MediaType.OciManifest, layers: [] }, /config/],
    ['index child without digest', { ...ociIndex, manifests: [{ mediaType: MediaType.OciManifest, size: 1 }] }, /manifests\.0\.digest/],
    ['manifest body under an index media type', { ...dockerManifest, mediaType: MediaType.DockerManifestList }, /manifests/],
  ] as Array<[string, unknown, RegExp]>)('%s -> INVALID_MANIFEST', (_name, doc, message) => {
    const bytes = doc instanceof Uint8Array ? doc : enc(doc);
    expect(codeOf(() => parseManifestBytes(bytes))).toBe('INVALID_MANIFEST');
    expect(() => parseManifestBytes(bytes)).toThrow(message);
  });

  it('refuses a mediaType field that contradicts the content type', () => {
    expect(() => parseManifestBytes(enc(dockerManifest), MediaType.OciManifest)).toThrow(/does not match content type/);
  });

  it('says schema1 is unsupported', () => {
    const schema1 = { schemaVersion: 1, name: 'x', tag: 'latest', fsLayers: [] };
    expect(codeOf(() => parseManifestBytes(enc(schema1)))).toBe('UNSUPPORTED');
    expect(codeOf(() => parseManifestBytes(enc(schema1), 'application/vnd.docker.distribution.manifest.v1+prettyjws'))).toBe('UNSUPPORTED');
  });
});

describe('parseImageConfig', () => {
  const dockerConfig = {
    architecture: 'amd64',
    os: 'linux',
    created: '2024-06-20T17:39:10.191Z',
    author: 'someone',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['/bin/sh'],
      Entrypoint: null,
      WorkingDir: '/app',
      User: '1000:1000',
      Labels: { 'org.example': 'yes' },
      ExposedPorts: { '80/tcp': {} },
      Volumes: { '/data': {} },
      StopSignal: 'SIGTERM',
      Healthcheck: { Test: ['CMD', 'true'], Interval: 30_000_000_000, Retries: 3 },
      Shell: ['/bin/sh', '-c'],
      OnBuild: null,
      ArgsEscaped: true,
      Hostname: '',
    },
    container_config: { Cmd: ['/bin/sh', '-c', '#(nop) CMD ["/bin/sh"]'] },
    rootfs: { type: 'layers', diff_ids: [d('diff')] },
    history: [
      { created: '2024-06-20T17:39:09Z', created_by: 'ADD file:abc in /' },
      { created: '2024-06-20T17:39:10Z', created_by: 'CMD ["/bin/sh"]', empty_layer: true, comment: 'c', author: 'a' },
    ],
    docker_version: '26.1.0',
  };

  it('parses a Docker config and keeps unknown fields', () => {
    const text = JSON.stringify(dockerConfig);
    const parsed = parseImageConfig(enc(text));
    expect(parsed.config?.Cmd).toEqual(['/bin/sh']);
    expect(parsed.config?.Labels).toEqual({ 'org.example': 'yes' });
    expect(parsed.rootfs.diff_ids).toEqual([d('diff')]);
    expect(parsed.history?.[1]?.empty_layer).toBe(true);
    expect(canonicalJson(parsed)).toBe(text);
  });

  it('parses a minimal OCI config', () => {
    const parsed = parseImageConfig(enc({ architecture: 'arm64', os: 'linux', variant: 'v8', rootfs: { type: 'layers', diff_ids: [] } }));
    expect(parsed).toMatchObject({ architecture: 'arm64', variant: 'v8' });
  });

  it.each([
    ['missing rootfs', { architecture: 'amd64', os: 'linux' }, /rootfs/],
    ['bad diff_id', { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: ['nope'] } }, /rootfs\.diff_ids\.0/],
    ['Cmd not a list', { ...dockerConfig, config: { Cmd: 'sh' } }, /config\.Cmd/],
    ['not JSON', '{', /not valid JSON/],
  ] as Array<[string, unknown, RegExp]>)('%s -> INVALID_MANIFEST', (_name, doc, message) => {
    expect(codeOf(() => parseImageConfig(enc(doc)))).toBe('INVALID_MANIFEST');
    expect(() => parseImageConfig(enc(doc))).toThrow(message);
  });
});

describe('buildManifest', () => {
  it('builds a Docker schema2 manifest that parses back to itself', () => {
    const built = buildManifest({ config, layers: [layer], mediaType: MediaType.DockerManifest });
    expect(built).toEqual(dockerManifest);
    const bytes = enc(canonicalJson(built));
    const parsed = parseManifestBytes(bytes);
    expect(parsed).toEqual({ kind: 'manifest', mediaType: MediaType.DockerManifest, manifest: dockerManifest });
    expect(canonicalJson(built)).toBe(JSON.stringify(dockerManifest));
  });

  it('builds an OCI manifest with annotations', () => {
    const built = buildManifest({
      config: ociManifest.config,
      layers: ociManifest.layers,
      mediaType: MediaType.OciManifest,
      annotations: ociManifest.annotations,
    });
    expect(canonicalJson(built)).toBe(JSON.stringify(ociManifest));
  });

  it('refuses bad descriptors and index media types', () => {
    expect(codeOf(() => buildManifest({ config: { ...config, digest: 'sha256:x' as never }, layers: [], mediaType: MediaType.OciManifest }))).toBe(
      'INVALID_MANIFEST',
    );
    expect(codeOf(() => buildManifest({ config, layers: [], mediaType: MediaType.OciIndex as never }))).toBe('INVALID_MANIFEST');
    expect(codeOf(() => buildManifest({ config, layers: [], mediaType: MediaType.DockerManifest, annotations: { a: 'b' } }))).toBe(
      'INVALID_MANIFEST',
    );
  });

  it('parseDescriptor validates a lone descriptor', () => {
    expect(parseDescriptor(layer)).toEqual(layer);
    expect(codeOf(() => parseDescriptor({ mediaType: 'x', digest: d('a'), size: 1.5 }))).toBe('INVALID_MANIFEST');
  });
});
