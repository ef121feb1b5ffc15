import { randomUUID } from 'node:crypto';
import { mkdir, open, opendir, readFile, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { StowageError, storageFullOr } from '../errors.js';
import { Digester, digestHex, isDigest, verifyContent, type Digest } from '../oci/digest.js';
import { BlobFileStream } from './blob-file-stream.js';
import { checkNotShort, fsyncDir, isErrno, pumpSource } from './fs-util.js';
import { checkExpected, openFileIngest } from './ingest.js';
import { type LiveBlobReader, LiveBlobs } from './live-blobs.js';
import type { BlobInfo, ByteSource, CommitOptions, ContentStoreApi, ExpectedContent, Ingest, Lease } from './types.js';

/** Default ceiling for readBytes: manifests and configs, never layers. */
export const DEFAULT_READ_LIMIT = 16 * 1024 * 1024;

const HEX64 = /^[a-f0-9]{64}$/;

/** A stored blob and when it was last committed (put, or put again), in ms since the epoch. */
export interface CommittedBlob extends BlobInfo {
  committedAt: number;
}

/**
 * Content-addressed blobs on the local disk: `<root>/blobs/sha256/<hex>`. Every write goes to its own
 * file under `<root>/ingest/`, is hashed while streaming, verified, fsynced and renamed into place,
 * so a blob path exists only for whole, correct content.
 */
export class ContentStore implements ContentStoreApi {
  readonly root: string;
  private readonly blobDir: string;
  private readonly ingestDir: string;
  /** Ingest directories with a put, write or commit in flight (guards two handles of one key, and GC). */
  private readonly busyIngests = new Set<string>();
  /** How many live leases hold each digest; delete() leaves these blobs alone. */
  private readonly leaseCounts = new Map<Digest, number>();
  /** Deletes in flight: has/stat/publish of the digest wait for them (see delete). */
  private readonly deleting = new Map<Digest, Promise<boolean>>();
  /** Blobs arriving through ingests keyed by their digest, readable before they are whole. */
  private readonly live = new LiveBlobs();

  private constructor(root: string) {
    this.root = root;
    this.blobDir = join(root, 'blobs', 'sha256');
    this.ingestDir = join(root, 'ingest');
  }

  static async open(root: string): Promise<ContentStore> {
    const store = new ContentStore(resolve(root));
    await mkdir(store.blobDir, { recursive: true });
    await mkdir(store.ingestDir, { recursive: true });
    return store;
  }

  async has(digest: Digest): Promise<boolean> {
    return (await this.stat(digest)) !== undefined;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const info = await this.statCommitted(digest);
    return info && { digest, size: info.size };
  }

  async createReadStream(digest: Digest, range?: { start: number; end?: number }): Promise<Readable> {
    const fh = await this.openBlob(digest);
    try {
      const { size } = await fh.stat();
      const start = range?.start ?? 0;
      const end = range?.end;
      const valid =
        Number.isSafeInteger(start) && start >= 0 && start <= size && (end === undefined || (Number.isSafeInteger(end) && end >= start));
      if (!valid) {
        throw new StowageError('BAD_REQUEST', `range ${start}-${end ?? ''} not satisfiable for a blob of ${size} bytes`, {
          status: 416,
          details: { size, start, end },
        });
      }
      const last = Math.min(end ?? size - 1, size - 1);
      if (last < start) {
        // start === size: nothing left to send (a resume that already has everything).
        await fh.close();
        return Readable.from([]);
      }
      // Large reads (1 MiB), and reused buffers when served over HTTP (see BlobFileStream).
      return new BlobFileStream(fh, start, last);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async readBytes(digest: Digest, limit: number = DEFAULT_READ_LIMIT): Promise<Buffer> {
    const fh = await this.openBlob(digest);
    try {
      const { size } = await fh.stat();
      if (size > limit) {
        throw new StowageError('TOO_LARGE', `blob ${digest} is ${size} bytes, more than the ${limit} allowed here`, {
          details: { size, limit },
        });
      }
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  async put(source: ByteSource, expected: ExpectedContent = {}, opts: CommitOptions = {}): Promise<BlobInfo> {
    checkExpected(expected);
    this.checkLease(opts.lease);
    // A private temp per writer: concurrent puts of one digest never share a file.
    const dir = join(this.ingestDir, `put-${randomUUID()}`);
    this.busyIngests.add(dir); // a slow source must not look stale to removeStaleIngests
    try {
      await mkdir(dir);
      const tmp = join(dir, 'data');
      const digester = new Digester();
      const fh = await open(tmp, 'wx');
      try {
        await pumpSource(source, fh, digester, expected.size);
        await fh.sync();
      } finally {
        await fh.close();
      }
      const actual: BlobInfo = { digest: digester.digest(), size: digester.size };
      checkNotShort(actual.size, expected.size);
      verifyContent(actual, expected);
      await this.publish(tmp, actual, opts.lease);
      return actual;
    } catch (err) {
      throw storageFullOr(err);
    } finally {
      this.busyIngests.delete(dir);
      await rm(dir, { recursive: true, force: true });
    }
  }

  putBytes(data: Uint8Array, expected?: ExpectedContent, opts?: CommitOptions): Promise<BlobInfo> {
    return this.put(
      (async function* () {
        yield data;
      })(),
      expected,
      opts,
    );
  }

  openIngest(key: string): Promise<Ingest> {
    return openFileIngest(
      this.ingestDir,
      key,
      (file, info, lease) => this.publish(file, info, lease),
      this.busyIngests,
      (lease) => this.checkLease(lease),
      { live: this.live, blobPath: (digest) => this.blobPath(digest) },
    );
  }

  expectBlob(digest: Digest, size: number): () => void {
    if (!isDigest(digest)) throw new StowageError('INVALID_DIGEST', `invalid digest "${String(digest).slice(0, 80)}"`);
    return this.live.expect(digest, size);
  }

  liveReader(digest: Digest): LiveBlobReader | undefined {
    return this.live.reader(digest);
  }

  lease(digests: Iterable<Digest> = []): Lease {
    const lease = new StoreLease(this.leaseCounts);
    try {
      for (const d of digests) lease.add(d);
    } catch (err) {
      lease.release();
      throw err;
    }
    return lease;
  }

  isLeased(digest: Digest): boolean {
    return this.leaseCounts.has(digest);
  }

  /**
   * Removes the blob unless a lease holds it; true only when this call removed it. The lease check and the
   * registration of the delete happen in one synchronous step, and has/stat/publish of the digest wait for a
   * registered delete to finish: so a writer that leases a digest and then asks has() either made the
   * delete back off or sees the blob already gone, never a blob that vanishes afterwards.
   */
  async delete(digest: Digest): Promise<boolean> {
    const path = this.blobPath(digest);
    const pending = this.deleting.get(digest);
    if (pending) {
      await pending.catch(() => undefined);
      return false; // the delete in flight removed it (or failed, and reports that itself)
    }
    if (this.isLeased(digest)) return false;
    const removal = rm(path).then(
      () => true,
      (err: unknown) => {
        if (isErrno(err, 'ENOENT')) return false;
        throw err;
      },
    );
    this.deleting.set(digest, removal);
    try {
      return await removal;
    } finally {
      this.deleting.delete(digest);
    }
  }

  async *list(): AsyncIterable<BlobInfo> {
    for await (const { digest, size } of this.listCommitted()) yield { digest, size };
  }

  /** Like list(), with each blob's commit time: what GC's grace period goes by (see gc.ts). */
  async *listCommitted(): AsyncIterable<CommittedBlob> {
    const dir = await opendir(this.blobDir);
    for await (const entry of dir) {
      if (!entry.isFile() || !HEX64.test(entry.name)) continue;
      const info = await this.statCommitted(`sha256:${entry.name}`); // may have been deleted since the directory was read
      if (info) yield info;
    }
  }

  /**
   * Removes ingest directories (abandoned resumable ingests, temps of crashed puts) whose data was
   * last written more than `maxAgeMs` ago; with `orphansOfAnyAge`, also every ingest that only the process
   * which began it could carry on (put temps, import staging, upload sessions: all but those keyed by the
   * digest they will have, which a pull resumes), whatever its age: at start, they are a dead process's.
   * Ingests in use are never touched. Returns the removed directory names.
   */
  async removeStaleIngests(maxAgeMs: number, opts: { dryRun?: boolean; now?: number; orphansOfAnyAge?: boolean } = {}): Promise<string[]> {
    const cutoff = (opts.now ?? Date.now()) - maxAgeMs;
    const removed: string[] = [];
    for (const name of await readdir(this.ingestDir)) {
      const dir = join(this.ingestDir, name);
      if (this.busyIngests.has(dir)) continue;
      const mtime = await lastWritten(dir);
      if (mtime === undefined) continue;
      if (mtime >= cutoff && !(opts.orphansOfAnyAge === true && !(await resumableIngest(dir)))) continue;
      if (!opts.dryRun) await rm(dir, { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  /**
   * Renames a verified, fsynced file to its blob path, unless an identical blob is already there. Either
   * way the blob's mtime becomes now: it is the commit time GC's grace period counts from, so a blob
   * committed (or committed again) by a pull or import that has yet to write its records is not collected.
   */
  private async publish(file: string, info: BlobInfo, lease: Lease | undefined): Promise<void> {
    const target = this.blobPath(info.digest);
    // Leased before looking: a delete from here on backs off, one in flight is waited for by stat().
    lease?.add(info.digest);
    const now = new Date();
    const existing = await this.stat(info.digest);
    // Same digest and size means same bytes; a wrong-sized file there is damage, so replace it.
    if (existing?.size === info.size) {
      try {
        await utimes(target, now, now);
        return;
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err; // collected meanwhile: publish ours instead
      }
    }
    // rename keeps the file's mtime, which is its last write, not this commit; date it before it is visible.
    await utimes(file, now, now);
    await rename(file, target);
    await fsyncDir(this.blobDir);
  }

  private async statCommitted(digest: Digest): Promise<CommittedBlob | undefined> {
    const path = this.blobPath(digest);
    const pending = this.deleting.get(digest);
    if (pending) await pending.catch(() => undefined);
    try {
      const st = await stat(path);
      return { digest, size: st.size, committedAt: st.mtimeMs };
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    }
  }

  private async openBlob(digest: Digest) {
    const path = this.blobPath(digest);
    try {
      return await open(path, 'r');
    } catch (err) {
      if (isErrno(err, 'ENOENT')) throw new StowageError('BLOB_NOT_FOUND', `blob ${digest} not found`, { details: { digest } });
      throw err;
    }
  }

  /** A lease passed to a write must be one of this store's (checked before any byte is written). */
  private checkLease(lease: Lease | undefined): void {
    if (lease === undefined) return;
    if (!(lease instanceof StoreLease) || !lease.belongsTo(this.leaseCounts)) {
      throw new StowageError('INTERNAL', 'a write was given a lease of another content store');
    }
  }

  /** Digests can come straight from a URL: validate before they become a path. */
  private blobPath(digest: Digest): string {
    if (!isDigest(digest)) throw new StowageError('INVALID_DIGEST', `invalid digest "${String(digest).slice(0, 80)}"`);
    return join(this.blobDir, digestHex(digest));
  }
}

/** A lease of one ContentStore: the digests it holds, counted in the store's table while it lives. */
class StoreLease implements Lease {
  private readonly held = new Set<Digest>();
  private released = false;

  constructor(private readonly counts: Map<Digest, number>) {}

  belongsTo(counts: Map<Digest, number>): boolean {
    return this.counts === counts;
  }

  add(digest: Digest): void {
    if (this.released) throw new StowageError('INTERNAL', `cannot lease ${digest}: the lease was already released`);
    if (!isDigest(digest)) throw new StowageError('INVALID_DIGEST', `invalid digest "${String(digest).slice(0, 80)}"`);
    if (this.held.has(digest)) return;
    this.held.add(digest);
    this.counts.set(digest, (this.counts.get(digest) ?? 0) + 1);
  }

  has(digest: Digest): boolean {
    return this.held.has(digest);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    for (const d of this.held) {
      const n = (this.counts.get(d) ?? 1) - 1;
      if (n > 0) this.counts.set(d, n);
      else this.counts.delete(d);
    }
    this.held.clear();
  }
}

async function lastWritten(dir: string): Promise<number | undefined> {
  try {
    const st = await stat(join(dir, 'data'));
    return st.mtimeMs;
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
  try {
    return (await stat(dir)).mtimeMs;
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/** Whether an ingest directory is keyed by a digest (its meta.json says so): one a pull resumes. */
async function resumableIngest(dir: string): Promise<boolean> {
  try {
    const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as { key?: unknown };
    return typeof meta.key === 'string' && isDigest(meta.key);
  } catch {
    return false;
  }
}
