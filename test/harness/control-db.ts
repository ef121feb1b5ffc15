import { join } from 'node:path';
import { type Db, openDatabase } from '../../src/control/db/database.js';
import { freshDatabase, testDatabaseIsPostgres } from './postgres.js';
import { tmpDir } from './tmp.js';

/**
 * A control-plane state store for in-process tests: a SQLite file in a temp dir, or (the control-postgres
 * project) a fresh PostgreSQL database, its secrets key in a temp dir. `open()` opens it again (a restart).
 */
export interface TestDatabase {
  location: string;
  dir: string;
  open(): Promise<Db>;
}

export async function testDatabase(prefix = 'stowage-control-'): Promise<TestDatabase> {
  const dir = await tmpDir(prefix);
  const location = testDatabaseIsPostgres() ? await freshDatabase() : join(dir, 'control.db');
  return { location, dir, open: () => openDatabase(location, { dataDir: dir }) };
}

/** A new, empty state store (see testDatabase). */
export async function freshTestDb(prefix?: string): Promise<Db> {
  return (await testDatabase(prefix)).open();
}
