import { ServerResponse } from 'node:http';
import type { FileHandle } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';
import { StowageError } from '../errors.js';

/** Bytes per read: large reads, few trips to the thread pool. */
const CHUNK = 1024 * 1024;
/** Buffers one response cycles through: one being read into while the others are written to the socket. */
const POOL = 3;

/**
 * Bytes `start..end` (inclusive) of an open blob file, as a stream that owns (and closes) the file.
 *
 * Read like any stream, each chunk is a fresh buffer. Piped into an HTTP response (how /v2/ serves a blob),
 * it reads into a few buffers it reuses, each once the socket has taken the previous bytes in it (the write
 * callback): a fresh megabyte per read would be garbage-collected again and again (V8 runs a full collection
 * for every few dozen megabytes of such buffers), costing the serving machine more CPU than the bytes.
 */
export class BlobFileStream extends Readable {
  private pos: number;
  private pumping = false;
  private counter: ((bytes: number) => void) | undefined;

  constructor(
    private readonly fh: FileHandle,
    start: number,
    private readonly end: number,
  ) {
    super({ highWaterMark: CHUNK });
    this.pos = start;
  }

  /** Tells `count` the size of every chunk sent from now on (served-bytes metrics). */
  countWith(count: (bytes: number) => void): this {
    this.counter = count;
    return this;
  }

  override _read(): void {
    const want = Math.min(CHUNK, this.end + 1 - this.pos);
    if (want <= 0) {
      this.push(null);
      return;
    }
    const buf = Buffer.allocUnsafe(want);
    this.fh.read(buf, 0, want, this.pos).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) return this.destroy(shortFile());
        this.pos += bytesRead;
        this.counter?.(bytesRead);
        this.push(bytesRead === want ? buf : buf.subarray(0, bytesRead));
      },
      (err: Error) => this.destroy(err),
    );
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.fh.close().then(
      () => callback(err),
      (closeErr: Error) => callback(err ?? closeErr),
    );
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    // Only a response's write callback means "the socket has the bytes": a Transform, say, calls it while it
    // still holds the chunk. Anything else, or a stream already being read, is piped the ordinary way.
    if (!(destination instanceof ServerResponse) || this.pumping || this.readableFlowing !== null) return super.pipe(destination, options);
    this.pumping = true;
    void this.pump(destination, options?.end !== false);
    return destination;
  }

  private async pump(res: Writable, end: boolean): Promise<void> {
    const free: Buffer[] = [];
    let allocated = 0;
    let wake: (() => void) | undefined;
    const release = (buf: Buffer): void => {
      free.push(buf);
      wake?.();
    };
    const stop = (): void => wake?.();
    res.once('close', stop);
    try {
      while (this.pos <= this.end) {
        if (this.destroyed || res.destroyed) return;
        let buf = free.pop();
        if (!buf && allocated < POOL) {
          allocated++;
          buf = Buffer.allocUnsafeSlow(CHUNK);
        }
        if (!buf) {
          // Every buffer is still with the socket: wait for one back (or for the response to go away).
          await new Promise<void>((resolve) => (wake = resolve));
          wake = undefined;
          continue;
        }
        const want = Math.min(CHUNK, this.end + 1 - this.pos);
        const { bytesRead } = await this.fh.read(buf, 0, want, this.pos);
        if (bytesRead === 0) throw shortFile();
        if (this.destroyed || res.destroyed) return;
        this.pos += bytesRead;
        this.counter?.(bytesRead);
        const held = buf;
        res.write(buf.subarray(0, bytesRead), () => release(held));
      }
      if (end) res.end();
      // Whoever watches this stream for its end (the web framework, to clean up) sees it end.
      this.push(null);
      this.resume();
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      res.off('close', stop);
    }
  }
}

function shortFile(): StowageError {
  return new StowageError('TRUNCATED', 'the blob file ended before its size');
}
