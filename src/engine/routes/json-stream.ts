import type { FastifyReply } from 'fastify';
import { isStowageError } from '../../errors.js';

/**
 * A progress stream that opens lazily: until the first message is written, a failure can still be
 * answered with a proper HTTP status (dockerd does the same: errors before the first byte are HTTP
 * errors, errors after it are `{"errorDetail":{"message":…},"error":…}` lines).
 */
export interface LazyJsonStream {
  /** True once the 200 and the first message went out. */
  readonly started: boolean;
  write(obj: Record<string, unknown>): void;
  /** Ends with an error: an HTTP error before the first byte, an in-stream error after. */
  fail(err: unknown): void;
  end(): void;
}

export function errorStatus(err: unknown): number {
  return isStowageError(err) ? err.status : 500;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function lazyJsonStream(reply: FastifyReply): LazyJsonStream {
  let started = false;
  let ended = false;
  const start = () => {
    if (started) return;
    started = true;
    reply.hijack();
    reply.raw.writeHead(200, { 'Content-Type': 'application/json' });
    reply.raw.flushHeaders?.();
  };
  return {
    get started() {
      return started;
    },
    write(obj) {
      if (ended) return;
      start();
      if (reply.raw.destroyed) return;
      reply.raw.write(`${JSON.stringify(obj)}\r\n`);
    },
    fail(err) {
      if (ended) return;
      if (!started) {
        ended = true;
        sendJsonError(reply, err);
        return;
      }
      const message = errorMessage(err);
      this.write({ errorDetail: { message }, error: message });
      this.end();
    },
    end() {
      if (ended) return;
      if (!started) {
        ended = true;
        void reply.code(200).type('application/json').send('');
        return;
      }
      ended = true;
      reply.raw.end();
    },
  };
}

/** An error answer the docker CLI understands: Content-Type exactly application/json, {"message": …}. */
export function sendJsonError(reply: FastifyReply, err: unknown, status = errorStatus(err)): FastifyReply {
  return reply.code(status).header('content-type', 'application/json').send(Buffer.from(JSON.stringify({ message: errorMessage(err) })));
}
