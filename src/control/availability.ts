import { type Db, nowIso } from './db/database.js';
import { prepared } from './db/statements.js';
import type { Machines } from './machines.js';
import type { Availability, Failure, Presence } from './wire.js';

/**
 * Availability records per (machine, platform manifest digest, platform). `present` rows come from agent
 * inventories (the agents are the authority); `transferring` and `failed` rows are written by operations
 * for images a machine does not (yet) hold, and a reported image replaces them.
 */

interface AvailabilityRow {
  machine_id: string;
  digest: string;
  platform: string;
  index_digest: string | null;
  config_digest: string | null;
  refs: string;
  size_bytes: number;
  state: 'present' | 'transferring' | 'failed';
  operation_id: string | null;
  failure: string | null;
  updated_at: string;
}

/** Above this many machines in a result, their statuses are read in one scan instead of one by one. */
const STATUS_LOOKUPS_MAX = 256;

export interface StatusFilter {
  /** Matches a platform manifest digest or the index digest it belongs to. */
  digest?: string | undefined;
  machine?: string | undefined;
  presentOnly?: boolean;
}

export class AvailabilityStore {
  /** Once frozen (shutdown), transfer records are no longer written. */
  private frozen = false;

  constructor(
    private readonly db: Db,
    private readonly machines: Machines,
  ) {}

  freeze(): void {
    this.frozen = true;
  }

  query(filter: StatusFilter = {}): Availability[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.digest) {
      where.push('(digest = ? OR index_digest = ?)');
      args.push(filter.digest, filter.digest);
    }
    if (filter.machine) {
      where.push('machine_id = ?');
      args.push(filter.machine);
    }
    if (filter.presentOnly) where.push(`state = 'present'`);
    const rows = prepared(this.db, `SELECT * FROM availability ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY machine_id, digest, platform`)
      .all(...args) as AvailabilityRow[];
    // Few machines (one, or the holders of one image): look those up; many: read them all at once.
    const machineIds = new Set(rows.map((r) => r.machine_id));
    const status = machineIds.size <= STATUS_LOOKUPS_MAX ? this.machines.statusesOf(machineIds) : this.machines.statuses();
    return rows.map((r) => toAvailability(r, status.get(r.machine_id) ?? 'offline'));
  }

  /** The present records of `digest` (manifest or index) on `machine`. */
  presentOn(machine: string, digest: string): Availability[] {
    return this.query({ machine, digest, presentOnly: true });
  }

  /** Notes a transfer under way, unless the machine already reports the image. */
  markTransferring(machine: string, digest: string, platform: string, operationId: string): void {
    if (this.frozen) return;
    prepared(this.db,
        `INSERT INTO availability (machine_id, digest, platform, state, operation_id, updated_at) VALUES (?, ?, ?, 'transferring', ?, ?)
         ON CONFLICT(machine_id, digest, platform) DO UPDATE SET state = 'transferring', operation_id = excluded.operation_id,
           failure = NULL, updated_at = excluded.updated_at WHERE state != 'present'`,
      )
      .run(machine, digest, platform, operationId, nowIso());
  }

  markFailed(machine: string, digest: string, platform: string, operationId: string, failure: Failure): void {
    if (this.frozen) return;
    prepared(this.db,
        `INSERT INTO availability (machine_id, digest, platform, state, operation_id, failure, updated_at) VALUES (?, ?, ?, 'failed', ?, ?, ?)
         ON CONFLICT(machine_id, digest, platform) DO UPDATE SET state = 'failed', operation_id = excluded.operation_id,
           failure = excluded.failure, updated_at = excluded.updated_at WHERE state != 'present'`,
      )
      .run(machine, digest, platform, operationId, JSON.stringify(failure), nowIso());
  }

  /** A transfer's own report that the image is in (the inventory delta may lag it by a few ms). */
  markPresent(
    machine: string,
    item: { digest: string; platform: string; config_digest: string; size_bytes: number; references: string[]; index_digest?: string | undefined },
  ): void {
    if (this.frozen) return;
    prepared(this.db,
        `INSERT INTO availability (machine_id, digest, platform, index_digest, config_digest, refs, size_bytes, state, updated_at)
         VALUES (@machine, @digest, @platform, @index_digest, @config_digest, @refs, @size_bytes, 'present', @now)
         ON CONFLICT(machine_id, digest, platform) DO UPDATE SET state = 'present', operation_id = NULL, failure = NULL,
           index_digest = COALESCE(availability.index_digest, @index_digest), config_digest = @config_digest, size_bytes = @size_bytes,
           refs = @refs, updated_at = @now`,
      )
      .run({
        machine,
        digest: item.digest,
        platform: item.platform,
        index_digest: item.index_digest ?? null,
        config_digest: item.config_digest,
        refs: JSON.stringify(this.mergedRefs(machine, item.digest, item.platform, item.references)),
        size_bytes: item.size_bytes,
        now: nowIso(),
      });
  }

  /** An unload's own report that the image is gone (the agent's inventory delta may lag it). */
  markAbsent(machine: string, digest: string, platform: string): void {
    prepared(this.db, 'DELETE FROM availability WHERE machine_id = ? AND digest = ? AND platform = ?').run(machine, digest, platform);
  }

  /** An unload's own report that one tag of an image is gone from a machine that keeps its other tags. */
  dropReference(machine: string, digest: string, platform: string, reference: string): void {
    const row = prepared(this.db, 'SELECT refs FROM availability WHERE machine_id = ? AND digest = ? AND platform = ?').get(machine, digest, platform) as
      | { refs: string }
      | undefined;
    if (!row) return;
    const refs = (JSON.parse(row.refs) as string[]).filter((r) => r !== reference);
    prepared(this.db, 'UPDATE availability SET refs = ?, updated_at = ? WHERE machine_id = ? AND digest = ? AND platform = ?').run(JSON.stringify(refs), nowIso(), machine, digest, platform);
  }

  /** The references a present record already lists plus `added`: an agent adds tags, it does not drop them here. */
  private mergedRefs(machine: string, digest: string, platform: string, added: readonly string[]): string[] {
    const row = prepared(this.db, `SELECT refs, state FROM availability WHERE machine_id = ? AND digest = ? AND platform = ?`).get(machine, digest, platform) as
      | { refs: string; state: string }
      | undefined;
    const existing = row?.state === 'present' ? (JSON.parse(row.refs) as string[]) : [];
    return [...new Set([...existing, ...added])].sort();
  }

  /** Drops a transfer record that ended without the image (e.g. the operation was abandoned). */
  clearTransfer(machine: string, digest: string, platform: string): void {
    if (this.frozen) return;
    prepared(this.db, `DELETE FROM availability WHERE machine_id = ? AND digest = ? AND platform = ? AND state = 'transferring'`).run(machine, digest, platform);
  }
}

function toAvailability(r: AvailabilityRow, machineStatus: Availability['machine_status']): Availability {
  let presence: Presence;
  if (r.state === 'present') presence = { state: 'present' };
  else if (r.state === 'transferring') presence = { state: 'transferring', operation_id: r.operation_id ?? '' };
  else presence = { state: 'failed', operation_id: r.operation_id ?? '', failure: JSON.parse(r.failure ?? '{"code":"INTERNAL","message":"unknown"}') as Failure };
  return {
    machine_id: r.machine_id,
    digest: r.digest,
    index_digest: r.index_digest,
    config_digest: r.config_digest,
    platform: r.platform,
    references: JSON.parse(r.refs) as string[],
    size_bytes: r.size_bytes,
    presence,
    machine_status: machineStatus,
    updated_at: r.updated_at,
  };
}
