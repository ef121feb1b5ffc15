import { ulid } from 'ulid';
import { StowageError, isStorageFull } from '../errors.js';
import { SecretBox } from './auth/secret-box.js';
import { type Db, nowIso, registerMigrations, secretBox } from './db/database.js';
import { prepared } from './db/statements.js';
import { newSecret, secretsEqual } from './peer-token.js';
import type { InventoryDelta, InventoryItem, JoinRequest, Machine, MachineInfo } from './wire.js';

/**
 * Machines and what they hold. An agent joins with the join token and gets an ID and a secret; then it
 * sends its full inventory, deltas after every change and heartbeats. A machine not heard from for
 * `offlineAfterMs` is offline: shown so and never chosen as a source or target. After a control-plane
 * restart a machine is `unknown` until it calls in (its last word predates this process), and offline
 * if it has not within `unknownAfterRestartMs`; an unknown machine is never chosen either.
 *
 * When a machine was last heard from is also kept in memory: status follows the later of that and the
 * database's last_seen_at, so a heartbeat whose UPDATE fails (a full disk) does not take machines offline.
 */

registerMigrations([
  {
    // Machines revoked by an operator: their names may not join again (a new machine needs a new name).
    id: '0900-revoked-machines',
    sql: `CREATE TABLE revoked_machines (id TEXT PRIMARY KEY, revoked_at TEXT NOT NULL);`,
  },
]);

interface MachineRow {
  id: string;
  secret: string;
  agent_url: string;
  platform: string;
  labels: string;
  scaling_group: string | null;
  version: string | null;
  inventory_seq: number;
  joined_at: string;
  last_seen_at: string;
  disk_used_bytes: number | null;
  image_count?: number;
}

export interface MachineRecord extends Machine {
  secret: string;
  inventory_seq: number;
}

/** How often work resumed after a restart looks again whether an unknown machine has called in. */
const KNOWN_POLL_MS = 250;

export class Machines {
  /** Machine secrets opened once per sealed value (a heartbeat need not decrypt). */
  private readonly openedSecrets = new Map<string, { sealed: string; plain: string }>();
  /** When this control plane started listening: it cannot have heard from anyone before. */
  private upSince = Date.now();
  /** When each machine last called in (epoch ms), whether or not the database could record it. */
  private readonly heardAt = new Map<string, number>();

  constructor(
    private readonly db: Db,
    readonly offlineAfterMs: number,
    readonly unknownAfterRestartMs: number = offlineAfterMs,
  ) {
    this.sealPlainSecrets();
  }

  /** Machine secrets are stored sealed (see SecretBox); rows written before that are sealed once. */
  private sealPlainSecrets(): void {
    const box = secretBox(this.db);
    const rows = prepared(this.db, 'SELECT id, secret FROM machines').all() as Array<{ id: string; secret: string }>;
    const plain = rows.filter((r) => !SecretBox.isSealed(r.secret));
    if (plain.length === 0) return;
    const update = prepared(this.db, 'UPDATE machines SET secret = ? WHERE id = ?');
    this.db.transaction(() => {
      for (const r of plain) update.run(box.seal(r.secret, machinePurpose(r.id)), r.id);
    })();
    // secure_delete zeroed the old row contents; this drops the WAL pages that still held them.
    this.db.pragma('wal_checkpoint(TRUNCATE)');
  }

  join(req: JoinRequest): { machine: MachineRecord; secret: string } {
    const id = req.name ?? `m-${ulid().toLowerCase().slice(-10)}`;
    if (this.db.prepare('SELECT 1 FROM revoked_machines WHERE id = ?').get(id)) {
      throw new StowageError('FORBIDDEN', `machine "${id}" was revoked and may not join again under that name`, { details: { machine_id: id } });
    }
    const secret = newSecret('sms_');
    const now = nowIso();
    this.db.transaction(() => {
      // Joining again under a taken name takes it over (the join token is the authority): the old secret dies.
      prepared(this.db,
          `INSERT INTO machines (id, secret, agent_url, platform, labels, scaling_group, version, inventory_seq, joined_at, last_seen_at)
           VALUES (@id, @secret, @agent_url, @platform, @labels, @scaling_group, @version, 0, @now, @now)
           ON CONFLICT(id) DO UPDATE SET secret = @secret, agent_url = @agent_url, platform = @platform, labels = @labels,
             scaling_group = @scaling_group, version = @version, last_seen_at = @now`,
        )
        .run({
          id,
          secret: secretBox(this.db).seal(secret, machinePurpose(id)),
          agent_url: req.agent_url,
          platform: req.platform,
          labels: JSON.stringify(req.labels ?? {}),
          scaling_group: req.scaling_group ?? null,
          version: req.version ?? null,
          now,
        });
      this.replaceInventory(id, req.inventory_seq, req.inventory);
    })();
    return { machine: this.require(id), secret };
  }

