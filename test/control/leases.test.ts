import { describe, expect, it } from 'vitest';
import { OperationStore } from '../../src/control/operations/store.js';
import { OperationLeases } from '../../src/control/replicas/leases.js';
import { testDatabase } from '../harness/control-db.js';

/**
 * Operation leases (replicas/leases.ts) on the real store: SQLite here, PostgreSQL in the control-postgres
 * project, where each replica is a database pool of its own, as two `stowd control` processes are.
 */

const artifact = { digest: 'sha256:' + 'a'.repeat(64), reference: null, platform: null, size_bytes: 1 };

describe('operation leases', () => {
  it('an operation belongs to the replica that created it until its lease expires; then one other replica takes it', async () => {
    const location = await testDatabase();
    const [dbA, dbB, dbC] = [await location.open(), await location.open(), await location.open()];
    try {
      // A lease far longer than this test for B and C; A's expires at once (a replica that died).
      const a = new OperationLeases(dbA, 'a', 60_000);
      const b = new OperationLeases(dbB, 'b', 60_000);
      const c = new OperationLeases(dbC, 'c', 60_000);
      const storeA = new OperationStore(dbA, () => a.newLease());
      const op = await storeA.create({ kind: 'distribute', actor: 'admin', artifact, targets: ['m1'] });

      // Held by A: nobody else may claim it, A may (again).
      expect(await b.claim(op.id)).toBe(false);
      expect(await b.claimFree()).toEqual([]);
      expect(await a.claim(op.id)).toBe(true);
      expect([...(await a.renew([op.id]))]).toEqual([op.id]);

      // A stops renewing: once expired, B and C claiming at once take it once between them.
      const dying = new OperationLeases(dbA, 'a', -1);
      expect([...(await dying.renew([op.id]))]).toEqual([op.id]);
      const [byB, byC] = await Promise.all([b.claimFree(), c.claimFree()]);
      expect([...byB, ...byC]).toEqual([op.id]);
      const winner = byB.length > 0 ? b : c;
      // A finds at its next renewal that it lost the operation.
      expect([...(await a.renew([op.id]))]).toEqual([]);
      expect([...(await winner.renew([op.id]))]).toEqual([op.id]);

      // Released (a clean shutdown), it is free at once; ended, nobody claims it.
      await winner.releaseAll();
      expect(await a.claimFree()).toEqual([op.id]);
      await storeA.finish(op.id, { status: 'succeeded' });
      await a.releaseAll();
      expect(await b.claimFree()).toEqual([]);
      expect(await b.claim(op.id)).toBe(false);
    } finally {
      await Promise.all([dbA.close(), dbB.close(), dbC.close()]);
    }
  });

  it('a start takes its own operations back at once; on SQLite every unfinished one', async () => {
    const location = await testDatabase();
    const db = await location.open();
    try {
      const other = new OperationLeases(db, 'other', 60_000);
      const mine = new OperationLeases(db, 'mine', 60_000);
      const store = new OperationStore(db, () => other.newLease());
      const theirs = await store.create({ kind: 'distribute', actor: 'admin', artifact, targets: ['m1'] });
      const ours = await new OperationStore(db, () => mine.newLease()).create({ kind: 'distribute', actor: 'admin', artifact, targets: ['m1'] });
      const expected = db.dialect === 'sqlite' ? [theirs.id, ours.id].sort() : [ours.id];
      expect(await mine.claimAtStart()).toEqual(expected);
    } finally {
      await db.close();
    }
  });
});
