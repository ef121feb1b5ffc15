import { EventEmitter } from 'node:events';
import { type RawBuilder, sql } from 'kysely';
import { ulid } from 'ulid';
import { StowageError } from '../../errors.js';
import { type Db, nowIso } from '../db/database.js';
import { inList } from '../db/in-list.js';
import {
  type Artifact,
  type Failure,
  type Operation,
  type OperationKind,
  type OperationStatus,
  TERMINAL_OPERATION_STATUSES,
  type TargetResult,
  type TargetStatus,
} from '../wire.js';

/**
 * Operations, durable in the database: created before any work starts, updated as it runs, so a restart
 * finds every unfinished one (see recovery in runner.ts). Changes are emitted on `events` for the SSE
 * streams: "changed" with a whole snapshot when the operation itself changes (created, stage, progress,
 * end), "target" with just that target (a TargetChange) when one target does.
 *
 * Replicas (several control planes on one PostgreSQL): every change made here is also told to `onChange`
 * (the event bus, replicas/event-bus.ts, which tells the other replicas); a change another replica made
 * comes back through relayOperation/relayTarget, which re-read it and emit it here like a local one, so
 * an SSE stream on any replica sees all work.
 */

/** The condition that the operation has not ended: writes of a handler to an ended one change nothing. */
const NOT_ENDED = sql.raw(`status NOT IN (${TERMINAL_OPERATION_STATUSES.map((s) => `'${s}'`).join(', ')})`);

/** A change of an operation, as the event bus carries it between replicas (IDs only: receivers re-read). */
export type OperationChange = { kind: 'operation'; id: string } | { kind: 'target'; id: string; machine: string };

interface OperationRow {
  id: string;
  kind: OperationKind;
  status: OperationStatus;
  stage: string;
  actor: string;
  artifact: string;
  source_machine: string | null;
  params: string;
  progress: string;
  error: string | null;
  created_at: string;
  updated_at: string;
  finished_at: string | null;
}

interface TargetRow {
  machine_id: string;
  status: TargetStatus;
  bytes_transferred: number;
  bytes_total: number | null;
  failure: string | null;
  started_at: string | null;
  finished_at: string | null;
}

export interface NewOperation {
  kind: OperationKind;
  actor: string;
  artifact: Artifact;
  sourceMachine?: string | null;
  targets: string[];
  /** What the runner needs to carry the work on after a restart (kind-specific). */
  params?: Record<string, unknown>;
  stage?: string;
}

/** What `events` emits as "target": one target's new state, and the operation's updated_at with it. */
export interface TargetChange {
  operation_id: string;
  updated_at: string;
  target: TargetResult;
}

export type OperationSummary = Pick<OperationRow, 'kind' | 'status' | 'source_machine' | 'created_at' | 'updated_at' | 'finished_at'>;

export interface ListFilter {
  kind?: string | undefined;
  status?: string | undefined;
  limit?: number | undefined;
}

export function isTerminal(status: OperationStatus): boolean {
  return TERMINAL_OPERATION_STATUSES.includes(status);
}

export function isTargetDone(status: TargetStatus): boolean {
  return status === 'present' || status === 'skipped_present' || status === 'absent' || status === 'failed';
}

export class OperationStore {
  readonly events = new EventEmitter();

  /** Once frozen (shutdown), writes are dropped: what runs stays as the database last recorded it. */
  private frozen = false;
  /** Operations another replica took over from this one: its writes about them are dropped likewise. */
  private readonly disowned = new Set<string>();

  /** Told of every change made here (after it is written), for the other replicas. */
  onChange: ((change: OperationChange) => void) | undefined;

  constructor(
    private readonly db: Db,
    /** The lease a new operation starts with: the replica that creates it runs it (replicas/leases.ts). */
    private readonly newLease?: () => { owner: string; lease_until: string },
  ) {
    this.events.setMaxListeners(0);
  }

  freeze(): void {
    this.frozen = true;
  }

  /** Drops this process's writes about the operation from now on (another replica runs it). */
  disown(id: string): void {
    this.disowned.add(id);
  }

