import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentsClient } from '../../src/control/agents-client.js';
import { Revocations } from '../../src/control/auth/revocations.js';
import { type Db, openDatabase } from '../../src/control/db/database.js';
import { UploadWaiters } from '../../src/control/operations/push.js';
import type { OperationRunner } from '../../src/control/operations/runner.js';
import { OperationStore } from '../../src/control/operations/store.js';
import { PostgresEventBus, type ReplicaEvent } from '../../src/control/replicas/event-bus.js';
import { relayReplicaEvents } from '../../src/control/replicas/relay.js';
import type { Operation } from '../../src/control/wire.js';
import { until } from '../harness/cluster.js';
import { freshDatabase } from '../harness/postgres.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The replicas' event bus on a real PostgreSQL, when a replica's listening connection is cut (a database
 * restart, a proxy, an idle-connection killer): what was notified while it was away is lost, so once it
 * listens again the replica is told to re-read (resync), and an SSE stream on it whose operation ended in
 * the meantime still gets the end.
 */

const log = pino({ level: 'silent' });
let url: string;
let db: Db;
let admin: pg.Client;
const buses: PostgresEventBus[] = [];

beforeAll(async () => {
  url = await freshDatabase();
  db = await openDatabase(url, { dataDir: await tmpDir('stowage-bus-') });
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
}, 120_000);

afterAll(async () => {
  for (const bus of buses) await bus.close();
  await admin?.end();
  await db?.close();
});

async function openBus(replica: string, events: ReplicaEvent[] = []): Promise<PostgresEventBus> {
  const bus = await PostgresEventBus.open(url, db, replica, log);
  buses.push(bus);
  bus.onRemote = (e) => events.push(e);
  return bus;
}

/** Cuts the replica's listening connection, as a database restart would; resolves once it is gone. */
async function cutListener(replica: string): Promise<void> {
  const name = `stowage-events ${replica}`;
  const { rowCount } = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [name]);
  expect(rowCount).toBe(1);
  await until('the listener to be gone', async () => ((await admin.query('SELECT 1 FROM pg_stat_activity WHERE application_name = $1', [name])).rowCount === 0 ? true : undefined));
}

describe('the replicas event bus', () => {
  it('tells a replica whose listener was cut to resync once it listens again, and delivers again from then on', async () => {
    const fromB: ReplicaEvent[] = [];
    const a = await openBus('bus-a');
    await openBus('bus-b', fromB);
    a.publish({ kind: 'operation', id: 'op-before' });
    await until('the first event', async () => (fromB.length > 0 ? true : undefined));
    expect(fromB).toEqual([{ kind: 'operation', id: 'op-before' }]);

    const cutAt = Date.now();
    await cutListener('bus-b');
    await until('b to resync', async () => fromB.find((e) => e.kind === 'resync'));
    const resync = fromB.find((e) => e.kind === 'resync') as Extract<ReplicaEvent, { kind: 'resync' }>;
    // It looks back from before the cut (clocks of other replicas may run behind).
    expect(Date.parse(resync.since)).toBeLessThan(cutAt);

    a.publish({ kind: 'operation', id: 'op-after' });
    await until('the event after the resync', async () => (fromB.some((e) => e.kind === 'operation' && e.id === 'op-after') ? true : undefined));
  }, 120_000);

  it('ends an SSE-like listener on a replica whose listener was cut while another replica ended the operation', async () => {
    // Replica A records; replica B has a stream following the operation (a listener of its store's events).
    const storeA = new OperationStore(db);
    const storeB = new OperationStore(db);
    const busA = await openBus('relay-a');
    const busB = await openBus('relay-b');
    const runner = { runningHereEndedElsewhere: async () => [], cancelledElsewhere: () => {} } as unknown as OperationRunner;
    const revocations = new Revocations(db, {} as AgentsClient, async () => [], log, 60_000);
    relayReplicaEvents(busA, { operations: storeA, runner, uploads: new UploadWaiters(), revocations, log });
    relayReplicaEvents(busB, { operations: storeB, runner, uploads: new UploadWaiters(), revocations, log });
    const seenOnB: Operation[] = [];
    storeB.events.on('changed', (op: Operation) => seenOnB.push(op));

    const op = await storeA.create({ kind: 'rescan', actor: 'u', artifact: { digest: null, reference: 'r', platform: null, size_bytes: null }, targets: [] });
    await until('B to hear of it', async () => (seenOnB.some((o) => o.id === op.id) ? true : undefined));

    await cutListener('relay-b');
    await storeA.finish(op.id, { status: 'succeeded' });
    // Notified while B was not listening: B hears of the end only through its resync.
    const ended = await until('B to see the end', async () => seenOnB.find((o) => o.id === op.id && o.status === 'succeeded'));
    expect(ended.finished_at).not.toBeNull();
  }, 120_000);
});
