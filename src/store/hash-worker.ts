import { Worker } from 'node:worker_threads';
import { StowageError } from '../errors.js';
import type { Digest } from '../oci/digest.js';

/**
 * SHA-256 of arriving blobs on a thread of its own. Hashing is the most expensive step of receiving a blob
 * (as much CPU per byte as the socket, the copies and the file writes together), and done on the event loop
 * it runs in turn with them; on its own thread it runs alongside, on another core. One worker per process
 * holds the hash state of every ingest (a SHA-256 state cannot move between threads, so a hash lives where it
 * started); the bytes reach it without a copy, in SharedArrayBuffer-backed batches (see pumpSource).
 *
 * The worker is a few lines of plain JavaScript evaluated in place: no separate file to find in a build.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { createReadStream } = require('node:fs');
const hashes = new Map();
const buffers = new Map();
const answer = (seq, value, error) => parentPort.postMessage({ seq, value, error: error && String(error.message || error), code: error && error.code });
parentPort.on('message', async (m) => {
  try {
    if (m.op === 'update') {
      hashes.get(m.id).update(buffers.get(m.buffer).subarray(0, m.length));
      answer(m.seq);
    } else if (m.op === 'buffer') {
      buffers.set(m.buffer, new Uint8Array(m.sab));
    } else if (m.op === 'unbuffer') {
      buffers.delete(m.buffer);
    } else if (m.op === 'start') {
      hashes.set(m.id, createHash('sha256'));
      answer(m.seq);
    } else if (m.op === 'file') {
      // The bytes already on disk (a resumed ingest), read and hashed here, off the event loop.
      const hash = createHash('sha256');
      hashes.set(m.id, hash);
      let size = 0;
      for await (const chunk of createReadStream(m.path, { highWaterMark: 1024 * 1024 })) { hash.update(chunk); size += chunk.length; }
      answer(m.seq, size);
    } else if (m.op === 'peek') {
      answer(m.seq, hashes.get(m.id).copy().digest('hex'));
    } else if (m.op === 'digest') {
      const hex = hashes.get(m.id).digest('hex');
      hashes.delete(m.id);
      answer(m.seq, hex);
    } else if (m.op === 'drop') {
      hashes.delete(m.id);
    }
  } catch (err) {
    answer(m.seq, undefined, err);
  }
});
`;

/** Size of a HashBuffer: the batch pumpSource hashes and writes at once. */
export const HASH_BUFFER_SIZE = 2 * 1024 * 1024;
/** Free HashBuffers kept for reuse: enough for a few blobs arriving at once. */
const POOL_LIMIT = 8;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** The process's hash worker: started on first use, not keeping the process alive, replaced if it dies. */
class HashThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private nextId = 0;
  /** Set once the worker is gone: every hash it held is lost. */
  dead: Error | undefined;

  constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, name: 'stowage-hash' });
    this.worker.unref();
    this.worker.on('message', (m: { seq: number; value?: unknown; error?: string; code?: string }) => {
      const p = this.pending.get(m.seq);
      if (!p) return;
      this.pending.delete(m.seq);
      if (this.pending.size === 0) this.worker.unref();
      // A file error keeps its code (ENOENT: the ingest was removed meanwhile).
      if (m.error !== undefined) p.reject(m.code ? Object.assign(new Error(m.error), { code: m.code }) : new StowageError('INTERNAL', `hashing failed: ${m.error}`));
      else p.resolve(m.value);
    });
    const fail = (err: Error): void => {
      this.dead ??= new StowageError('INTERNAL', `the hashing thread stopped: ${err.message}`, { cause: err });
      if (thread === this) thread = undefined;
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
  }

  newId(): number {
    return this.nextId++;
  }

  /** Sends a request; the answer settles the promise (requests are handled in the order sent). */
  call<T>(message: Record<string, unknown>): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const seq = this.seq++;
    // Kept alive while it owes an answer: a pull waiting on it must not see the process exit under it.
    if (this.pending.size === 0) this.worker.ref();
    return new Promise<T>((resolve, reject) => {
      this.pending.set(seq, { resolve: resolve as (value: unknown) => void, reject });
      this.worker.postMessage({ ...message, seq });
    });
  }

  /** Fire and forget (freeing a hash). */
  send(message: Record<string, unknown>): void {
    if (!this.dead) this.worker.postMessage(message);
  }
}

