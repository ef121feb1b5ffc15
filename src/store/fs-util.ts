import { open, type FileHandle } from 'node:fs/promises';
import { StowageError, isStowageError, storageFullOr } from '../errors.js';
import { HASH_BUFFER_SIZE, HashBuffer } from './hash-worker.js';
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
const WRITE_BATCH = HASH_BUFFER_SIZE;
/** Batches hashed and written at once while the next one fills: slack for a hash thread or a disk that lags. */
const IN_FLIGHT = 2;
/** The longest bytes wait for the rest of their batch (see armIdleFlush). */
const IDLE_FLUSH_MS = 5;

/** What pumpSource hashes with: bytes counted as submitted, each batch hashed by the time its promise resolves. */
export interface BatchDigester {
  readonly size: number;
  update(buffer: HashBuffer, length: number): Promise<void>;
}

/**
 * Copies `source` to the end of `fh`, hashing as it goes. Stops with SIZE_MISMATCH as soon as more
 * than `maxSize` bytes (counted across the whole blob, i.e. including digester.size already hashed)
 * arrive, so an oversized source cannot fill the disk. A failing source becomes TRUNCATED (what it sent
 * before is written first); failures of the file itself propagate unchanged. `onWritten` hears the running
 * total after each write reaches the file.
 *
 * Pipelined: chunks are copied into reused WRITE_BATCH buffers (SharedArrayBuffers, which the hash thread
 * reads in place), and each full one is hashed and written (one write) while the next fills. The copy is
 * what keeps a fast transfer cheap: a network source hands over a fresh 64 KiB buffer per socket read, and
 * holding those until their batch is written lets them pile up as external memory, for which V8 runs full
 * collections of the whole heap, every few dozen megabytes. Copied at once, they are dropped at once.
 * The source may reuse a chunk's memory once the next chunk is asked for.
 */
export async function pumpSource(
  source: ByteSource,
  fh: FileHandle,
  digester: BatchDigester,
  maxSize?: number,
  onWritten?: (total: number) => void,
): Promise<void> {
  const it = (source as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
  let finished = false;
  /** Bytes received (hashed, or waiting in `batch` to be). */
  let received = digester.size;
  /** Bytes that reached the file. */
  let written = digester.size;
  /** The buffer being filled, and buffers free for the next batches. */
  let batch: HashBuffer | undefined;
  let batchBytes = 0;
  const spare: HashBuffer[] = [];
  /** Batches being hashed and written, oldest first (writes complete in order: one file, appended in turn). */
  const inFlight: Promise<void>[] = [];
  let lastWrite: Promise<void> = Promise.resolve();
  let writeError: unknown;
  let idleTimer: NodeJS.Timeout | undefined;

  /** Hashes and writes the gathered bytes; the buffer comes back to `spare` once both are done. */
  const startWrite = (): void => {
    const buf = batch as HashBuffer;
    const bytes = batchBytes;
    batch = undefined;
    batchBytes = 0;
    const view = buf.bytes.subarray(0, bytes);
    const hashed = digester.update(buf, bytes);
    // Written in order: each write waits for the one before (appending; a failure stops the rest).
    const wrote = lastWrite
      .then(() => {
        throwIfWriteFailed();
        return writeAll(fh, [view]);
      })
      .then(() => {
        written += bytes;
        onWritten?.(written);
      });
    lastWrite = wrote.catch((err: unknown) => {
      writeError ??= storageFullOr(err);
    });
    // The buffer is free again once both are over, even a failed batch's (nothing reads it any more).
    const done: Promise<void> = Promise.allSettled([hashed, wrote]).then(([h, w]) => {
      void inFlight.splice(inFlight.indexOf(done), 1);
      spare.push(buf);
      if (h.status === 'rejected') writeError ??= h.reason;
      if (w.status === 'rejected') writeError ??= storageFullOr(w.reason);
    });
    inFlight.push(done);
  };
  const throwIfWriteFailed = (): void => {
    if (writeError !== undefined) throw writeError;
  };
  const drain = async (): Promise<void> => {
    while (inFlight.length > 0) await inFlight[0];
  };
  /** Waits for the batches in flight, then writes what is gathered and waits for that too. */
  const flush = async (): Promise<void> => {
    clearTimeout(idleTimer);
    idleTimer = undefined;
    await drain();
    throwIfWriteFailed();
    if (batchBytes > 0) {
      startWrite();
      await drain();
      throwIfWriteFailed();
    }
  };
  /**
   * Bytes gathered this long go to the file even short of a batch: a slow or paused source's bytes reach
   * readers of the ingest within a few milliseconds. One timer per batch.
   */
  const armIdleFlush = (): void => {
    if (idleTimer !== undefined) return;
    idleTimer = setTimeout(() => {
      idleTimer = undefined;
      if (batchBytes === 0 || writeError !== undefined) return;
      if (inFlight.length >= IN_FLIGHT) armIdleFlush();
      else startWrite();
    }, IDLE_FLUSH_MS);
  };
  /** Copies `chunk` into batches, handing each over as it fills (IN_FLIGHT at most: memory stays flat). */
  const gather = async (chunk: Uint8Array): Promise<void> => {
    let at = 0;
    while (at < chunk.byteLength) {
      if (!batch) {
        while (spare.length === 0 && inFlight.length >= IN_FLIGHT) await inFlight[0];
        throwIfWriteFailed();
        batch = spare.pop() ?? HashBuffer.take();
      }
      const n = Math.min(chunk.byteLength - at, WRITE_BATCH - batchBytes);
      batch.bytes.set(n === chunk.byteLength ? chunk : chunk.subarray(at, at + n), batchBytes);
      batchBytes += n;
      at += n;
      if (batchBytes === WRITE_BATCH) {
        while (inFlight.length >= IN_FLIGHT) await inFlight[0];
        throwIfWriteFailed();
        startWrite();
      }
    }
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
        throw new StowageError('TRUNCATED', `source failed after ${received} bytes: ${(err as Error)?.message ?? String(err)}`, {
          cause: err,
          details: { received },
        });
      }
      if (next.done) {
        finished = true;
        await flush();
        return;
      }
      const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
      if (chunk.byteLength === 0) continue;
      if (maxSize !== undefined && received + chunk.byteLength > maxSize) {
        throw new StowageError('SIZE_MISMATCH', `size mismatch: expected ${maxSize} bytes, got more`, {
          details: { expected: maxSize, actual: received + chunk.byteLength },
        });
      }
      received += chunk.byteLength;
      await gather(chunk);
      if (batchBytes > 0) armIdleFlush();
    }
  } finally {
    clearTimeout(idleTimer);
    // The file stays open until no write is in flight (the caller closes it next).
    await drain();
    for (const b of spare) HashBuffer.give(b);
    if (batch) HashBuffer.give(batch);
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
