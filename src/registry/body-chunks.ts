import type { Readable } from 'node:stream';

/**
 * The chunks of a response body as they arrive, without copying: `for await` over a Readable reads it in
 * paused mode, where each read() joins everything buffered into a new buffer (a copy of the bytes, and
 * garbage for the collector); here the stream flows and hands each chunk over as it was received. At most
 * about `maxQueued` bytes wait for the reader (the stream is paused beyond that). A stream that fails throws
 * its error after the chunks that came before it; one that is abandoned (the loop left early) is destroyed.
 * A stream that already failed or was closed before the loop began (the connection cut while the caller was
 * still getting ready) throws at once: it will never emit another event to wait for.
 */
export async function* bodyChunks(stream: Readable, maxQueued = 1024 * 1024): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let head = 0;
  let queued = 0;
  let ended = false;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const onData = (chunk: Buffer): void => {
    queue.push(chunk);
    queued += chunk.length;
    if (queued >= maxQueued) stream.pause();
    wake?.();
  };
  const onEnd = (): void => {
    ended = true;
    wake?.();
  };
  const onError = (err: Error): void => {
    failure ??= err;
    wake?.();
  };
  const onClose = (): void => {
    if (!ended) failure ??= new Error('the body was closed before its end');
    wake?.();
  };
  stream.on('data', onData);
  stream.on('end', onEnd);
  stream.on('error', onError);
  stream.on('close', onClose);
  if (stream.readableEnded) ended = true;
  else if (stream.errored || stream.destroyed) failure = stream.errored ?? new Error('the body was closed before its end');
  try {
    for (;;) {
      if (head < queue.length) {
        const chunk = queue[head++] as Buffer;
        if (head === queue.length) {
          queue.length = 0;
          head = 0;
        }
        queued -= chunk.length;
        if (queued < maxQueued && stream.isPaused() && !ended) stream.resume();
        yield chunk;
        continue;
      }
      if (failure) throw failure;
      if (ended) return;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    stream.off('data', onData);
    stream.off('end', onEnd);
    stream.off('error', onError);
    stream.off('close', onClose);
    if (!ended) stream.destroy();
  }
}
