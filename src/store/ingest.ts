import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { constants, mkdir, open, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StowageError, isStorageFull, storageFullOr } from '../errors.js';
import { type Digest, Digester, isDigest, verifyContent } from '../oci/digest.js';
import { checkNotShort, isErrno, pumpSource } from './fs-util.js';
import type { LiveBlobs } from './live-blobs.js';
import type { BlobInfo, ByteSource, CommitOptions, ExpectedContent, Ingest, Lease } from './types.js';

const MAX_KEY_LENGTH = 4096;

/** Moves a verified, fsynced file into the blob directory (adding the digest to `lease` first). Provided by the ContentStore. */
export type PublishBlob = (file: string, info: BlobInfo, lease: Lease | undefined) => Promise<void>;
/** Throws unless the lease belongs to the store. Provided by the ContentStore. */
export type CheckLease = (lease: Lease | undefined) => void;

/** What an ingest keyed by a digest tells, so its bytes can be read while they arrive (live-blobs.ts). */
export interface LiveHooks {
  live: LiveBlobs;
  blobPath: (digest: Digest) => string;
}

/** Directory name for a key: a hash, so no key can name a path outside ingest/. */
export function ingestDirName(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export function checkExpected(expected: ExpectedContent): void {
  if (expected.digest !== undefined && !isDigest(expected.digest)) {
    throw new StowageError('INVALID_DIGEST', `invalid expected digest "${String(expected.digest).slice(0, 80)}"`);
  }
  if (expected.size !== undefined && !(Number.isSafeInteger(expected.size) && expected.size >= 0)) {
    throw new StowageError('BAD_REQUEST', `invalid expected size ${String(expected.size)}`);
  }
}

/** Opens (creating if needed) the ingest directory for `key` and returns a handle at its current end. */
export async function openFileIngest(
  ingestRoot: string,
  key: string,
  publish: PublishBlob,
  busy: Set<string>,
  checkLease: CheckLease,
  hooks?: LiveHooks,
): Promise<Ingest> {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH) {
    throw new StowageError('BAD_REQUEST', `ingest key must be 1..${MAX_KEY_LENGTH} characters`);
  }
  const dir = join(ingestRoot, ingestDirName(key));
  let fh;
  try {
    await mkdir(dir, { recursive: true });
    // The key is kept only for people and tools inspecting the directory; nothing reads it back.
    await writeFile(join(dir, 'meta.json'), JSON.stringify({ key }), { flag: 'wx' }).catch((err: unknown) => {
      if (!isErrno(err, 'EEXIST')) throw err;
    });
    fh = await open(join(dir, 'data'), 'a');
  } catch (err) {
    // A full disk leaves no half-made ingest directory behind.
    if (isStorageFull(err)) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw storageFullOr(err);
  }
  try {
    // Only an ingest named by the digest it will have can be read by that digest before it is whole.
    const live = hooks && isDigest(key) ? { ...hooks, digest: key } : undefined;
    return new FileIngest(key, dir, (await fh.stat()).size, publish, busy, checkLease, live);
  } finally {
    await fh.close();
  }
}

class FileIngest implements Ingest {
  readonly key: string;
  private readonly dir: string;
  private readonly data: string;
  private readonly publish: PublishBlob;
  /** Directories with an operation in flight, shared by every handle of one store. */
  private readonly busy: Set<string>;
  private readonly checkLease: CheckLease;
  private size: number;
  /**
   * Hash of the first `size` bytes. Undefined until first needed, and again after anything that may
   * have left the file and the hash out of step: then it is rebuilt by re-reading the file, which is
   * also how a resumed ingest (whose hash state died with the previous process) gets its prefix hashed.
   */
  private digester: Digester | undefined;
  private closed = false;
  private readonly live: (LiveHooks & { digest: Digest }) | undefined;

  constructor(
    key: string,
    dir: string,
    size: number,
    publish: PublishBlob,
    busy: Set<string>,
    checkLease: CheckLease,
    live: (LiveHooks & { digest: Digest }) | undefined,
  ) {
    this.key = key;
    this.dir = dir;
    this.data = join(dir, 'data');
    this.size = size;
    this.publish = publish;
    this.busy = busy;
    this.checkLease = checkLease;
    this.live = live;
  }

  get offset(): number {
    return this.size;
  }

