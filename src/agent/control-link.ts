import { type Dispatcher, request } from 'undici';
import type { z } from 'zod';
import {
  type BlobSourcesResponse,
  type MachineInfo,
  blobSourcesResponseSchema,
  errorBodySchema,
  fullInventoryResponseSchema,
  heartbeatResponseSchema,
  joinResponseSchema,
} from '../control/wire.js';
import type { RevokedTokens } from '../control/peer-token.js';
import type { ImageIndexApi, ImageRecord } from '../store/types.js';
import { type Identity, writeIdentity } from './identity.js';
import { type InventoryMap, computeInventory, diffInventory } from './inventory.js';

/**
 * The agent's link to the control plane: join (or reuse the stored identity), full inventory, then deltas
 * after every change of the image records and heartbeats. One loop does all of it in order, so requests
 * never overtake each other; every failure is retried with capped backoff and followed by a full resync,
 * because whatever was in flight may or may not have landed. The control plane being down never stops
 * the agent: it keeps serving, and catches the control plane up when it returns.
 *
 * Sequence numbers: a full inventory (join or PUT) carries seq = previous + 1 (1 on a fresh process) and
 * replaces what the control plane had; a delta goes from base_seq (the last acknowledged) to base_seq + 1.
 */

export interface ControlLinkOptions {
  dataDir: string;
  controlUrl: string;
  joinToken: string | undefined;
  name: string | undefined;
  /** What the machine tells about itself on join and in heartbeats. */
  info: MachineInfo;
  images: ImageIndexApi;
  /** With a container runtime: which records it lists (only those are reported) and when that changes. */
  runtime?: { holds(record: ImageRecord): boolean; onHoldsChange(listener: () => void): () => void };
  /** The identity read from identity.json, when it is for this control plane. */
  identity: Identity | undefined;
  /** Bytes the machine's store holds, sent with heartbeats (a failure leaves it out of that one). */
  diskUsage?: () => Promise<number>;
  /** Heartbeat interval until the control plane names one. */
  heartbeatMs: number | undefined;
  /** Called whenever the identity changes (after a join). */
  onIdentity: (identity: Identity) => void;
  /** Told of the revocations each heartbeat answer lists. */
  onRevoked?: ((tokens: RevokedTokens) => void) | undefined;
  log?: (line: string) => void;
  /** How to reach the control plane; a function when it must be prepared first (the pinned CA fetched). */
  dispatcher?: Dispatcher | (() => Promise<Dispatcher>);
  /** With a TLS control plane: a CSR goes with the join, and the certificate signed from it comes back. */
  certificates?: { csr(): Promise<string>; accept(certificatePem: string): Promise<void> };
}

const DEBOUNCE_MS = 50;
const BACKOFF_START_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const DEFAULT_HEARTBEAT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;

/** A refusal of the control plane: its status and error code. */
export class ControlError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

export class ControlLink {
  private identity: Identity | undefined;
  /** What the control plane acknowledged, and its seq; undefined = it needs a full inventory. */
  private acked: InventoryMap | undefined;
  private seq = 0;
  private dirty = false;
  private heartbeatMs: number;
  private nextHeartbeatAt = 0;
  private debounce: NodeJS.Timeout | undefined;
  private wakeUp: (() => void) | undefined;
  private closed = false;
  private loop: Promise<void> | undefined;
  private flushWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  private lastFailure: string | undefined;
  private readonly unsubscribe: () => void;
  /** Cuts a request in flight when the agent stops (a black-holed control plane must not delay it). */
  private readonly abort = new AbortController();

  constructor(private readonly opts: ControlLinkOptions) {
    this.identity = opts.identity;
    this.heartbeatMs = opts.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    const offImages = opts.images.onChange(() => this.changed());
    const offRuntime = opts.runtime?.onHoldsChange(() => this.changed());
    this.unsubscribe = () => {
      offImages();
      offRuntime?.();
    };
  }

  get machineId(): string | undefined {
    return this.identity?.machine_id;
  }

