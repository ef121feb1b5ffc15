import type { Logger } from 'pino';
import { StowageError, isStowageError } from '../../errors.js';
import { forEachLimited } from '../../registry/pool.js';
import type { AgentsClient } from '../agents-client.js';
import type { AvailabilityStore } from '../availability.js';
import type { MachineRecord, Machines } from '../machines.js';
import type { ControlMetrics } from '../metrics.js';
import type { Failure, Operation, OperationKind, TargetStatus, TransferRequest } from '../wire.js';
import type { OperationLeases } from '../replicas/leases.js';
import { type OperationStore, isTargetDone, isTerminal } from './store.js';

/**
 * Runs operations in the background. Each kind registers a handler that carries an operation from
 * whatever state the database holds to its end, so the same handler starts new work and resumes work a
 * restart interrupted (resumeAll). Handlers must be idempotent: transfers are (an agent that already has
 * an image answers at once, and a second request for one in flight joins it).
 *
 * With leases (replicas/leases.ts), an operation runs on the replica that holds its lease: start() claims
 * it first (and leaves it alone when another replica holds it), keepLeases() renews what runs here and takes
 * over, through the same resume path, operations whose replica stopped renewing.
 */

export type KindHandler = (opId: string) => Promise<void>;

/** What one target of a transfer ended as. */
export interface TransferTargetResult {
  status: TargetStatus;
  platform?: string;
}

const PROGRESS_WRITE_MS = 250;

export interface TransferRunOptions {
  platform: string;
  resumed: boolean;
  /** Called once the agent knows what it will fetch (its first progress with a total). */
  onStarted?: (() => void) | undefined;
  /** How often to send the agent a renewed request (built again: new tokens, current peers). */
  renewEveryMs?: number | undefined;
}

export class OperationRunner {
  private readonly handlers = new Map<OperationKind, KindHandler>();
  private readonly running = new Map<string, Promise<void>>();
  /** One abort controller per running operation: cancel() aborts it, handlers pass its signal on. */
  private readonly controllers = new Map<string, AbortController>();
  /** Operations this process took over from a previous run (their machines may not have called in yet). */
  private readonly resumed = new Set<string>();
  /** Cancels being recorded: a cancelled handler's end waits for its record. */
  private readonly cancelling = new Map<string, Promise<unknown>>();

  constructor(
    private readonly operations: OperationStore,
    private readonly availability: AvailabilityStore,
    readonly agents: AgentsClient,
    private readonly log: Logger,
    private readonly targetConcurrency: number,
    private readonly metrics: ControlMetrics,
    /** Set when operations are claimed with leases (every control plane: see replicas/leases.ts). */
    private readonly leases?: OperationLeases,
  ) {}

  /** Told once of each operation that ended (succeeded, failed or cancelled). */
  onEnded: ((opId: string) => void) | undefined;
  /** Told of each cancel made here (another replica may be running the operation: see cancelledElsewhere). */
  onCancelled: ((opId: string, by: string) => void) | undefined;

  /** The log of one operation's work: every line names it (operation_id). */
  logFor(opId: string): Logger {
    return this.log.child({ operation_id: opId });
  }

  register(kind: OperationKind, handler: KindHandler): void {
    this.handlers.set(kind, handler);
  }

  /**
   * Runs the operation's handler in the background (once: a second start while it runs is a no-op). It is
   * marked running before anything is read, so two starts at once run it once. With leases it runs only
   * if this replica can claim it (`claimed`: it already did).
   */
  start(opId: string, opts: { claimed?: boolean } = {}): void {
    if (this.running.has(opId)) return;
    const log = this.logFor(opId);
    this.controllers.set(opId, new AbortController());
    const work = (async () => {
      let started = false;
      try {
        if (this.leases && !opts.claimed && !(await this.leases.claim(opId))) {
          log.info('operation left to the replica holding its lease');
          return;
        }
        const op = await this.operations.get(opId);
        if (!op || isTerminal(op.status)) return;
        started = true;
        const handler = this.handlers.get(op.kind);
        log.info({ kind: op.kind, status: op.status, targets: op.targets.length }, 'operation started');
        if (!handler) throw new Error(`no handler for ${op.kind} operations`);
        await handler(opId);
      } catch (err) {
        if (this.signalFor(opId).aborted) return; // cancelled: cancel() has recorded how it ended
        // A StowageError is an outcome the operation records (a registry down, a bad image); others are bugs.
        if (isStowageError(err)) log.info({ code: err.code }, err.message);
        else log.error({ err }, 'operation failed');
        await this.operations.abandon(opId, 'failed', toFailure(err, 'internal')).catch((e: unknown) => log.error({ err: e }, 'recording the failure failed'));
      } finally {
        await this.cancelling.get(opId)?.catch(() => {});
        this.controllers.delete(opId);
        if (started) await this.recordEnd(opId, log).catch((e: unknown) => log.warn({ err: e }, 'recording the end failed'));
        this.running.delete(opId);
        this.resumed.delete(opId);
      }
    })();
    this.running.set(opId, work);
  }