  private readOnly(id: string): boolean {
    return this.frozen || this.disowned.has(id);
  }

  /** Emits here a change of the operation another replica made (re-read from the database). */
  async relayOperation(id: string): Promise<void> {
    const op = await this.get(id);
    if (op) this.events.emit('changed', op);
  }

  /** Emits here a change of one target another replica made (re-read from the database). */
  async relayTarget(id: string, machineId: string): Promise<void> {
    const row = await this.db.get<TargetRow & { op_updated_at: string }>(
      sql`SELECT t.machine_id, t.status, t.bytes_transferred, t.bytes_total, t.failure, t.started_at, t.finished_at, o.updated_at AS op_updated_at
          FROM operation_targets t JOIN operations o ON o.id = t.operation_id WHERE t.operation_id = ${id} AND t.machine_id = ${machineId}`,
    );
    if (!row) return;
    const { op_updated_at, ...target } = row;
    const event: TargetChange = { operation_id: id, updated_at: op_updated_at, target: toTargetResult(target) };
    this.events.emit('target', event);
  }

  async create(op: NewOperation): Promise<Operation> {
    const id = `op-${ulid()}`;
    const now = nowIso();
    const lease = this.newLease?.();
    await this.db.transaction(async (tx) => {
      await tx.run(
        sql`INSERT INTO operations (id, kind, status, stage, actor, artifact, source_machine, params, created_at, updated_at, owner, lease_until)
            VALUES (${id}, ${op.kind}, 'pending', ${op.stage ?? 'created'}, ${op.actor}, ${JSON.stringify(op.artifact)}, ${op.sourceMachine ?? null},
              ${JSON.stringify(op.params ?? {})}, ${now}, ${now}, ${lease?.owner ?? null}, ${lease?.lease_until ?? null})`,
      );
      for (const [i, machine] of op.targets.entries()) {
        await tx.run(sql`INSERT INTO operation_targets (operation_id, machine_id, position, status) VALUES (${id}, ${machine}, ${i}, 'pending')`);
      }
    });
    return this.emit(id);
  }

  async get(id: string): Promise<Operation | undefined> {
    const row = await this.db.get<OperationRow>(sql`SELECT * FROM operations WHERE id = ${id}`);
    return row ? this.toOperation(row) : undefined;
  }

  async require(id: string): Promise<Operation> {
    const op = await this.get(id);
    if (!op) throw new StowageError('OPERATION_NOT_FOUND', `no operation ${id}`);
    return op;
  }

  /** The operation's own row, without its targets: cheap where the targets are not needed. */
  summary(id: string): Promise<OperationSummary | undefined> {
    return this.db.get<OperationSummary>(sql`SELECT kind, status, source_machine, created_at, updated_at, finished_at FROM operations WHERE id = ${id}`);
  }

  async params<T>(id: string): Promise<T> {
    const row = await this.db.get<{ params: string }>(sql`SELECT params FROM operations WHERE id = ${id}`);
    if (!row) throw new StowageError('OPERATION_NOT_FOUND', `no operation ${id}`);
    return JSON.parse(row.params) as T;
  }

  async list(filter: ListFilter = {}): Promise<Operation[]> {
    const where: RawBuilder<unknown>[] = [];
    if (filter.kind) where.push(sql`kind = ${filter.kind}`);
    if (filter.status) where.push(sql`status = ${filter.status}`);
    const limit = Math.min(Math.max(filter.limit ?? 50, 1), 1000);
    const rows = await this.db.all<OperationRow>(
      sql`SELECT * FROM operations ${where.length ? sql`WHERE ${sql.join(where, sql` AND `)}` : sql``} ORDER BY id DESC LIMIT ${limit}`,
    );
    return this.toOperations(rows);
  }

  /** IDs of the operations not ended, or changed at `since` (an ISO time) or later. */
  async changedSince(since: string): Promise<string[]> {
    const rows = await this.db.all<{ id: string }>(sql`SELECT id FROM operations WHERE status IN ('pending', 'running') OR updated_at >= ${since} ORDER BY id`);
    return rows.map((r) => r.id);
  }

