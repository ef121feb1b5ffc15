import { EventEmitter } from 'node:events';
import { type FileHandle, open } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { isErrno } from './fs-util.js';

/**
 * Blobs on their way into the store, readable while they arrive (pipelined fan-out: a machine serves the
 * bytes of a layer it is still receiving to the next machine).
 *
 * An entry exists while a transfer expects the blob (`expect`, with the size its descriptor gives) or an
 * ingest keyed by its digest is writing it. A reader tails the ingest's data file: it sends what is
 * written, waits for more, and ends at the expected size. It never sends the blob's final byte before the
 * ingest has verified the whole blob against its digest, so a reader of a blob whose ingest fails (aborted,
 * wrong digest, given up) sees its connection fail, never a truncated or wrong blob that looks whole; the
 * downstream machine still verifies the digest itself, and resumes with Range from another source.
 */

const READ_CHUNK = 1024 * 1024;

type State = 'waiting' | 'writing' | 'verified' | 'committed' | 'failed';

class LiveBlob extends EventEmitter {
  size: number | undefined;
  /** The data file while it is written; the blob path once committed. */
  file: string | undefined;
  written = 0;
  state: State = 'waiting';
  expectations = 0;
  writers = 0;
  /** Bumped when the bytes written so far are dropped (an aborted ingest): readers of an older generation fail. */
  generation = 0;
  error: Error | undefined;
  /** Counts changes, so a reader that looked at version v waits only if nothing changed since. */
  version = 0;

  changed(): void {
    this.version++;
    this.emit('change');
  }
}

/** What a reader of a blob still arriving gets: its size and a stream of (part of) it. */
export interface LiveBlobReader {
  readonly size: number;
  /** `end` is inclusive, like HTTP Range. */
  stream(range?: { start: number; end: number }): Readable;
}

export class LiveBlobs {
  private readonly entries = new Map<Digest, LiveBlob>();

  /**
   * A transfer will fetch this blob (of this size): readers may attach and wait for its bytes. Returns the
   * release, called when the transfer ends either way; once nothing expects or writes it, waiting readers fail.
   */
  expect(digest: Digest, size: number): () => void {
    const entry = this.entry(digest);
    entry.size ??= size;
    entry.expectations++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.expectations--;
      this.settleIfOrphaned(digest, entry);
    };
  }

  /** A reader of the blob as it arrives, or undefined when nothing is bringing it in (or its size is unknown). */
  reader(digest: Digest): LiveBlobReader | undefined {
    const entry = this.entries.get(digest);
    if (!entry || entry.size === undefined || entry.state === 'failed') return undefined;
    const size = entry.size;
    return { size, stream: (range) => tail(entry, entry.generation, range?.start ?? 0, range?.end ?? size - 1, size) };
  }

  // --- called by the ingest (ingest.ts) for keys that are digests ---

  writeStarted(digest: Digest, file: string, offset: number): void {
    const entry = this.entry(digest);
    entry.writers++;
    entry.file = file;
    entry.written = offset;
    entry.state = 'writing';
    entry.changed();
  }

  grew(digest: Digest, written: number): void {
    const entry = this.entries.get(digest);
    if (!entry) return;
    entry.written = written;
    entry.changed();
  }

  /**
   * A write stopped. After one that took its source whole, the commit comes next (or the abort, if it fails to
   * verify), so the blob is still on its way. After one that failed, only a transfer that still expects the
   * blob will bring the rest (resuming from another source); without one, nothing will.
   */
  writeEnded(digest: Digest, whole: boolean): void {
    const entry = this.entries.get(digest);
    if (!entry) return;
    entry.writers = Math.max(0, entry.writers - 1);
    if (!whole) this.settleIfOrphaned(digest, entry);
  }

  /** The whole blob matched its digest (its fsync and rename follow): its final byte may go out. */
  verified(digest: Digest): void {
    const entry = this.entries.get(digest);
    if (!entry || entry.state !== 'writing') return;
    entry.state = 'verified';
    entry.changed();
  }

  committed(digest: Digest, size: number, blobFile: string): void {
    const entry = this.entries.get(digest);
    if (!entry) return;
    this.entries.delete(digest);
    entry.size ??= size;
    entry.written = size;
    entry.file = blobFile;
    entry.state = 'committed';
    entry.changed();
  }

  /** The ingest's bytes are gone (aborted or failed verification): readers fail; a new ingest may start over. */
  dropped(digest: Digest, reason: string): void {
    const entry = this.entries.get(digest);
    if (!entry) return;
    entry.generation++;
    entry.error = new StowageError('TRUNCATED', `the ingest of ${digest} was dropped: ${reason}`);
    entry.written = 0;
    entry.file = undefined;
    entry.state = 'waiting';
    entry.changed();
    this.settleIfOrphaned(digest, entry);
  }

  private entry(digest: Digest): LiveBlob {
    let entry = this.entries.get(digest);
    if (!entry) {
      entry = new LiveBlob();
      entry.setMaxListeners(0);
      this.entries.set(digest, entry);
    }
    return entry;
  }

  /** Nothing expects the blob and nothing writes it: it is not coming, whoever waits for it is told so. */
  private settleIfOrphaned(digest: Digest, entry: LiveBlob): void {
    if (entry.state === 'committed' || entry.expectations > 0 || entry.writers > 0) return;
    if ((entry.state === 'writing' || entry.state === 'verified') && entry.written === entry.size) return; // whole: its commit follows
    if (this.entries.get(digest) === entry) this.entries.delete(digest);
    entry.state = 'failed';
    entry.error ??= new StowageError('TRUNCATED', `${digest} stopped arriving before it was whole`);
    entry.changed();
  }
}