let thread: HashThread | undefined;
let nextBufferId = 0;

/**
 * Memory the hash thread reads in place: a SharedArrayBuffer made known to the worker once (sharing one with
 * every message would cost more than hashing it). Taken from a small pool and given back after use.
 */
export class HashBuffer {
  readonly bytes: Buffer;
  private readonly id = nextBufferId++;
  /** The worker that knows this buffer (a replaced worker is told again). */
  private knownTo: HashThread | undefined;

  private constructor(size: number) {
    this.bytes = Buffer.from(new SharedArrayBuffer(size));
  }

  /** This buffer's id in `t`, telling `t` about it first if needed. */
  ownerId(t: HashThread): number {
    if (this.knownTo !== t) {
      t.send({ op: 'buffer', buffer: this.id, sab: this.bytes.buffer });
      this.knownTo = t;
    }
    return this.id;
  }

  private static readonly free: HashBuffer[] = [];

  /** A buffer of HASH_BUFFER_SIZE bytes, from the pool. */
  static take(): HashBuffer {
    return HashBuffer.free.pop() ?? new HashBuffer(HASH_BUFFER_SIZE);
  }

  /** Back to the pool; beyond POOL_LIMIT the worker forgets it and it goes to the collector. */
  static give(b: HashBuffer): void {
    if (HashBuffer.free.length < POOL_LIMIT) HashBuffer.free.push(b);
    else if (b.knownTo) b.knownTo.send({ op: 'unbuffer', buffer: b.id });
  }
}

/** A digester dropped without dispose() (an ingest handle let go to be resumed later) frees its state all the same. */
const unclaimed = new FinalizationRegistry<{ thread: HashThread; id: number }>(({ thread: t, id }) => t.send({ op: 'drop', id }));

/**
 * An incremental SHA-256 computed on the hash thread, counting bytes as Digester does. `update` takes a view
 * of a SharedArrayBuffer and resolves once those bytes are hashed (the buffer may then be reused). Calls are
 * applied in order. Call `dispose` (or `digest`) when done, or the worker keeps the state.
 */
export class OffThreadDigester {
  private readonly thread: HashThread;
  private readonly id: number;
  private count = 0;
  /** Resolves once the worker holds the state (the hash of the file's bytes, for `ofFile`). */
  private readonly ready: Promise<unknown>;
  private finished = false;

  private constructor(path?: string) {
    thread ??= new HashThread();
    this.thread = thread;
    this.id = thread.newId();
    this.ready = path === undefined ? thread.call({ op: 'start', id: this.id }) : thread.call<number>({ op: 'file', id: this.id, path });
    this.ready.catch(() => undefined); // seen by whoever awaits the digester next
    unclaimed.register(this, { thread: this.thread, id: this.id }, this);
  }

  /** A digester of nothing yet. */
  static create(): OffThreadDigester {
    return new OffThreadDigester();
  }

  /** A digester of the bytes of the file at `path` (read and hashed on the hash thread). */
  static async ofFile(path: string): Promise<OffThreadDigester> {
    const d = new OffThreadDigester(path);
    d.count = (await d.ready) as number;
    return d;
  }

  get size(): number {
    return this.count;
  }

  /** False once the hash thread died: the state is lost and the bytes must be hashed again. */
  get usable(): boolean {
    return !this.finished && this.thread.dead === undefined;
  }

  /** Hashes the first `length` bytes of `buffer` (which must not change until this resolves). */
  update(buffer: HashBuffer, length: number): Promise<void> {
    this.count += length;
    return this.thread.call({ op: 'update', id: this.id, buffer: buffer.ownerId(this.thread), length });
  }

  /** The digest of what was hashed so far, leaving the hash open for more. */
  async peek(): Promise<Digest> {
    return `sha256:${await this.thread.call<string>({ op: 'peek', id: this.id })}`;
  }

  /** Finalises the hash and frees it; call once. */
  async digest(): Promise<Digest> {
    if (this.finished) throw new StowageError('INTERNAL', 'digest of a finished hash');
    this.finished = true;
    unclaimed.unregister(this);
    return `sha256:${await this.thread.call<string>({ op: 'digest', id: this.id })}`;
  }

  /** Frees the state without a result. */
  dispose(): void {
    if (this.finished) return;
    this.finished = true;
    unclaimed.unregister(this);
    this.thread.send({ op: 'drop', id: this.id });
  }
}
