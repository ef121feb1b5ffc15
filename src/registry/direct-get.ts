import { type Socket, isIP, connect as netConnect } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect, rootCertificates } from 'node:tls';
import { Readable } from 'node:stream';
import type { ClientTls } from '../cluster/tls-client.js';
import { StowageError, isStowageError } from '../errors.js';
import { markRecyclable } from '../store/recyclable-chunks.js';

/**
 * One HTTP/1.1 GET on a connection of its own, its body read straight into large buffers: the path blob bytes
 * take from a Stowage peer. The socket reads into one buffer it reuses (`onread`), and the body is copied
 * from there into megabyte chunks handed on whole. Through undici each 64 KiB read is a fresh buffer, then
 * parsed by llhttp in WebAssembly: on loopback that costs more CPU than hashing the bytes, and its garbage
 * (V8 collects again and again for such buffers) more still.
 *
 * Only what a Stowage agent answers is understood: a body framed by Content-Length (or by the close of the
 * connection), never chunked, no redirects. Callers use it for peers and keep undici for registries.
 */

export interface DirectResponse {
  statusCode: number;
  /** Lower-case names; a repeated header is an array. */
  headers: Record<string, string | string[]>;
  /** The body; it fails TRUNCATED when the connection ends before Content-Length bytes came. */
  body: Readable;
}

export interface DirectGetOptions {
  headers: Record<string, string>;
  /** For https: URLs, what the client trusts (the cluster CA beside the system roots) and presents. */
  tls?: ClientTls | undefined;
  /** Cuts the request, the wait for the answer included; the rejection (or the body's error) is its reason. */
  signal?: AbortSignal | undefined;
}

/** Bytes per socket read (one buffer, reused for every read). */
const READ_BUFFER = 256 * 1024;
/** Bytes per body chunk handed on: large writes and few hash calls downstream. */
const CHUNK = 1024 * 1024;
/** A response head larger than this is refused. */
const MAX_HEAD = 64 * 1024;
/** Chunks kept for reuse: those in flight between the socket and the disk (a few) come back. */
const POOL_MAX = 8;
/** Backstops for callers without a stall guard of their own (as undici's defaults): no answer, no bytes. */
const HEADERS_TIMEOUT_MS = 60_000;
const BODY_IDLE_TIMEOUT_MS = 300_000;
/** How long received bytes may wait in a chunk that is not yet full. */
const FLUSH_MS = 20;

export function directGet(url: URL, opts: DirectGetOptions): Promise<DirectResponse> {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`directGet: unsupported protocol ${url.protocol}`);
  const request = requestHead(url, opts.headers);
  return new Promise<DirectResponse>((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const reader = new ResponseReader(url.host, resolve, reject);
    const onread = { buffer: Buffer.allocUnsafe(READ_BUFFER), callback: (n: number, buf: Buffer) => reader.received(buf.subarray(0, n)) };
    let socket: Socket;
    if (url.protocol === 'https:') {
      const tls = opts.tls ?? {};
      socket = tlsConnect({
        host,
        port,
        ...(isIP(host) ? {} : { servername: host }),
        ca: [...rootCertificates, ...(tls.ca ? [tls.ca] : [])],
        ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
        onread,
      } as ConnectionOptions);
    } else {
      socket = netConnect({ host, port, onread });
    }
    reader.attach(socket, opts.signal);
    socket.setNoDelay(true);
    socket.write(request);
  });
}

