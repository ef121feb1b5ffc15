import type { PeerTlsClient } from '../cluster/tls-client.js';
import type { Failure, TransferEvent } from '../control/wire.js';
import { type ErrorCode, StowageError, isStowageError, storageFullOr } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { formatPlatform } from '../oci/platform.js';
import { formatReference, parseReference, repository } from '../oci/reference.js';
import type { RuntimeAdapter } from '../runtime/runtime.js';
import { platformRecord } from '../engine/resolve.js';
import { RegistryClient, registryErrorDetails } from '../registry/client.js';
import { type BlobSource, pullImage } from '../registry/pull.js';
import { pullReferrers } from '../registry/pull-referrers.js';
import type { ContentStoreApi, ImageIndexApi, ImageRecord } from '../store/types.js';
import type { Logger } from 'pino';
import type { AgentMetrics } from './metrics.js';
import type { RateLimiter } from './rate-limit.js';
import type { SourcePlan, TransferPlan } from './transfer-request.js';

/**
 * Transfers into this machine: an image fetched from a peer's /v2/ (or a registry) with pullImage, so only
 * missing blobs move and every blob is verified, then tagged with the requested references.
 *
 * One transfer per key (source + digest + platform, or source tag + platform): a second request for the same image
 * attaches to the running one and hears its events from then on. A transfer outlives the requests that
 * follow it (a control plane that restarts reconnects and attaches again); close() aborts what still runs.
 *
 * Pipelined fan-out: once a transfer knows which blobs it will fetch (onPlan), it announces them to the
 * store (expectBlob), so this machine's /v2/ serves them to the next machine while they arrive (see
 * store/live-blobs.ts). Blobs come from the request's peers first, nearest first, then from the source; a
 * peer that fails or stalls is passed over and the next one resumes with Range. Every blob is still
 * verified here before it becomes visible. A request that attaches (or a refresh) brings renewed peer
 * tokens and a new list of peers, which the next blob and the next resume use.
 */

export type Stage = 'connect' | 'manifest' | 'blobs' | 'record' | 'runtime';

const PROGRESS_INTERVAL_MS = 200;
/** A progress line at least this often, moving or not: a silent stream looks like a dead agent. */
const KEEPALIVE_MS = 5_000;

export interface TransferDeps {
  store: ContentStoreApi;
  images: ImageIndexApi;
  /** Where a transferred image is handed over (none: the store is the machine's image store). */
  runtime?: RuntimeAdapter | undefined;
  /** The machine-wide download cap, when configured. */
  limiter?: RateLimiter | undefined;
  /** Blobs downloaded at once per transfer. */
  concurrency?: number | undefined;
  /** A blob download silent this long is cut and resumed from the next source (default 30 s). */
  stallTimeoutMs?: number | undefined;
  /** What presents this machine's certificate to https:// sources (mutual TLS with peers). */
  peerTls?: (() => PeerTlsClient | undefined) | undefined;
  metrics?: AgentMetrics | undefined;
  /** Transfer lines carry the operation ID (operation_id) of the control plane's operation. */
  log?: Logger | undefined;
}

const DEFAULT_STALL_TIMEOUT_MS = 30_000;

type Listener = (event: TransferEvent) => void;

/** One transfer under way: its latest progress, its listeners, and its final event once it is over. */
export class Transfer {
  private readonly listeners = new Set<Listener>();
  private final: TransferEvent | undefined;
  bytesTransferred = 0;
  bytesTotal: number | null = null;
  /** References still to record (requests that attach add theirs). */
  readonly references = new Set<string>();
  /** Where blobs come from now: the latest request's peers and credentials (see refresh). */
  private sources: { origin: SourcePlan; peers: SourcePlan[] };
  private readonly clients = new Map<string, RegistryClient>();
  private lastProgressAt = 0;
  private progressTimer: NodeJS.Timeout | undefined;
  private readonly keepalive: NodeJS.Timeout;

  constructor(
    readonly plan: TransferPlan,
    private readonly peerTls?: () => PeerTlsClient | undefined,
  ) {
    for (const r of plan.references) this.references.add(r);
    this.sources = { origin: plan, peers: plan.peers };
    this.keepalive = setInterval(() => {
      if (Date.now() - this.lastProgressAt >= KEEPALIVE_MS) this.progress();
    }, KEEPALIVE_MS);
    this.keepalive.unref();
  }

  get finished(): boolean {
    return this.final !== undefined;
  }

  private resolveEnded: (event: TransferEvent) => void = () => undefined;
  /** Resolves with the final event (declared after resolveEnded, which its executor sets). */
  readonly ended = new Promise<TransferEvent>((resolve) => (this.resolveEnded = resolve));

