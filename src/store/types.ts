import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';

/**
 * The contract between the store and everything that uses it (archives, registry routes, transfers,
 * the Docker Engine API). Implementations: ContentStore (content-store.ts), ImageIndex (image-index.ts).
 */

export interface BlobInfo {
  digest: Digest;
  size: number;
}

export interface ExpectedContent {
  digest?: Digest | undefined;
  size?: number | undefined;
}

export type ByteSource = Readable | AsyncIterable<Uint8Array>;

/** An open, possibly resumed, write of one blob. Nothing is visible until commit() succeeds. */
export interface Ingest {
  /** The key the ingest was opened with; reopening the same key resumes it. */
  readonly key: string;
  /** Bytes already on disk (for `Range: bytes=<offset>-` resume). */
  readonly offset: number;
  /**
   * Appends the source at the current offset; resolves with the digest and size of everything written so
   * far (a resumed prefix included), so a writer that needs them before committing need not hash again.
   */
  write(source: ByteSource): Promise<BlobInfo>;
  /** Verifies digest/size of everything written, fsyncs, renames into blobs/sha256/<hex>. */
  commit(expected?: ExpectedContent): Promise<BlobInfo>;
  /** Drops the partial file. */
  abort(): Promise<void>;
}

export interface ContentStoreApi {
  readonly root: string;
  has(digest: Digest): Promise<boolean>;
  stat(digest: Digest): Promise<BlobInfo | undefined>;
  /** Throws BLOB_NOT_FOUND. `end` is inclusive, like HTTP Range. */
  createReadStream(digest: Digest, range?: { start: number; end?: number }): Promise<Readable>;
  /** Reads a small blob (manifest, config) whole; throws TOO_LARGE above `limit`. */
  readBytes(digest: Digest, limit?: number): Promise<Buffer>;
  /** Streams a blob in; verifies `expected` when given; atomic and safe under concurrent writers. */
  put(source: ByteSource, expected?: ExpectedContent): Promise<BlobInfo>;
  putBytes(data: Uint8Array, expected?: ExpectedContent): Promise<BlobInfo>;
  /** Opens or resumes a named ingest. */
  openIngest(key: string): Promise<Ingest>;
  delete(digest: Digest): Promise<void>;
  list(): AsyncIterable<BlobInfo>;
}

/** One platform-specific image: a manifest whose config digest is the Docker image ID. */
export interface ImageRecord {
  manifestDigest: Digest;
  manifestMediaType: string;
  configDigest: Digest;
  platform: Platform;
  /** Layer blob digests in manifest order. */
  layers: Digest[];
  /** Manifest + config + layers, as stored. */
  size: number;
  /** ISO-8601 creation time from the config, when it has one. */
  created: string | undefined;
  labels: Record<string, string>;
  addedAt: string;
}

/** A multi-platform index (manifest list) that is held locally; children may be only partly present. */
export interface IndexRecord {
  indexDigest: Digest;
  mediaType: string;
  children: Array<{ digest: Digest; platform: Platform | undefined; present: boolean }>;
  addedAt: string;
}

/** A tag: a fully normalised reference (docker.io/library/alpine:latest) pointing at a manifest or index. */
export interface TagRecord {
  reference: string;
  target: Digest;
  updatedAt: string;
}

/** A digest a registry knows this image by (Docker's RepoDigests: repo@digest). */
export interface RepoDigestRecord {
  repository: string;
  digest: Digest;
  /** The local manifest digest this resolves to (differs from digest when digest is an index). */
  manifestDigest: Digest;
}

/**
 * The image records of one machine (SQLite in image-index.ts). References are always passed fully
 * normalised (see oci/reference.ts). Every write is one transaction.
 */
export interface ImageIndexApi {
  putImage(record: Omit<ImageRecord, 'addedAt'>): ImageRecord;
  getImage(manifestDigest: Digest): ImageRecord | undefined;
  /** All platform images whose config digest (Docker image ID) is this. */
  imagesByConfig(configDigest: Digest): ImageRecord[];
  listImages(): ImageRecord[];
  deleteImage(manifestDigest: Digest): void;

  putIndex(record: Omit<IndexRecord, 'addedAt'>): IndexRecord;
  getIndex(indexDigest: Digest): IndexRecord | undefined;
  listIndexes(): IndexRecord[];
  deleteIndex(indexDigest: Digest): void;

  /** Points a reference at a manifest or index digest (replacing what it pointed at). */
  tag(reference: string, target: Digest): TagRecord;
  /** Returns false when the reference was not tagged. */
  untag(reference: string): boolean;
  resolveTag(reference: string): Digest | undefined;
  listTags(): TagRecord[];
  tagsFor(target: Digest): TagRecord[];

  addRepoDigest(record: RepoDigestRecord): void;
  repoDigestsFor(manifestDigest: Digest): RepoDigestRecord[];
  removeRepoDigests(manifestDigest: Digest): void;

  /** Every blob digest some image or index still needs (manifests, configs, layers, index blobs). */
  referencedBlobs(): Set<Digest>;
  /**
   * Runs `fn` as one transaction: the records it writes appear together or, if it throws, not at all.
   * Writers that record several things at once (an image, its index, its tags) go through here.
   */
  transaction<T>(fn: () => T): T;
  close(): void;
}
