import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { describe, expect, it, vi } from 'vitest';
import { authenticateApiKey, createApiKey, createUser } from '../../src/control/auth/api-keys.js';
import { parseControlConfig } from '../../src/control/config.js';
import { AvailabilityStore } from '../../src/control/availability.js';
import { Machines } from '../../src/control/machines.js';
import { OperationStore, statusFromTargets } from '../../src/control/operations/store.js';
import type { InventoryItem, JoinRequest, TargetResult } from '../../src/control/wire.js';
import { isStowageError } from '../../src/errors.js';
import { freshTestDb, testDatabase } from '../harness/control-db.js';

/** The control plane's state on a real SQLite file: keys, machines and inventories, operations. */

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const C1 = `sha256:${'c'.repeat(64)}`;

function item(digest: string, references: string[] = []): InventoryItem {
  return { digest, config_digest: C1, platform: 'linux/amd64', references, size_bytes: 10 };
}

function joinReq(name: string, inventory: InventoryItem[] = []): JoinRequest {
  return { join_token: 'x', name, agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', labels: {}, inventory, inventory_seq: 1 };
}

const freshDb = () => freshTestDb();

describe('control-plane state', () => {
  it('applies each migration once: reopening the file finds its data and applies nothing again', async () => {
    const store = await testDatabase();
    const db = await store.open();
    const user = await createUser(db, { name: 'ops', role: 'admin' });
    const applied = await db.get(sql`SELECT COUNT(*) AS n FROM schema_migrations`);
    await db.close();
    const again = await store.open();
    expect(await again.get(sql`SELECT COUNT(*) AS n FROM schema_migrations`)).toEqual(applied);
    expect(await again.get(sql`SELECT name FROM users WHERE id = ${user.userId}`)).toEqual({ name: 'ops' });
    await again.close();
  });

  it('keeps only hashes of API keys and authenticates the token alone', async () => {
    const db = await freshDb();
    const user = await createUser(db, { name: 'alice', role: 'user', domain: 'research' });
    const token = await createApiKey(db, user.userId);
    expect(token).toMatch(/^stk_/);
    const stored = (await db.all<{ key_hash: string }>(sql`SELECT key_hash FROM api_keys`)).map((r) => r.key_hash);
    expect(stored).toHaveLength(1);
    expect(stored[0]).not.toContain(token.slice(4));
    expect(await authenticateApiKey(db, token)).toMatchObject({ name: 'alice', role: 'user', domain: 'research' });
    expect(await authenticateApiKey(db, `${token}x`)).toBeUndefined();
    expect(await authenticateApiKey(db, 'not-a-key')).toBeUndefined();
    await db.close();
  });

  it('refuses an inventory delta that does not follow the last one, and applies one that does', async () => {
    const db = await freshDb();
    const machines = new Machines(db, 60_000);
    await machines.join(joinReq('m1', [item(D1, ['docker.io/library/a:1'])]));
    let caught: unknown;
    try {
      await machines.applyDelta('m1', { base_seq: 5, seq: 6, upserted: [item(D2)], removed: [] });
    } catch (err) {
      caught = err;
    }
    expect(isStowageError(caught, 'INVENTORY_RESYNC')).toBe(true);
    // Nothing of the refused delta landed.
    expect(await db.all(sql`SELECT digest FROM availability`)).toEqual([{ digest: D1 }]);

    await machines.applyDelta('m1', { base_seq: 1, seq: 2, upserted: [item(D2)], removed: [D1] });
    expect(await db.all(sql`SELECT digest FROM availability`)).toEqual([{ digest: D2 }]);
    expect((await machines.require('m1')).inventory_seq).toBe(2);
    await db.close();
  });

  it('a second join under the same name rotates the secret; the old one stops working', async () => {
    const db = await freshDb();
    const machines = new Machines(db, 60_000);
    const first = await machines.join(joinReq('m1'));
    expect(await machines.authenticate('m1', first.secret)).toBeDefined();
    const second = await machines.join(joinReq('m1'));
    expect(await machines.authenticate('m1', first.secret)).toBeUndefined();
    expect(await machines.authenticate('m1', second.secret)).toBeDefined();
    expect(await machines.authenticate('m1', undefined)).toBeUndefined();
    await db.close();
  });

  it('a machine not heard from for offlineAfterMs is offline, and a heartbeat brings it back', async () => {
    const db = await freshDb();
    // The clock is the test's: how long the machine takes to run this must not matter.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.parse('2026-01-01T00:00:00Z') });
    try {
      const machines = new Machines(db, 150);
      await machines.join(joinReq('m1'));
      expect((await machines.require('m1')).status).toBe('online');
      vi.advanceTimersByTime(151);
      expect((await machines.require('m1')).status).toBe('offline');
      await expect(machines.requireOnline('m1')).rejects.toThrow(/offline/);
      await machines.heartbeat('m1', {});
      expect((await machines.require('m1')).status).toBe('online');
    } finally {
      vi.useRealTimers();
      await db.close();
    }
  });

  it('a heartbeat updates what the agent says it is in one write, and answers the inventory seq held', async () => {
    const db = await freshDb();
    try {
      const machines = new Machines(db, 60_000);
      await machines.join({ ...joinReq('m1'), labels: { zone: 'a' }, scaling_group: 'gpu', version: '1.0' });
      // A partial heartbeat (an older agent) keeps what it does not name.
      expect(await machines.heartbeat('m1', { disk_used_bytes: 42 })).toEqual({ inventory_seq: 1 });
      expect(await machines.require('m1')).toMatchObject({ labels: { zone: 'a' }, scaling_group: 'gpu', version: '1.0', disk_used_bytes: 42 });
      // A full one replaces it all: a scaling group it no longer names is one it left.
      await machines.heartbeat('m1', { agent_url: 'http://127.0.0.1:2', platform: 'linux/arm64', labels: { zone: 'b' } });
      expect(await machines.require('m1')).toMatchObject({ agent_url: 'http://127.0.0.1:2', platform: 'linux/arm64', labels: { zone: 'b' }, scaling_group: null, version: null, disk_used_bytes: 42 });
      await expect(machines.heartbeat('nobody', {})).rejects.toThrow(/no machine "nobody"/);
      expect(await machines.hasSecret('m1', 'wrong')).toBe(false);
    } finally {
      await db.close();
    }
  });

  it('heartbeats arriving together are each written as if alone (on PostgreSQL by one statement)', async () => {
    const db = await freshDb();
    try {
      const machines = new Machines(db, 60_000);
      const batchFailures: unknown[] = [];
      machines.onBatchFailed = (err) => batchFailures.push(err);
      const m1 = await machines.join({ ...joinReq('m1'), labels: { zone: 'a' }, scaling_group: 'gpu', version: '1.0' });
      const m2 = await machines.join({ ...joinReq('m2'), scaling_group: 'cpu' });
      const m3 = await machines.join(joinReq('m3'));
      await machines.applyDelta('m2', { base_seq: 1, seq: 2, upserted: [item(D1)], removed: [] });
      // Each secret verified once, as a first heartbeat request does; then m3 joins again: its old secret dies.
      for (const [id, secret] of [['m1', m1.secret], ['m2', m2.secret], ['m3', m3.secret]] as const) expect(await machines.hasSecret(id, secret)).toBe(true);
      const sealed = (id: string, secret: string): string | undefined => machines.verifiedSecret(id, secret);
      const [s1, s2, s3] = [sealed('m1', m1.secret), sealed('m2', m2.secret), sealed('m3', m3.secret)];
      await machines.join(joinReq('m3'));

      const answers = await Promise.all([
        machines.heartbeat('m1', { agent_url: 'http://127.0.0.1:2', platform: 'linux/arm64', labels: { zone: 'b' } }, s1),
        machines.heartbeat('m2', { disk_used_bytes: 42 }, s2),
        machines.heartbeat('m3', {}, s3),
        machines.heartbeat('m1', { disk_used_bytes: 7 }, s1),
        machines.heartbeat('nobody', {}).catch((err: unknown) => err),
      ]);
      // Each its own machine's seq; the dead secret matches nothing (the route then authenticates afresh).
      expect(answers.slice(0, 4)).toEqual([{ inventory_seq: 1 }, { inventory_seq: 2 }, undefined, { inventory_seq: 1 }]);
      expect(isStowageError(answers[4], 'MACHINE_NOT_FOUND')).toBe(true);
      // m1's full heartbeat replaced all it is, its second one (written after) kept that and added the disk.
      expect(await machines.require('m1')).toMatchObject({ agent_url: 'http://127.0.0.1:2', platform: 'linux/arm64', labels: { zone: 'b' }, scaling_group: null, version: null, disk_used_bytes: 7 });
      // m2's partial heartbeat kept what it did not name.
      expect(await machines.require('m2')).toMatchObject({ agent_url: 'http://127.0.0.1:1', platform: 'linux/amd64', labels: {}, scaling_group: 'cpu', disk_used_bytes: 42 });
      expect(batchFailures).toEqual([]);
    } finally {
      await db.close();
    }
  });

  it("a transfer's report and the agent's inventory delta of the same images, at once, both land (no deadlock on PostgreSQL)", async () => {
    const db = await freshDb();
    try {
      const machines = new Machines(db, 60_000);
      const availability = new AvailabilityStore(db, machines);
      await machines.join(joinReq('m1'));
      // An index's platform manifests reported by the transfer that pulled them while the agent's delta names
      // them too, round after round: the delta locks the machine's row, each report's insert checks that row.
      let seq = 1;
      for (let round = 0; round < 20; round++) {
        const digests = [0, 1, 2].map((i) => `sha256:${String(round * 3 + i).padStart(64, 'd')}`);
        await Promise.all([
          machines.applyDelta('m1', { base_seq: seq, seq: seq + 1, upserted: digests.map((d) => item(d, ['example.test/app:1'])), removed: [] }),
          ...digests.map((d) => availability.markPresent('m1', { ...item(d, ['example.test/app:1']), references: ['example.test/app:1'] })),
        ]);
        seq += 1;
      }
      const rows = await db.all<{ n: number | string }>(sql`SELECT COUNT(*) AS n FROM availability WHERE machine_id = 'm1' AND state = 'present'`);
      expect(Number(rows[0]?.n)).toBe(60);
      expect((await machines.require('m1')).inventory_seq).toBe(21);
    } finally {
      await db.close();
    }
  });

  it('a target change emits that target alone, not the whole operation', async () => {
    const db = await freshDb();
    try {
      const ops = new OperationStore(db);
      const op = await ops.create({ kind: 'distribute', actor: 'admin', artifact: { digest: D1, reference: null, platform: null, size_bytes: 1 }, targets: ['a', 'b'] });
      const snapshots: unknown[] = [];
      const targets: Array<{ operation_id: string; target: TargetResult }> = [];
      ops.events.on('changed', (o) => snapshots.push(o));
      ops.events.on('target', (t) => targets.push(t));
      await ops.updateTarget(op.id, 'b', { status: 'running', bytesTransferred: 7, bytesTotal: 10 });
      expect(snapshots).toHaveLength(0);
      expect(targets).toMatchObject([{ operation_id: op.id, target: { machine_id: 'b', status: 'running', bytes_transferred: 7, bytes_total: 10 } }]);
      await ops.finish(op.id, { status: 'cancelled' });
      expect(snapshots).toHaveLength(1);
    } finally {
      await db.close();
    }
  });

  it('after a restart a machine is unknown until it calls in, offline if it does not within the grace period, never chosen meanwhile', async () => {
    const db = await freshDb();
    // The clock is the test's: how long the machine takes to run this must not matter.
    vi.useFakeTimers({ toFake: ['Date'], now: Date.parse('2026-01-01T00:00:00Z') });
    try {
      const before = new Machines(db, 10_000, 30_000);
      await before.join(joinReq('m1'));
      await before.join(joinReq('m2'));
      vi.advanceTimersByTime(5_000);
      // A new control-plane process on the same state, heard from by no one yet.
      const restarted = new Machines(db, 10_000, 30_000);
      restarted.listening();
      vi.advanceTimersByTime(1);
      expect((await restarted.require('m1')).status).toBe('unknown');
      expect((await restarted.statuses()).get('m1')).toBe('unknown');
      let caught: unknown;
      try {
        await restarted.requireOnline('m1');
      } catch (err) {
        caught = err;
      }
      expect(isStowageError(caught, 'MACHINE_OFFLINE')).toBe(true);
      expect((caught as Error).message).toMatch(/"m1" has not been heard from since the control plane restarted/);
      await restarted.heartbeat('m2', {});
      expect((await restarted.require('m2')).status).toBe('online');
      // Unknown for the whole grace period (longer than offlineAfterMs), offline after it.
      vi.advanceTimersByTime(29_000);
      expect((await restarted.require('m1')).status).toBe('unknown');
      vi.advanceTimersByTime(1_000);
      expect((await restarted.require('m1')).status).toBe('offline');
      await expect(restarted.requireOnline('m1')).rejects.toThrow(/"m1" is offline/);
      expect((await restarted.require('m2')).status).toBe('offline');
      await restarted.heartbeat('m1', {});
      expect((await restarted.require('m1')).status).toBe('online');
    } finally {
      vi.useRealTimers();
      await db.close();
    }
  });

  it('work resumed after a restart waits for an unknown machine to call in, and fails it MACHINE_OFFLINE once the grace period ends', async () => {
    const db = await freshDb();
    try {
      await new Machines(db, 10_000).join(joinReq('m1'));
      await new Machines(db, 10_000).join(joinReq('m2'));
      // Last heard from well before this "process" started.
      await db.run(sql`UPDATE machines SET last_seen_at = ${'2020-01-01T00:00:00.000Z'}`);
      const restarted = new Machines(db, 10_000, 120_000);
      restarted.listening();
      let settled = false;
      const waiting = restarted.requireOnlineOnceKnown('m1').finally(() => (settled = true));
      await new Promise((resolve) => setImmediate(resolve));
      expect((await restarted.require('m1')).status).toBe('unknown');
      expect(settled).toBe(false);
      await restarted.heartbeat('m1', {});
      expect((await waiting).status).toBe('online');

      // A machine that never calls in: the wait ends with the grace period, as MACHINE_OFFLINE.
      const short = new Machines(db, 10_000, 300);
      short.listening();
      await expect(short.requireOnlineOnceKnown('m2')).rejects.toThrow(/"m2" is offline/);
      // A cancelled operation stops waiting at once.
      const aborted = new Machines(db, 10_000, 120_000);
      aborted.listening();
      await expect(aborted.requireOnlineOnceKnown('m2', AbortSignal.abort())).rejects.toThrow(/has not been heard from since the control plane restarted/);
    } finally {
      await db.close();
    }
  });

  it('operations are durable: a new store on the same file lists the unfinished ones with their targets', async () => {
    const store = await testDatabase();
    const db = await store.open();
    const ops = new OperationStore(db);
    const op = await ops.create({ kind: 'distribute', actor: 'admin', artifact: { digest: D1, reference: null, platform: null, size_bytes: 1 }, targets: ['a', 'b'] });
    await ops.updateTarget(op.id, 'a', { status: 'running', bytesTransferred: 5 });
    await ops.updateTarget(op.id, 'b', { status: 'present', bytesTransferred: 9 });
    await db.close();
    const db2 = await store.open();
    const reopened = new OperationStore(db2);
    const [left] = await reopened.unfinished();
    expect(left?.id).toBe(op.id);
    expect(left?.targets.map((t) => [t.machine_id, t.status, t.bytes_transferred])).toEqual([
      ['a', 'running', 5],
      ['b', 'present', 9],
    ]);
    expect(left?.targets[1]?.finished_at).not.toBeNull();
    await db2.close();
  });

  it('derives the operation status from its targets', () => {
    const t = (status: TargetResult['status']): TargetResult => ({ machine_id: 'm', status, bytes_transferred: 0, bytes_total: null, started_at: null, finished_at: null });
    expect(statusFromTargets([t('present'), t('skipped_present')])).toBe('succeeded');
    expect(statusFromTargets([t('present'), t('failed')])).toBe('partially_failed');
    expect(statusFromTargets([t('failed'), t('failed')])).toBe('failed');
    // A target left unfinished is not a success.
    expect(statusFromTargets([t('present'), t('running')])).toBe('partially_failed');
  });

  it('accepts the control-plane configuration the README shows, and names an unknown field', async () => {
    const readme = await readFile(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
    const example = /### Control plane[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example).toBeDefined();
    const config = parseControlConfig(JSON.parse(example!));
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 5070 });
    expect(config.seed?.registries?.[0]?.name).toBe('registry.internal:5000');
    expect(() => parseControlConfig({ dataDir: '/x', offlineAfter: 5 })).toThrow(/invalid control-plane configuration: .*offlineAfter/);
  });
});