  /** A later request for the same transfer: its references, fresh credentials and peers take effect. */
  refresh(plan: TransferPlan): void {
    for (const r of plan.references) this.references.add(r);
    this.sources = { origin: plan, peers: plan.peers };
  }

  /** The blob sources in order of preference, with the latest credentials. */
  blobSources(): BlobSource[] {
    const { origin, peers } = this.sources;
    return [...peers, origin].map((p) => ({ client: this.client(p), path: p.repository }));
  }

  client(p: SourcePlan): RegistryClient {
    const tls = p.https ? this.peerTls?.() : undefined;
    const key = `${p.insecure ? 'http' : 'https'}://${p.host}|${p.credentials?.username ?? ''}|${p.credentials?.password ?? ''}|${tls ? 'tls' : ''}`;
    let client = this.clients.get(key);
    if (!client) {
      client = new RegistryClient({
        host: p.host,
        insecure: p.insecure,
        ...(tls ? { forceHttps: true, dispatcher: tls.dispatcher, peerTls: tls.tls } : {}),
        ...(p.credentials ? { credentials: p.credentials } : {}),
      });
      this.clients.set(key, client);
    }
    return client;
  }

  /** Hears the current progress now, then every event; a finished transfer answers its final event. */
  subscribe(listener: Listener): () => void {
    if (this.final) {
      listener(this.final);
      return () => undefined;
    }
    listener(this.progressEvent());
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private progressEvent(): TransferEvent {
    return { type: 'progress', bytes_transferred: this.bytesTransferred, bytes_total: this.bytesTotal };
  }

  private emit(event: TransferEvent): void {
    for (const l of [...this.listeners]) l(event);
  }

  /**
   * A progress line now, or at the end of the current interval: at most one per interval. `urgent` sends it
   * at once whatever the interval: the plan (the first line with a total) is what lets the next machine of a
   * fan-out chain start, so throttling it would add up to an interval per hop.
   */
  progress(urgent = false): void {
    if (this.final) return;
    if (urgent) {
      clearTimeout(this.progressTimer);
      this.progressTimer = undefined;
    }
    if (this.progressTimer) return;
    const wait = urgent ? 0 : this.lastProgressAt + PROGRESS_INTERVAL_MS - Date.now();
    const send = (): void => {
      this.progressTimer = undefined;
      if (this.final) return;
      this.lastProgressAt = Date.now();
      this.emit(this.progressEvent());
    };
    if (wait <= 0) send();
    else this.progressTimer = setTimeout(send, wait);
  }

  finish(event: TransferEvent): void {
    if (this.final) return;
    clearInterval(this.keepalive);
    clearTimeout(this.progressTimer);
    this.progressTimer = undefined;
    this.final = event;
    this.emit(event);
    this.listeners.clear();
    this.resolveEnded(event);
  }
}

/** A target going away is AGENT_UNREACHABLE to the operation, whether it was stopped or killed. */
function shuttingDown(): StowageError {
  return new StowageError('AGENT_UNREACHABLE', 'the agent is shutting down', { status: 503 });
}

export class TransferManager {
  private readonly running = new Map<string, { transfer: Transfer; done: Promise<void> }>();
  private readonly abort = new AbortController();

  constructor(private readonly deps: TransferDeps) {}

  /** Starts the transfer, or attaches to the running one with the same key (adding its references). */
  start(plan: TransferPlan): Transfer {
    if (this.abort.signal.aborted) throw shuttingDown();
    const existing = this.running.get(plan.key);
    if (existing && !existing.transfer.finished) {
      existing.transfer.refresh(plan);
      return existing.transfer;
    }
    const transfer = new Transfer(plan, this.deps.peerTls);
    const done = this.run(transfer).finally(() => {
      if (this.running.get(plan.key)?.transfer === transfer) this.running.delete(plan.key);
    });
    this.running.set(plan.key, { transfer, done });
    return transfer;
  }

  /** Brings a running transfer the request's credentials and peers; false when no such transfer runs. */
  refresh(plan: TransferPlan): boolean {
    const existing = this.running.get(plan.key);
    if (!existing || existing.transfer.finished) return false;
    existing.transfer.refresh(plan);
    return true;
  }

  /** Transfers under way. */
  get runningCount(): number {
    return this.running.size;
  }

  /** Aborts every running transfer and waits for them to settle. */
  async close(): Promise<void> {
    this.abort.abort(shuttingDown());
    await Promise.allSettled([...this.running.values()].map((r) => r.done));
  }

