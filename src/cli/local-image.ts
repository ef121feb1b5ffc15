import { rmSync } from 'node:fs';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { choosePlatform, formatPlatform, parsePlatform, platformMatches } from '../oci/platform.js';
import { formatReference, parseReference, withDefaultTag } from '../oci/reference.js';
import { importArchive, type ImportResult } from '../store/import-archive.js';
import { openStore } from '../store/index.js';
import type { ContentStoreApi, ImageIndexApi } from '../store/types.js';
import { dockerSave, parseDockerHost } from './docker-host.js';
import { CliError, usageError } from './errors.js';

/**
 * `stowctl image push` reads the image it uploads into a temporary Stowage store: from a `docker save`
 * or OCI layout tar (--archive), or from the Docker API at DOCKER_HOST. importArchive streams every
 * blob to disk and verifies every digest, so nothing is held in memory and what gets pushed is exactly
 * what was read. The store lives in a temporary directory removed by close() (or at process exit).
 */

export interface LocalImageOptions {
  /** The image as the operator named it: "alpine:3.19", "registry:5000/app@sha256:…", or an image ID. */
  image: string;
  archive?: string | undefined;
  /** DOCKER_HOST; the default socket when unset. */
  dockerHost?: string | undefined;
  /** Pick this platform from an index. */
  platform?: string | undefined;
  /** With --archive: the archive's only image may be pushed under `image` though it is not tagged so (--tag). */
  retag?: boolean | undefined;
}

export interface LocalImage {
  /** Normalised reference to record for the image ("docker.io/library/alpine:3.19"); undefined for an image ID. */
  reference: string | undefined;
  /** What gets pushed: a platform manifest, or an index with all its platforms. */
  digest: Digest;
  kind: 'manifest' | 'index';
  /** The index the pushed manifest was chosen from (--platform), or the pushed index itself. */
  indexDigest: Digest | undefined;
  /** Platform manifests pushed. */
  manifests: Digest[];
  /** Their config digests (Docker image IDs). */
  configDigests: Digest[];
  /** "linux/amd64" when one platform manifest is pushed. */
  platform: string | undefined;
  /** Bytes of manifests, configs and layers (and the index) as stored. */
  sizeBytes: number;
  handles: { store: ContentStoreApi; images: ImageIndexApi };
  close(): Promise<void>;
}

const live = new Set<string>();
let exitHook = false;

async function tempStoreDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'stowctl-'));
  live.add(dir);
  if (!exitHook) {
    exitHook = true;
    // A fallback for paths that never reach close(): the temporary store never outlives the process.
    process.once('exit', () => {
      for (const d of live) rmSync(d, { recursive: true, force: true });
    });
  }
  return dir;
}

/** What the operator's image argument names. */
interface Wanted {
  reference: string | undefined;
  digest: Digest | undefined;
  /** An image ID (config digest), full. */
  imageId: Digest | undefined;
}

function parseWanted(image: string): Wanted {
  if (/^sha256:[a-f0-9]{64}$/.test(image)) return { reference: undefined, digest: undefined, imageId: image as Digest };
  if (/^[a-f0-9]{64}$/.test(image)) return { reference: undefined, digest: undefined, imageId: `sha256:${image}` };
  const ref = parseReference(image);
  // Only a tag is recorded on the targets: "app@sha256:…" names content, not a tag to give it.
  const tagged = ref.tag !== undefined || ref.digest === undefined;
  const reference = tagged ? formatReference(withDefaultTag({ domain: ref.domain, path: ref.path, ...(ref.tag !== undefined ? { tag: ref.tag } : {}) })) : undefined;
  return { reference, digest: ref.digest, imageId: undefined };
}

async function openSource(opts: LocalImageOptions): Promise<Readable> {
  if (opts.archive !== undefined) {
    try {
      const st = await stat(opts.archive);
      if (!st.isFile()) throw usageError(`--archive ${opts.archive} is not a file`);
    } catch (err) {
      if (err instanceof CliError) throw err;
      throw usageError(`cannot read --archive ${opts.archive}: ${(err as Error).message}`);
    }
    return createReadStream(opts.archive);
  }
  return dockerSave(parseDockerHost(opts.dockerHost), opts.image);
}

export async function readLocalImage(opts: LocalImageOptions): Promise<LocalImage> {
  const wanted = parseWanted(opts.image);
  const platform = opts.platform !== undefined ? parsePlatform(opts.platform) : undefined;
  const source = await openSource(opts);
  const dir = await tempStoreDir();
  let handles: { store: ContentStoreApi; images: ImageIndexApi & { close(): void } } | undefined;
  const close = async (): Promise<void> => {
    handles?.images.close();
    await rm(dir, { recursive: true, force: true });
    live.delete(dir);
  };
  try {
    handles = await openStore(join(dir, 'store'));
    const result = await importArchive(source, handles);
    const picked = pick(result, handles.images, wanted, opts);
    const chosen = await choose(handles, picked, platform, opts.image);
    return { ...chosen, reference: wanted.reference, handles, close };
  } catch (err) {
    source.destroy();
    await close();
    throw err;
  }
}