function requestHead(url: URL, headers: Record<string, string>): string {
  const lines = [`GET ${url.pathname}${url.search} HTTP/1.1`, `host: ${url.host}`, 'connection: close'];
  for (const [name, value] of Object.entries(headers)) {
    // A header that could split the request is a bug of the caller, never sent.
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\r\n\0]/.test(value)) throw new Error(`directGet: invalid header ${name}`);
    if (name.toLowerCase() === 'host' || name.toLowerCase() === 'connection') continue;
    lines.push(`${name}: ${value}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Reads one response: its head, then its body into a DirectBody. */
class ResponseReader {
  private socket: Socket | undefined;
  private head: Buffer[] = [];
  private headBytes = 0;
  private body: DirectBody | undefined;
  private settled = false;
  private signal: AbortSignal | undefined;
  private readonly onAbort = (): void => this.fail(abortReason(this.signal));

  constructor(
    private readonly host: string,
    private readonly resolve: (res: DirectResponse) => void,
    private readonly reject: (err: unknown) => void,
  ) {}

  attach(socket: Socket, signal: AbortSignal | undefined): void {
    this.socket = socket;
    this.signal = signal;
    socket.on('error', (err) => this.fail(this.body ? truncated(this.host, err) : unreachable(this.host, err)));
    socket.on('close', () => this.fail(this.body ? truncated(this.host) : unreachable(this.host, new Error('the connection closed before an answer'))));
    socket.on('end', () => this.body?.ended());
    socket.setTimeout(HEADERS_TIMEOUT_MS);
    socket.on('timeout', () => {
      const waited = this.body ? `sent nothing for ${BODY_IDLE_TIMEOUT_MS} ms` : `sent no answer in ${HEADERS_TIMEOUT_MS} ms`;
      this.fail(new StowageError('TRUNCATED', `${this.host} ${waited}`));
    });
    if (signal?.aborted) this.onAbort();
    else signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** The socket's onread callback: false pauses the socket (the body's reader is behind). */
  received(data: Buffer): boolean {
    if (this.body) return this.body.received(data);
    this.head.push(Buffer.from(data)); // the read buffer is reused: keep a copy
    this.headBytes += data.length;
    const all = Buffer.concat(this.head);
    const end = all.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.headBytes > MAX_HEAD) this.fail(badResponse(this.host, `a response head larger than ${MAX_HEAD} bytes`));
      return true;
    }
    const parsed = parseHead(all.subarray(0, end).toString('latin1'));
    if (!parsed) {
      this.fail(badResponse(this.host, 'a response that is not HTTP/1.x'));
      return false;
    }
    const rest = all.subarray(end + 4);
    if (parsed.statusCode >= 100 && parsed.statusCode < 200) {
      // An interim answer (100 Continue): the real one follows.
      this.head = [];
      this.headBytes = 0;
      return rest.length > 0 ? this.received(rest) : true;
    }
    if (parsed.headers['transfer-encoding'] !== undefined) {
      this.fail(badResponse(this.host, 'a chunked body (a Stowage peer frames blobs by Content-Length)'));
      return false;
    }
    const lengthHeader = parsed.headers['content-length'];
    const length = typeof lengthHeader === 'string' && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
    if (lengthHeader !== undefined && length === undefined) {
      this.fail(badResponse(this.host, `Content-Length "${String(lengthHeader)}"`));
      return false;
    }
    const socket = this.socket as Socket;
    socket.setTimeout(BODY_IDLE_TIMEOUT_MS);
    this.body = new DirectBody(socket, length, this.host, () => this.done());
    this.settled = true;
    this.resolve({ statusCode: parsed.statusCode, headers: parsed.headers, body: this.body });
    return rest.length > 0 ? this.body.received(rest) : true;
  }

  private done(): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    this.socket?.destroy();
  }

  private fail(err: Error): void {
    this.signal?.removeEventListener('abort', this.onAbort);
    if (!this.settled) {
      this.settled = true;
      this.reject(err);
    } else {
      this.body?.failed(err, isStowageError(err, 'TRUNCATED'));
    }
    this.socket?.destroy();
  }
}

/**
 * A response body as megabyte chunks; the socket is paused while they wait for their reader. Bytes that sit
 * in a chunk not yet full for FLUSH_MS go on anyway (copied out): on a slow link a megabyte takes a while, and
 * the next machine of a fan-out chain and the stall guard are waiting for them.
 */
class DirectBody extends Readable {
  /** Chunks the ingest gave back (recyclable-chunks.ts), reused before any new one is allocated. */
  private readonly free: Buffer[] = [];
  private chunk: Buffer = this.newChunk();
  private fill = 0;
  private bodyBytes = 0;
  private paused = false;
  private finished = false;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly length: number | undefined,
    private readonly host: string,
    private readonly onDone: () => void,
  ) {
    super({ highWaterMark: CHUNK });
  }

  /** Copies a read out of the socket's reused buffer; false asks the socket to pause. */
  received(data: Buffer): boolean {
    if (this.finished || this.destroyed) return false;
    const wanted = this.length === undefined ? data.length : Math.min(data.length, this.length - this.bodyBytes);
    let more = true;
    let off = 0;
    while (off < wanted) {
      const n = data.copy(this.chunk, this.fill, off, wanted);
      off += n;
      this.fill += n;
      if (this.fill === CHUNK) {
        more = this.handOn(this.chunk) && more;
        this.chunk = this.newChunk();
      }
    }
    this.bodyBytes += wanted;
    if (this.length !== undefined && this.bodyBytes === this.length) {
      this.complete();
      return false;
    }
    if (this.fill > 0) this.flushTimer ??= setTimeout(() => this.flushPartial(), FLUSH_MS);
    if (!more) this.paused = true;
    return more;
  }

  /** The connection ended: the whole body when it had no length, else a short one. */
  ended(): void {
    if (this.finished) return;
    if (this.length === undefined) this.complete();
    else this.failed(truncated(this.host), true);
  }

  /** Ends the body with `err`; `keep` hands on what a chunk holds first (a cut: those bytes count for a resume). */
  failed(err: Error, keep = false): void {
    if (this.finished || this.destroyed) return;
    if (keep && this.fill > 0) this.handOn(Buffer.from(this.chunk.subarray(0, this.fill)));
    this.finished = true;
    this.destroy(err);
  }

  override _read(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket.resume();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.finished = true;
    clearTimeout(this.flushTimer);
    this.onDone();
    callback(err);
  }

  private newChunk(): Buffer {
    const reused = this.free.pop();
    if (reused) return reused;
    const chunk = Buffer.allocUnsafeSlow(CHUNK);
    return markRecyclable(chunk, () => {
      if (this.free.length < POOL_MAX) this.free.push(chunk);
    });
  }

  private flushPartial(): void {
    this.flushTimer = undefined;
    if (this.finished || this.destroyed || this.fill === 0) return;
    if (!this.handOn(Buffer.from(this.chunk.subarray(0, this.fill))) && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private complete(): void {
    if (this.fill > 0) this.handOn(this.chunk.subarray(0, this.fill));
    this.finished = true;
    this.push(null);
    this.onDone();
  }

  /** Pushes what the current chunk holds (the chunk itself or a copy of it); the chunk starts empty again. */
  private handOn(buf: Buffer): boolean {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.fill = 0;
    return this.push(buf);
  }
}

function parseHead(text: string): { statusCode: number; headers: Record<string, string | string[]> } | undefined {
  const lines = text.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0] ?? '');
  if (!status) return undefined;
  const headers: Record<string, string | string[]> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = headers[name];
    headers[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  return { statusCode: Number(status[1]), headers };
}

function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new Error('aborted');
}

function unreachable(host: string, err: Error): StowageError {
  return new StowageError('REGISTRY_ERROR', `cannot reach registry ${host}: ${err.message}`, { cause: err });
}

function truncated(host: string, err?: Error): StowageError {
  const why = err ? `: ${err.message}` : '';
  return new StowageError('TRUNCATED', `${host} closed the connection before the end of the body${why}`, err ? { cause: err } : {});
}

function badResponse(host: string, what: string): StowageError {
  return new StowageError('REGISTRY_ERROR', `${host} sent ${what}`, { details: { status: 502 } });
}
