import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { StowageError } from '../../errors.js';
import type { LayerCompression } from '../media-types.js';
import { zstdDecompress } from './zstd.js';

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

/** bzip2 ("BZh") and xz (fd 37 7a 58 5a 00): recognised only to refuse them by name. */
function unsupportedCompression(head: Uint8Array): string | undefined {
  if (head[0] === 0x42 && head[1] === 0x5a && head[2] === 0x68) return 'bzip2';
  if (head[0] === 0xfd && head[1] === 0x37 && head[2] === 0x7a && head[3] === 0x58) return 'xz';
  return undefined;
}

/** Whether the first bytes are any compression Docker knows (gzip, zstd, bzip2, xz), readable here or not. */
export function looksCompressed(head: Uint8Array): boolean {
  return detectCompression(head) !== 'none' || unsupportedCompression(head) !== undefined;
}

/** Bounds on what a compressed stream may expand to. */
export interface DecompressLimits {
  /** Most decompressed bytes in all (default 64 GiB). */
  maxBytes?: number;
  /**
   * Most decompressed bytes per compressed byte once past 64 MiB (default 2048; deflate cannot exceed
   * about 1032, so this only stops zstd bombs, whose ratio reaches millions).
   */
  maxRatio?: number;
}

const DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 ** 3;
const DEFAULT_MAX_RATIO = 2048;
/** Below this much output the ratio is not checked: small, very compressible files are normal. */
const RATIO_FLOOR_BYTES = 64 * 1024 ** 2;

/**
 * Unwraps a whole stream that may be gzip or zstd compressed (told by its first bytes, as Docker does);
 * anything else passes through as is. bzip2 and xz are refused with UNSUPPORTED. Decoding is streamed
 * with backpressure (gzip on libuv's thread pool, zstd in small native steps that yield the event loop)
 * and bounded: more than `limits` allow fails the stream with TOO_LARGE. Corrupt compressed data makes
 * the returned stream fail with INVALID_ARCHIVE.
 */
export async function decompress(
  source: AsyncIterable<Uint8Array>,
  limits: DecompressLimits = {},
): Promise<{ stream: Readable; compression: LayerCompression }> {
  const { head, stream } = await peekStream(source, 6);
  const refused = unsupportedCompression(head);
  if (refused) {
    stream.destroy();
    throw new StowageError('UNSUPPORTED', `${refused}-compressed archives are not supported; send a plain, gzip or zstd tar`);
  }
  const compression = detectCompression(head);
  if (compression === 'none') return { stream, compression };
  let compressedBytes = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      compressedBytes += chunk.length;
      cb(null, chunk);
    },
  });
  // pipeline carries backpressure both ways and destroys what follows with the source's error.
  const reported = (): void => {
    /* reported on the decoder */
  };
  let decoder: Readable;
  if (compression === 'gzip') {
    const gunzip = createGunzip();
    pipeline(stream, counted, gunzip).catch(reported);
    decoder = gunzip;
  } else {
    pipeline(stream, counted).catch(reported);
    decoder = Readable.from(zstdDecompress(counted), { objectMode: false });
  }
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_DECOMPRESSED_BYTES;
  const maxRatio = limits.maxRatio ?? DEFAULT_MAX_RATIO;
  let outBytes = 0;
  const out = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      outBytes += chunk.length;
      if (outBytes > maxBytes) {
        cb(new StowageError('TOO_LARGE', `the ${compression} stream decompresses to more than ${maxBytes} bytes`, { details: { limit: maxBytes } }));
      } else if (outBytes > RATIO_FLOOR_BYTES && outBytes > maxRatio * compressedBytes) {
        cb(
          new StowageError('TOO_LARGE', `the ${compression} stream expands more than ${maxRatio} times (${compressedBytes} bytes to over ${outBytes}); refused as a decompression bomb`, {
            details: { limit: maxRatio },
          }),
        );
      } else cb(null, chunk);
    },
  });
  decoder.on('error', (err) => out.destroy(asInvalidCompressed(compression, err)));
  // A caller may still be setting up (awaiting an ingest) when a short or corrupt input fails: the error
  // stays on the stream (pipeline and for-await report it) instead of crashing the process as unhandled.
  out.on('error', () => undefined);
  decoder.pipe(out);
  out.on('close', () => {
    if (!decoder.readableEnded) decoder.destroy();
  });
  return { stream: out, compression };
}

function asInvalidCompressed(compression: LayerCompression, err: unknown): Error {
  if (err instanceof StowageError) return err;
  return new StowageError('INVALID_ARCHIVE', `invalid ${compression} stream: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
