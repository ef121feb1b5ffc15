import { join } from 'node:path';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { SecretBox } from '../auth/secret-box.js';
import { type Db, type OpenDatabaseOptions, migrations } from './database.js';
import { KyselyDb } from './kysely-db.js';
import { POSTGRES_BASELINE_COVERS, postgresMigrations } from './postgres-schema.js';

/**
 * The PostgreSQL state store: a pool of connections (a transaction holds one of them until it ends, other
 * queries run on the others), so several control-plane replicas can share one database.
 */

/** Connections per control plane: every statement of a transfer target is one round trip, so the targets run at once (16 by default) and the API each want one. */
const POOL_MAX = 20;
/** Taken while migrating: replicas starting at once apply each migration once. */
const MIGRATION_LOCK = 0x5354_4f57; // "STOW"

/** int8 (COUNT, BIGINT columns) and numeric (SUM of a BIGINT) as numbers, as SQLite returns them: byte counts and ms times fit. */
const INT8_OID = 20;
const NUMERIC_OID = 1700;
const types = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === INT8_OID || oid === NUMERIC_OID) return (value: string) => Number(value);
    return pg.types.getTypeParser(oid, format);
  },
} as pg.CustomTypesConfig;

export async function openPostgres(url: string, opts: OpenDatabaseOptions = {}): Promise<Db> {
  const keyFile = opts.secretsKeyFile ?? (opts.dataDir ? join(opts.dataDir, 'secrets.key') : undefined);
  if (!keyFile) throw new Error('a PostgreSQL state store needs a secrets key file (secretsKeyFile, or a data directory to keep it in)');
  const secrets = SecretBox.fromKeyFile(keyFile);
  const pool = new pg.Pool({ connectionString: url, max: POOL_MAX, types });
  // An idle connection the server dropped is replaced at the next query; without a listener the error would crash the process.
  pool.on('error', () => {});
  const kysely = new Kysely<unknown>({ dialect: new PostgresDialect({ pool }) });
  try {
    await migrate(kysely);
  } catch (err) {
    await kysely.destroy();
    throw err;
  }
  return new KyselyDb('postgres', kysely, secrets, false, () => kysely.destroy());
}

interface PendingMigration {
  id: string;
  sql: string;
}

/** PostgreSQL's migrations: the consolidated baseline and those after it, in id order. */
function postgresPlan(): PendingMigration[] {
  const covered = new Set<string>([...POSTGRES_BASELINE_COVERS, ...postgresMigrations.map((m) => m.id)]);
  const plan: PendingMigration[] = [...postgresMigrations];
  for (const m of migrations()) {
    if (covered.has(m.id)) continue;
    if (m.postgres === undefined) throw new Error(`migration ${m.id} has no PostgreSQL text: every migration after the baseline carries both (postgres-schema.ts)`);
    plan.push({ id: m.id, sql: m.postgres });
  }
  return plan.sort((a, b) => a.id.localeCompare(b.id));
}

async function migrate(kysely: Kysely<unknown>): Promise<void> {
  const plan = postgresPlan();
  await kysely.transaction().execute(async (trx) => {
    await sql`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`.execute(trx);
    await sql`CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`.execute(trx);
    const applied = new Set((await sql<{ id: string }>`SELECT id FROM schema_migrations`.execute(trx)).rows.map((r) => r.id));
    // PostgreSQL's DDL is transactional: all pending migrations apply, or none.
    for (const m of plan.filter((p) => !applied.has(p.id))) {
      await sql.raw(m.sql).execute(trx);
      await sql`INSERT INTO schema_migrations (id, applied_at) VALUES (${m.id}, ${new Date().toISOString()})`.execute(trx);
    }
  });
}
