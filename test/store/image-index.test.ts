import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StowageError } from '../../src/errors.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import type { Platform } from '../../src/oci/platform.js';
import { ImageIndex, SCHEMA_VERSION } from '../../src/store/image-index.js';
import type { ImageRecord } from '../../src/store/types.js';
import { tmpDir } from '../harness/tmp.js';

const amd64 = { os: 'linux', architecture: 'amd64' } as Platform;
const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' } as Platform;
const d = (s: string): Digest => digestOf(s);

function image(name: string, platform: Platform = amd64): Omit<ImageRecord, 'addedAt'> {
  return {
    manifestDigest: d(`${name}-manifest`),
    manifestMediaType: MediaType.OciManifest,
    configDigest: d(`${name}-config`),
    platform,
    layers: [d(`${name}-layer0`), d(`${name}-layer1`)],
    size: 1234,
    created: '2024-01-02T03:04:05Z',
    labels: { 'org.opencontainers.image.title': name },
  };
}

let dir: string;
let index: ImageIndex;

beforeEach(async () => {
  dir = await tmpDir('stowage-index-');
  index = ImageIndex.open(dir);
});
afterEach(() => {
  index.close();
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof StowageError ? err.code : `not a StowageError: ${String(err)}`;
  }
  return undefined;
}