  private async run(t: Transfer): Promise<void> {
    const log = this.deps.log?.child({ operation_id: t.plan.operationId, ref: t.plan.digest ?? t.plan.source.tag });
    const startedAt = performance.now();
    const ended = t.ended.then((event) => {
      const status = event.type === 'result' ? event.status : 'failed';
      const seconds = (performance.now() - startedAt) / 1000;
      this.deps.metrics?.transfers.inc({ status });
      this.deps.metrics?.transferDuration.observe({ status }, seconds);
      if (event.type === 'error') log?.warn({ failure: event.failure, seconds }, 'transfer failed');
      else log?.info({ status, bytes: t.bytesTransferred, seconds }, 'transfer ended');
    });
    log?.info({ source: t.plan.host, peers: t.plan.peers.length }, 'transfer started');
    await this.transfer(t);
    await ended;
  }

  private async transfer(t: Transfer): Promise<void> {
    let stage: Stage = 'connect';
    const announced: Array<() => void> = [];
    try {
      const local = this.recordIfPresent(t);
      if (local) {
        stage = 'runtime';
        // An upload recorded here but not yet in the runtime is handed over now (a no-op when it is there).
        const target = t.plan.digest ?? local.manifestDigest;
        await this.handOver(t, target, [local], new Set([target, local.manifestDigest]));
        t.finish(resultEvent('skipped_present', local, 0));
        return;
      }
      const { plan } = t;
      const { store, images, limiter } = this.deps;
      const client = t.client(plan);
      const presentBefore = new Set<Digest>();
      const recorded = new Set<string>();
      // Every received blob byte (image and referrers alike) passes the agent's rate cap and counts as progress.
      const counted = (n: number): void => {
        t.bytesTransferred += n;
        if (t.bytesTotal !== null && t.bytesTotal < t.bytesTransferred) t.bytesTotal = t.bytesTransferred;
        t.progress();
      };
      // Synchronous without a cap: no promise per network read.
      const countBytes = (n: number, source: string = plan.host): Promise<void> | void => {
        this.deps.metrics?.receivedBytes.inc({ source }, n);
        if (!limiter) return counted(n);
        return limiter.take(n).then(() => counted(n));
      };
      const result = await pullImage(
        client,
        plan.source,
        { store, images },
        {
          platform: plan.platform,
          concurrency: this.deps.concurrency,
          signal: this.abort.signal,
          recordSourceNames: false,
          blobSources: () => t.blobSources(),
          stallTimeoutMs: this.deps.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS,
          onManifest: (top) => {
            stage = 'manifest';
            const digests = top.parsed.kind === 'index' ? top.parsed.index.manifests.map((d) => d.digest) : [top.digest];
            for (const d of digests) if (images.getImage(d)) presentBefore.add(d);
          },
          onPlan: (missing) => {
            stage = 'blobs';
            // Announced before the plan is reported: whoever learns of it may ask this machine for them.
            for (const l of missing) {
              const release = store.expectBlob?.(l.digest, l.size);
              if (release) announced.push(release);
            }
            t.bytesTotal = (t.bytesTotal ?? t.bytesTransferred) + missing.reduce((n, l) => n + l.size, 0);
            t.progress(true);
          },
          onBlobBytes: countBytes,
          onRecord: (target, records) => {
            stage = 'record';
            recordNames(images, target, records, t.references, recorded);
          },
        },
      );
      stage = 'record';
      // References added by requests that attached after the records were written.
      const late = [...t.references].filter((r) => !recorded.has(r));
      if (late.length > 0) {
        const target = result.indexDigest ?? result.manifestDigest;
        images.transaction(() => recordNames(images, target, result.images, late, recorded));
      }
      const record = images.getImage(result.manifestDigest);
      if (!record) throw new StowageError('INTERNAL', `image ${result.manifestDigest} vanished right after it was recorded`);
      // Its signatures, SBOMs and other artifacts come along. Best effort: the image is whole without them,
      // and a source that cannot list them (no referrers API) must not fail the image's transfer.
      const subjects = [...(result.indexDigest ? [result.indexDigest] : []), ...result.images.map((r) => r.manifestDigest)];
      await pullReferrers(client, plan.source.path, subjects, { store, images }, {
        onBlobBytes: countBytes,
        signal: this.abort.signal,
        stallTimeoutMs: this.deps.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS,
      }).catch(() => []);
      stage = 'runtime';
      await this.handOver(t, result.indexDigest ?? result.manifestDigest, result.images, presentBefore);
      const skipped = presentBefore.has(result.manifestDigest) && t.bytesTransferred === 0;
      t.finish(resultEvent(skipped ? 'skipped_present' : 'present', record, t.bytesTransferred));
    } catch (err) {
      // Stopped mid-way (SIGTERM): whatever the interrupted step threw, the target went away.
      const cause = this.abort.signal.aborted ? shuttingDown() : err;
      t.finish({ type: 'error', failure: failureOf(cause, stage, t.plan.host) });
    } finally {
      for (const release of announced) release();
    }
  }

