import type { FastifyReply } from 'fastify';
import { isStowageError, storageFullOr } from '../errors.js';

/**
 * Docker's newline-delimited JSON progress stream (`application/json`, one message per line, each
 * flushed as written). Messages: `{status, id?, progressDetail?, progress?}`, `{stream}`, `{aux}`.
 *
 * The stream opens lazily: until the first message is written, `error()` still answers with a proper
 * HTTP status and `{"message": …}` (as dockerd does); after the first byte an error becomes the
 * in-stream `{"errorDetail":{"message":…},"error":…}` line.
 *
 *   const out = openJsonStream(reply); out.write({status: 'x'}); out.error(err); out.end();
 */
export interface JsonStream {
  /** True once the 200 status and the first byte went out. */
  readonly started: boolean;
  /** False once the client went away or the stream ended. */
  readonly open: boolean;
  /** Sends the 200 and headers now (for endpoints that always answer 200 and report errors in-stream). */
  begin(): void;
  /** Writes one message (and flushes it). Ignored after end or when the client is gone. */
  write(message: Record<string, unknown>): void;
  /** Ends the stream with an error: an HTTP error before the first byte, an in-stream error after. */
  error(err: unknown): void;
  /** Ends the stream (an empty 200 if nothing was written). */
  end(): void;
}

export function errorMessageOf(err: unknown): string {
  err = storageFullOr(err);
  if (err instanceof Error) return err.message;
  return String(err);
}

export function errorStatusOf(err: unknown): number {
  err = storageFullOr(err);
  if (isStowageError(err)) return err.status;
  const s = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === 'number' && s >= 400 && s < 600 ? s : 500;
}

/** An error answer the docker CLI understands: Content-Type application/json, `{"message": …}`. */
export function sendError(reply: FastifyReply, err: unknown, status: number = errorStatusOf(err)): FastifyReply {
  return reply
    .code(status)
    .header('content-type', 'application/json')
    .send(Buffer.from(JSON.stringify({ message: errorMessageOf(err) })));
}

export function openJsonStream(reply: FastifyReply, opts: { status?: number } = {}): JsonStream {
  let started = false;
  let ended = false;
  const raw = reply.raw;
  const start = (): void => {
    if (started) return;
    started = true;
    reply.hijack();
    raw.writeHead(opts.status ?? 200, { 'Content-Type': 'application/json' });
    raw.flushHeaders();
  };
  const stream: JsonStream = {
    get started() {
      return started;
    },
    get open() {
      return !ended && !raw.destroyed;
    },
    begin() {
      if (!ended) start();
    },
    write(message) {
      if (ended) return;
      start();
      if (raw.destroyed || raw.writableEnded) return;
      // One write per message: node's http response sends it as its own chunk immediately.
      raw.write(`${JSON.stringify(message)}\r\n`);
    },
    error(err) {
      if (ended) return;
      if (!started) {
        ended = true;
        sendError(reply, err);
        return;
      }
      const message = errorMessageOf(err);
      stream.write({ errorDetail: { message }, error: message });
      stream.end();
    },
    end() {
      if (ended) return;
      if (!started) {
        ended = true;
        void reply.code(opts.status ?? 200).header('content-type', 'application/json').send('');
        return;
      }
      ended = true;
      if (!raw.writableEnded) raw.end();
    },
  };
  return stream;
}