  /** The seq of the inventory the control plane last acknowledged. */
  get inventorySeq(): number {
    return this.seq;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /**
   * Which other machines hold these blobs, with pull tokens for them (asked beside the inventory loop: a
   * mirror's question must not wait behind a retrying delta). Nothing is known before the machine joined.
   */
  async blobSources(digests: readonly string[]): Promise<BlobSourcesResponse['sources']> {
    const identity = this.identity;
    if (!identity || digests.length === 0 || this.closed) return {};
    const res = await this.call(
      'POST',
      `/api/v1/machines/${encodeURIComponent(identity.machine_id)}/blob-sources`,
      identity.machine_secret,
      { digests },
      blobSourcesResponseSchema,
    );
    return res.sources;
  }

  /** Resolves once the inventory as it is now has been acknowledged by the control plane. */
  flushInventory(): Promise<void> {
    if (this.closed) return Promise.reject(new Error('the control link is closed'));
    clearTimeout(this.debounce);
    this.debounce = undefined;
    this.dirty = true;
    const done = new Promise<void>((resolve, reject) => this.flushWaiters.push({ resolve, reject }));
    this.wake();
    return done;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    this.unsubscribe();
    clearTimeout(this.debounce);
    this.wake();
    for (const w of this.flushWaiters.splice(0)) w.reject(new Error('the control link closed before the inventory was acknowledged'));
    await this.loop;
  }

  private changed(): void {
    if (this.closed || this.debounce) return;
    // A burst of writes (a pull records image, index and tags) becomes one delta.
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      this.dirty = true;
      this.wake();
    }, DEBOUNCE_MS);
  }

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = undefined;
    w?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeUp = undefined;
        resolve();
      }, Math.max(0, ms));
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    let backoff = BACKOFF_START_MS;
    while (!this.closed) {
      try {
        const worked = await this.step();
        if (this.lastFailure !== undefined) {
          this.log(`control plane ${this.opts.controlUrl} reachable again`);
          this.lastFailure = undefined;
        }
        backoff = BACKOFF_START_MS;
        if (!worked) {
          for (const w of this.flushWaiters.splice(0)) w.resolve();
          await this.sleep(this.nextHeartbeatAt - Date.now());
        }
      } catch (err) {
        if (this.closed) break;
        this.failed(err);
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
  }

  /** Does the next thing the control plane needs; false when there was nothing to do. */
  private async step(): Promise<boolean> {
    if (!this.identity) {
      await this.join();
      return true;
    }
    if (!this.acked) {
      await this.putFull(this.identity);
      return true;
    }
    if (this.dirty) {
      this.dirty = false;
      await this.sendDelta(this.identity, this.acked);
      return true;
    }
    if (Date.now() >= this.nextHeartbeatAt) {
      await this.heartbeat(this.identity);
      return true;
    }
    return false;
  }

  private failed(err: unknown): void {
    // Whatever was in flight may or may not have landed: start over with a full inventory.
    this.acked = undefined;
    if (err instanceof ControlError && err.status === 401 && this.identity) {
      if (this.opts.joinToken) {
        this.log(`control plane refused machine ${this.identity.machine_id}'s secret; joining again`);
        this.identity = undefined;
        return;
      }
      this.log(`control plane refused machine ${this.identity.machine_id}'s secret and no join token is configured`);
    }
    const text = err instanceof Error ? err.message : String(err);
    if (text !== this.lastFailure) {
      this.log(`control plane ${this.opts.controlUrl}: ${text}; retrying (every ${Math.round(BACKOFF_MAX_MS / 1000)} s at most)`);
    }
    this.lastFailure = text;
  }

  private log(line: string): void {
    (this.opts.log ?? ((l: string) => process.stderr.write(`stowd agent: ${l}\n`)))(line);
  }

  private inventory(): InventoryMap {
    const { runtime } = this.opts;
    return computeInventory(this.opts.images, runtime && ((rec) => runtime.holds(rec)), { layers: true });
  }

  private snapshot(): InventoryMap {
    // Taken before the request: a change during it marks dirty and goes in the next delta.
    this.dirty = false;
    return this.inventory();
  }

  private async join(): Promise<void> {
    const { joinToken } = this.opts;
    if (!joinToken) {
      throw new ControlError(0, 'NOT_JOINED', 'this machine has no identity for the control plane and no join token to get one (--join-token)');
    }
    const inventory = this.snapshot();
    const seq = this.seq + 1;
    const certificates = this.opts.certificates;
    const body = {
      ...this.opts.info,
      ...(certificates ? { csr: await certificates.csr() } : {}),
      join_token: joinToken,
      ...(this.opts.name ? { name: this.opts.name } : {}),
      inventory: [...inventory.values()],
      inventory_seq: seq,
    };
    const res = await this.call('POST', '/api/v1/machines/join', joinToken, body, joinResponseSchema);
    if (certificates) {
      if (!res.certificate) throw new ControlError(0, 'NO_CERTIFICATE', 'the control plane signed no machine certificate for the join');
      await certificates.accept(res.certificate);
    }
    const identity: Identity = { control_url: this.opts.controlUrl, machine_id: res.machine_id, machine_secret: res.machine_secret };
    await writeIdentity(this.opts.dataDir, identity);
    this.identity = identity;
    this.heartbeatMs = res.heartbeat_interval_ms;
    this.nextHeartbeatAt = Date.now() + this.heartbeatMs;
    this.seq = seq;
    this.acked = inventory;
    this.log(`joined control plane ${this.opts.controlUrl} as machine ${identity.machine_id}`);
    this.opts.onIdentity(identity);
  }

  private async putFull(identity: Identity): Promise<void> {
    const inventory = this.snapshot();
    const seq = this.seq + 1;
    const res = await this.call(
      'PUT',
      `/api/v1/machines/${encodeURIComponent(identity.machine_id)}/inventory`,
      identity.machine_secret,
      { seq, items: [...inventory.values()] },
      fullInventoryResponseSchema,
    );
    if (res.revoked) this.opts.onRevoked?.(res.revoked);
    this.seq = seq;
    this.acked = inventory;
  }

  private async sendDelta(identity: Identity, base: InventoryMap): Promise<void> {
    const next = this.inventory();
    const { upserted, removed } = diffInventory(base, next);
    if (upserted.length === 0 && removed.length === 0) return;
    const seq = this.seq + 1;
    try {
      await this.call('POST', `/api/v1/machines/${encodeURIComponent(identity.machine_id)}/inventory/delta`, identity.machine_secret, {
        base_seq: this.seq,
        seq,
        upserted,
        removed,
      });
    } catch (err) {
      if (err instanceof ControlError && err.status === 409) {
        this.acked = undefined; // the control plane lost track: the next step sends everything
        return;
      }
      throw err;
    }
    this.seq = seq;
    this.acked = next;
  }

  private async heartbeat(identity: Identity): Promise<void> {
    const diskUsed = await this.opts.diskUsage?.().catch(() => undefined);
    const res = await this.call(
      'POST',
      `/api/v1/machines/${encodeURIComponent(identity.machine_id)}/heartbeat`,
      identity.machine_secret,
      { ...this.opts.info, inventory_seq: this.seq, ...(diskUsed === undefined ? {} : { disk_used_bytes: diskUsed }) },
      heartbeatResponseSchema,
    );
    this.heartbeatMs = res.heartbeat_interval_ms;
    this.nextHeartbeatAt = Date.now() + this.heartbeatMs;
    if (res.revoked) this.opts.onRevoked?.(res.revoked);
    if (res.resync) this.acked = undefined;
  }

  private async call<S extends z.ZodTypeAny>(
    method: 'POST' | 'PUT',
    path: string,
    /** The machine secret, or for a join the join token (checked before the body is read). */
    bearer: string,
    body: unknown,
    schema?: S,
  ): Promise<z.infer<S>> {
    const headers: Record<string, string> = { 'content-type': 'application/json', authorization: `Bearer ${bearer}` };
    const dispatcher = typeof this.opts.dispatcher === 'function' ? await this.opts.dispatcher() : this.opts.dispatcher;
    const res = await request(`${this.opts.controlUrl}${path}`, {
      method,
      headers,
      body: JSON.stringify(body),
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
      signal: this.abort.signal,
      ...(dispatcher ? { dispatcher } : {}),
    });
    const text = await res.body.text();
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (res.statusCode < 200 || res.statusCode >= 300) {
      const parsed = errorBodySchema.safeParse(json);
      const code = parsed.success ? parsed.data.error.code : `HTTP_${res.statusCode}`;
      const message = parsed.success ? parsed.data.error.message : text.slice(0, 200);
      throw new ControlError(res.statusCode, code, `${method} ${path}: ${res.statusCode} ${code}: ${message}`);
    }
    if (!schema) return undefined;
    const parsed = schema.safeParse(json);
    if (!parsed.success) throw new ControlError(res.statusCode, 'BAD_RESPONSE', `${method} ${path}: unexpected answer: ${parsed.error.message.slice(0, 200)}`);
    return parsed.data;
  }
}
