import { sql } from 'kysely';
import { ulid } from 'ulid';
import { StowageError, isStorageFull } from '../errors.js';
import { SecretBox } from './auth/secret-box.js';
import { type Db, nowIso, registerMigrations, secretBox } from './db/database.js';
import { inList } from './db/in-list.js';
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

type HeartbeatInfo = Partial<MachineInfo> & { disk_used_bytes?: number };

interface PendingBeat {
  id: string;
  info: HeartbeatInfo;
  sealed: string | undefined;
  resolve: (row: { inventory_seq: number } | undefined) => void;
  reject: (err: unknown) => void;
}

/**
 * How long a heartbeat waits for others to be written with it (PostgreSQL): 1,000 machines every 5 s send
 * 200 a second, written by ~20 statements a second instead of 200 (a statement's round trip costs the
 * control plane more CPU than the heartbeat's own HTTP request). An agent waits at most this much longer
 * for its answer: nothing next to a 5 s heartbeat interval.
 */
const HEARTBEAT_BATCH_MS = 50;
/** A batch this large is written at once, whatever the wait. */
const HEARTBEAT_BATCH_MAX = 500;

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
  ) {}

  /** Machine secrets are stored sealed (see SecretBox); rows written before that are sealed once (run at start). */
  async sealPlainSecrets(): Promise<void> {
    const box = secretBox(this.db);
    const rows = await this.db.all<{ id: string; secret: string }>(sql`SELECT id, secret FROM machines`);
    const plain = rows.filter((r) => !SecretBox.isSealed(r.secret));
    if (plain.length === 0) return;
    await this.db.transaction(async (tx) => {
      for (const r of plain) await tx.run(sql`UPDATE machines SET secret = ${box.seal(r.secret, machinePurpose(r.id))} WHERE id = ${r.id}`);
    });
    // secure_delete zeroed the old row contents; this drops the WAL pages that still held them.
    if (this.db.dialect === 'sqlite') await this.db.all(sql`PRAGMA wal_checkpoint(TRUNCATE)`);
  }

  async join(req: JoinRequest): Promise<{ machine: MachineRecord; secret: string }> {
    const id = req.name ?? `m-${ulid().toLowerCase().slice(-10)}`;
    if (await this.db.get(sql`SELECT 1 FROM revoked_machines WHERE id = ${id}`)) {
      throw new StowageError('FORBIDDEN', `machine "${id}" was revoked and may not join again under that name`, { details: { machine_id: id } });
    }
    const secret = newSecret('sms_');
    const now = nowIso();
    const sealed = secretBox(this.db).seal(secret, machinePurpose(id));
    const labels = JSON.stringify(req.labels ?? {});
    const scalingGroup = req.scaling_group ?? null;
    const version = req.version ?? null;
    this.heard(id);
    await this.db.transaction(async (tx) => {
      // Joining again under a taken name takes it over (the join token is the authority): the old secret dies.
      await tx.run(
        sql`INSERT INTO machines (id, secret, agent_url, platform, labels, scaling_group, version, inventory_seq, joined_at, last_seen_at)
            VALUES (${id}, ${sealed}, ${req.agent_url}, ${req.platform}, ${labels}, ${scalingGroup}, ${version}, 0, ${now}, ${now})
            ON CONFLICT(id) DO UPDATE SET secret = excluded.secret, agent_url = excluded.agent_url, platform = excluded.platform,
              labels = excluded.labels, scaling_group = excluded.scaling_group, version = excluded.version, last_seen_at = excluded.last_seen_at`,
      );
      await writeInventory(tx, id, req.inventory_seq, req.inventory);
    });
    return { machine: await this.require(id), secret };
  }

  /** The machine whose secret this is, or undefined (constant-time compare). */
  async authenticate(id: string, secret: string | undefined): Promise<MachineRecord | undefined> {
    return (await this.hasSecret(id, secret)) ? this.get(id) : undefined;
  }

  /**
   * Whether `secret` is the machine's (constant-time compare), reading only its sealed secret: what every
   * heartbeat and inventory report checks. The opened secret is kept while the sealed one is unchanged.
   */
  async hasSecret(id: string, secret: string | undefined): Promise<boolean> {
    if (!secret) return false;
    const row = await this.db.get<{ secret: string }>(sql`SELECT secret FROM machines WHERE id = ${id}`);
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

  async get(id: string): Promise<MachineRecord | undefined> {
    const row = await this.db.get<MachineRow>(
      sql`SELECT m.*, (SELECT COUNT(*) FROM availability a WHERE a.machine_id = m.id AND a.state = 'present') AS image_count FROM machines m WHERE id = ${id}`,
    );
    return row ? this.toRecord(row) : undefined;
  }

  /** The machines of `ids` that exist, in that order: one query (a distribute target's peers). */
  async getMany(ids: readonly string[]): Promise<MachineRecord[]> {
    if (ids.length === 0) return [];
    const rows = await this.db.all<MachineRow>(
      sql`SELECT m.*, (SELECT COUNT(*) FROM availability a WHERE a.machine_id = m.id AND a.state = 'present') AS image_count FROM machines m WHERE id IN ${inList(ids)}`,
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    return ids.flatMap((id) => {
      const row = byId.get(id);
      return row ? [this.toRecord(row)] : [];
    });
  }

  async require(id: string): Promise<MachineRecord> {
    const m = await this.get(id);
    if (!m) throw new StowageError('MACHINE_NOT_FOUND', `no machine "${id}"`, { details: { machine_id: id } });
    return m;
  }

  /** The machine, which must be online (a source or a target of a transfer). */
  async requireOnline(id: string): Promise<MachineRecord> {
    const m = await this.require(id);
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
    while ((await this.get(id))?.status === 'unknown' && !signal?.aborted) await new Promise((resolve) => setTimeout(resolve, KNOWN_POLL_MS));
    return this.requireOnline(id);
  }

  async list(): Promise<MachineRecord[]> {
    const rows = await this.db.all<MachineRow>(
      sql`SELECT m.*, (SELECT COUNT(*) FROM availability a WHERE a.machine_id = m.id AND a.state = 'present') AS image_count FROM machines m ORDER BY id`,
    );
    return rows.map((r) => this.toRecord(r));
  }

  /**
   * The sealed secret this process verified `secret` against before (constant-time compare), if any: a
   * heartbeat under it is written with `WHERE secret = <that sealed value>`, one statement, and a machine
   * revoked or re-joined since (by any replica: the row is gone or its secret changed) matches nothing.
   */
  verifiedSecret(id: string, secret: string | undefined): string | undefined {
    const opened = this.openedSecrets.get(id);
    return secret && opened && secretsEqual(secret, opened.plain) ? opened.sealed : undefined;
  }

  /**
   * Records a heartbeat: what the agent says it is, and that it was heard from now, answering the inventory
   * seq the control plane holds. With 1,000 machines every 5 s this is the control plane's steadiest load,
   * so it reads nothing first, and on PostgreSQL the heartbeats of HEARTBEAT_BATCH_MS are one UPDATE. With
   * `sealed` (see verifiedSecret) only while the machine still has that secret: undefined when it does not
   * (the caller authenticates the request afresh); without, MACHINE_NOT_FOUND.
   */
  heartbeat(id: string, info: HeartbeatInfo, sealed?: string): Promise<{ inventory_seq: number } | undefined> {
    if (this.db.dialect !== 'postgres') return this.writeHeartbeat(id, info, sealed);
    return new Promise((resolve, reject) => {
      this.beats.push({ id, info, sealed, resolve, reject });
      if (this.beats.length >= HEARTBEAT_BATCH_MAX) this.flushHeartbeats();
      else this.beatsTimer ??= setTimeout(() => this.flushHeartbeats(), HEARTBEAT_BATCH_MS);
    });
  }

  /** Heartbeats waiting to be written together (PostgreSQL), and the timer that writes them. */
  private beats: PendingBeat[] = [];
  private beatsTimer: NodeJS.Timeout | undefined;

  /**
   * Writes the waiting heartbeats with one UPDATE … FROM unnest(…) (each machine once: a repeat waits for
   * the next batch), each under its own secret condition as writeHeartbeat does. Should the batch fail,
   * each is written on its own (a full disk, a bad value: only that heartbeat sees its error) and
   * onBatchFailed is told.
   */
  private flushHeartbeats(): void {
    clearTimeout(this.beatsTimer);
    this.beatsTimer = undefined;
    const batch: PendingBeat[] = [];
    const later: PendingBeat[] = [];
    const ids = new Set<string>();
    for (const b of this.beats) {
      (ids.has(b.id) ? later : batch).push(b);
      ids.add(b.id);
    }
    this.beats = later;
    if (later.length > 0) this.beatsTimer = setTimeout(() => this.flushHeartbeats(), HEARTBEAT_BATCH_MS);
    // Alone in its batch (a small fleet): the plain UPDATE costs less than unnest's arrays.
    const only = batch.length === 1 ? batch[0] : undefined;
    if (only) {
      this.writeHeartbeat(only.id, only.info, only.sealed).then(only.resolve, only.reject);
      return;
    }
    const col = <T>(f: (b: PendingBeat) => T): T[] => batch.map(f);
    const full = (b: PendingBeat): boolean => b.info.agent_url !== undefined;
    const written = this.db.all<{ id: string; inventory_seq: number }>(
      sql`UPDATE machines AS m SET last_seen_at = ${nowIso()}, agent_url = COALESCE(v.agent_url, m.agent_url), platform = COALESCE(v.platform, m.platform),
            labels = COALESCE(v.labels, m.labels),
            scaling_group = CASE WHEN v.whole = 1 THEN v.scaling_group ELSE m.scaling_group END,
            version = CASE WHEN v.whole = 1 THEN v.version ELSE m.version END,
            disk_used_bytes = COALESCE(v.disk_used_bytes, m.disk_used_bytes)
          FROM unnest(${col((b) => b.id)}::text[], ${col((b) => b.info.agent_url ?? null)}::text[], ${col((b) => b.info.platform ?? null)}::text[],
            ${col((b) => (b.info.labels === undefined ? null : JSON.stringify(b.info.labels)))}::text[], ${col((b) => (full(b) ? (b.info.scaling_group ?? null) : null))}::text[],
            ${col((b) => (full(b) ? (b.info.version ?? null) : null))}::text[], ${col((b) => (full(b) ? 1 : 0))}::int[],
            ${col((b) => b.info.disk_used_bytes ?? null)}::bigint[], ${col((b) => b.sealed ?? null)}::text[])
            AS v(id, agent_url, platform, labels, scaling_group, version, whole, disk_used_bytes, sealed)
          WHERE m.id = v.id AND (v.sealed IS NULL OR m.secret = v.sealed) RETURNING m.id, m.inventory_seq`,
    );
    written.then(
      (rows) => {
        const seq = new Map(rows.map((r) => [r.id, r.inventory_seq]));
        for (const b of batch) {
          const inventory_seq = seq.get(b.id);
          if (inventory_seq !== undefined) {
            this.heard(b.id);
            b.resolve({ inventory_seq });
          } else if (b.sealed !== undefined) b.resolve(undefined);
          else b.reject(new StowageError('MACHINE_NOT_FOUND', `no machine "${b.id}"`, { details: { machine_id: b.id } }));
        }
      },
      (err: unknown) => {
        this.onBatchFailed?.(err);
        for (const b of batch) this.writeHeartbeat(b.id, b.info, b.sealed).then(b.resolve, b.reject);
      },
    );
  }

  private async writeHeartbeat(id: string, info: HeartbeatInfo, sealed?: string): Promise<{ inventory_seq: number } | undefined> {
    // An agent sends all it is in each heartbeat: a scaling group it no longer names is one it left.
    const full = info.agent_url !== undefined ? 1 : 0;
    const sameSecret = sealed === undefined ? sql`` : sql` AND secret = ${sealed}`;
    let row: { inventory_seq: number } | undefined;
    try {
      row = await this.db.get<{ inventory_seq: number }>(
        sql`UPDATE machines SET last_seen_at = ${nowIso()}, agent_url = COALESCE(${info.agent_url ?? null}, agent_url),
              platform = COALESCE(${info.platform ?? null}, platform),
              labels = COALESCE(${info.labels === undefined ? null : JSON.stringify(info.labels)}, labels),
              scaling_group = CASE WHEN ${full} = 1 THEN ${info.scaling_group ?? null} ELSE scaling_group END,
              version = CASE WHEN ${full} = 1 THEN ${info.version ?? null} ELSE version END,
              disk_used_bytes = COALESCE(${info.disk_used_bytes ?? null}, disk_used_bytes)
            WHERE id = ${id}${sameSecret} RETURNING inventory_seq`,
      );
    } catch (err) {
      // The machine is alive whether or not a full disk let us write it down: heardAt keeps it online.
      if (!isStorageFull(err)) throw err;
      row = await this.db.get<{ inventory_seq: number }>(sql`SELECT inventory_seq FROM machines WHERE id = ${id}${sameSecret}`);
      if (row) this.onWriteLost?.(err);
    }
    if (!row) {
      if (sealed !== undefined) return undefined;
      throw new StowageError('MACHINE_NOT_FOUND', `no machine "${id}"`, { details: { machine_id: id } });
    }
    this.heard(id);
    return row;
  }

  /** Told of a heartbeat the database could not record (a full disk), e.g. to log it. */
  onWriteLost: ((err: unknown) => void) | undefined;

  /** Told when a batch of heartbeats could not be written together (they are then written one by one). */
  onBatchFailed: ((err: unknown) => void) | undefined;

  private heard(id: string): void {
    this.heardAt.set(id, Date.now());
  }

  /**
   * Revokes a machine: forgets it, its secret and what it held, and refuses its name at join from now on;
   * MACHINE_NOT_FOUND when there is none.
   */
  async revoke(id: string): Promise<void> {
    await this.db.transaction(async (tx) => {
      if ((await tx.run(sql`DELETE FROM machines WHERE id = ${id}`)) === 0) {
        throw new StowageError('MACHINE_NOT_FOUND', `no machine "${id}"`, { details: { machine_id: id } });
      }
      await tx.run(
        sql`INSERT INTO revoked_machines (id, revoked_at) VALUES (${id}, ${nowIso()}) ON CONFLICT(id) DO UPDATE SET revoked_at = excluded.revoked_at`,
      );
    });
    this.heardAt.delete(id);
  }

  /** Replaces what the control plane believes the machine holds (present rows only; transfers in flight stay). */
  async replaceInventory(id: string, seq: number, items: readonly InventoryItem[]): Promise<void> {
    this.heard(id);
    await this.db.transaction((tx) => writeInventory(tx, id, seq, items));
  }

  /** Applies a delta; INVENTORY_RESYNC when it does not follow what we hold (the agent then sends it all). */
  async applyDelta(id: string, delta: InventoryDelta): Promise<void> {
    this.heard(id);
    await this.db.transaction(async (tx) => {
      // Locked until the end: two deltas of one machine apply one after the other, each against the seq the other left.
      const m = await tx.get<{ inventory_seq: number }>(sql`SELECT inventory_seq FROM machines WHERE id = ${id}${tx.forUpdate}`);
      if (!m) throw new StowageError('MACHINE_NOT_FOUND', `no machine "${id}"`, { details: { machine_id: id } });
      if (m.inventory_seq !== delta.base_seq) {
        throw new StowageError('INVENTORY_RESYNC', `inventory of ${id} is at ${m.inventory_seq}, not ${delta.base_seq}: send it whole`, {
          details: { seq: m.inventory_seq },
        });
      }
      const now = nowIso();
      for (const digest of delta.removed) await tx.run(sql`DELETE FROM availability WHERE machine_id = ${id} AND digest = ${digest} AND state = 'present'`);
      for (const item of delta.upserted) await upsertPresent(tx, id, item, now);
      await tx.run(sql`UPDATE machines SET inventory_seq = ${delta.seq}, last_seen_at = ${now} WHERE id = ${id}`);
    });
  }

  /** Online, offline or unknown, by machine ID: what availability records show, without list()'s image counts. */
  async statuses(): Promise<Map<string, Machine['status']>> {
    const rows = await this.db.all<{ id: string; last_seen_at: string }>(sql`SELECT id, last_seen_at FROM machines`);
    return new Map(rows.map((r) => [r.id, this.statusOf(this.lastSeen(r.id, r.last_seen_at))]));
  }

  /**
   * The statuses of some machines: read by ID, where statuses() reads every machine (a status query or a
   * distribute step names a few machines of a large fleet).
   */
  async statusesOf(ids: Iterable<string>): Promise<Map<string, Machine['status']>> {
    const wanted = [...new Set(ids)];
    const out = new Map<string, Machine['status']>();
    for (let i = 0; i < wanted.length; i += STATUS_CHUNK) {
      const chunk = wanted.slice(i, i + STATUS_CHUNK);
      const rows = await this.db.all<{ id: string; last_seen_at: string }>(sql`SELECT id, last_seen_at FROM machines WHERE id IN ${inList(chunk)}`);
      for (const r of rows) out.set(r.id, this.statusOf(this.lastSeen(r.id, r.last_seen_at)));
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
      image_count: Number(r.image_count ?? 0),
      disk_used_bytes: r.disk_used_bytes ?? null,
      inventory_seq: r.inventory_seq,
    };
  }
}

/** Machines whose statuses one query reads. */
const STATUS_CHUNK = 256;

/** The machine's whole inventory, in the caller's transaction. */
async function writeInventory(tx: Db, id: string, seq: number, items: readonly InventoryItem[]): Promise<void> {
  // The machine's row first, as a delta takes it: locks taken in one order cannot deadlock each other.
  await tx.get(sql`SELECT id FROM machines WHERE id = ${id}${tx.forUpdate}`);
  await tx.run(sql`DELETE FROM availability WHERE machine_id = ${id} AND state = 'present'`);
  const now = nowIso();
  for (const item of items) await upsertPresent(tx, id, item, now);
  await tx.run(sql`UPDATE machines SET inventory_seq = ${seq}, last_seen_at = ${now} WHERE id = ${id}`);
}

/** A reported image wins over a transfer record of the same image: the agent is the authority. */
function upsertPresent(tx: Db, machineId: string, item: InventoryItem, now: string): Promise<number> {
  const layers = item.layers ? JSON.stringify(item.layers) : null;
  return tx.run(
    sql`INSERT INTO availability (machine_id, digest, platform, index_digest, config_digest, refs, size_bytes, layers, state, operation_id, failure, updated_at)
        VALUES (${machineId}, ${item.digest}, ${item.platform}, ${item.index_digest ?? null}, ${item.config_digest}, ${JSON.stringify(item.references)},
          ${item.size_bytes}, ${layers}, 'present', NULL, NULL, ${now})
        ON CONFLICT(machine_id, digest, platform) DO UPDATE SET index_digest = excluded.index_digest, config_digest = excluded.config_digest,
          refs = excluded.refs, size_bytes = excluded.size_bytes, layers = COALESCE(excluded.layers, availability.layers), state = 'present',
          operation_id = NULL, failure = NULL, updated_at = excluded.updated_at`,
  );
}

function machinePurpose(id: string): string {
  return `machine:${id}`;
}

/** The public shape (no secret). */
export function publicMachine(m: MachineRecord): Machine {
  const { secret: _secret, inventory_seq: _seq, ...rest } = m;
  return rest;
}