describe('ImageIndex', () => {
  it('writes what a transaction records together, and nothing of it when it throws', () => {
    index.putImage(image('a'));
    index.tag('docker.io/library/a:1', d('a-manifest'));
    const before = { images: index.listImages(), tags: index.listTags() };
    expect(() =>
      index.transaction(() => {
        index.putImage(image('b'));
        index.tag('docker.io/library/a:1', d('b-manifest'));
        index.tag('docker.io/library/b:1', d('b-manifest'));
        throw new Error('the disk is full');
      }),
    ).toThrow('the disk is full');
    expect({ images: index.listImages(), tags: index.listTags() }).toEqual(before);

    const recorded = index.transaction(() => {
      index.putImage(image('b'));
      index.tag('docker.io/library/b:1', d('b-manifest'));
      return index.resolveTag('docker.io/library/b:1');
    });
    expect(recorded).toBe(d('b-manifest'));
    index.close();
    index = ImageIndex.open(dir);
    expect(index.resolveTag('docker.io/library/b:1')).toBe(d('b-manifest'));
  });

  it('puts, gets and lists images', () => {
    const a = index.putImage(image('a'));
    expect(a).toMatchObject(image('a'));
    expect(Date.parse(a.addedAt)).not.toBeNaN();
    index.putImage({ ...image('b', arm64), created: undefined, labels: {} });
    expect(index.getImage(d('a-manifest'))).toEqual(a);
    expect(index.getImage(d('b-manifest'))).toMatchObject({ platform: arm64, created: undefined, labels: {} });
    expect(index.getImage(d('missing'))).toBeUndefined();
    expect(index.listImages().map((i) => i.manifestDigest).sort()).toEqual([d('a-manifest'), d('b-manifest')].sort());
    expect(index.imagesByConfig(d('a-config'))).toEqual([a]);
  });

  it('re-putting an image updates it and keeps its addedAt', async () => {
    const first = index.putImage(image('a'));
    await new Promise((r) => setTimeout(r, 5));
    const second = index.putImage({ ...image('a'), labels: { v: '2' } });
    expect(second.addedAt).toBe(first.addedAt);
    expect(index.getImage(d('a-manifest'))?.labels).toEqual({ v: '2' });
    expect(index.listImages()).toHaveLength(1);
  });

  it('rejects malformed records and changes nothing', () => {
    expect(codeOf(() => index.putImage({ ...image('a'), manifestDigest: 'sha256:zz' as Digest }))).toBe('INVALID_DIGEST');
    expect(codeOf(() => index.putImage({ ...image('a'), layers: ['nope' as Digest] }))).toBe('INVALID_DIGEST');
    expect(codeOf(() => index.putImage({ ...image('a'), size: -5 }))).toBe('BAD_REQUEST');
    expect(codeOf(() => index.tag('docker.io/library/a:latest', 'latest' as Digest))).toBe('INVALID_DIGEST');
    expect(index.listImages()).toEqual([]);
    expect(index.listTags()).toEqual([]);
  });

  it('tags, retags, untags and resolves', () => {
    index.putImage(image('a'));
    index.putImage(image('b'));
    const ref = 'docker.io/library/app:1';
    expect(index.tag(ref, d('a-manifest'))).toMatchObject({ reference: ref, target: d('a-manifest') });
    index.tag('docker.io/library/app:latest', d('a-manifest'));
    expect(index.resolveTag(ref)).toBe(d('a-manifest'));
    expect(index.tagsFor(d('a-manifest')).map((t) => t.reference)).toEqual(['docker.io/library/app:1', 'docker.io/library/app:latest']);

    index.tag(ref, d('b-manifest')); // moves the tag
    expect(index.resolveTag(ref)).toBe(d('b-manifest'));
    expect(index.tagsFor(d('a-manifest')).map((t) => t.reference)).toEqual(['docker.io/library/app:latest']);
    expect(index.listTags()).toHaveLength(2);

    expect(index.untag(ref)).toBe(true);
    expect(index.untag(ref)).toBe(false);
    expect(index.resolveTag(ref)).toBeUndefined();
  });

  it('deleting an image drops its tags and repo digests', () => {
    index.putImage(image('a'));
    index.tag('docker.io/library/a:latest', d('a-manifest'));
    index.addRepoDigest({ repository: 'docker.io/library/a', digest: d('a-manifest'), manifestDigest: d('a-manifest') });
    index.deleteImage(d('a-manifest'));
    expect(index.getImage(d('a-manifest'))).toBeUndefined();
    expect(index.listTags()).toEqual([]);
    expect(index.repoDigestsFor(d('a-manifest'))).toEqual([]);
  });

  it('stores multi-platform indexes', () => {
    const rec = index.putIndex({
      indexDigest: d('idx'),
      mediaType: MediaType.OciIndex,
      children: [
        { digest: d('a-manifest'), platform: amd64, present: true },
        { digest: d('b-manifest'), platform: arm64, present: false },
        { digest: d('attestation'), platform: undefined, present: false },
      ],
    });
    expect(index.getIndex(d('idx'))).toEqual(rec);
    expect(rec.children[2]).toEqual({ digest: d('attestation'), platform: undefined, present: false });
    index.putIndex({ ...rec, children: rec.children.map((c) => ({ ...c, present: true })) });
    expect(index.getIndex(d('idx'))?.children.every((c) => c.present)).toBe(true);
    expect(index.getIndex(d('idx'))?.addedAt).toBe(rec.addedAt);
    expect(index.listIndexes()).toHaveLength(1);
    index.tag('docker.io/library/multi:latest', d('idx'));
    index.deleteIndex(d('idx'));
    expect(index.getIndex(d('idx'))).toBeUndefined();
    expect(index.listTags()).toEqual([]);
  });

  it('records repo digests once each', () => {
    const rd = { repository: 'registry.example.com/team/app', digest: d('idx'), manifestDigest: d('a-manifest') };
    index.addRepoDigest(rd);
    index.addRepoDigest(rd);
    index.addRepoDigest({ ...rd, repository: 'docker.io/team/app' });
    expect(index.repoDigestsFor(d('a-manifest'))).toEqual([{ ...rd, repository: 'docker.io/team/app' }, rd]);
    index.removeRepoDigests(d('a-manifest'));
    expect(index.repoDigestsFor(d('a-manifest'))).toEqual([]);
  });

  it('persists across reopen, in WAL mode with a schema version', () => {
    index.putImage(image('a'));
    index.tag('docker.io/library/a:latest', d('a-manifest'));
    index.close();
    index = ImageIndex.open(dir);
    expect(index.getImage(d('a-manifest'))).toMatchObject(image('a'));
    expect(index.resolveTag('docker.io/library/a:latest')).toBe(d('a-manifest'));

    const raw = new Database(join(dir, 'images.db'), { readonly: true });
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(raw.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    raw.close();
  });

  it('refuses a database from a newer schema', () => {
    index.close();
    const raw = new Database(join(dir, 'images.db'));
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    expect(codeOf(() => ImageIndex.open(dir))).toBe('UNSUPPORTED');
    index = ImageIndex.open(join(dir, 'other'));
  });

  it('referencedBlobs covers manifests, configs, layers, indexes and their children', () => {
    index.putImage(image('a'));
    index.putIndex({ indexDigest: d('idx'), mediaType: MediaType.OciIndex, children: [{ digest: d('child'), platform: arm64, present: false }] });
    expect([...index.referencedBlobs()].sort()).toEqual(
      [d('a-manifest'), d('a-config'), d('a-layer0'), d('a-layer1'), d('idx'), d('child')].sort(),
    );
  });
});
