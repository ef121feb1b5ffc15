import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { StowageError, isStowageError } from '../errors.js';
import { ArchiveLinks, archiveBasename, safeEntryPath } from '../oci/archive/paths.js';
import { decompress, detectCompression } from '../oci/archive/gzip.js';
import { readTar } from '../oci/archive/tar.js';
import {
  ANNOTATION_IMAGE_NAME,
  ANNOTATION_REF_NAME,
  DOCKER_MANIFEST_FILE,
  DOCKER_REPOSITORIES_FILE,
  OCI_INDEX_FILE,
  OCI_LAYOUT_FILE,
  blobPath,
  digestFromBlobPath,
  parseDockerSaveManifest,
  parseOciLayoutFile,
  type DockerSaveEntry,
} from '../oci/archive/layout.js';
import { Digester, digestHex, digestOf, type Digest } from '../oci/digest.js';
import {
  buildManifest,
  canonicalJson,
  parseImageConfig,
  parseManifestBytes,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
} from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES, MediaType, checkManifestSize, isIndexMediaType, isManifestMediaType, type LayerCompression } from '../oci/media-types.js';
import type { Platform } from '../oci/platform.js';
import { formatReference, isValidTag, parseReference, withDefaultTag, type ImageReference } from '../oci/reference.js';
import { deleteUnreferenced } from './gc.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord, IndexRecord, Ingest, Lease } from './types.js';

/*
 * Loads `docker save` archives (legacy and Docker 25+) and OCI image layouts (tar or directory) into a store.
 *
 * One streaming pass over the tar: every regular file is written to its own ingest while it is hashed (and,
 * when it is gzip, gunzipped and hashed again, for the diff_id). Small JSON files are also kept in memory.
 * Only when the whole archive has been read and every image in it checked do the needed blobs get
 * committed and the records written; on any error every ingest is aborted and the store is as it was.
 */

export type ArchiveFormat = 'docker-legacy' | 'docker-oci' | 'oci-layout';

export interface ImportOptions {
  /**
   * References to give the imported image (the archive must hold exactly one top-level image or index).
   * A repository without a tag ("registry.example/app") combined with an OCI layout's bare ref name ("1.0")
   * gives "registry.example/app:1.0"; otherwise a reference without a tag means ":latest".
   */
  tag?: string[];
  /** Tar entries of any kind; default DEFAULT_MAX_ENTRIES. */
  maxEntries?: number;
  /** Bytes of one file (layer) in the archive; default DEFAULT_MAX_ENTRY_BYTES. */
  maxEntryBytes?: number;
}

export interface ImportedImage {
  manifestDigest: Digest;
  configDigest: Digest;
  /** Fully normalised references now pointing at this image or at the index holding it. */
  references: string[];
  platform: Platform;
  /** The index (manifest list) this platform image was imported through, when there was one. */
  indexDigest?: Digest;
}

export interface ImportResult {
  images: ImportedImage[];
  format: ArchiveFormat;
  /** Indexes (manifest lists) recorded, when the archive held any. */
  indexes: Digest[];
}

export interface ImportTarget {
  store: ContentStoreApi;
  images: ImageIndexApi;
}

export const DEFAULT_MAX_ENTRIES = 100_000;
export const DEFAULT_MAX_ENTRY_BYTES = 64 * 1024 * 1024 * 1024;
/** Bytes of small JSON files (configs, manifests) kept in memory across one import. */
export const MAX_CAPTURED_BYTES = 64 * 1024 * 1024;
const MAX_INDEX_DEPTH = 8;
const MAX_DESCRIPTORS = 10_000;

/** Top-level metadata files, read into memory and never stored as blobs. */
const METADATA_FILES = new Set([DOCKER_MANIFEST_FILE, OCI_INDEX_FILE, OCI_LAYOUT_FILE, DOCKER_REPOSITORIES_FILE]);

function invalid(message: string, details?: Record<string, unknown>): StowageError {
  return new StowageError('INVALID_ARCHIVE', message, details ? { details } : {});
}

function short(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

// ---------------------------------------------------------------------------------------------------------
// Staging: one ingest per file, hashed (and gunzip-hashed) while written.

interface Staged {
  ingest: Ingest;
  digest: Digest;
  size: number;
  compression: LayerCompression;
  /** Digest of the uncompressed bytes: of the gunzipped stream for gzip, the digest itself for plain data. */
  diffId: Digest | undefined;
  /** Why the gzip stream could not be decompressed, when it could not. */
  gzipError: string | undefined;
  /** The whole content, for small files that look like JSON. */
  bytes: Buffer | undefined;
}

/** Hashes the decompressed form of a gzip stream fed chunk by chunk. */
class GunzipDigest {
  private readonly gz: Gunzip = createGunzip();
  private readonly digester = new Digester();
  private error: Error | undefined;
  private readonly ended: Promise<void>;

  constructor() {
    this.gz.on('data', (c: Buffer) => this.digester.update(c));
    this.ended = new Promise((resolve) => {
      this.gz.on('end', () => resolve());
      this.gz.on('error', (err) => {
        this.error ??= err;
        resolve();
      });
    });
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.error) return;
    if (this.gz.write(chunk)) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.gz.off('drain', done);
        this.gz.off('error', done);
        this.gz.off('close', done);
        resolve();
      };
      this.gz.on('drain', done);
      this.gz.on('error', done);
      this.gz.on('close', done);
    });
  }

  async end(): Promise<{ digest: Digest | undefined; error: string | undefined }> {
    if (!this.error) this.gz.end();
    await this.ended;
    if (this.error) return { digest: undefined, error: this.error.message };
    return { digest: this.digester.digest(), error: undefined };
  }

  destroy(): void {
    this.gz.destroy();
  }
}