  /** The machine whose secret this is, or undefined (constant-time compare). */
  authenticate(id: string, secret: string | undefined): MachineRecord | undefined {
    return this.hasSecret(id, secret) ? this.get(id) : undefined;
  }

  /**
   * Whether `secret` is the machine's (constant-time compare), reading only its sealed secret: what every
   * heartbeat and inventory report checks. The opened secret is kept while the sealed one is unchanged.
   */
  hasSecret(id: string, secret: string | undefined): boolean {
    if (!secret) return false;
    const row = prepared(this.db, 'SELECT secret FROM machines WHERE id = ?').get(id) as { secret: string } | undefined;
    if (!row) return false;
    return secretsEqual(secret, this.openSecret(id, row.secret));
  }

  /** The machine's secret, opened once per sealed value. */
  private openSecret(id: string, sealed: string): string {
    let opened = this.openedSecrets.get(id);
    if (opened?.sealed !== sealed) {
      opened = { sealed, plain: secretBox(this.db).open(sealed, machinePurpose(id)) };
      this.openedSecrets.set(id, opened);
    }
    return opened.plain;
  }

  /** Called once the API listens: machines get their whole window to call in from then, however long startup took. */
  listening(): void {
    this.upSince = Date.now();
  }

  get(id: string): MachineRecord | undefined {
    const row = prepared(this.db, `SELECT m.*, (SELECT COUNT(*) FROM availability a WHERE a.machine_id = m.id AND a.state = 'present') AS image_count FROM machines m WHERE id = ?`)
      .get(id) as MachineRow | undefined;
    return row ? this.toRecord(row) : undefined;
  }

  require(id: string): MachineRecord {
    const m = this.get(id);
    if (!m) throw new StowageError('MACHINE_NOT_FOUND', `no machine "${id}"`, { details: { machine_id: id } });
    return m;
  }

  /** The machine, which must be online (a source or a target of a transfer). */
  requireOnline(id: string): MachineRecord {
    const m = this.require(id);
    if (m.status !== 'online') {
      const why = m.status === 'unknown' ? 'has not been heard from since the control plane restarted' : 'is offline';
      throw new StowageError('MACHINE_OFFLINE', `machine "${id}" ${why} (last seen ${m.last_seen_at})`, {
        details: { machine_id: id, status: m.status },
      });
    }
    return m;
  }

  /**
   * requireOnline for work a restart interrupted: while the machine is `unknown` it waits for it to call
   * in (or for the grace period to end, when it is offline) instead of failing a machine that is alive.
   */
  async requireOnlineOnceKnown(id: string, signal?: AbortSignal): Promise<MachineRecord> {
    while (this.get(id)?.status === 'unknown' && !signal?.aborted) await new Promise((resolve) => setTimeout(resolve, KNOWN_POLL_MS));
    return this.requireOnline(id);
  }

  list(): MachineRecord[] {
    const rows = prepared(this.db, `SELECT m.*, (SELECT COUNT(*) FROM availability a WHERE a.machine_id = m.id AND a.state = 'present') AS image_count FROM machines m ORDER BY id`)
      .all() as MachineRow[];
    return rows.map((r) => this.toRecord(r));
  }

