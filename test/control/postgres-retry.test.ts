import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, openDatabase } from '../../src/control/db/database.js';
import { freshDatabase } from '../harness/postgres.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * PostgreSQL rolls back one of two transactions that wait for each other (a deadlock's victim) and expects the
 * client to run it again. The store does, so a lock-order slip costs a moment, not a failed operation. On a
 * real PostgreSQL (a server of its own outside the control-postgres project).
 */

let db: Db;

beforeAll(async () => {
  db = await openDatabase(await freshDatabase(), { dataDir: await tmpDir('stowage-pg-retry-') });
});

afterAll(async () => {
  await db.close();
});

describe('a transaction PostgreSQL picks as a deadlock victim', () => {
  it('runs again, whole: both transactions land, one after the other', async () => {
    await db.run(sql`INSERT INTO revoked_machines (id, revoked_at) VALUES ('row-a', 'before'), ('row-b', 'before')`);
    let runs = 0;
    let holding = 0;
    let bothHoldOne!: () => void;
    const barrier = new Promise<void>((resolve) => (bothHoldOne = resolve));
    // Each locks one row, waits until the other holds the other row, then wants that one: a deadlock.
    const crossing = (label: string, first: string, second: string): Promise<void> =>
      db.transaction(async (tx) => {
        runs++;
        await tx.run(sql`UPDATE revoked_machines SET revoked_at = ${label} WHERE id = ${first}`);
        if (++holding === 2) bothHoldOne();
        await barrier;
        await tx.run(sql`UPDATE revoked_machines SET revoked_at = ${label} WHERE id = ${second}`);
      });
    await Promise.all([crossing('one', 'row-a', 'row-b'), crossing('two', 'row-b', 'row-a')]);
    expect(runs).toBe(3);
    // Whole transactions: both rows carry the label of the one that committed last.
    const rows = await db.all<{ revoked_at: string }>(sql`SELECT revoked_at FROM revoked_machines WHERE id IN ('row-a', 'row-b')`);
    expect(rows).toHaveLength(2);
    expect(new Set(rows.map((r) => r.revoked_at)).size).toBe(1);
    expect(['one', 'two']).toContain(rows[0]?.revoked_at);
  });
});