  /** Counts and times an operation that has ended (one left running by a shutdown is not counted). */
  private async recordEnd(opId: string, log: Logger): Promise<void> {
    const ended = await this.operations.summary(opId);
    if (!ended || !isTerminal(ended.status)) return;
    this.onEnded?.(opId);
    const seconds = Math.max(0, (Date.parse(ended.finished_at ?? ended.updated_at) - Date.parse(ended.created_at)) / 1000);
    this.metrics.operationDuration.observe({ kind: ended.kind, status: ended.status }, seconds);
    this.metrics.operationsEnded.inc({ kind: ended.kind, status: ended.status });
    log.info({ kind: ended.kind, status: ended.status, seconds }, 'operation ended');
  }

  /** Whether the operation was left unfinished by a previous run and taken over by resumeAll. */
  wasResumed(opId: string): boolean {
    return this.resumed.has(opId);
  }

  /** Aborted when the operation is cancelled: handlers stop starting work and pass it to what they await. */
  signalFor(opId: string): AbortSignal {
    return this.controllers.get(opId)?.signal ?? AbortSignal.abort();
  }

  /**
   * Cancels an operation that has not ended: it ends `cancelled` at once; targets not finished fail with
   * CANCELLED (a transfer an agent already runs may still complete there, and its inventory will say so).
   */
  async cancel(opId: string, by: string): Promise<Operation> {
    const op = await this.operations.require(opId);
    if (isTerminal(op.status)) throw new StowageError('CONFLICT', `operation ${opId} already ended ${op.status}`);
    const failure: Failure = { code: 'CANCELLED', message: `cancelled by ${by}`, stage: op.stage };
    // The handler is stopped at once (nothing new starts while the cancel is recorded; its writes after the
    // record are dropped, see abandon), and its end waits for the record (metrics, onEnded).
    const recorded = this.operations.abandon(opId, 'cancelled', failure, 'cancelled');
    this.cancelling.set(opId, recorded);
    this.controllers.get(opId)?.abort(new StowageError('CANCELLED', failure.message));
    try {
      const ended = await recorded;
      // The replica running it (maybe another) stops its run.
      this.onCancelled?.(opId, by);
      this.onEnded?.(opId);
      return ended;
    } finally {
      this.cancelling.delete(opId);
    }
  }

  /**
   * After a restart: every operation left pending or running is carried on by its handler (with leases:
   * those this replica can claim; the claim loop of keepLeases takes the others as their leases expire).
   */
  async resumeAll(): Promise<number> {
    const ids = this.leases ? await this.leases.claimAtStart() : (await this.operations.unfinished()).map((op) => op.id);
    for (const id of ids) {
      this.resumed.add(id);
      this.start(id, { claimed: true });
    }
    return ids.length;
  }

  /**
   * Every third of the lease: renews the leases of what runs here (stopping the run of any another replica
   * took over meanwhile) and takes over operations whose lease expired. Returns the function that stops it.
   */
  keepLeases(): () => void {
    const leases = this.leases;
    if (!leases) return () => {};
    let busy = false;
    const timer = setInterval(() => {
      if (busy) return;
      busy = true;
      this.leaseTurn(leases)
        .catch((err: unknown) => this.log.warn({ err }, 'renewing or claiming operation leases failed; trying again'))
        .finally(() => (busy = false));
    }, Math.max(50, Math.floor(leases.leaseMs / 3)));
    timer.unref();
    return () => clearInterval(timer);
  }

  private async leaseTurn(leases: OperationLeases): Promise<void> {
    const mine = [...this.running.keys()];
    if (mine.length > 0) {
      const held = await leases.renew(mine);
      for (const id of mine) {
        if (held.has(id) || !this.running.has(id)) continue;
        // Another replica carries it on now: this run stops, and writes nothing more about it.
        this.logFor(id).warn('lease lost to another replica; stopping this run of the operation');
        this.operations.disown(id);
        this.controllers.get(id)?.abort(new StowageError('CANCELLED', 'the operation was taken over by another replica'));
      }
    }
    for (const id of await leases.claimFree()) {
      if (this.running.has(id)) continue;
      this.logFor(id).info({ replica: leases.replica }, 'taking over an operation whose lease expired');
      this.resumed.add(id);
      this.start(id, { claimed: true });
    }
  }