  /**
   * A heartbeat: one UPDATE (what the agent says it is, and that it was heard from now), answering the
   * inventory seq the control plane holds. With 1,000 machines every 5 s this is the control plane's
   * steadiest load, so it reads nothing first.
   */
  heartbeat(id: string, info: Partial<MachineInfo> & { disk_used_bytes?: number }): { inventory_seq: number } {
    // An agent sends all it is in each heartbeat: a scaling group it no longer names is one it left.
    const full = info.agent_url !== undefined;
    let row: { inventory_seq: number } | undefined;
    try {
      // all(), not get(): the statement must run to its end, where the write commits and a failure shows.
      [row] = prepared(
        this.db,
        `UPDATE machines SET last_seen_at = @now, agent_url = COALESCE(@agent_url, agent_url), platform = COALESCE(@platform, platform),
           labels = COALESCE(@labels, labels), scaling_group = CASE WHEN @full THEN @scaling_group ELSE scaling_group END,
           version = CASE WHEN @full THEN @version ELSE version END, disk_used_bytes = COALESCE(@disk_used_bytes, disk_used_bytes)
         WHERE id = @id RETURNING inventory_seq`,
      ).all({
        id,
        now: nowIso(),
        agent_url: info.agent_url ?? null,
        platform: info.platform ?? null,
        labels: info.labels === undefined ? null : JSON.stringify(info.labels),
        full: full ? 1 : 0,
        scaling_group: info.scaling_group ?? null,
        version: info.version ?? null,
        disk_used_bytes: info.disk_used_bytes ?? null,
      }) as Array<{ inventory_seq: number }>;
    } catch (err) {
      // The machine is alive whether or not a full disk let us write it down: heardAt keeps it online.
      if (!isStorageFull(err)) throw err;
      row = prepared(this.db, 'SELECT inventory_seq FROM machines WHERE id = ?').get(id) as { inventory_seq: number } | undefined;
      if (row) this.onWriteLost?.(err);
    }
    if (!row) throw new StowageError('MACHINE_NOT_FOUND', `no machine "${id}"`, { details: { machine_id: id } });
    this.heard(id);
    return row;
  }

  /** Told of a heartbeat the database could not record (a full disk), e.g. to log it. */
  onWriteLost: ((err: unknown) => void) | undefined;

  private heard(id: string): void {
    this.heardAt.set(id, Date.now());
  }

