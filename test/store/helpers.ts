import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { ContentStore } from '../../src/store/content-store.js';
import type { BlobInfo } from '../../src/store/types.js';

export async function tempDir(prefix = 'stowage-store-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

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

/** A Readable that yields `data` in chunks, asynchronously, like a socket would. */
export function chunked(data: Buffer, chunkSize = 64 * 1024): Readable {
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

export async function listBlobs(store: ContentStore): Promise<BlobInfo[]> {
  const out: BlobInfo[] = [];
  for await (const b of store.list()) out.push(b);
  return out.sort((a, b) => a.digest.localeCompare(b.digest));
}

export async function ingestEntries(root: string): Promise<string[]> {
  return readdir(join(root, 'ingest'));
}

export async function readAll(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
