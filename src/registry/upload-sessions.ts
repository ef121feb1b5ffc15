import { randomUUID } from 'node:crypto';
import { StowageError } from '../errors.js';
import type { ContentStoreApi, Ingest } from '../store/types.js';

/**
 * The open blob uploads of one /v2/ endpoint: each is a store ingest keyed by a random UUID, so its bytes
 * reach the disk as they arrive and nothing is visible before the final PUT verifies the digest. The number
 * of open uploads is bounded, and one left idle past `idleMs` is expired: its ingest is aborted.
 */

export interface UploadSession {
  readonly uuid: string;
  /** The repository the upload was started in (its Location names it). */
  readonly name: string;
  readonly ingest: Ingest;
  /** A request is reading or writing this upload: it is not expired, and a second one waits its turn. */
  busy: boolean;
  lastUsed: number;
}

export interface UploadSessionOptions {
  /** Open uploads at once (default 64). */
  maxSessions?: number;
  /** An upload untouched this long is aborted (default 10 minutes). */
  idleMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export const DEFAULT_MAX_UPLOAD_SESSIONS = 64;
export const DEFAULT_UPLOAD_IDLE_MS = 10 * 60 * 1000;

const INGEST_PREFIX = 'v2-upload-';

export class UploadSessions {
  private readonly sessions = new Map<string, UploadSession>();
  private readonly maxSessions: number;
  private readonly idleMs: number;
  private readonly now: () => number;
  private readonly timer: NodeJS.Timeout;
  /** Creations under way count against the bound too (openIngest awaits). */
  private opening = 0;

  constructor(
    private readonly store: ContentStoreApi,
    opts: UploadSessionOptions = {},
  ) {
    this.maxSessions = Math.max(1, opts.maxSessions ?? DEFAULT_MAX_UPLOAD_SESSIONS);
    this.idleMs = Math.max(1, opts.idleMs ?? DEFAULT_UPLOAD_IDLE_MS);
    this.now = opts.now ?? Date.now;
    this.timer = setInterval(() => void this.expireIdle(), Math.min(this.idleMs, 60_000));
    this.timer.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Opens a new upload; TOO_LARGE (mapped to 429) when the bound is reached even after expiring idle ones. */
  async open(name: string): Promise<UploadSession> {
    if (this.sessions.size + this.opening >= this.maxSessions) await this.expireIdle();
    if (this.sessions.size + this.opening >= this.maxSessions) {
      throw new StowageError('TOO_LARGE', `too many open uploads (${this.maxSessions}); finish or cancel some first`, {
        status: 429,
        details: { limit: this.maxSessions },
      });
    }
    this.opening++;
    try {
      const uuid = randomUUID();
      const ingest = await this.store.openIngest(`${INGEST_PREFIX}${uuid}`);
      const session: UploadSession = { uuid, name, ingest, busy: false, lastUsed: this.now() };
      this.sessions.set(uuid, session);
      return session;
    } finally {
      this.opening--;
    }
  }

  /** The open upload `uuid` of repository `name`, or undefined (unknown, expired, finished, other repository). */
  get(name: string, uuid: string): UploadSession | undefined {
    const s = this.sessions.get(uuid);
    return s && s.name === name ? s : undefined;
  }

  /**
   * Runs `fn` with the upload held busy; CONFLICT when another request has it. `fn` ends the upload by
   * returning 'done' (committed or aborted): it is then forgotten.
   */
  async use<T>(session: UploadSession, fn: () => Promise<{ result: T; done?: boolean }>): Promise<T> {
    if (session.busy) throw new StowageError('CONFLICT', `upload ${session.uuid} is busy with another request`);
    session.busy = true;
    try {
      const { result, done } = await fn();
      if (done) this.sessions.delete(session.uuid);
      return result;
    } finally {
      session.busy = false;
      session.lastUsed = this.now();
    }
  }

  /** Forgets an upload whose ingest is gone (a failed commit removes it) without touching the store. */
  forget(session: UploadSession): void {
    this.sessions.delete(session.uuid);
  }

  /** Cancels an upload: forgets it and drops its bytes; CONFLICT while a request is writing to it. */
  async cancel(session: UploadSession): Promise<void> {
    if (session.busy) throw new StowageError('CONFLICT', `upload ${session.uuid} is busy with another request`);
    this.sessions.delete(session.uuid);
    await session.ingest.abort();
  }

  /** Aborts every upload idle for longer than idleMs. */
  async expireIdle(): Promise<void> {
    const cutoff = this.now() - this.idleMs;
    const stale = [...this.sessions.values()].filter((s) => !s.busy && s.lastUsed <= cutoff);
    await Promise.all(stale.map((s) => this.cancel(s).catch(() => undefined)));
  }

  /** Stops the expiry timer and aborts every open upload (the endpoint is closing). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.map((s) => s.ingest.abort().catch(() => undefined)));
  }
}