  /**
   * Revokes a machine: forgets it, its secret and what it held, and refuses its name at join from now on;
   * MACHINE_NOT_FOUND when there is none.
   */
  revoke(id: string): void {
    this.require(id);
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM machines WHERE id = ?').run(id);
      this.db.prepare('INSERT OR REPLACE INTO revoked_machines (id, revoked_at) VALUES (?, ?)').run(id, nowIso());
    })();
    this.heardAt.delete(id);
  }

  /** Replaces what the control plane believes the machine holds (present rows only; transfers in flight stay). */
  replaceInventory(id: string, seq: number, items: readonly InventoryItem[]): void {
    this.heard(id);
    this.db.transaction(() => {
      prepared(this.db, `DELETE FROM availability WHERE machine_id = ? AND state = 'present'`).run(id);
      const upsert = this.upsertStatement();
      const now = nowIso();
      for (const item of items) upsert.run(row(id, item, now));
      prepared(this.db, 'UPDATE machines SET inventory_seq = ?, last_seen_at = ? WHERE id = ?').run(seq, now, id);
    })();
  }

  /** Applies a delta; INVENTORY_RESYNC when it does not follow what we hold (the agent then sends it all). */
  applyDelta(id: string, delta: InventoryDelta): void {
    this.heard(id);
    this.db.transaction(() => {
      const m = this.require(id);
      if (m.inventory_seq !== delta.base_seq) {
        throw new StowageError('INVENTORY_RESYNC', `inventory of ${id} is at ${m.inventory_seq}, not ${delta.base_seq}: send it whole`, {
          details: { seq: m.inventory_seq },
        });
      }
      const now = nowIso();
      const remove = prepared(this.db, `DELETE FROM availability WHERE machine_id = ? AND digest = ? AND state = 'present'`);
      for (const digest of delta.removed) remove.run(id, digest);
      const upsert = this.upsertStatement();
      for (const item of delta.upserted) upsert.run(row(id, item, now));
      prepared(this.db, 'UPDATE machines SET inventory_seq = ?, last_seen_at = ? WHERE id = ?').run(delta.seq, now, id);
    })();
  }

  private upsertStatement() {
    // A reported image wins over a transfer record of the same image: the agent is the authority.
    return prepared(
      this.db,
      `INSERT INTO availability (machine_id, digest, platform, index_digest, config_digest, refs, size_bytes, layers, state, operation_id, failure, updated_at)
       VALUES (@machine_id, @digest, @platform, @index_digest, @config_digest, @refs, @size_bytes, @layers, 'present', NULL, NULL, @updated_at)
       ON CONFLICT(machine_id, digest, platform) DO UPDATE SET index_digest = @index_digest, config_digest = @config_digest, refs = @refs,
         size_bytes = @size_bytes, layers = COALESCE(@layers, availability.layers), state = 'present', operation_id = NULL, failure = NULL,
         updated_at = @updated_at`,
    );
  }

  /** Online, offline or unknown, by machine ID: what availability records show, without list()'s image counts. */
  statuses(): Map<string, Machine['status']> {
    const rows = prepared(this.db, 'SELECT id, last_seen_at FROM machines').all() as Array<{ id: string; last_seen_at: string }>;
    return new Map(rows.map((r) => [r.id, this.statusOf(this.lastSeen(r.id, r.last_seen_at))]));
  }

  /**
   * The statuses of some machines: one lookup each, where statuses() reads every machine (a status query
   * or a distribute step names a few machines of a large fleet).
   */
  statusesOf(ids: Iterable<string>): Map<string, Machine['status']> {
    const lookup = prepared(this.db, 'SELECT last_seen_at FROM machines WHERE id = ?');
    const out = new Map<string, Machine['status']>();
    for (const id of ids) {
      if (out.has(id)) continue;
      const row = lookup.get(id) as { last_seen_at: string } | undefined;
      if (row) out.set(id, this.statusOf(this.lastSeen(id, row.last_seen_at)));
    }
    return out;
  }

  /** The later of the recorded last_seen_at and when this process last heard from the machine. */
  private lastSeen(id: string, recorded: string): string {
    const heard = this.heardAt.get(id);
    return heard !== undefined && heard > Date.parse(recorded) ? new Date(heard).toISOString() : recorded;
  }

  private statusOf(lastSeenAt: string): Machine['status'] {
    const lastSeen = Date.parse(lastSeenAt);
    const now = Date.now();
    // Not heard from since this process started: maybe alive, maybe not. It gets the grace period to call in.
    if (lastSeen < this.upSince) return now - this.upSince <= this.unknownAfterRestartMs ? 'unknown' : 'offline';
    return now - lastSeen <= this.offlineAfterMs ? 'online' : 'offline';
  }

  private toRecord(r: MachineRow): MachineRecord {
    const lastSeenAt = this.lastSeen(r.id, r.last_seen_at);
    return {
      id: r.id,
      secret: this.openSecret(r.id, r.secret),
      agent_url: r.agent_url,
      platform: r.platform,
      labels: JSON.parse(r.labels) as Record<string, string>,
      scaling_group: r.scaling_group,
      status: this.statusOf(lastSeenAt),
      last_seen_at: lastSeenAt,
      joined_at: r.joined_at,
      version: r.version,
      image_count: r.image_count ?? 0,
      disk_used_bytes: r.disk_used_bytes ?? null,
      inventory_seq: r.inventory_seq,
    };
  }
}

function machinePurpose(id: string): string {
  return `machine:${id}`;
}

function row(machineId: string, item: InventoryItem, now: string) {
  return {
    machine_id: machineId,
    digest: item.digest,
    platform: item.platform,
    index_digest: item.index_digest ?? null,
    config_digest: item.config_digest,
    refs: JSON.stringify(item.references),
    size_bytes: item.size_bytes,
    layers: item.layers ? JSON.stringify(item.layers) : null,
    updated_at: now,
  };
}

/** The public shape (no secret). */
export function publicMachine(m: MachineRecord): Machine {
  const { secret: _secret, inventory_seq: _seq, ...rest } = m;
  return rest;
}
