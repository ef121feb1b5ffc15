import { open, type FileHandle } from 'node:fs/promises';
import { StowageError, isStowageError, storageFullOr } from '../errors.js';
import type { Digester } from '../oci/digest.js';
import { recycleChunk } from './recyclable-chunks.js';
import type { ByteSource } from './types.js';

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as NodeJS.ErrnoException).code === code;
}

/** Makes a rename/unlink in `dir` durable: the new directory entry survives a power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes every byte of `chunks` (one writev, looping on a short write). */
async function writeAll(fh: FileHandle, chunks: Uint8Array[]): Promise<void> {
  let rest = chunks;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest);
    let skip = bytesWritten;
    while (rest.length > 0 && skip >= (rest[0] as Uint8Array).byteLength) skip -= (rest.shift() as Uint8Array).byteLength;
    if (skip > 0) rest[0] = (rest[0] as Uint8Array).subarray(skip);
  }
}

/** Bytes gathered before they go to the file in one write: few, large writes, not one per network read. */
const WRITE_BATCH = 1024 * 1024;
/** The longest bytes wait for the rest of their batch (see armIdleFlush). */
const IDLE_FLUSH_MS = 5;

/**
 * Copies `source` to the end of `fh`, hashing as it goes. Stops with SIZE_MISMATCH as soon as more
 * than `maxSize` bytes (counted across the whole blob, i.e. including digester.size already hashed)
 * arrive, so an oversized source cannot fill the disk. A failing source becomes TRUNCATED (what it sent
 * before is written first); failures of the file itself propagate unchanged. `onWritten` hears the running
 * total after each write reaches the file.
 *
 * Pipelined: each chunk is hashed as it arrives while the previous batch is being written, and chunks are
 * written in batches of about WRITE_BATCH (one writev, no copy), so the file system is not asked once per
 * network read. The source must not reuse a chunk's memory once it has handed it over (Node's streams do not).
 */
export async function pumpSource(
  source: ByteSource,
  fh: FileHandle,
  digester: Digester,
  maxSize?: number,
  onWritten?: (total: number) => void,
): Promise<void> {
  const it = (source as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
  let finished = false;
  /** Bytes that reached the file (the digester has also hashed what is pending). */
  let written = digester.size;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let writing: Promise<void> | undefined;
  let writeError: unknown;
  let idleTimer: NodeJS.Timeout | undefined;

  const startWrite = (): void => {
    const batch = pending;
    const bytes = pendingBytes;
    pending = [];
    pendingBytes = 0;
    writing = writeAll(fh, [...batch]).then(
      () => {
        // Hashed on arrival, now on disk: their producer may reuse them.
        for (const chunk of batch) recycleChunk(chunk);
        written += bytes;
        writing = undefined;
        onWritten?.(written);
      },
      (err: unknown) => {
        writeError = storageFullOr(err);
        writing = undefined;
      },
    );
  };
  const throwIfWriteFailed = (): void => {
    if (writeError !== undefined) throw writeError;
  };
  /** Waits for the write in flight, then writes what is pending and waits for that too. */
  const flush = async (): Promise<void> => {
    clearTimeout(idleTimer);
    idleTimer = undefined;
    await writing;
    throwIfWriteFailed();
    if (pendingBytes > 0) {
      startWrite();
      await writing;
      throwIfWriteFailed();
    }
  };
  /**
   * Bytes pending this long go to the file even short of a batch (once the write in flight is done): a slow
   * or paused source's bytes reach readers of the ingest within a few milliseconds. One timer per batch.
   */
  const armIdleFlush = (): void => {
    if (idleTimer !== undefined) return;
    idleTimer = setTimeout(() => {
      idleTimer = undefined;
      if (pendingBytes === 0 || writeError !== undefined) return;
      if (writing) armIdleFlush();
      else startWrite();
    }, IDLE_FLUSH_MS);
  };

  try {
    for (;;) {
      throwIfWriteFailed();
      let next: IteratorResult<Uint8Array | string>;
      try {
        next = await it.next();
      } catch (err) {
        finished = true; // the iterator is already dead
        await flush(); // what arrived before the failure stays, for a resume
        if (isStowageError(err)) throw err;
        throw new StowageError('TRUNCATED', `source failed after ${digester.size} bytes: ${(err as Error)?.message ?? String(err)}`, {
          cause: err,
          details: { received: digester.size },
        });
      }
      if (next.done) {
        finished = true;
        await flush();
        return;
      }
      const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
      if (chunk.byteLength === 0) continue;
      if (maxSize !== undefined && digester.size + chunk.byteLength > maxSize) {
        throw new StowageError('SIZE_MISMATCH', `size mismatch: expected ${maxSize} bytes, got more`, {
          details: { expected: maxSize, actual: digester.size + chunk.byteLength },
        });
      }
      digester.update(chunk);
      pending.push(chunk);
      pendingBytes += chunk.byteLength;
      if (pendingBytes >= WRITE_BATCH) {
        // At most one batch in flight and one gathering: memory stays flat when the file is slower than the source.
        if (writing) await writing;
        throwIfWriteFailed();
        startWrite();
      }
      if (pendingBytes > 0) armIdleFlush();
    }
  } finally {
    clearTimeout(idleTimer);
    // The file stays open until no write is in flight (the caller closes it next).
    await writing;
    // Stop (and for a Readable, destroy) a source we are abandoning.
    if (!finished) await it.return?.();
  }
}

/** TRUNCATED when fewer bytes arrived than promised; otherwise leaves the rest to verifyContent. */
export function checkNotShort(actualSize: number, expectedSize: number | undefined): void {
  if (expectedSize !== undefined && actualSize < expectedSize) {
    throw new StowageError('TRUNCATED', `content truncated: expected ${expectedSize} bytes, got ${actualSize}`, {
      details: { expected: expectedSize, actual: actualSize },
    });
  }
}