  /** Operations a restart must pick up again. */
  async unfinished(): Promise<Operation[]> {
    const rows = await this.db.all<OperationRow>(sql`SELECT * FROM operations WHERE status IN ('pending', 'running') ORDER BY id`);
    return this.toOperations(rows);
  }

  /**
   * Moves the operation to a stage. One that has ended stays as it ended: a handler's setStage in flight
   * when a cancel was recorded must not set it running again (nothing would end it then).
   */
  async setStage(id: string, stage: string, status: OperationStatus = 'running'): Promise<Operation> {
    if (this.readOnly(id)) return this.require(id);
    const changed = await this.db.run(
      sql`UPDATE operations SET stage = ${stage}, status = ${status}, updated_at = ${nowIso()}
          WHERE id = ${id} AND ${NOT_ENDED}`,
    );
    return changed > 0 ? this.emit(id) : this.require(id);
  }

  async setArtifact(id: string, artifact: Artifact): Promise<Operation> {
    if (this.readOnly(id)) return this.require(id);
    await this.db.run(sql`UPDATE operations SET artifact = ${JSON.stringify(artifact)}, updated_at = ${nowIso()} WHERE id = ${id}`);
    return this.emit(id);
  }

  async setParams(id: string, params: Record<string, unknown>): Promise<void> {
    if (this.readOnly(id)) return;
    await this.db.run(sql`UPDATE operations SET params = ${JSON.stringify(params)}, updated_at = ${nowIso()} WHERE id = ${id}`);
  }

  async setProgress(id: string, current: number, total: number, message: string): Promise<Operation> {
    if (this.readOnly(id)) return this.require(id);
    // An ended operation keeps the progress it ended with (a handler's write in flight at a cancel is dropped).
    const changed = await this.db.run(
      sql`UPDATE operations SET progress = ${JSON.stringify({ current, total, message })}, updated_at = ${nowIso()}
          WHERE id = ${id} AND ${NOT_ENDED}`,
    );
    return changed > 0 ? this.emit(id) : this.require(id);
  }

  /**
   * Changes one target. Only that target is read and written, and only it is emitted ("target", a
   * TargetChange): with thousands of targets, progress must not re-read and re-send the whole operation.
   * Read and written in one transaction (the row locked on PostgreSQL), so concurrent changes of one
   * target apply one after the other.
   */
  /**
   * The target's change, written only while the operation is open (undefined once it ended, or without
   * such a target). The operation's row is updated (locked) first, as abandon() and finish() lock it: an
   * operation that has ended takes no more target writes, so a handler's write cannot undo a cancel's.
   * One statement on PostgreSQL (a round trip each, and the operation's row locked for that statement only).
   */
  private async writeTarget(
    id: string,
    machineId: string,
    change: { status?: TargetStatus; bytesTransferred?: number; bytesTotal?: number | null; failure?: Failure | null },
    now: string,
  ): Promise<TargetRow | undefined> {
    const status = change.status ?? null;
    const done = sql.join(['present', 'skipped_present', 'absent', 'failed'].map((s) => sql`${s}`));
    // Every right-hand side reads the row as it was: the new status is COALESCE(status given, status held).
    const next = sql`COALESCE(${status}, status)`;
    const setTarget = sql`SET status = ${next}, bytes_transferred = COALESCE(${change.bytesTransferred ?? null}, bytes_transferred),
          bytes_total = ${change.bytesTotal === undefined ? sql`bytes_total` : sql`${change.bytesTotal}`},
          failure = ${change.failure === undefined ? sql`failure` : sql`${change.failure === null ? null : JSON.stringify(change.failure)}`},
          started_at = COALESCE(started_at, CASE WHEN ${next} = 'running' THEN ${now} END),
          finished_at = CASE WHEN ${next} IN (${done}) THEN COALESCE(finished_at, ${now}) END`;
    const returning = sql`RETURNING machine_id, status, bytes_transferred, bytes_total, failure, started_at, finished_at`;
    const openOp = sql`UPDATE operations SET updated_at = ${now} WHERE id = ${id} AND ${NOT_ENDED}`;
    if (this.db.dialect === 'postgres') {
      return this.db.get<TargetRow>(
        sql`WITH open AS (${openOp} RETURNING id)
            UPDATE operation_targets ${setTarget} WHERE operation_id = (SELECT id FROM open) AND machine_id = ${machineId} ${returning}`,
      );
    }
    return this.db.transaction(async (tx) => {
      if ((await tx.run(openOp)) === 0) return undefined;
      return tx.get<TargetRow>(sql`UPDATE operation_targets ${setTarget} WHERE operation_id = ${id} AND machine_id = ${machineId} ${returning}`);
    });
  }