  /** Operations this replica runs that the database says have ended (cancelled elsewhere, say). */
  async runningHereEndedElsewhere(): Promise<string[]> {
    const ended: string[] = [];
    for (const id of this.controllers.keys()) {
      const op = await this.operations.summary(id);
      if (op && isTerminal(op.status)) ended.push(id);
    }
    return ended;
  }

  /** Stops this replica's run of an operation another replica cancelled (it has recorded the end). */
  cancelledElsewhere(opId: string, by: string): void {
    this.controllers.get(opId)?.abort(new StowageError('CANCELLED', `cancelled by ${by}`));
  }

  /** Resolves when nothing runs (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  /** Runs `fn` for every target of the operation that has not ended, a bounded number at once. */
  async forEachOpenTarget(opId: string, fn: (machineId: string, wasRunning: boolean) => Promise<void>): Promise<void> {
    const open = (await this.operations.require(opId)).targets.filter((t) => !isTargetDone(t.status));
    const signal = this.signalFor(opId);
    await forEachLimited(open, this.targetConcurrency, async (t) => {
      if (!signal.aborted) await fn(t.machine_id, t.status === 'running');
    });
  }

  /**
   * Drives one target through a transfer on its agent: running, progress, then present, skipped_present
   * or failed, with the availability records to match. `resumed` says the target was running before a
   * restart: whatever the agent finished meanwhile was this operation's doing, so it counts as present.
   */
  async runTransfer(
    opId: string,
    target: MachineRecord,
    request: TransferRequest | (() => Promise<TransferRequest>),
    opts: TransferRunOptions,
  ): Promise<TransferTargetResult> {
    const build = typeof request === 'function' ? request : async () => request;
    const req = await build();
    const log = this.logFor(opId).child({ machine: target.id });
    const summary = await this.operations.summary(opId);
    const kind = summary?.kind ?? 'unknown';
    const startedAt = performance.now();
    // Bytes count as they are reported, by the operation's source machine (or the registry) and the target.
    const bytes = this.metrics.transferBytes.labels({ source: sourceLabel(summary?.source_machine, req), target: target.id });
    let counted = 0;
    const count = (total: number): void => {
      if (total > counted) bytes.inc(total - counted);
      counted = Math.max(counted, total);
    };
    const ended = (result: TransferTargetResult, failure?: Failure): TransferTargetResult => {
      const seconds = (performance.now() - startedAt) / 1000;
      this.metrics.transferDuration.observe({ kind, status: result.status }, seconds);
      if (failure) log.warn({ status: result.status, failure, seconds }, 'target failed');
      else log.info({ status: result.status, bytes: counted, seconds }, 'target ended');
      return result;
    };
    log.info({ ref: req.ref, peers: req.peers?.length ?? 0 }, 'target transfer requested');
    await this.operations.updateTarget(opId, target.id, { status: 'running', failure: null });
    const wanted = req.ref.startsWith('sha256:') ? req.ref : undefined;
    if (wanted) await this.availability.markTransferring(target.id, wanted, opts.platform, opId);
    let lastWrite = 0;
    // Progress is written one change after the other, and the result only after the last of them.
    let progressWritten: Promise<unknown> = Promise.resolve();
    const writeProgress = (p: { bytes_transferred: number; bytes_total: number | null }): void => {
      lastWrite = Date.now();
      progressWritten = progressWritten
        .then(() => this.operations.updateTarget(opId, target.id, { bytesTransferred: p.bytes_transferred, bytesTotal: p.bytes_total }))
        .catch((err: unknown) => log.warn({ err }, 'writing transfer progress failed'));
    };
    // A report that came inside the throttle window is written at its end: a transfer that pauses after a
    // burst (waiting for an upload, say) shows what it has, not what it had a keepalive (seconds) earlier.
    let trailing: { timer: NodeJS.Timeout; latest: { bytes_transferred: number; bytes_total: number | null } } | undefined;
    const stopTrailing = (): void => {
      clearTimeout(trailing?.timer);
      trailing = undefined;
    };
    let started = false;
    // Whether image bytes had reached the target: a target that goes away then failed moving blobs.
    let moved = false;
    // Peer tokens expire: a transfer longer than their lifetime gets the request again, with new ones.
    const renew = opts.renewEveryMs === undefined ? undefined : setInterval(() => void this.renew(opId, target, build), opts.renewEveryMs);
    renew?.unref();
    try {
      const signal = this.signalFor(opId);
      const outcome = await this.agents
        .transfer(target, req, signal, (p) => {
          if (p.bytes_transferred > 0) moved = true;
          if (!started && p.bytes_total !== null) {
            started = true;
            opts.onStarted?.();
          }
          count(p.bytes_transferred);
          const now = Date.now();
          if (now - lastWrite < PROGRESS_WRITE_MS) {
            if (trailing) trailing.latest = p;
            else {
              const timer = setTimeout(() => {
                const latest = trailing?.latest;
                trailing = undefined;
                if (latest) writeProgress(latest);
              }, lastWrite + PROGRESS_WRITE_MS - now);
              timer.unref();
              trailing = { timer, latest: p };
            }
            return;
          }
          stopTrailing();
          writeProgress(p);
        })
        .finally(stopTrailing);
      await progressWritten;
      if (outcome.type === 'error') return ended(await this.failTarget(opId, target.id, wanted, opts.platform, outcome.failure), outcome.failure);
      count(outcome.bytes_transferred);
      const status: TargetStatus = outcome.status === 'skipped_present' && opts.resumed ? 'present' : outcome.status;
      if (wanted && wanted !== outcome.digest) await this.availability.clearTransfer(target.id, wanted, opts.platform);
      await this.availability.markPresent(target.id, {
        digest: outcome.digest,
        platform: outcome.platform,
        config_digest: outcome.config_digest,
        size_bytes: outcome.size_bytes,
        references: req.references,
        ...(wanted && wanted !== outcome.digest ? { index_digest: wanted } : {}),
      });
      await this.operations.updateTarget(opId, target.id, {
        status,
        bytesTransferred: outcome.bytes_transferred,
        bytesTotal: status === 'skipped_present' ? 0 : outcome.bytes_transferred,
      });
      return ended({ status, platform: outcome.platform });
    } catch (err) {
      if (this.signalFor(opId).aborted) {
        // Cancelled: no claim either way; the agent's own inventory will tell if it finished anyway.
        await progressWritten;
        if (wanted) await this.availability.clearTransfer(target.id, wanted, opts.platform);
        return ended({ status: 'failed' }, { code: 'CANCELLED', message: 'the operation was cancelled', stage: 'transfer' });
      }
      const failure = toFailure(err, moved ? 'blobs' : 'connect');
      await progressWritten;
      return ended(await this.failTarget(opId, target.id, wanted, opts.platform, failure), failure);
    } finally {
      clearInterval(renew);
    }
  }