function looksLikeJson(head: Buffer): boolean {
  for (const b of head) {
    if (b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09) continue;
    return b === 0x7b /* { */ || b === 0x5b /* [ */;
  }
  return false;
}

class Stager {
  private readonly prefix = `import-${randomUUID()}`;
  private seq = 0;
  private readonly open = new Set<Ingest>();
  private captured = 0;

  constructor(private readonly store: ContentStoreApi) {}

  /** Writes `body` to a fresh ingest, hashing it; `expectedSize` (when known) decides whether it may be captured. */
  async stage(body: AsyncIterable<Uint8Array>, expectedSize: number | undefined): Promise<Staged> {
    const ingest = await this.store.openIngest(`${this.prefix}-${this.seq++}`);
    this.open.add(ingest);
    let compression: LayerCompression = 'none';
    let gunzip: GunzipDigest | undefined;
    let capture: Buffer[] | undefined;
    let capturedHere = 0;
    const mayCapture = expectedSize === undefined || expectedSize <= MAX_MANIFEST_BYTES;
    const self = this;

    const feed = async (chunk: Uint8Array): Promise<void> => {
      if (capture) {
        capturedHere += chunk.byteLength;
        if (capturedHere > MAX_MANIFEST_BYTES) {
          // Too big to be a manifest or config after all: stop keeping it.
          capture = undefined;
          self.captured -= capturedHere - chunk.byteLength;
        } else {
          self.captured += chunk.byteLength;
          if (self.captured > MAX_CAPTURED_BYTES) {
            throw new StowageError('TOO_LARGE', `the archive's JSON files exceed ${MAX_CAPTURED_BYTES} bytes in total`, {
              details: { limit: MAX_CAPTURED_BYTES },
            });
          }
          capture.push(Buffer.from(chunk));
        }
      }
      if (gunzip) await gunzip.write(chunk);
    };
    let head: Buffer[] | undefined = [];
    let headLen = 0;
    const decide = async (): Promise<void> => {
      const buf = Buffer.concat(head ?? []);
      head = undefined;
      compression = detectCompression(buf);
      if (compression === 'gzip') gunzip = new GunzipDigest();
      if (mayCapture && looksLikeJson(buf)) capture = [];
      if (buf.length > 0) await feed(buf);
    };
    async function* tap(): AsyncGenerator<Uint8Array> {
      for await (const chunk of body) {
        if (head) {
          head.push(Buffer.from(chunk));
          headLen += chunk.byteLength;
          if (headLen >= 4) await decide();
        } else {
          await feed(chunk);
        }
        yield chunk;
      }
      if (head) await decide();
    }

    let digest: Digest;
    let size: number;
    try {
      // The ingest hashes what it writes; the digest of this fresh ingest is the file's.
      ({ digest, size } = await ingest.write(tap()));
    } catch (err) {
      gunzip?.destroy();
      throw err;
    }
    let diffId: Digest | undefined = compression === 'none' ? digest : undefined;
    let gzipError: string | undefined;
    if (gunzip) {
      const r = await gunzip.end();
      diffId = r.digest;
      gzipError = r.error;
    }
    return {
      ingest,
      digest,
      size,
      compression,
      diffId,
      gzipError,
      bytes: capture ? Buffer.concat(capture) : undefined,
    };
  }

  async commit(staged: Staged, lease: Lease): Promise<void> {
    await staged.ingest.commit({ digest: staged.digest, size: staged.size }, { lease });
    this.open.delete(staged.ingest);
  }