  async updateTarget(
    id: string,
    machineId: string,
    change: { status?: TargetStatus; bytesTransferred?: number; bytesTotal?: number | null; failure?: Failure | null },
  ): Promise<TargetResult> {
    const now = nowIso();
    const next = this.readOnly(id) ? undefined : await this.writeTarget(id, machineId, change, now);
    if (!next) {
      const current = await this.db.get<TargetRow>(sql`SELECT * FROM operation_targets WHERE operation_id = ${id} AND machine_id = ${machineId}`);
      if (!current) throw new StowageError('OPERATION_NOT_FOUND', `operation ${id} has no target ${machineId}`);
      return toTargetResult(current);
    }
    const target = toTargetResult(next);
    const event: TargetChange = { operation_id: id, updated_at: now, target };
    this.events.emit('target', event);
    this.onChange?.({ kind: 'target', id, machine: machineId });
    return target;
  }

  /** Ends the operation; its status follows from the targets unless given. */
  async finish(id: string, opts: { status?: OperationStatus; error?: Failure; stage?: string } = {}): Promise<Operation> {
    if (this.readOnly(id)) return this.require(id);
    const ended = await this.db.transaction(async (tx) => {
      // Locked: of two finishes at once, the second sees the first's end and changes nothing.
      const row = await tx.get<{ status: OperationStatus }>(sql`SELECT status FROM operations WHERE id = ${id}${tx.forUpdate}`);
      if (!row) throw new StowageError('OPERATION_NOT_FOUND', `no operation ${id}`);
      if (isTerminal(row.status)) return false;
      const status = opts.status ?? statusFromTargets((await targetsOf(tx, id)).map(toTargetResult));
      const now = nowIso();
      await tx.run(
        sql`UPDATE operations SET status = ${status}, stage = ${opts.stage ?? 'done'}, error = ${opts.error ? JSON.stringify(opts.error) : null},
              updated_at = ${now}, finished_at = ${now} WHERE id = ${id}`,
      );
      return true;
    });
    return ended ? this.emit(id) : this.require(id);
  }

  /**
   * Ends the operation with `status`, failing every target not finished with `failure` first: no target is
   * left pending or running under an operation that ended.
   */
  async abandon(id: string, status: Extract<OperationStatus, 'failed' | 'cancelled'>, failure: Failure, stage?: string): Promise<Operation> {
    if (this.readOnly(id)) return this.require(id);
    let now = '';
    // One transaction, the operation's row locked: no target write of a handler lands between the targets
    // failing and the operation ending (updateTarget drops writes to an ended operation).
    const failed = await this.db.transaction(async (tx) => {
      const row = await tx.get<{ status: OperationStatus }>(sql`SELECT status FROM operations WHERE id = ${id}${tx.forUpdate}`);
      if (!row) throw new StowageError('OPERATION_NOT_FOUND', `no operation ${id}`);
      if (isTerminal(row.status)) return undefined;
      // Stamped once the row is held: a write that slipped in while this waited is not stamped later.
      now = nowIso();
      const open = (await targetsOf(tx, id)).filter((t) => !isTargetDone(t.status));
      const rows: TargetRow[] = [];
      for (const t of open) {
        const next: TargetRow = { ...t, status: 'failed', failure: JSON.stringify(failure), finished_at: now };
        await tx.run(
          sql`UPDATE operation_targets SET status = 'failed', failure = ${next.failure}, finished_at = ${now}
              WHERE operation_id = ${id} AND machine_id = ${t.machine_id}`,
        );
        rows.push(next);
      }
      await tx.run(
        sql`UPDATE operations SET status = ${status}, stage = ${stage ?? 'done'}, error = ${JSON.stringify(failure)},
              updated_at = ${now}, finished_at = ${now} WHERE id = ${id}`,
      );
      return rows;
    });
    if (!failed) return this.require(id);
    for (const row of failed) this.events.emit('target', { operation_id: id, updated_at: now, target: toTargetResult(row) } satisfies TargetChange);
    return this.emit(id);
  }