  /**
   * Makes the image startable in the runtime, named with the transfer's references. When that fails, the
   * records this transfer added are taken back, so the machine does not report an image its runtime lacks.
   */
  private async handOver(t: Transfer, target: Digest, records: readonly ImageRecord[], presentBefore: ReadonlySet<Digest>): Promise<void> {
    const { runtime, images, store } = this.deps;
    if (!runtime || runtime.kind === 'none') return;
    try {
      const index = images.getIndex(target);
      const size = (await store.stat(target))?.size;
      if (size === undefined) throw new StowageError('BLOB_NOT_FOUND', `manifest ${target} is not in the runtime's content store`);
      const names = t.references.size > 0 ? [...t.references] : [formatReference({ ...parseReference(t.plan.source.path), digest: target })];
      await runtime.handOver({ target, mediaType: index?.mediaType ?? records[0]?.manifestMediaType ?? '', size, records, names });
    } catch (err) {
      images.transaction(() => {
        for (const rec of records) if (!presentBefore.has(rec.manifestDigest)) images.deleteImage(rec.manifestDigest);
        if (images.getIndex(target) && !presentBefore.has(target)) images.deleteIndex(target);
      });
      throw err;
    }
  }

  /**
   * When the wanted image is already here (asked by digest), records the references and answers without
   * contacting the source: its record was written only once all its blobs were verified.
   */
  private recordIfPresent(t: Transfer): ImageRecord | undefined {
    const { images } = this.deps;
    const digest = t.plan.digest;
    if (!digest) return undefined;
    return images.transaction(() => {
      const record = platformRecord(images, digest, t.plan.platform);
      if (!record) return undefined;
      recordNames(images, digest, [record], t.references, new Set());
      return record;
    });
  }
}

/** Tags `target` with each reference and notes the repo digest, as a pull by that name would. */
function recordNames(images: ImageIndexApi, target: Digest, records: readonly ImageRecord[], references: Iterable<string>, recorded: Set<string>): void {
  for (const reference of references) {
    images.tag(reference, target);
    const repo = repository(parseReference(reference));
    for (const rec of records) images.addRepoDigest({ repository: repo, digest: target, manifestDigest: rec.manifestDigest });
    recorded.add(reference);
  }
}

function resultEvent(status: 'present' | 'skipped_present', record: ImageRecord, bytes: number): TransferEvent {
  return {
    type: 'result',
    status,
    digest: record.manifestDigest,
    config_digest: record.configDigest,
    platform: formatPlatform(record.platform),
    bytes_transferred: bytes,
    size_bytes: record.size,
  };
}

const MANIFEST_CODES: ReadonlySet<ErrorCode> = new Set(['MANIFEST_NOT_FOUND', 'IMAGE_NOT_FOUND', 'INVALID_MANIFEST', 'PLATFORM_NOT_FOUND', 'DIGEST_MISMATCH', 'TOO_LARGE', 'UNSUPPORTED']);
const BLOB_CODES: ReadonlySet<ErrorCode> = new Set(['BLOB_NOT_FOUND', 'DIGEST_MISMATCH', 'SIZE_MISMATCH', 'TRUNCATED']);

/** The failure line: a stable code, a message naming the source, and where it went wrong. */
export function failureOf(err: unknown, phase: Stage, host: string): Failure {
  err = storageFullOr(err);
  let stage: Stage = phase;
  const code: string = isStowageError(err) ? err.code : 'INTERNAL';
  // A runtime that is down or refuses fails the hand-over whatever step was running when it did.
  if (code === 'RUNTIME_UNAVAILABLE' || code === 'RUNTIME_ERROR') stage = 'runtime';
  if (phase === 'connect' && isStowageError(err) && MANIFEST_CODES.has(err.code)) stage = 'manifest';
  if (phase === 'manifest' && isStowageError(err) && BLOB_CODES.has(err.code) && err.details?.['stage'] === 'download') stage = 'blobs';
  const refused = registryErrorDetails(err);
  let message = err instanceof Error ? err.message : String(err);
  if (refused && (refused.status === 401 || refused.status === 403)) {
    message = `source ${host} refused the credentials (HTTP ${refused.status}): ${message}`;
  }
  return { code, message, stage };
}