/** Streams bytes start..end of the blob as they are written; the last byte only once it is committed. */
function tail(entry: LiveBlob, generation: number, start: number, end: number, size: number): Readable {
  let fh: FileHandle | undefined;
  let pos = start;
  let closed = false;
  let wake: (() => void) | undefined;
  /** Resolves at the next change of the entry after `seen` (at once if there was one), or when the reader goes away. */
  const changedSince = (seen: number): Promise<void> =>
    entry.version !== seen || closed
      ? Promise.resolve()
      : new Promise((resolve) => {
          const done = (): void => {
            entry.off('change', done);
            wake = undefined;
            resolve();
          };
          wake = done;
          entry.on('change', done);
        });

  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      while (!closed) {
        const seen = entry.version;
        if (entry.generation !== generation || entry.state === 'failed') {
          throw entry.error ?? new StowageError('TRUNCATED', 'the blob stopped arriving');
        }
        if (pos > end) return;
        // Bytes that may be sent now: what is on disk, but never the final byte of an unverified blob.
        let limit = Math.min(entry.written, end + 1);
        if (entry.state !== 'verified' && entry.state !== 'committed' && limit >= size) limit = size - 1;
        if (pos < limit && entry.file !== undefined) {
          fh ??= await openCurrent(entry);
          if (!fh) {
            await changedSince(seen);
            continue;
          }
          const want = Math.min(limit - pos, READ_CHUNK);
          const buf = Buffer.allocUnsafe(want);
          const { bytesRead } = await fh.read(buf, 0, want, pos);
          if (bytesRead === 0) {
            await changedSince(seen);
            continue;
          }
          pos += bytesRead;
          yield bytesRead === want ? buf : buf.subarray(0, bytesRead);
          continue;
        }
        await changedSince(seen);
      }
    } finally {
      await fh?.close();
    }
  }
  const stream = Readable.from(chunks(), { objectMode: false, highWaterMark: READ_CHUNK });
  stream.once('close', () => {
    closed = true;
    wake?.();
  });
  return stream;
}

/**
 * Opens the file the entry names now. The ingest file may be renamed into the blob directory between the
 * look and the open (the commit): then the entry names the blob path, and opening that one works. An open
 * file stays readable whole across the rename.
 */
async function openCurrent(entry: LiveBlob): Promise<FileHandle | undefined> {
  for (let tries = 0; tries < 2; tries++) {
    const file = entry.file;
    if (file === undefined) return undefined;
    try {
      return await open(file, 'r');
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      if (entry.file === file) return undefined; // dropped meanwhile: the caller sees the new state
    }
  }
  return undefined;
}
