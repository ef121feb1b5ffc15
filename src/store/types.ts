import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import type { LiveBlobReader } from './live-blobs.js';

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

/**
 * Blobs a writer is about to record (or is reading from): while a digest is leased, delete() leaves its blob
 * alone. In-process only: one agent process shares one store between pulls, imports, builds and deletes.
 * Refcounted per digest across leases, so two writers sharing a layer each keep it until they release.
 *
 * A writer takes its lease BEFORE it asks has() (or reads a record naming the blob), adds to it as it learns
 * more digests, and releases it in `finally` once its records are written (or it failed).
 */
export interface Lease {
  /** Protects one more digest (adding one twice is harmless: the lease holds each digest once). */
  add(digest: Digest): void;
  has(digest: Digest): boolean;
  /** Drops every digest of this lease; idempotent. A released lease refuses add(). */
  release(): void;
}

/** Options of the writes that make a blob visible. */
export interface CommitOptions {
  /**
   * Adds the committed digest to this lease before the blob is published (or found already there), so no
   * delete can slip in between the commit and the caller's records. Must be a lease of the same store.
   */
  lease?: Lease | undefined;
}

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
  commit(expected?: ExpectedContent, opts?: CommitOptions): Promise<BlobInfo>;
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
  put(source: ByteSource, expected?: ExpectedContent, opts?: CommitOptions): Promise<BlobInfo>;
  putBytes(data: Uint8Array, expected?: ExpectedContent, opts?: CommitOptions): Promise<BlobInfo>;
  /**
   * Opens or resumes a named ingest. An ingest named by the digest its content will have can be read
   * (liveReader) while it is written.
   */
  openIngest(key: string): Promise<Ingest>;
  /**
   * Announces that a blob of this digest and size is on its way (a transfer planned it): readers may attach
   * before its ingest starts. Returns the release, called when the transfer ends; a store without live
   * reads leaves it out.
   */
  expectBlob?(digest: Digest, size: number): () => void;
  /**
   * A reader of a blob still arriving (see store/live-blobs.ts): bytes as they are written, the last one only
   * once the blob is verified, an error if its ingest fails. Undefined when nothing is bringing it in.
   */
  liveReader?(digest: Digest): LiveBlobReader | undefined;
  /** A new lease holding `digests` (see Lease); the caller releases it in `finally`. */
  lease(digests?: Iterable<Digest>): Lease;
  /** Whether any lease holds the digest. */
  isLeased(digest: Digest): boolean;
  /**
   * Removes the blob unless a lease holds it. True only when this call removed it: false for a leased blob
   * and for one that is not there. While a delete is in flight, has/stat/commits of that digest wait for it,
   * so a writer that leased the digest never sees a blob that is about to vanish.
   */
  delete(digest: Digest): Promise<boolean>;
  list(): AsyncIterable<BlobInfo>;
  /**
   * Removes abandoned ingests (see ContentStore.removeStaleIngests); a store whose ingests live elsewhere
   * (a runtime's) leaves it out.
   */
  removeStaleIngests?(maxAgeMs: number, opts?: { orphansOfAnyAge?: boolean }): Promise<string[]>;
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

/**
 * A manifest that is not a runnable image: an OCI artifact (a signature, an SBOM, a chart: a config that is
 * not an image config, or an `artifactType`), or an image manifest whose config does not describe its
 * layers. Stored, tagged, served, referred to and garbage-collected like an image; never shown as one.
 */
export interface ArtifactRecord {
  manifestDigest: Digest;
  manifestMediaType: string;
  /** The manifest's artifactType, else its config's media type. */
  artifactType: string;
  /** The manifest it refers to (its `subject`), when it has one. */
  subject: Digest | undefined;
  /** Config and layer blobs, in manifest order. */
  blobs: Digest[];
  /** Manifest + config + layers, as stored. */
  size: number;
  addedAt: string;
}

/** A manifest or index whose `subject` names another manifest: one entry of that manifest's referrers list. */
export interface ReferrerRecord {
  subject: Digest;
  digest: Digest;
  mediaType: string;
  /** Size of the referring manifest itself. */
  size: number;
  artifactType: string | undefined;
  annotations: Record<string, string>;
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

  putArtifact(record: Omit<ArtifactRecord, 'addedAt'>): ArtifactRecord;
  getArtifact(manifestDigest: Digest): ArtifactRecord | undefined;
  listArtifacts(): ArtifactRecord[];
  /** Also drops the tags that point at the artifact. */
  deleteArtifact(manifestDigest: Digest): void;

  /** Records that `record.digest` refers to `record.subject` (the subject need not be held). */
  putReferrer(record: Omit<ReferrerRecord, 'addedAt'>): ReferrerRecord;
  /** Every manifest and index held whose subject is `subject`, oldest first. */
  referrersOf(subject: Digest): ReferrerRecord[];
  /** Forgets `digest` as a referrer (when its manifest is deleted). */
  removeReferrer(digest: Digest): void;

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
  /**
   * Calls `listener` after every committed write (image, index, tag, repo digest): once per outer
   * transaction, after it commits, never inside it. Returns the function that unsubscribes.
   */
  onChange(listener: () => void): () => void;
  close(): void;
}
