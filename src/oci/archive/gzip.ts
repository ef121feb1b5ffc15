import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { StowageError } from '../../errors.js';
import type { LayerCompression } from '../media-types.js';

/** gzip's magic (1f 8b) and its only compression method, deflate (08). */
export function isGzipMagic(head: Uint8Array): boolean {
  return head.length >= 3 && head[0] === 0x1f && head[1] === 0x8b && head[2] === 0x08;
}

/** zstd frame magic (28 b5 2f fd). */
export function isZstdMagic(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd;
}

/** What the first bytes of a stream say about its compression. */
export function detectCompression(head: Uint8Array): LayerCompression {
  if (isGzipMagic(head)) return 'gzip';
  if (isZstdMagic(head)) return 'zstd';
  return 'none';
}

/**
 * Reads at least `n` bytes (fewer only when the source ends first) and returns them together with a stream
 * that yields the whole source again, from its first byte. Nothing past the first chunks is buffered.
 */
export async function peekStream(
  source: AsyncIterable<Uint8Array>,
  n: number,
): Promise<{ head: Buffer; stream: Readable }> {
  const it = source[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let have = 0;
  let done = false;
  while (have < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    chunks.push(chunk);
    have += chunk.length;
  }
  const head = Buffer.concat(chunks);
  async function* replay(): AsyncGenerator<Buffer> {
    let finished = done;
    try {
      if (head.length > 0) yield head;
      while (!finished) {
        const r = await it.next();
        if (r.done) {
          finished = true;
          return;
        }
        yield Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      }
    } finally {
      if (!finished) await it.return?.();
    }
  }
  return { head, stream: Readable.from(replay(), { objectMode: false }) };
}

/**
 * Transparently gunzips a whole stream when it starts with the gzip magic; otherwise returns it as is.
 * Corrupt gzip data makes the returned stream fail with INVALID_ARCHIVE.
 */
export async function maybeGunzip(source: AsyncIterable<Uint8Array>): Promise<{ stream: Readable; gzip: boolean }> {
  const { head, stream } = await peekStream(source, 3);
  if (!isGzipMagic(head)) return { stream, gzip: false };
  const gunzip = createGunzip();
  // pipeline carries backpressure both ways and destroys gunzip with the source's error.
  pipeline(stream, gunzip).catch(() => {
    /* reported on gunzip */
  });
  gunzip.on('error', () => {
    /* the consumer sees it through iteration or its own listener */
  });
  const out = new PassThrough();
  gunzip.on('error', (err) => out.destroy(asInvalidGzip(err)));
  gunzip.pipe(out);
  out.on('close', () => {
    if (!gunzip.readableEnded) gunzip.destroy();
  });
  return { stream: out, gzip: true };
}

function asInvalidGzip(err: unknown): Error {
  if (err instanceof StowageError) return err;
  return new StowageError('INVALID_ARCHIVE', `invalid gzip stream: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