/** The top digest (index or manifest) in the archive that the image argument names. */
function pick(result: ImportResult, images: ImageIndexApi, wanted: Wanted, opts: LocalImageOptions): Digest {
  const parent = new Map<Digest, Digest>();
  for (const ix of result.indexes) for (const c of images.getIndex(ix)?.children ?? []) parent.set(c.digest, ix);
  const topOf = (d: Digest): Digest => {
    let cur = d;
    for (let i = 0; i < 16 && parent.has(cur); i++) cur = parent.get(cur)!;
    return cur;
  };
  const tops = [...new Set(result.images.map((i) => topOf(i.manifestDigest)))];
  const from = opts.archive !== undefined ? `archive ${opts.archive}` : 'the Docker API';

  if (wanted.imageId) {
    const hits = [...new Set(result.images.filter((i) => i.configDigest === wanted.imageId).map((i) => topOf(i.manifestDigest)))];
    if (hits.length === 1) return hits[0]!;
    throw new StowageError('IMAGE_NOT_FOUND', `${from} holds no image with ID ${wanted.imageId}`);
  }
  if (wanted.digest) {
    const d = wanted.digest;
    if (tops.includes(d) || result.images.some((i) => i.manifestDigest === d) || result.indexes.includes(d)) return d;
    throw new StowageError('IMAGE_NOT_FOUND', `${from} holds no image or index ${d}`);
  }
  const tagged = wanted.reference ? images.resolveTag(wanted.reference) : undefined;
  if (tagged) return tagged;
  // The Docker API saved the image it found under that name (an ID prefix, say): its only image is the one meant.
  if (opts.archive === undefined && tops.length === 1) return tops[0]!;
  const tags = images.listTags().map((t) => t.reference);
  if (tops.length === 1) {
    // An untagged archive (docker save of an ID, an OCI layout naming only "1.0") has no tag to contradict.
    if (opts.retag || tags.length === 0) return tops[0]!;
    // A tagged archive that does not hold the tag: its only image gets it only when asked to (--tag), never silently.
    throw new StowageError(
      'IMAGE_NOT_FOUND',
      `${from} holds ${tags.join(', ')}, not ${wanted.reference}: push a tag it holds, or add --tag to push its only image as ${wanted.reference}`,
      { details: { tags } },
    );
  }
  throw new StowageError('IMAGE_NOT_FOUND', `${from} holds ${tops.length} images and none is tagged ${wanted.reference}; its tags: ${tags.join(', ') || 'none'}`, {
    details: { tags },
  });
}

type Chosen = Omit<LocalImage, 'reference' | 'handles' | 'close'>;

/** Narrows an index to one platform when asked (or when only one is present), and adds up the size. */
async function choose(
  handles: { store: ContentStoreApi; images: ImageIndexApi },
  top: Digest,
  platform: ReturnType<typeof parsePlatform> | undefined,
  image: string,
): Promise<Chosen> {
  const { store, images } = handles;
  const index = images.getIndex(top);
  const single = (digest: Digest, indexDigest: Digest | undefined): Chosen => {
    const rec = images.getImage(digest);
    if (!rec) throw new StowageError('IMAGE_NOT_FOUND', `${image}: image ${digest} is not complete in what was read`);
    if (platform && !platformMatches(platform, rec.platform)) {
      throw new StowageError('PLATFORM_NOT_FOUND', `${image} is ${formatPlatform(rec.platform)}, not ${formatPlatform(platform)}`, {
        details: { wanted: formatPlatform(platform), available: [formatPlatform(rec.platform)] },
      });
    }
    return {
      digest,
      kind: 'manifest',
      indexDigest,
      manifests: [digest],
      configDigests: [rec.configDigest],
      platform: formatPlatform(rec.platform),
      sizeBytes: rec.size,
    };
  };
  if (!index) return single(top, undefined);

  const present = index.children.filter((c) => c.present && images.getImage(c.digest));
  if (platform) return single(choosePlatform(present, platform).digest, top);
  if (present.length < index.children.length) {
    // A registry refuses an index whose children it lacks: push the one platform there is, or ask which.
    if (present.length === 1) return single(present[0]!.digest, top);
    const available = present.map((c) => (c.platform ? formatPlatform(c.platform) : c.digest));
    throw usageError(`${image} is an index of which only some platforms were read (${available.join(', ')}); choose one with --platform`);
  }
  const recs = present.map((c) => images.getImage(c.digest)!);
  const indexSize = (await store.stat(top))?.size ?? 0;
  return {
    digest: top,
    kind: 'index',
    indexDigest: top,
    manifests: recs.map((r) => r.manifestDigest),
    configDigests: [...new Set(recs.map((r) => r.configDigest))],
    platform: undefined,
    sizeBytes: indexSize + recs.reduce((n, r) => n + r.size, 0),
  };
}

/**
 * --expected-digest names the image by its pushed digest, the index it came from, a platform manifest
 * or its image ID (config digest). Anything else is DIGEST_MISMATCH, before anything is sent.
 */
export function checkExpectedDigest(img: LocalImage, expected: string, image: string): void {
  const known = new Set<string>([img.digest, ...img.manifests, ...img.configDigests]);
  if (img.indexDigest) known.add(img.indexDigest);
  if (known.has(expected)) return;
  throw new CliError(
    'DIGEST_MISMATCH',
    `${image} is ${img.digest}${img.configDigests.length === 1 ? ` (image ID ${img.configDigests[0]})` : ''}, not the expected ${expected}; nothing was sent`,
    { details: { expected, digest: img.digest, manifests: img.manifests, config_digests: img.configDigests, ...(img.indexDigest ? { index_digest: img.indexDigest } : {}) } },
  );
}
