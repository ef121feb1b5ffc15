import { type Socket, isIP, connect as netConnect } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect, rootCertificates } from 'node:tls';
import { Readable } from 'node:stream';
import type { ClientTls } from '../cluster/tls-client.js';
import { StowageError, isStowageError } from '../errors.js';
import { markRecyclable } from '../store/recyclable-chunks.js';

/**
 * One HTTP/1.1 GET on a connection of its own: the path blob bytes take from a Stowage peer. The socket reads
 * the body straight into megabyte chunks (`onread` with a buffer for each read: the free end of the current
 * chunk), handed on whole once full, no copy made, and reused once the ingest gives them back. Through undici
 * each 64 KiB read is a fresh buffer, then parsed by llhttp in WebAssembly: on loopback that costs more CPU
 * than hashing the bytes, and its garbage (V8 collects again and again for such buffers) more still.
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

/** The buffer the response head is read into (reused for every read until the head is whole). */
const HEAD_READ_BUFFER = 16 * 1024;
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
    const onread = { buffer: () => reader.nextBuffer(), callback: (n: number, buf: Buffer) => reader.received(buf, n) };
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
  private readonly headBuffer = Buffer.allocUnsafe(HEAD_READ_BUFFER);
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

  /** Where the socket reads next: the head buffer, then the body's chunk. */
  nextBuffer(): Buffer {
    return this.body ? this.body.nextBuffer() : this.headBuffer;
  }

  /** The socket's onread callback: `n` bytes read into `buf` (nextBuffer()); false pauses the socket. */
  received(buf: Buffer, n: number): boolean {
    if (this.body) return this.body.readInPlace(buf, n);
    return this.headReceived(buf.subarray(0, n));
  }

  private headReceived(data: Buffer): boolean {
    this.head.push(Buffer.from(data)); // the head buffer is reused: keep a copy
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
      return rest.length > 0 ? this.headReceived(rest) : true;
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
    return rest.length > 0 ? this.body.copyIn(rest) : true;
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
 * A response body as megabyte chunks, read into by the socket; the socket is paused while they wait for their
 * reader. Bytes that sit in a chunk not yet full for FLUSH_MS go on anyway (copied out): on a slow link a
 * megabyte takes a while, and the next machine of a fan-out chain and the stall guard are waiting for them.
 */
class DirectBody extends Readable {
  /** Chunks the ingest gave back (recyclable-chunks.ts), reused before any new one is allocated. */
  private readonly free: Buffer[] = [];
  private chunk: Buffer = this.newChunk();
  /** Bytes of the chunk read so far, and of those the ones already handed on (copied by a flush). */
  private fill = 0;
  private handed = 0;
  private bodyBytes = 0;
  private paused = false;
  private finished = false;
  private flushTimer: NodeJS.Timeout | undefined;
  /** What the socket may still read into after the end (it is being destroyed): never a chunk handed on. */
  private spare: Buffer | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly length: number | undefined,
    private readonly host: string,
    private readonly onDone: () => void,
  ) {
    super({ highWaterMark: CHUNK });
  }

  /** The free end of the current chunk (never empty: a full chunk is handed on at once). */
  nextBuffer(): Buffer {
    if (this.finished || this.destroyed) return (this.spare ??= Buffer.allocUnsafe(1024));
    return this.chunk.subarray(this.fill);
  }

  /** The socket read `n` bytes into `buf`, which nextBuffer() gave it; false asks it to pause. */
  readInPlace(buf: Buffer, n: number): boolean {
    if (this.finished || this.destroyed) return false;
    if (buf.buffer !== this.chunk.buffer || buf.byteOffset !== this.chunk.byteOffset + this.fill) {
      // Not where the chunk's free end is (cannot happen with Node's onread): take the bytes by copy.
      return this.copyIn(buf.subarray(0, n));
    }
    return this.took(n);
  }

  /** Bytes read elsewhere (after the response head, in its buffer): copied into the chunk. */
  copyIn(data: Buffer): boolean {
    let more = true;
    let off = 0;
    while (off < data.length) {
      const n = data.copy(this.chunk, this.fill, off);
      off += n;
      more = this.took(n) && more;
      if (this.finished) return false;
    }
    return more;
  }

  /** Accounts for `n` bytes just placed at the chunk's fill mark. */
  private took(n: number): boolean {
    // Bytes past the announced length are not the body's: left out (the connection is closed after it).
    const useful = this.length === undefined ? n : Math.min(n, this.length - this.bodyBytes);
    this.fill += useful;
    this.bodyBytes += useful;
    let more = true;
    if (this.fill === CHUNK) {
      more = this.handOn(this.handed === 0 ? this.chunk : this.chunk.subarray(this.handed));
      this.chunk = this.newChunk();
      this.fill = 0;
      this.handed = 0;
    }
    if (this.length !== undefined && this.bodyBytes === this.length) {
      this.complete();
      return false;
    }
    if (this.fill > this.handed) this.flushTimer ??= setTimeout(() => this.flushPartial(), FLUSH_MS);
    if (!more) this.paused = true;
    return more;
  }

  /** The connection ended: the whole body when it had no length, else a short one. */
  ended(): void {
    if (this.finished) return;
    if (this.length === undefined) this.complete();
    else this.failed(truncated(this.host), true);
  }

  /** Ends the body with `err`; `keep` hands on the bytes not yet handed on first (a cut: they count for a resume). */
  failed(err: Error, keep = false): void {
    if (this.finished || this.destroyed) return;
    if (keep && this.fill > this.handed) this.handOn(this.chunk.subarray(this.handed, this.fill));
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

  /** Hands on (as a copy: the socket goes on reading into the chunk) what waited too long for it to fill. */
  private flushPartial(): void {
    this.flushTimer = undefined;
    if (this.finished || this.destroyed || this.fill === this.handed) return;
    const waiting = Buffer.from(this.chunk.subarray(this.handed, this.fill));
    this.handed = this.fill;
    if (!this.handOn(waiting) && !this.paused) {
      this.paused = true;
      this.socket.pause();
    }
  }

  private complete(): void {
    if (this.fill > this.handed) this.handOn(this.chunk.subarray(this.handed, this.fill));
    this.finished = true;
    this.push(null);
    this.onDone();
  }

  /**
   * Pushes bytes of the chunk. Only a whole chunk handed on as itself is given back by the ingest and
   * reused; a part of one (after a flush, or the last bytes) is a view the chunk's reuse must never reach,
   * and the chunk is then simply dropped.
   */
  private handOn(buf: Buffer): boolean {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
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