  /** Sends a running transfer its request again (fresh tokens, current peers); failures wait for the next turn. */
  private async renew(opId: string, target: MachineRecord, build: () => Promise<TransferRequest>): Promise<void> {
    try {
      await this.agents.refreshTransfer(target, await build());
    } catch (err) {
      this.logFor(opId).info({ machine: target.id, err: (err as Error).message }, 'renewing a transfer failed; trying again later');
    }
  }

  async failTarget(opId: string, machineId: string, digest: string | undefined, platform: string, failure: Failure): Promise<TransferTargetResult> {
    if (digest) await this.availability.markFailed(machineId, digest, platform, opId, failure);
    await this.operations.updateTarget(opId, machineId, { status: 'failed', failure });
    return { status: 'failed' };
  }
}

/** The source a transfer's bytes count under: the operation's source machine, else the registry's host. */
function sourceLabel(machine: string | null | undefined, req: TransferRequest): string {
  if (machine) return machine;
  try {
    return new URL(req.source.registry_url).host;
  } catch {
    return 'unknown';
  }
}

export function toFailure(err: unknown, stage: string): Failure {
  if (isStowageError(err)) return { code: err.code, message: err.message, stage };
  return { code: 'INTERNAL', message: (err as Error)?.message ?? String(err), stage };
}

/**
 * The machine an operation's step runs on, which must be online. Work a restart interrupted waits for a
 * machine still `unknown` (not heard from since) to call in; new work fails it at once (MACHINE_OFFLINE).
 */
export async function onlineMachineFor(ctx: { machines: Machines; runner: OperationRunner }, opId: string, machineId: string): Promise<MachineRecord> {
  if (!ctx.runner.wasResumed(opId)) return ctx.machines.requireOnline(machineId);
  return ctx.machines.requireOnlineOnceKnown(machineId, ctx.runner.signalFor(opId));
}