  private async emit(id: string): Promise<Operation> {
    const op = await this.require(id);
    this.events.emit('changed', op);
    this.onChange?.({ kind: 'operation', id });
    return op;
  }

  private async toOperation(row: OperationRow): Promise<Operation> {
    return toOperation(row, await targetsOf(this.db, row.id));
  }

  /** Many operations with their targets: one read of the targets per 256 operations, not one each. */
  private async toOperations(rows: readonly OperationRow[]): Promise<Operation[]> {
    const byOperation = new Map<string, TargetRow[]>();
    for (let i = 0; i < rows.length; i += OPERATIONS_PER_READ) {
      const ids = rows.slice(i, i + OPERATIONS_PER_READ).map((r) => r.id);
      const targets = await this.db.all<TargetRow & { operation_id: string }>(
        sql`SELECT operation_id, machine_id, status, bytes_transferred, bytes_total, failure, started_at, finished_at FROM operation_targets
            WHERE operation_id IN ${inList(ids)} ORDER BY operation_id, position`,
      );
      for (const t of targets) {
        const list = byOperation.get(t.operation_id);
        if (list) list.push(t);
        else byOperation.set(t.operation_id, [t]);
      }
    }
    return rows.map((r) => toOperation(r, byOperation.get(r.id) ?? []));
  }
}

const OPERATIONS_PER_READ = 256;

function toOperation(row: OperationRow, targetRows: readonly TargetRow[]): Operation {
  const targets = targetRows.map(toTargetResult);
  return {
    id: row.id,
    kind: row.kind,
    status: row.status,
    stage: row.stage,
    actor: row.actor,
    artifact: JSON.parse(row.artifact) as Artifact,
    source_machine: row.source_machine,
    targets,
    progress: JSON.parse(row.progress) as Operation['progress'],
    created_at: row.created_at,
    updated_at: row.updated_at,
    finished_at: row.finished_at,
    ...(row.error ? { error: JSON.parse(row.error) as Failure } : {}),
  };
}

/** An operation's targets, in order. */
function targetsOf(db: Db, id: string): Promise<TargetRow[]> {
  return db.all<TargetRow>(
    sql`SELECT machine_id, status, bytes_transferred, bytes_total, failure, started_at, finished_at FROM operation_targets
        WHERE operation_id = ${id} ORDER BY position`,
  );
}

function toTargetResult(t: TargetRow): TargetResult {
  return {
    machine_id: t.machine_id,
    status: t.status,
    bytes_transferred: t.bytes_transferred,
    bytes_total: t.bytes_total,
    ...(t.failure ? { failure: JSON.parse(t.failure) as Failure } : {}),
    started_at: t.started_at,
    finished_at: t.finished_at,
  };
}

/** succeeded when every target ended well, failed when none did, partially_failed in between. */
export function statusFromTargets(targets: readonly TargetResult[]): OperationStatus {
  if (targets.length === 0) return 'succeeded';
  const failed = targets.filter((t) => t.status === 'failed' || !isTargetDone(t.status)).length;
  if (failed === 0) return 'succeeded';
  return failed === targets.length ? 'failed' : 'partially_failed';
}
