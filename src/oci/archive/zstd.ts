import { setImmediate as nextTurn } from 'node:timers/promises';
import zstd from 'zstd-napi/binding.js';

/**
 * Largest window a frame may ask for: 2^27 = 128 MiB, zstd's own default limit for streaming decoders
 * (frames made by `zstd` and containerd's encoder stay far below it).
 */
const WINDOW_LOG_MAX = 27;

/** One native step never writes more than this, so no single synchronous call can take long. */
const STEP_OUTPUT_BYTES = zstd.dStreamOutSize();

/** After this much synchronous decoding the loop gives the event loop a turn, however fast its reader is. */
const YIELD_AFTER_MS = 5;

/**
 * Decompresses a zstd stream (one or more frames) in bounded native steps of at most 128 KiB each. It is
 * an async generator: nothing more is decoded until the reader pulls the previous piece (backpressure),
 * and the event loop gets a turn at least every few milliseconds. Corrupt or truncated input throws.
 * Bounds on how much comes out belong to the caller (see `decompress`).
 */
export async function* zstdDecompress(source: AsyncIterable<Uint8Array>): AsyncGenerator<Buffer> {
  const dctx = new zstd.DCtx();
  dctx.setParameter(zstd.DParameter.windowLogMax, WINDOW_LOG_MAX);
  let lastTurn = performance.now();
  // 0 once every frame begun so far has been decoded and flushed whole.
  let frameRemainder = 0;
  let sawInput = false;
  const empty = new Uint8Array(0);
  const decodeAll = async function* (input: Uint8Array): AsyncGenerator<Buffer> {
    // A step can fill its output and leave decoded bytes inside the context: call again until it
    // neither consumes input nor fills the output.
    for (;;) {
      const out = Buffer.allocUnsafe(STEP_OUTPUT_BYTES);
      const [remainder, produced, consumed] = dctx.decompressStream(out, input);
      // A call that moved nothing (the final flush after a whole frame) says nothing about the frame.
      if (produced > 0 || consumed > 0) frameRemainder = remainder;
      input = input.subarray(consumed);
      if (produced > 0) yield out.subarray(0, produced);
      if (input.length === 0 && produced < out.length) return;
      if (performance.now() - lastTurn > YIELD_AFTER_MS) {
        await nextTurn();
        lastTurn = performance.now();
      }
    }
  };
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    sawInput = true;
    yield* decodeAll(chunk);
  }
  yield* decodeAll(empty);
  if (!sawInput) throw new Error('empty zstd stream');
  if (frameRemainder !== 0) throw new Error('zstd stream ends inside a frame (truncated)');
}