  write(source: ByteSource): Promise<BlobInfo> {
    return this.exclusive(() => this.removedWhenFull(() => this.writeLocked(source)));
  }

  /**
   * A full disk ends the ingest: its partial file is removed at once (keeping it to resume would hold the
   * very space that is missing) and the error is INSUFFICIENT_STORAGE.
   */
  private async removedWhenFull<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (!isStorageFull(err)) throw err;
      await this.remove().catch(() => undefined);
      throw storageFullOr(err);
    }
  }

  private async writeLocked(source: ByteSource): Promise<BlobInfo> {
    const digester = await this.syncHash();
    const fh = await this.openData(constants.O_WRONLY | constants.O_APPEND);
    const live = this.live;
    live?.live.writeStarted(live.digest, this.data, digester.size);
    let whole = false;
    try {
      await pumpSource(source, fh, digester, undefined, live && ((total) => live.live.grew(live.digest, total)));
      this.size = digester.size;
      whole = true;
      return { digest: digester.peek(), size: digester.size };
    } catch (err) {
      // Whatever reached the disk stays (that is the point of resuming). A failed source leaves file
      // and hash in step; a failed write may not, and then the hash is rebuilt from the file.
      const onDisk = await fh.stat().then((s) => s.size, () => -1);
      if (onDisk !== digester.size) this.digester = undefined;
      this.size = onDisk === -1 ? digester.size : onDisk;
      throw err;
    } finally {
      await fh.close();
      live?.live.writeEnded(live.digest, whole);
    }
  }

  async commit(expected: ExpectedContent = {}, opts: CommitOptions = {}): Promise<BlobInfo> {
    checkExpected(expected);
    this.checkLease(opts.lease);
    return this.exclusive(() => this.removedWhenFull(async () => {
      const digester = await this.syncHash();
      this.digester = undefined; // digest() finalises it
      const actual: BlobInfo = { digest: digester.digest(), size: digester.size };
      // Short: the caller can still resume and append the rest, so keep the file.
      checkNotShort(actual.size, expected.size);
      try {
        verifyContent(actual, expected);
      } catch (err) {
        // Bad bytes cannot be fixed by appending more: drop them so a retry starts clean.
        await this.remove();
        throw err;
      }
      if (this.live?.digest === actual.digest) this.live.live.verified(actual.digest);
      const fh = await this.openData(constants.O_RDONLY);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.publish(this.data, actual, opts.lease);
      const live = this.live;
      if (live?.digest === actual.digest) live.live.committed(actual.digest, actual.size, live.blobPath(actual.digest));
      await this.remove(live?.digest === actual.digest);
      return actual;
    }));
  }

  async abort(): Promise<void> {
    if (this.closed) return;
    await this.exclusive(() => this.remove());
  }

  private async remove(committed = false): Promise<void> {
    this.closed = true;
    if (!committed) this.live?.live.dropped(this.live.digest, 'aborted or failed verification');
    await rm(this.dir, { recursive: true, force: true });
  }

  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new StowageError('CONFLICT', `ingest "${this.key}" was already committed or aborted`);
    if (this.busy.has(this.dir)) throw new StowageError('CONFLICT', `ingest "${this.key}" is busy with another write`);
    this.busy.add(this.dir);
    try {
      return await fn();
    } finally {
      this.busy.delete(this.dir);
    }
  }

  /** Opens the data file without O_CREAT: appending must not recreate a file aborted or collected meanwhile. */
  private openData(flags: number) {
    return this.onDataFile(() => open(this.data, flags));
  }

  /** Runs a file operation on the data file; ENOENT means the ingest was removed under this handle. */
  private async onDataFile<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (isErrno(err, 'ENOENT')) {
        this.closed = true;
        throw new StowageError('CONFLICT', `ingest "${this.key}" was removed`);
      }
      throw err;
    }
  }

  /** Returns a digester covering exactly the bytes on disk, re-reading the file when unsure. */
  private async syncHash(): Promise<Digester> {
    const onDisk = (await this.onDataFile(() => stat(this.data))).size;
    if (this.digester && this.digester.size === onDisk) return this.digester;
    const digester = new Digester();
    for await (const chunk of createReadStream(this.data)) digester.update(chunk as Buffer);
    this.digester = digester;
    this.size = digester.size;
    return digester;
  }
}
