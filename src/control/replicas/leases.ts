import { sql } from 'kysely';
import type { Db } from '../db/database.js';
import { inList } from '../db/in-list.js';

/**
 * Operation leases: which control-plane replica runs an operation, and until when that holds unless renewed.
 *
 * Several `stowd control` replicas may share one PostgreSQL database. An unfinished operation belongs to the
 * replica named in its `owner` until `lease_until`; the owner renews its leases on a timer (every third of
 * the lease). A replica that dies stops renewing, and once its leases have expired any other replica's claim
 * loop takes the operations over in one statement (PostgreSQL: the candidate rows are locked with FOR NO KEY UPDATE
 * SKIP LOCKED, so two replicas claiming at once take different rows, never the same) and carries them on
 * with the same resume path a restart uses (handlers are idempotent). A replica shutting down cleanly
 * releases its leases, so another takes them over at once.
 *
 * With SQLite there is one replica: the same code runs, and a start takes over every unfinished operation
 * whatever its lease says (the previous process is gone; it cannot be renewing).
 *
 * The columns (operations.owner, operations.lease_until) come with the core schema (0400-operation-leases).
 * Times are ISO-8601 text in UTC like every time in the database, so they compare as strings. A replica
 * paused past its lease (a stopped VM) finds at the next renewal that it lost the operation and stops its
 * own run of it.
 */

/** Operations one claim takes at most (the next turn takes more). */
const CLAIM_BATCH = 32;

export class OperationLeases {
  constructor(
    private readonly db: Db,
    /** This replica's name in `owner`. */
    readonly replica: string,
    readonly leaseMs: number,
  ) {}

  private until(): string {
    return new Date(Date.now() + this.leaseMs).toISOString();
  }

  /** Takes one unfinished operation for this replica when it is unowned, ours, or its lease has expired. */
  async claim(id: string): Promise<boolean> {
    const now = new Date().toISOString();
    const changed = await this.db.run(
      sql`UPDATE operations SET owner = ${this.replica}, lease_until = ${this.until()}
          WHERE id = ${id} AND status IN ('pending', 'running')
            AND (owner IS NULL OR owner = ${this.replica} OR lease_until IS NULL OR lease_until < ${now})`,
    );
    return changed > 0;
  }

  /**
   * Claims unfinished operations whose lease is free: unowned or expired, and with `mine` also this
   * replica's own (it restarted under its name), or with `all` every unfinished one. Resolves to the IDs
   * claimed, oldest first. Operations this replica holds and runs are not free to it: the claim loop must
   * not start again what runs, nor what was just created here and is about to start.
   */
  async claimFree(opts: { all?: boolean; mine?: boolean } = {}): Promise<string[]> {
    const now = new Date().toISOString();
    const mine = opts.mine ? sql`OR owner = ${this.replica}` : sql``;
    const free = opts.all ? sql`` : sql`AND (owner IS NULL ${mine} OR lease_until IS NULL OR lease_until < ${now})`;
    const skipLocked = this.db.dialect === 'postgres' ? sql` FOR NO KEY UPDATE SKIP LOCKED` : sql``;
    const rows = await this.db.all<{ id: string }>(
      sql`UPDATE operations SET owner = ${this.replica}, lease_until = ${this.until()}
          WHERE id IN (SELECT id FROM operations WHERE status IN ('pending', 'running') ${free} ORDER BY id ${opts.all ? sql`` : sql`LIMIT ${CLAIM_BATCH}`}${skipLocked})
          RETURNING id`,
    );
    return rows.map((r) => r.id).sort();
  }

  /** What a start takes over: on SQLite every unfinished operation (one replica), on PostgreSQL the free ones and its own. */
  claimAtStart(): Promise<string[]> {
    return this.claimFree(this.db.dialect === 'sqlite' ? { all: true } : { mine: true });
  }

  /** The lease an operation created here starts with (see OperationStore.create). */
  newLease(): { owner: string; lease_until: string } {
    return { owner: this.replica, lease_until: this.until() };
  }

  /** Renews this replica's leases on `ids`; resolves to those it still holds (the rest were taken over). */
  async renew(ids: readonly string[]): Promise<Set<string>> {
    const held = new Set<string>();
    for (let i = 0; i < ids.length; i += RENEW_CHUNK) {
      const chunk = ids.slice(i, i + RENEW_CHUNK);
      const rows = await this.db.all<{ id: string }>(
        sql`UPDATE operations SET lease_until = ${this.until()} WHERE owner = ${this.replica} AND id IN ${inList(chunk)} RETURNING id`,
      );
      for (const r of rows) held.add(r.id);
    }
    return held;
  }

  /** Gives up this replica's unfinished operations (a clean shutdown): another replica takes them at once. */
  async releaseAll(): Promise<void> {
    await this.db.run(sql`UPDATE operations SET owner = NULL, lease_until = NULL WHERE owner = ${this.replica} AND status IN ('pending', 'running')`);
  }
}

const RENEW_CHUNK = 256;