  /** Drops every ingest not committed. */
  async abortAll(): Promise<void> {
    const pending = [...this.open];
    this.open.clear();
    await Promise.all(
      pending.map(async (i) => {
        // A write that is still unwinding holds the ingest for a moment: retry briefly.
        for (let attempt = 0; attempt < 50; attempt++) {
          try {
            await i.abort();
            return;
          } catch (err) {
            if (!isStowageError(err, 'CONFLICT')) return;
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }),
    );
  }
}

async function collect(body: AsyncIterable<Uint8Array>, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.byteLength;
    if (n > limit) throw new StowageError('TOO_LARGE', `${what} is larger than ${limit} bytes`, { details: { limit } });
    chunks.push(Buffer.from(c));
  }
  return Buffer.concat(chunks);
}

// ---------------------------------------------------------------------------------------------------------
// Where the blobs and metadata of a layout come from: a read tar, or a directory.

interface LayoutSource {
  /** The blob stored under blobs/sha256/<hex> for `digest`, staged; undefined when there is none. */
  blob(digest: Digest): Promise<Staged | undefined>;
  /** A path named in manifest.json, as the digest of the blob it names (following links). */
  blobDigestAt(path: string): Digest | undefined;
}

class TarView implements LayoutSource {
  constructor(
    readonly files: Map<string, Staged>,
    readonly meta: Map<string, Buffer>,
    readonly links: ArchiveLinks,
  ) {}

  resolve(path: string): string {
    return this.links.resolve(safeEntryPath(path));
  }

  file(path: string): Staged | undefined {
    return this.files.get(this.resolve(path));
  }

  metadata(name: string): Buffer | undefined {
    const resolved = this.resolve(name);
    return this.meta.get(resolved) ?? this.files.get(resolved)?.bytes;
  }

  hasMetadata(name: string): boolean {
    const resolved = this.resolve(name);
    return this.meta.has(resolved) || this.files.has(resolved);
  }

  /** Every file under blobs/sha256/ must hold the content its name promises. */
  checkBlobNames(): void {
    for (const [path, staged] of this.files) {
      const named = digestFromBlobPath(path);
      if (named && named !== staged.digest) {
        throw new StowageError('DIGEST_MISMATCH', `archive blob ${path} holds content with digest ${staged.digest}`, {
          details: { path, expected: named, actual: staged.digest },
        });
      }
    }
  }

  async blob(digest: Digest): Promise<Staged | undefined> {
    const staged = this.files.get(this.resolve(blobPath(digest)));
    if (staged && staged.digest !== digest) {
      throw new StowageError('DIGEST_MISMATCH', `archive blob ${blobPath(digest)} holds content with digest ${staged.digest}`, {
        details: { expected: digest, actual: staged.digest },
      });
    }
    return staged;
  }

  blobDigestAt(path: string): Digest | undefined {
    const resolved = this.resolve(path);
    return digestFromBlobPath(resolved) ?? this.files.get(resolved)?.digest;
  }
}

class DirView implements LayoutSource {
  private readonly cache = new Map<Digest, Promise<Staged | undefined>>();

  constructor(
    private readonly dir: string,
    private readonly stager: Stager,
    private readonly maxBlobBytes: number,
  ) {}

  blob(digest: Digest): Promise<Staged | undefined> {
    let p = this.cache.get(digest);
    if (!p) {
      p = this.load(digest);
      this.cache.set(digest, p);
    }
    return p;
  }

  private async load(digest: Digest): Promise<Staged | undefined> {
    // The path is built from a validated digest: no name from the layout ever becomes a path.
    const file = join(this.dir, 'blobs', 'sha256', digestHex(digest));
    let size: number;
    try {
      const st = await stat(file);
      if (!st.isFile()) return undefined;
      size = st.size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    if (size > this.maxBlobBytes) {
      throw new StowageError('TOO_LARGE', `blob ${digest} is ${size} bytes; the limit is ${this.maxBlobBytes}`, {
        details: { size, limit: this.maxBlobBytes },
      });
    }
    const staged = await this.stager.stage(createReadStream(file), size);
    if (staged.digest !== digest) {
      throw new StowageError('DIGEST_MISMATCH', `layout blob ${blobPath(digest)} holds content with digest ${staged.digest}`, {
        details: { expected: digest, actual: staged.digest },
      });
    }
    return staged;
  }

  blobDigestAt(path: string): Digest | undefined {
    return digestFromBlobPath(safeEntryPath(path));
  }
}

// ---------------------------------------------------------------------------------------------------------
// The plan: everything to commit and record, built and checked before anything is made visible.

interface PlannedImage {
  manifestDigest: Digest;
  manifestMediaType: string;
  /** Manifest blob from the archive, or bytes made here (legacy archives have no manifests). */
  manifest: { staged: Staged } | { bytes: Buffer };
  manifestSize: number;
  config: Staged;
  layers: Staged[];
  platform: Platform;
  created: string | undefined;
  labels: Record<string, string>;
  indexDigest: Digest | undefined;
}

interface PlannedIndex {
  digest: Digest;
  mediaType: string;
  staged: Staged;
  children: IndexRecord['children'];
}

interface TopTarget {
  digest: Digest;
  references: Set<string>;
  /** Bare OCI ref names ("1.0"): need a repository from opts.tag to become references. */
  bareTags: Set<string>;
}

class Plan {
  readonly images = new Map<Digest, PlannedImage>();
  readonly indexes = new Map<Digest, PlannedIndex>();
  readonly tops = new Map<Digest, TopTarget>();
  descriptors = 0;

  constructor(readonly format: ArchiveFormat) {}

