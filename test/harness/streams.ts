import { Readable } from 'node:stream';

/**
 * Stream fixtures for tests: deterministic bytes, a Readable that delivers them in pieces (or fails
 * partway like a reset connection), and a collector that reads any stream back into one Buffer.
 */

/** Deterministic, incompressible-looking bytes (xorshift32). */
export function pseudoRandom(size: number, seed = 0x9e3779b9): Buffer {
  const buf = Buffer.alloc(size);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    buf[i] = s & 0xff;
  }
  return buf;
}

/**
 * A Readable that yields `data` in `chunkSize` pieces, asynchronously, like a socket would. The
 * default is a prime, so piece boundaries fall inside tar headers and 512-byte blocks.
 */
export function chunked(data: Buffer, chunkSize = 7919): Readable {
  return Readable.from(
    (async function* () {
      for (let i = 0; i < data.length; i += chunkSize) {
        await new Promise((r) => setImmediate(r));
        yield data.subarray(i, i + chunkSize);
      }
    })(),
  );
}

/** A Readable that yields the first `failAfter` bytes of `data`, then errors like a reset connection. */
export function failingStream(data: Buffer, failAfter: number): Readable {
  return Readable.from(
    (async function* () {
      yield data.subarray(0, failAfter);
      await new Promise((r) => setImmediate(r));
      throw new Error('ECONNRESET (simulated)');
    })(),
  );
}

/** Every item of an async iterable (a store listing, progress events), in order. */
export async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of items) out.push(x);
  return out;
}

/** Reads a whole stream (Readable, tar entry, async generator of bytes) into one Buffer. */
export async function readAll(stream: AsyncIterable<Uint8Array | string>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}
