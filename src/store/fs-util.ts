import { open, type FileHandle } from 'node:fs/promises';
import { StowageError, isStowageError, storageFullOr } from '../errors.js';
import type { Digester } from '../oci/digest.js';
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

async function writeAll(fh: FileHandle, chunk: Uint8Array): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) {
    const { bytesWritten } = await fh.write(chunk, done, chunk.byteLength - done);
    done += bytesWritten;
  }
}

/**
 * Copies `source` to the end of `fh`, hashing as it goes. Stops with SIZE_MISMATCH as soon as more
 * than `maxSize` bytes (counted across the whole blob, i.e. including digester.size already hashed)
 * arrive, so an oversized source cannot fill the disk. A failing source becomes TRUNCATED; failures
 * of the file itself propagate unchanged. `onWritten` hears the running total after each chunk is written.
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
  try {
    for (;;) {
      let next: IteratorResult<Uint8Array | string>;
      try {
        next = await it.next();
      } catch (err) {
        finished = true; // the iterator is already dead
        if (isStowageError(err)) throw err;
        throw new StowageError('TRUNCATED', `source failed after ${digester.size} bytes: ${(err as Error)?.message ?? String(err)}`, {
          cause: err,
          details: { received: digester.size },
        });
      }
      if (next.done) {
        finished = true;
        return;
      }
      const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
      if (maxSize !== undefined && digester.size + chunk.byteLength > maxSize) {
        throw new StowageError('SIZE_MISMATCH', `size mismatch: expected ${maxSize} bytes, got more`, {
          details: { expected: maxSize, actual: digester.size + chunk.byteLength },
        });
      }
      try {
        await writeAll(fh, chunk);
      } catch (err) {
        throw storageFullOr(err);
      }
      digester.update(chunk);
      onWritten?.(digester.size);
    }
  } finally {
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