  /** The planned index that lists `digest` as a child, if any. */
  parentOf(digest: Digest): Digest | undefined {
    for (const ix of this.indexes.values()) if (ix.children.some((c) => c.digest === digest)) return ix.digest;
    return undefined;
  }

  top(digest: Digest): TopTarget {
    let t = this.tops.get(digest);
    if (!t) {
      t = { digest, references: new Set(), bareTags: new Set() };
      this.tops.set(digest, t);
    }
    return t;
  }
}

/** A tag reference, fully normalised; undefined for digest references (they name content, not a tag). */
function tagReference(input: string, where: string): string | undefined {
  let ref: ImageReference;
  try {
    ref = parseReference(input);
  } catch (err) {
    throw new StowageError('INVALID_ARCHIVE', `${where} names an invalid reference "${short(input)}": ${(err as Error).message}`, { cause: err });
  }
  if (ref.digest !== undefined) return undefined;
  return formatReference(withDefaultTag(ref));
}

function rewrap(err: unknown, what: string): never {
  if (isStowageError(err) && (err.code === 'INVALID_MANIFEST' || err.code === 'UNSUPPORTED')) {
    throw new StowageError(err.code === 'UNSUPPORTED' ? 'UNSUPPORTED' : 'INVALID_ARCHIVE', `${what}: ${err.message}`, { cause: err });
  }
  throw err;
}

function requireBytes(staged: Staged, what: string): Buffer {
  if (staged.bytes === undefined) {
    checkManifestSize(staged.size, what);
    throw invalid(`${what} is not JSON`);
  }
  return staged.bytes;
}

function parseConfig(staged: Staged, what: string): ImageConfig {
  try {
    return parseImageConfig(requireBytes(staged, what));
  } catch (err) {
    return rewrap(err, what);
  }
}

/** The Platform fields of an image config or a descriptor's platform, without anything else they carry. */
function platformOf(src: Platform): Platform {
  const p: Platform = { os: src.os, architecture: src.architecture };
  if (src.variant) p.variant = src.variant;
  if (src['os.version']) p['os.version'] = src['os.version'];
  return p;
}

function configLabels(cfg: ImageConfig): Record<string, string> {
  return { ...(cfg.config?.Labels ?? {}) };
}

/** The uncompressed digest of a layer must be its diff_id in the config. */
function checkDiffId(layer: Staged, diffId: Digest, what: string): void {
  if (layer.compression === 'gzip' && layer.diffId === undefined) {
    throw invalid(`${what} is not a valid gzip stream: ${layer.gzipError ?? 'unknown error'}`);
  }
  if (layer.diffId === undefined) return; // zstd: not checked here
  if (layer.diffId !== diffId) {
    throw new StowageError('DIGEST_MISMATCH', `${what} has uncompressed digest ${layer.diffId}, but the config's diff_id is ${diffId}`, {
      details: { expected: diffId, actual: layer.diffId },
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Legacy `docker save`: manifest.json + <id>/layer.tar + <hex>.json.

function planLegacy(view: TarView, entries: DockerSaveEntry[]): Plan {
  const plan = new Plan('docker-legacy');
  const used = new Set<string>();
  entries.forEach((entry, n) => {
    const where = `${DOCKER_MANIFEST_FILE} entry ${n}`;
    const configPath = view.resolve(entry.Config);
    const config = view.files.get(configPath);
    if (!config) throw invalid(`${where}: config "${short(entry.Config)}" is missing from the archive`, { path: short(entry.Config) });
    used.add(configPath);
    const named = /^([a-f0-9]{64})\.json$/.exec(archiveBasename(safeEntryPath(entry.Config)));
    if (named && named[1] !== digestHex(config.digest)) {
      throw new StowageError('DIGEST_MISMATCH', `${where}: config ${short(entry.Config)} holds content with digest ${config.digest}`, {
        details: { expected: `sha256:${named[1]}`, actual: config.digest },
      });
    }
    const cfg = parseConfig(config, `config ${short(entry.Config)}`);
    const diffIds = cfg.rootfs.diff_ids as Digest[];
    if (diffIds.length !== entry.Layers.length) {
      throw invalid(`${where}: ${entry.Layers.length} layers, but the config lists ${diffIds.length} diff_ids`, {
        layers: entry.Layers.length,
        diffIds: diffIds.length,
      });
    }
    const layers = entry.Layers.map((name, i) => {
      const path = view.resolve(name);
      const layer = view.files.get(path);
      if (!layer) throw invalid(`${where}: layer "${short(name)}" is missing from the archive`, { path: short(name) });
      used.add(path);
      if (layer.compression === 'zstd') throw new StowageError('UNSUPPORTED', `${where}: layer "${short(name)}" is zstd-compressed; docker save archives hold tar or gzip layers`);
      checkDiffId(layer, diffIds[i]!, `layer "${short(name)}"`);
      return layer;
    });
    const manifest: ImageManifest = buildManifest({
      mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, size: config.size, digest: config.digest },
      layers: layers.map((l) => ({
        mediaType: l.compression === 'gzip' ? MediaType.DockerLayerGzip : MediaType.DockerLayer,
        size: l.size,
        digest: l.digest,
      })),
    });
    const bytes = Buffer.from(canonicalJson(manifest));
    const manifestDigest = digestOf(bytes);
    plan.images.set(manifestDigest, {
      manifestDigest,
      manifestMediaType: MediaType.DockerManifest,
      manifest: { bytes },
      manifestSize: bytes.length,
      config,
      layers,
      platform: platformOf(cfg),
      created: cfg.created,
      labels: configLabels(cfg),
      indexDigest: undefined,
    });
    const top = plan.top(manifestDigest);
    for (const tag of entry.RepoTags ?? []) {
      const ref = tagReference(tag, `${where} RepoTags`);
      if (ref) top.references.add(ref);
    }
  });
  // Every layer file in the archive must belong to an image: an extra one means the archive is not what
  // its manifest.json says.
  for (const path of view.files.keys()) {
    if (used.has(path)) continue;
    const base = archiveBasename(path);
    if (base === 'layer.tar' || base.endsWith('.tar') || base.endsWith('.tar.gz')) {
      throw invalid(`layer file "${short(path)}" is not used by any image in ${DOCKER_MANIFEST_FILE}`, { path: short(path) });
    }
  }
  return plan;
}

// ---------------------------------------------------------------------------------------------------------
// OCI image layouts (also what Docker 25+ writes): index.json + blobs/sha256/…

type Presence = 'present' | 'absent';

async function planOci(src: LayoutSource, indexBytes: Buffer, plan: Plan): Promise<void> {
  let index;
  try {
    const parsed = parseManifestBytes(indexBytes);
    if (parsed.kind !== 'index') throw invalid(`${OCI_INDEX_FILE} is an image manifest, not an index`);
    index = parsed.index;
  } catch (err) {
    rewrap(err, OCI_INDEX_FILE);
  }
  if (index.manifests.length === 0) throw invalid(`${OCI_INDEX_FILE} lists no images`);
  for (const desc of index.manifests) {
    await visit(src, plan, desc, 0, undefined);
    const top = plan.top(desc.digest);
    const ann = desc.annotations ?? {};
    const name = ann[ANNOTATION_IMAGE_NAME];
    if (name) {
      const ref = tagReference(name, `${OCI_INDEX_FILE} annotation ${ANNOTATION_IMAGE_NAME}`);
      if (ref) top.references.add(ref);
    }
    const refName = ann[ANNOTATION_REF_NAME];
    if (refName) {
      // A full reference ("registry/app:1", "app:1") or, as the OCI spec intends, a bare tag ("1.0").
      if (/[/:@]/.test(refName)) {
        const ref = tagReference(refName, `${OCI_INDEX_FILE} annotation ${ANNOTATION_REF_NAME}`);
        if (ref) top.references.add(ref);
      } else if (!name) {
        if (!isValidTag(refName)) throw invalid(`${OCI_INDEX_FILE}: invalid ref name "${short(refName)}"`);
        top.bareTags.add(refName);
      }
    }
  }
}

/** Plans one descriptor and what it points at. A missing blob is an error at the top, "absent" in an index. */
async function visit(src: LayoutSource, plan: Plan, desc: Descriptor, depth: number, parentIndex: Digest | undefined): Promise<Presence> {
  const top = depth === 0;
  const what = `${top ? OCI_INDEX_FILE : `index ${parentIndex}`} entry ${desc.digest}`;
  if (depth > MAX_INDEX_DEPTH) throw invalid(`${what}: indexes nested deeper than ${MAX_INDEX_DEPTH}`);
  if (++plan.descriptors > MAX_DESCRIPTORS) {
    throw new StowageError('TOO_LARGE', `the archive has more than ${MAX_DESCRIPTORS} manifest descriptors`, { details: { limit: MAX_DESCRIPTORS } });
  }
  if (!isIndexMediaType(desc.mediaType) && !isManifestMediaType(desc.mediaType)) {
    if (top) throw invalid(`${what}: unsupported media type "${short(desc.mediaType)}"`);
    return 'absent';
  }
  if (plan.indexes.has(desc.digest)) return 'present';
  const planned = plan.images.get(desc.digest);
  if (planned) {
    if (parentIndex && !planned.indexDigest) planned.indexDigest = parentIndex;
    return 'present';
  }
  const staged = await src.blob(desc.digest);
  if (!staged) {
    if (top) throw invalid(`${what}: blob ${blobPath(desc.digest)} is missing from the archive`, { digest: desc.digest });
    return 'absent';
  }
  checkSize(staged, desc, what);
  let parsed;
  try {
    parsed = parseManifestBytes(requireBytes(staged, `manifest ${desc.digest}`), desc.mediaType);
  } catch (err) {
    rewrap(err, `manifest ${desc.digest}`);
  }

  if (parsed.kind === 'index') {
    const children: IndexRecord['children'] = [];
    for (const child of parsed.index.manifests) {
      const presence = await visit(src, plan, child, depth + 1, desc.digest);
      children.push({ digest: child.digest, platform: child.platform && platformOf(child.platform), present: presence === 'present' });
    }
    if (!children.some((c) => c.present)) {
      if (top) throw invalid(`${what}: none of the images of index ${desc.digest} is complete in the archive`);
      return 'absent';
    }
    plan.indexes.set(desc.digest, { digest: desc.digest, mediaType: parsed.mediaType, staged, children });
    return 'present';
  }

  const m = parsed.manifest;
  if (m.config.mediaType !== MediaType.DockerConfig && m.config.mediaType !== MediaType.OciConfig) {
    // Attestations, signatures and other artifacts: not images.
    if (top) throw invalid(`${what}: manifest ${desc.digest} is not a container image (config type "${short(m.config.mediaType)}")`);
    return 'absent';
  }
  const blobs: Staged[] = [];
  for (const d of [m.config, ...m.layers]) {
    const b = await src.blob(d.digest);
    if (!b) {
      if (top) throw invalid(`${what}: blob ${blobPath(d.digest)} is missing from the archive`, { digest: d.digest });
      return 'absent';
    }
    checkSize(b, d, `blob ${d.digest}`);
    blobs.push(b);
  }
  const [config, ...layers] = blobs as [Staged, ...Staged[]];
  const cfg = parseConfig(config, `config ${m.config.digest}`);
  const diffIds = cfg.rootfs.diff_ids as Digest[];
  const tarLayers = m.layers.every((l) => l.mediaType.includes('.tar') || l.mediaType.includes('rootfs.diff'));
  if (tarLayers) {
    if (diffIds.length !== m.layers.length) {
      throw invalid(`manifest ${desc.digest}: ${m.layers.length} layers, but the config lists ${diffIds.length} diff_ids`);
    }
    // The compression is what the bytes say, not the media type: skopeo's docker-archive: source, for one,
    // declares uncompressed layers as tar.gzip, and Docker and containerd detect it the same way.
    m.layers.forEach((l, i) => {
      checkDiffId(layers[i]!, diffIds[i]!, `layer ${l.digest}`);
    });
  }
  plan.images.set(desc.digest, {
    manifestDigest: desc.digest,
    manifestMediaType: parsed.mediaType,
    manifest: { staged },
    manifestSize: staged.size,
    config,
    layers,
    platform: platformOf(cfg),
    created: cfg.created,
    labels: configLabels(cfg),
    indexDigest: parentIndex,
  });
  return 'present';
}

function checkSize(staged: Staged, desc: Descriptor, what: string): void {
  if (staged.size !== desc.size) {
    throw new StowageError('SIZE_MISMATCH', `${what}: the descriptor says ${desc.size} bytes, the blob has ${staged.size}`, {
      details: { digest: desc.digest, expected: desc.size, actual: staged.size },
    });
  }
}

/** Docker 25+ also writes manifest.json: its entries must match images of index.json; RepoTags tag them. */
function applyDockerManifest(src: LayoutSource, plan: Plan, entries: DockerSaveEntry[]): void {
  const topOf = (img: PlannedImage): Digest => img.indexDigest ?? img.manifestDigest;
  entries.forEach((entry, n) => {
    const where = `${DOCKER_MANIFEST_FILE} entry ${n}`;
    const configDigest = src.blobDigestAt(entry.Config);
    if (!configDigest) throw invalid(`${where}: config "${short(entry.Config)}" is missing from the archive`);
    const layerDigests = entry.Layers.map((l) => {
      const d = src.blobDigestAt(l);
      if (!d) throw invalid(`${where}: layer "${short(l)}" is missing from the archive`);
      return d;
    });
    const match = [...plan.images.values()].find(
      (img) =>
        img.config.digest === configDigest &&
        img.layers.length === layerDigests.length &&
        img.layers.every((l, i) => l.digest === layerDigests[i]),
    );
    if (!match) throw invalid(`${where}: config ${configDigest} with these layers is not an image of ${OCI_INDEX_FILE}`);
    let target = topOf(match);
    // The image may sit in a nested index: tag what index.json lists.
    while (!plan.tops.has(target)) {
      const up = plan.parentOf(target);
      if (!up) break;
      target = up;
    }
    const top = plan.top(target);
    for (const tag of entry.RepoTags ?? []) {
      const ref = tagReference(tag, `${where} RepoTags`);
      if (ref) top.references.add(ref);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Making it visible.

interface ExtraTag {
  ref: ImageReference;
  /** Given as a bare repository: combine with the archive's bare tags. */
  repositoryOnly: boolean;
}

function parseExtraTags(tags: string[] | undefined): ExtraTag[] {
  return (tags ?? []).map((t) => {
    const ref = parseReference(t);
    if (ref.digest !== undefined) throw new StowageError('INVALID_REFERENCE', `cannot tag with a digest reference "${short(t)}"`);
    return { ref, repositoryOnly: ref.tag === undefined };
  });
}

async function apply(plan: Plan, target: ImportTarget, stager: Stager, extra: ExtraTag[]): Promise<ImportResult> {
  const { store, images } = target;
  if (plan.images.size === 0) throw invalid('the archive holds no images');
  if (extra.length > 0) {
    if (plan.tops.size !== 1) {
      throw new StowageError('BAD_REQUEST', `the archive holds ${plan.tops.size} images; extra tags need exactly one`);
    }
    const top = [...plan.tops.values()][0]!;
    for (const t of extra) {
      if (t.repositoryOnly && top.bareTags.size > 0) {
        for (const bare of top.bareTags) top.references.add(formatReference({ ...t.ref, tag: bare }));
      } else {
        top.references.add(formatReference(withDefaultTag(t.ref)));
      }
    }
  }
  // A bare ref name without a repository from the caller stays unused: the image is imported untagged.

  // Blobs to commit, once per digest.
  const toCommit = new Map<Digest, Staged>();
  const toPut = new Map<Digest, Buffer>();
  for (const img of plan.images.values()) {
    if ('staged' in img.manifest) toCommit.set(img.manifestDigest, img.manifest.staged);
    else toPut.set(img.manifestDigest, img.manifest.bytes);
    toCommit.set(img.config.digest, img.config);
    for (const l of img.layers) if (!toCommit.has(l.digest)) toCommit.set(l.digest, l);
  }
  for (const ix of plan.indexes.values()) toCommit.set(ix.digest, ix.staged);

  // Blobs first (invisible until a record names them), then every record in one transaction. The lease keeps
  // every blob the records will name (those already in the store too) from being deleted until they are written.
  const lease = store.lease([...toCommit.keys(), ...toPut.keys()]);
  const created: Digest[] = [];
  try {
    for (const [digest, staged] of toCommit) {
      const existed = await store.has(digest);
      await stager.commit(staged, lease);
      if (!existed) created.push(digest);
    }
    for (const [digest, bytes] of toPut) {
      const existed = await store.has(digest);
      await store.putBytes(bytes, { digest, size: bytes.length }, { lease });
      if (!existed) created.push(digest);
    }
    images.transaction(() => {
      for (const img of plan.images.values()) {
        images.putImage({
          manifestDigest: img.manifestDigest,
          manifestMediaType: img.manifestMediaType,
          configDigest: img.config.digest,
          platform: img.platform,
          layers: img.layers.map((l) => l.digest),
          size: img.manifestSize + img.config.size + img.layers.reduce((n, l) => n + l.size, 0),
          created: img.created,
          labels: img.labels,
        });
      }
      for (const ix of plan.indexes.values()) {
        images.putIndex({ indexDigest: ix.digest, mediaType: ix.mediaType, children: ix.children });
      }
      for (const top of plan.tops.values()) {
        for (const ref of top.references) images.tag(ref, top.digest);
      }
    });
  } catch (err) {
    // The records rolled back; drop the blobs this import added that nothing else refers to (or leases).
    lease.release();
    try {
      await deleteUnreferenced(store, images, created.map((digest) => ({ digest })));
    } catch {
      /* the original error matters more */
    }
    throw err;
  } finally {
    lease.release();
  }

  const refsOf = (digest: Digest | undefined): string[] => (digest ? [...(plan.tops.get(digest)?.references ?? [])] : []);
  const result: ImportResult = { format: plan.format, images: [], indexes: [...plan.indexes.keys()] };
  for (const img of plan.images.values()) {
    const refs = new Set(refsOf(img.manifestDigest));
    // References of every index on the way up.
    const seen = new Set<Digest>();
    for (let up = plan.parentOf(img.manifestDigest); up && !seen.has(up); up = plan.parentOf(up)) {
      seen.add(up);
      for (const r of refsOf(up)) refs.add(r);
    }
    const entry: ImportedImage = {
      manifestDigest: img.manifestDigest,
      configDigest: img.config.digest,
      references: [...refs],
      platform: img.platform,
    };
    if (img.indexDigest) entry.indexDigest = img.indexDigest;
    result.images.push(entry);
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// Entry points.

/**
 * Imports a `docker save` archive (legacy or Docker 25+) or an OCI image layout tar, optionally gzip as a
 * whole, into the store. Nothing becomes visible unless the whole archive is valid. Errors: INVALID_ARCHIVE,
 * UNSAFE_PATH, DIGEST_MISMATCH, SIZE_MISMATCH, TOO_LARGE, UNSUPPORTED; the store is left as it was.
 */
export async function importArchive(source: Readable, target: ImportTarget, opts: ImportOptions = {}): Promise<ImportResult> {
  const extra = parseExtraTags(opts.tag);
  const limits = {
    maxEntries: opts.maxEntries ?? DEFAULT_MAX_ENTRIES,
    maxEntryBytes: opts.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES,
  };
  const stager = new Stager(target.store);
  try {
    const files = new Map<string, Staged>();
    const meta = new Map<string, Buffer>();
    const links = new ArchiveLinks();
    const seen = new Set<string>();
    const { stream } = await decompress(source);
    await readTar(stream, limits, async (entry) => {
      if (entry.type === 'directory') {
        if (files.has(entry.path) || links.has(entry.path)) throw invalid(`archive entry "${short(entry.path)}" appears twice`);
        return;
      }
      if (entry.path === '') throw invalid('archive has a non-directory entry for its root');
      if (seen.has(entry.path)) throw invalid(`archive entry "${short(entry.path)}" appears twice`, { path: short(entry.path) });
      seen.add(entry.path);
      if (entry.type === 'symlink' || entry.type === 'hardlink') {
        links.add(entry.path, entry.linkname, entry.type);
        return;
      }
      if (METADATA_FILES.has(entry.path)) {
        checkManifestSize(entry.size, entry.path);
        meta.set(entry.path, await collect(entry.body, MAX_MANIFEST_BYTES, entry.path));
        return;
      }
      files.set(entry.path, await stager.stage(entry.body, entry.size));
    });

    const view = new TarView(files, meta, links);
    const hasLayout = view.hasMetadata(OCI_LAYOUT_FILE);
    const hasIndex = view.hasMetadata(OCI_INDEX_FILE);
    const hasDockerManifest = view.hasMetadata(DOCKER_MANIFEST_FILE);
    let plan: Plan;
    if (hasLayout || hasIndex) {
      if (!hasLayout) throw invalid(`the archive has ${OCI_INDEX_FILE} but no ${OCI_LAYOUT_FILE}`);
      if (!hasIndex) throw invalid(`the archive has ${OCI_LAYOUT_FILE} but no ${OCI_INDEX_FILE}`);
      parseOciLayoutFile(metadataOf(view, OCI_LAYOUT_FILE));
      view.checkBlobNames();
      plan = new Plan(hasDockerManifest ? 'docker-oci' : 'oci-layout');
      await planOci(view, metadataOf(view, OCI_INDEX_FILE), plan);
      if (hasDockerManifest) applyDockerManifest(view, plan, parseDockerSaveManifest(metadataOf(view, DOCKER_MANIFEST_FILE)));
    } else if (hasDockerManifest) {
      plan = planLegacy(view, parseDockerSaveManifest(metadataOf(view, DOCKER_MANIFEST_FILE)));
    } else if (view.hasMetadata(DOCKER_REPOSITORIES_FILE)) {
      throw new StowageError('UNSUPPORTED', 'pre-1.10 docker save archives (a "repositories" file, no manifest.json) are not supported');
    } else {
      throw invalid(`not an image archive: no ${DOCKER_MANIFEST_FILE} or ${OCI_INDEX_FILE} at its top level`);
    }
    return await apply(plan, target, stager, extra);
  } finally {
    await stager.abortAll();
  }
}

function metadataOf(view: TarView, name: string): Buffer {
  const bytes = view.metadata(name);
  if (bytes === undefined) {
    const staged = view.file(name);
    if (staged) checkManifestSize(staged.size, name);
    throw invalid(`${name} is missing or not JSON`);
  }
  return bytes;
}

/**
 * Imports an OCI image layout directory (oci-layout, index.json, blobs/sha256/…), streaming blobs from
 * their files. A Docker 25+ manifest.json next to index.json is honoured for RepoTags. Same guarantees
 * and errors as importArchive.
 */
export async function importOciLayoutDir(dir: string, target: ImportTarget, opts: ImportOptions = {}): Promise<ImportResult> {
  const extra = parseExtraTags(opts.tag);
  const stager = new Stager(target.store);
  try {
    const readSmall = async (name: string, required: boolean): Promise<Buffer | undefined> => {
      const file = join(dir, name);
      try {
        const st = await stat(file);
        if (!st.isFile()) throw invalid(`${name} in ${dir} is not a file`);
        checkManifestSize(st.size, name);
        return await readFile(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          if (required) throw invalid(`${dir} is not an OCI image layout: ${name} is missing`);
          return undefined;
        }
        throw err;
      }
    };
    parseOciLayoutFile((await readSmall(OCI_LAYOUT_FILE, true))!);
    const indexBytes = (await readSmall(OCI_INDEX_FILE, true))!;
    const dockerManifest = await readSmall(DOCKER_MANIFEST_FILE, false);
    const view = new DirView(dir, stager, opts.maxEntryBytes ?? DEFAULT_MAX_ENTRY_BYTES);
    const plan = new Plan(dockerManifest ? 'docker-oci' : 'oci-layout');
    await planOci(view, indexBytes, plan);
    if (dockerManifest) applyDockerManifest(view, plan, parseDockerSaveManifest(dockerManifest));
    return await apply(plan, target, stager, extra);
  } finally {
    await stager.abortAll();
  }
}

