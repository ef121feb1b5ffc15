import { sql } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import type { OperationChange } from '../operations/store.js';

/**
 * What one control-plane replica tells the others, so that any replica can serve any request: changes of
 * operations (an SSE stream on replica A follows work replica B runs), a cancel (the replica running the
 * operation stops it), stowctl's upload report (the replica whose push waits for it wakes up) and token
 * revocations (every replica repeats them in its answers to agents' reports). Events carry IDs only; a
 * receiver re-reads what it needs from the database, which is the single truth.
 *
 * SQLite (one replica): nothing to tell (LocalEventBus). PostgreSQL: LISTEN/NOTIFY on one channel, one
 * dedicated connection listening per replica; a notification is delivered only once its transaction has
 * committed, so what the receiver re-reads is at least as new as the change it was told of. A replica
 * ignores its own notifications (it acted on the change already). Events sent while a listener is
 * reconnecting are lost: once it listens again, the bus tells its own replica `resync` (with the time the
 * connection was lost), and the replica re-reads what those events would have told it (relay.ts).
 */

export type ReplicaEvent =
  | OperationChange
  | { kind: 'cancel'; id: string; by: string }
  | { kind: 'upload'; id: string }
  /** A token revocation was recorded: every replica repeats it in its answers to agents' reports. */
  | { kind: 'revocations' }
  /** Never published: the listener was reconnected, and events since `since` (an ISO time) may have been missed. */
  | { kind: 'resync'; since: string };

export interface EventBus {
  /** Tells the other replicas (fire and forget: a failure is logged). */
  publish(event: ReplicaEvent): void;
  /** Called with every event another replica published. */
  onRemote: ((event: ReplicaEvent) => void) | undefined;
  close(): Promise<void>;
}

/** One replica (SQLite): there is nobody to tell. */
export class LocalEventBus implements EventBus {
  onRemote: ((event: ReplicaEvent) => void) | undefined;
  publish(): void {}
  async close(): Promise<void> {}
}

const CHANNEL = 'stowage_events';
const RECONNECT_MS = 1_000;
/**
 * How far before the lost connection a resync looks: changes are stamped with the clock of the replica
 * that made them, which may run behind this one's.
 */
const RESYNC_MARGIN_MS = 60_000;

interface Envelope {
  from: string;
  event: ReplicaEvent;
}

/** LISTEN/NOTIFY between the replicas sharing the PostgreSQL database at `url`. */
export class PostgresEventBus implements EventBus {
  onRemote: ((event: ReplicaEvent) => void) | undefined;
  private client: pg.Client | undefined;
  private closed = false;
  /** When the listener lost its connection (until it listens again). */
  private lostAt: number | undefined;
  private retry: NodeJS.Timeout | undefined;

  private constructor(
    private readonly url: string,
    private readonly db: Db,
    private readonly replica: string,
    private readonly log: Logger,
  ) {}

  /** Resolves once the listener is connected: from then on no other replica's event is missed. */
  static async open(url: string, db: Db, replica: string, log: Logger): Promise<PostgresEventBus> {
    const bus = new PostgresEventBus(url, db, replica, log);
    await bus.listen();
    return bus;
  }

  /** Events published in this turn of the event loop: sent together, one statement (see flush). */
  private pending: string[] = [];

  publish(event: ReplicaEvent): void {
    if (this.closed) return;
    const envelope: Envelope = { from: this.replica, event };
    if (this.pending.length === 0) setImmediate(() => this.flush());
    this.pending.push(JSON.stringify(envelope));
  }

  /**
   * Sends what was published since the last flush in one round trip, in order. An event repeated in the
   * batch is sent once, at its last place (PostgreSQL would drop the repeats of a transaction anyway):
   * receivers re-read what it names, so the later state is what they see either way.
   */
  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    const payloads = batch.filter((p, i) => batch.indexOf(p, i + 1) === -1);
    if (payloads.length === 0 || this.closed) return;
    this.db.run(sql`SELECT pg_notify(${CHANNEL}, payload) FROM unnest(${payloads}::text[]) AS payload`).catch((err: unknown) => {
      this.log.warn({ err, events: payloads.length }, 'telling the other replicas of changes failed');
    });
  }

  private async listen(): Promise<void> {
    // Named, so an operator (or a test) can tell each replica's listener in pg_stat_activity.
    const client = new pg.Client({ connectionString: this.url, application_name: `stowage-events ${this.replica}`.slice(0, 63) });
    const lost = (err?: Error): void => {
      if (this.client !== client) return;
      this.client = undefined;
      this.lostAt ??= Date.now();
      client.end().catch(() => undefined);
      if (this.closed) return;
      this.log.warn({ err }, `the replicas' event listener lost its connection; reconnecting`);
      this.reconnectLater();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', (msg) => {
      if (msg.channel !== CHANNEL || !msg.payload) return;
      let envelope: Envelope;
      try {
        envelope = JSON.parse(msg.payload) as Envelope;
      } catch {
        return;
      }
      if (envelope.from === this.replica) return;
      this.onRemote?.(envelope.event);
    });
    this.client = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      this.client = undefined;
      client.end().catch(() => undefined);
      throw err;
    }
    if (this.lostAt !== undefined) {
      const since = new Date(this.lostAt - RESYNC_MARGIN_MS).toISOString();
      this.lostAt = undefined;
      this.log.info({ since }, `the replicas' event listener is back; re-reading what it may have missed`);
      this.onRemote?.({ kind: 'resync', since });
    }
  }

  private reconnectLater(): void {
    this.retry = setTimeout(() => {
      this.retry = undefined;
      if (this.closed) return;
      this.listen().catch((err: unknown) => {
        this.log.warn({ err }, `reconnecting the replicas' event listener failed; trying again`);
        this.reconnectLater();
      });
    }, RECONNECT_MS);
    this.retry.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}
