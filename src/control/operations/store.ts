import { EventEmitter } from 'node:events';
import { ulid } from 'ulid';
import { StowageError } from '../../errors.js';
import { type Db, nowIso } from '../db/database.js';
import { prepared } from '../db/statements.js';
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
 */

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

  constructor(private readonly db: Db) {
    this.events.setMaxListeners(0);
  }

  freeze(): void {
    this.frozen = true;
  }

  create(op: NewOperation): Operation {
    const id = `op-${ulid()}`;
    const now = nowIso();
    this.db.transaction(() => {
      prepared(this.db,
          `INSERT INTO operations (id, kind, status, stage, actor, artifact, source_machine, params, created_at, updated_at)
           VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(id, op.kind, op.stage ?? 'created', op.actor, JSON.stringify(op.artifact), op.sourceMachine ?? null, JSON.stringify(op.params ?? {}), now, now);
      const insert = prepared(this.db, `INSERT INTO operation_targets (operation_id, machine_id, position, status) VALUES (?, ?, ?, 'pending')`);
      op.targets.forEach((machine, i) => insert.run(id, machine, i));
    })();
    return this.emit(id);
  }

  get(id: string): Operation | undefined {
    const row = prepared(this.db, 'SELECT * FROM operations WHERE id = ?').get(id) as OperationRow | undefined;
    return row ? this.toOperation(row) : undefined;
  }

  require(id: string): Operation {
    const op = this.get(id);
    if (!op) throw new StowageError('OPERATION_NOT_FOUND', `no operation ${id}`);
    return op;
  }

  /** The operation's own row, without its targets: cheap where the targets are not needed. */
  summary(id: string): OperationSummary | undefined {
    return prepared(this.db, 'SELECT kind, status, source_machine, created_at, updated_at, finished_at FROM operations WHERE id = ?').get(id) as
      | OperationSummary
      | undefined;
  }

  params<T>(id: string): T {
    const row = prepared(this.db, 'SELECT params FROM operations WHERE id = ?').get(id) as { params: string } | undefined;
    if (!row) throw new StowageError('OPERATION_NOT_FOUND', `no operation ${id}`);
    return JSON.parse(row.params) as T;
  }

  list(filter: ListFilter = {}): Operation[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.kind) {
      where.push('kind = ?');
      args.push(filter.kind);
    }
    if (filter.status) {
      where.push('status = ?');
      args.push(filter.status);
    }
    const limit = Math.min(Math.max(filter.limit ?? 50, 1), 1000);
    const sql = `SELECT * FROM operations ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`;
    return (prepared(this.db, sql).all(...args, limit) as OperationRow[]).map((r) => this.toOperation(r));
  }

  /** Operations a restart must pick up again. */
  unfinished(): Operation[] {
    return (prepared(this.db, `SELECT * FROM operations WHERE status IN ('pending', 'running') ORDER BY id`).all() as OperationRow[]).map((r) =>
      this.toOperation(r),
    );
  }

  setStage(id: string, stage: string, status: OperationStatus = 'running'): Operation {
    if (this.frozen) return this.require(id);
    prepared(this.db, 'UPDATE operations SET stage = ?, status = ?, updated_at = ? WHERE id = ?').run(stage, status, nowIso(), id);
    return this.emit(id);
  }

  setArtifact(id: string, artifact: Artifact): Operation {
    if (this.frozen) return this.require(id);
    prepared(this.db, 'UPDATE operations SET artifact = ?, updated_at = ? WHERE id = ?').run(JSON.stringify(artifact), nowIso(), id);
    return this.emit(id);
  }

  setParams(id: string, params: Record<string, unknown>): void {
    if (this.frozen) return;
    prepared(this.db, 'UPDATE operations SET params = ?, updated_at = ? WHERE id = ?').run(JSON.stringify(params), nowIso(), id);
  }

  setProgress(id: string, current: number, total: number, message: string): Operation {
    if (this.frozen) return this.require(id);
    prepared(this.db, 'UPDATE operations SET progress = ?, updated_at = ? WHERE id = ?').run(JSON.stringify({ current, total, message }), nowIso(), id);
    return this.emit(id);
  }

  /**
   * Changes one target. Only that target is read and written, and only it is emitted ("target", a
   * TargetChange): with thousands of targets, progress must not re-read and re-send the whole operation.
   */
  updateTarget(
    id: string,
    machineId: string,
    change: { status?: TargetStatus; bytesTransferred?: number; bytesTotal?: number | null; failure?: Failure | null },
  ): TargetResult {
    const current = prepared(this.db, 'SELECT * FROM operation_targets WHERE operation_id = ? AND machine_id = ?').get(id, machineId) as TargetRow | undefined;
    if (!current) throw new StowageError('OPERATION_NOT_FOUND', `operation ${id} has no target ${machineId}`);
    if (this.frozen) return toTargetResult(current);
    const now = nowIso();
    const status = change.status ?? current.status;
    const next: TargetRow = {
      machine_id: machineId,
      status,
      bytes_transferred: change.bytesTransferred ?? current.bytes_transferred,
      bytes_total: change.bytesTotal === undefined ? current.bytes_total : change.bytesTotal,
      failure: change.failure === undefined ? current.failure : change.failure === null ? null : JSON.stringify(change.failure),
      started_at: current.started_at ?? (status === 'running' ? now : null),
      finished_at: isTargetDone(status) ? (current.finished_at ?? now) : null,
    };
    this.db.transaction(() => {
      prepared(
        this.db,
        `UPDATE operation_targets SET status = ?, bytes_transferred = ?, bytes_total = ?, failure = ?, started_at = ?, finished_at = ?
         WHERE operation_id = ? AND machine_id = ?`,
      ).run(next.status, next.bytes_transferred, next.bytes_total, next.failure, next.started_at, next.finished_at, id, machineId);
      prepared(this.db, 'UPDATE operations SET updated_at = ? WHERE id = ?').run(now, id);
    })();
    const target = toTargetResult(next);
    const event: TargetChange = { operation_id: id, updated_at: now, target };
    this.events.emit('target', event);
    return target;
  }

  /** Ends the operation; its status follows from the targets unless given. */
  finish(id: string, opts: { status?: OperationStatus; error?: Failure; stage?: string } = {}): Operation {
    const op = this.require(id);
    if (this.frozen || isTerminal(op.status)) return op;
    const status = opts.status ?? statusFromTargets(op.targets);
    const now = nowIso();
    prepared(this.db, 'UPDATE operations SET status = ?, stage = ?, error = ?, updated_at = ?, finished_at = ? WHERE id = ?')
      .run(status, opts.stage ?? 'done', opts.error ? JSON.stringify(opts.error) : null, now, now, id);
    return this.emit(id);
  }

  /**
   * Ends the operation with `status`, failing every target not finished with `failure` first: no target is
   * left pending or running under an operation that ended.
   */
  abandon(id: string, status: Extract<OperationStatus, 'failed' | 'cancelled'>, failure: Failure, stage?: string): Operation {
    for (const t of this.require(id).targets) {
      if (!isTargetDone(t.status)) this.updateTarget(id, t.machine_id, { status: 'failed', failure });
    }
    return this.finish(id, { status, error: failure, ...(stage ? { stage } : {}) });
  }

  private emit(id: string): Operation {
    const op = this.require(id);
    this.events.emit('changed', op);
    return op;
  }

  private toOperation(row: OperationRow): Operation {
    const targets = (prepared(this.db, 'SELECT * FROM operation_targets WHERE operation_id = ? ORDER BY position').all(row.id) as TargetRow[]).map(toTargetResult);
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
