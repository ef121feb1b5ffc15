import { type RawBuilder, sql } from 'kysely';
import { type Db, nowIso } from './db/database.js';
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

  async query(filter: StatusFilter = {}): Promise<Availability[]> {
    const where: RawBuilder<unknown>[] = [];
    if (filter.digest) where.push(sql`(digest = ${filter.digest} OR index_digest = ${filter.digest})`);
    if (filter.machine) where.push(sql`machine_id = ${filter.machine}`);
    if (filter.presentOnly) where.push(sql`state = 'present'`);
    const rows = await this.db.all<AvailabilityRow>(
      sql`SELECT * FROM availability ${where.length ? sql`WHERE ${sql.join(where, sql` AND `)}` : sql``} ORDER BY machine_id, digest, platform`,
    );
    // Few machines (one, or the holders of one image): look those up; many: read them all at once.
    const machineIds = new Set(rows.map((r) => r.machine_id));
    const status = machineIds.size <= STATUS_LOOKUPS_MAX ? await this.machines.statusesOf(machineIds) : await this.machines.statuses();
    return rows.map((r) => toAvailability(r, status.get(r.machine_id) ?? 'offline'));
  }

  /** The present records of `digest` (manifest or index) on `machine`. */
  presentOn(machine: string, digest: string): Promise<Availability[]> {
    return this.query({ machine, digest, presentOnly: true });
  }

  /** Notes a transfer under way, unless the machine already reports the image. */
  async markTransferring(machine: string, digest: string, platform: string, operationId: string): Promise<void> {
    if (this.frozen) return;
    await this.db.run(
      sql`INSERT INTO availability (machine_id, digest, platform, state, operation_id, updated_at) VALUES (${machine}, ${digest}, ${platform}, 'transferring', ${operationId}, ${nowIso()})
          ON CONFLICT(machine_id, digest, platform) DO UPDATE SET state = 'transferring', operation_id = excluded.operation_id,
            failure = NULL, updated_at = excluded.updated_at WHERE availability.state != 'present'`,
    );
  }

  async markFailed(machine: string, digest: string, platform: string, operationId: string, failure: Failure): Promise<void> {
    if (this.frozen) return;
    await this.db.run(
      sql`INSERT INTO availability (machine_id, digest, platform, state, operation_id, failure, updated_at)
          VALUES (${machine}, ${digest}, ${platform}, 'failed', ${operationId}, ${JSON.stringify(failure)}, ${nowIso()})
          ON CONFLICT(machine_id, digest, platform) DO UPDATE SET state = 'failed', operation_id = excluded.operation_id,
            failure = excluded.failure, updated_at = excluded.updated_at WHERE availability.state != 'present'`,
    );
  }

  /** A transfer's own report that the image is in (the inventory delta may lag it by a few ms). */
  async markPresent(
    machine: string,
    item: { digest: string; platform: string; config_digest: string; size_bytes: number; references: string[]; index_digest?: string | undefined },
  ): Promise<void> {
    if (this.frozen) return;
    const now = nowIso();
    // The common case, one statement: no present record yet (none, or the transfer's own), so no tags to keep.
    const written = await this.db.get(
      sql`INSERT INTO availability (machine_id, digest, platform, index_digest, config_digest, refs, size_bytes, state, updated_at)
          VALUES (${machine}, ${item.digest}, ${item.platform}, ${item.index_digest ?? null}, ${item.config_digest}, ${JSON.stringify([...new Set(item.references)].sort())}, ${item.size_bytes}, 'present', ${now})
          ON CONFLICT(machine_id, digest, platform) DO UPDATE SET state = 'present', operation_id = NULL, failure = NULL,
            index_digest = COALESCE(availability.index_digest, excluded.index_digest), config_digest = excluded.config_digest,
            size_bytes = excluded.size_bytes, refs = excluded.refs, updated_at = excluded.updated_at
          WHERE availability.state != 'present' RETURNING 1 AS written`,
    );
    if (written) return;
    await this.db.transaction(async (tx) => {
      // The row is read and rewritten in one transaction (locked on PostgreSQL): a concurrent report's tags are not lost.
      const refs = JSON.stringify(await mergedRefs(tx, machine, item.digest, item.platform, item.references));
      const now = nowIso();
      await tx.run(
        sql`INSERT INTO availability (machine_id, digest, platform, index_digest, config_digest, refs, size_bytes, state, updated_at)
            VALUES (${machine}, ${item.digest}, ${item.platform}, ${item.index_digest ?? null}, ${item.config_digest}, ${refs}, ${item.size_bytes}, 'present', ${now})
            ON CONFLICT(machine_id, digest, platform) DO UPDATE SET state = 'present', operation_id = NULL, failure = NULL,
              index_digest = COALESCE(availability.index_digest, excluded.index_digest), config_digest = excluded.config_digest,
              size_bytes = excluded.size_bytes, refs = excluded.refs, updated_at = excluded.updated_at`,
      );
    });
  }

  /** An unload's own report that the image is gone (the agent's inventory delta may lag it). */
  async markAbsent(machine: string, digest: string, platform: string): Promise<void> {
    await this.db.run(sql`DELETE FROM availability WHERE machine_id = ${machine} AND digest = ${digest} AND platform = ${platform}`);
  }

  /** An unload's own report that one tag of an image is gone from a machine that keeps its other tags. */
  async dropReference(machine: string, digest: string, platform: string, reference: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      const row = await tx.get<{ refs: string }>(
        sql`SELECT refs FROM availability WHERE machine_id = ${machine} AND digest = ${digest} AND platform = ${platform}${tx.forUpdate}`,
      );
      if (!row) return;
      const refs = (JSON.parse(row.refs) as string[]).filter((r) => r !== reference);
      await tx.run(
        sql`UPDATE availability SET refs = ${JSON.stringify(refs)}, updated_at = ${nowIso()} WHERE machine_id = ${machine} AND digest = ${digest} AND platform = ${platform}`,
      );
    });
  }

  /** Drops a transfer record that ended without the image (e.g. the operation was abandoned). */
  async clearTransfer(machine: string, digest: string, platform: string): Promise<void> {
    if (this.frozen) return;
    await this.db.run(
      sql`DELETE FROM availability WHERE machine_id = ${machine} AND digest = ${digest} AND platform = ${platform} AND state = 'transferring'`,
    );
  }
}

/** The references a present record already lists plus `added`: an agent adds tags, it does not drop them here. */
async function mergedRefs(tx: Db, machine: string, digest: string, platform: string, added: readonly string[]): Promise<string[]> {
  const row = await tx.get<{ refs: string; state: string }>(
    sql`SELECT refs, state FROM availability WHERE machine_id = ${machine} AND digest = ${digest} AND platform = ${platform}${tx.forUpdate}`,
  );
  const existing = row?.state === 'present' ? (JSON.parse(row.refs) as string[]) : [];
  return [...new Set([...existing, ...added])].sort();
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
    size_bytes: Number(r.size_bytes),
    presence,
    machine_status: machineStatus,
    updated_at: r.updated_at,
  };
}
