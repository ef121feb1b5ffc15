import { type RawBuilder, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// The whole control plane, so that every area has registered its SQLite migrations.
import '../../src/control/control.js';
import { migrations, openDatabase } from '../../src/control/db/database.js';
import { POSTGRES_BASELINE_COVERS, postgresMigrations } from '../../src/control/db/postgres-schema.js';
import { freshDatabase } from '../harness/postgres.js';
import { tmpDir } from '../harness/tmp.js';

/**
 * The PostgreSQL schema (postgres-schema.ts) is the SQLite one, translated: applied to a real PostgreSQL 15
 * it gives the same tables with the same columns (name, kind of type, nullability, default or not, primary
 * key) and the same named indexes as every SQLite migration applied to a fresh SQLite database. A migration
 * written for one dialect only fails here.
 */

interface Column {
  type: 'text' | 'integer';
  notNull: boolean;
  hasDefault: boolean;
  primaryKey: boolean;
}
type Catalog = Record<string, Record<string, Column>>;

/** Tables the migration runners keep for themselves, not part of the schema. */
const RUNNER_TABLES = new Set(['schema_migrations']);

function sqliteType(declared: string): Column['type'] {
  if (/INT/i.test(declared)) return 'integer';
  if (/TEXT|CHAR|CLOB/i.test(declared)) return 'text';
  throw new Error(`unexpected SQLite column type ${declared}`);
}

function postgresType(dataType: string): Column['type'] {
  if (['integer', 'bigint', 'smallint'].includes(dataType)) return 'integer';
  if (['text', 'character varying'].includes(dataType)) return 'text';
  throw new Error(`unexpected PostgreSQL column type ${dataType}`);
}

let sqliteCatalog: Catalog;
let sqliteIndexes: string[];
let sqliteMigrationIds: string[];
let client: pg.Client;

beforeAll(async () => {
  const db = await openDatabase(':memory:');
  sqliteCatalog = {};
  const names = async (query: RawBuilder<{ name: string }>): Promise<string[]> => (await db.all(query)).map((r) => r.name);
  const tables = await names(sql`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`);
  for (const table of tables.filter((t) => !RUNNER_TABLES.has(t))) {
    const cols = await db.all<{ name: string; type: string; notnull: number; dflt_value: string | null; pk: number }>(sql`SELECT * FROM pragma_table_info(${table})`);
    sqliteCatalog[table] = Object.fromEntries(
      // A PRIMARY KEY column is NOT NULL in PostgreSQL; SQLite only says so when the DDL does.
      cols.map((c) => [c.name, { type: sqliteType(c.type), notNull: c.notnull === 1 || c.pk > 0, hasDefault: c.dflt_value !== null, primaryKey: c.pk > 0 }]),
    );
  }
  // Named indexes (those a UNIQUE or PRIMARY KEY makes are sqlite_autoindex_…, compared as columns above).
  sqliteIndexes = await names(sql`SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex_%' ORDER BY name`);
  sqliteMigrationIds = (await db.all<{ id: string }>(sql`SELECT id FROM schema_migrations ORDER BY id`)).map((r) => r.id);
  await db.close();

  // PostgreSQL's own runner: the baseline, then the `postgres` text of every migration after it.
  const url = await freshDatabase('stowage_schema');
  await (await openDatabase(url, { dataDir: await tmpDir('stowage-schema-') })).close();
  client = new pg.Client({ connectionString: url });
  await client.connect();
});

afterAll(async () => {
  await client?.end();
});

async function postgresCatalog(): Promise<Catalog> {
  const cols = await client.query<{ table_name: string; column_name: string; data_type: string; is_nullable: string; column_default: string | null }>(
    "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
  );
  const pks = await client.query<{ table_name: string; column_name: string }>(
    `SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc
       JOIN information_schema.key_column_usage kcu ON kcu.constraint_name = tc.constraint_name AND kcu.table_schema = tc.table_schema
     WHERE tc.table_schema = 'public' AND tc.constraint_type = 'PRIMARY KEY'`,
  );
  const pk = new Set(pks.rows.map((r) => `${r.table_name}.${r.column_name}`));
  const catalog: Catalog = {};
  for (const c of cols.rows.filter((r) => !RUNNER_TABLES.has(r.table_name))) {
    catalog[c.table_name] ??= {};
    catalog[c.table_name]![c.column_name] = {
      type: postgresType(c.data_type),
      notNull: c.is_nullable === 'NO',
      hasDefault: c.column_default !== null,
      primaryKey: pk.has(`${c.table_name}.${c.column_name}`),
    };
  }
  return catalog;
}

describe('the PostgreSQL schema matches the SQLite one', () => {
  it('has the same tables, each with the same columns (type, NOT NULL, default, primary key)', async () => {
    const tables = Object.keys(sqliteCatalog);
    expect(tables.length).toBeGreaterThan(15);
    expect(await postgresCatalog()).toEqual(sqliteCatalog);
  });

  it('has the same named indexes', async () => {
    // Indexes behind a PRIMARY KEY or a UNIQUE column (…_pkey, …_key) are the constraints' own, as in SQLite.
    const r = await client.query<{ indexname: string }>(
      `SELECT indexname FROM pg_indexes WHERE schemaname = 'public'
         AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype IN ('p', 'u')) ORDER BY indexname`,
    );
    expect(r.rows.map((x) => x.indexname)).toEqual(sqliteIndexes);
  });

  it('has the same foreign keys, with the same ON DELETE', async () => {
    const r = await client.query<{ fk: string }>(
      `SELECT c.conrelid::regclass::text || '(' || string_agg(a.attname, ',' ORDER BY k.n) || ') -> ' || c.confrelid::regclass::text || ' ' || c.confdeltype::text AS fk
         FROM pg_constraint c CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
        WHERE c.contype = 'f' GROUP BY c.oid, c.conrelid, c.confrelid, c.confdeltype ORDER BY 1`,
    );
    const db = await openDatabase(':memory:');
    const expected: string[] = [];
    for (const table of Object.keys(sqliteCatalog)) {
      const fks = await db.all<{ id: number; table: string; from: string; on_delete: string }>(sql`SELECT * FROM pragma_foreign_key_list(${table})`);
      const byId = new Map<number, { to: string; from: string[]; onDelete: string }>();
      for (const f of fks) {
        const e = byId.get(f.id) ?? { to: f.table, from: [], onDelete: f.on_delete };
        e.from.push(f.from);
        byId.set(f.id, e);
      }
      // PostgreSQL's confdeltype: c = CASCADE, a = NO ACTION, n = SET NULL, r = RESTRICT, d = SET DEFAULT.
      const code: Record<string, string> = { CASCADE: 'c', 'NO ACTION': 'a', 'SET NULL': 'n', RESTRICT: 'r', 'SET DEFAULT': 'd' };
      for (const e of byId.values()) expected.push(`${table}(${e.from.join(',')}) -> ${e.to} ${code[e.onDelete]}`);
    }
    await db.close();
    expect(r.rows.map((x) => x.fk)).toEqual(expected.sort());
  });

  it('stands for every SQLite migration: the baseline covers those it consolidates, later ones carry their own PostgreSQL text', async () => {
    const later = migrations().filter((m) => m.postgres !== undefined).map((m) => m.id);
    const postgresIds = new Set<string>([...POSTGRES_BASELINE_COVERS, ...postgresMigrations.map((m) => m.id), ...later]);
    expect(sqliteMigrationIds.filter((id) => !postgresIds.has(id))).toEqual([]);
    // And PostgreSQL's runner recorded each of them.
    const applied = new Set((await client.query<{ id: string }>('SELECT id FROM schema_migrations')).rows.map((r) => r.id));
    expect([...postgresMigrations.map((m) => m.id), ...later].filter((id) => !applied.has(id))).toEqual([]);
  });

  it('keeps what the CHECK constraints refuse: a user of an unknown role, an availability row in an unknown state', async () => {
    await expect(client.query("INSERT INTO users (id, name, role, created_at) VALUES ('u1', 'x', 'root', 'now')")).rejects.toThrow(/users_role_check/);
    await expect(
      client.query("INSERT INTO availability (machine_id, digest, platform, state, updated_at) VALUES ('m', 'd', 'p', 'gone', 'now')"),
    ).rejects.toThrow(/availability_state_check/);
  });
});
