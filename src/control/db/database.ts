import type { RawBuilder } from 'kysely';
import type { SecretBox } from '../auth/secret-box.js';
import { coreMigrations } from './core-schema.js';

/**
 * The control plane's state store, one async interface over two databases: SQLite (one file, the embedded
 * default; sqlite.ts) and PostgreSQL (shared by replicas; postgres.ts). Queries are written once with
 * kysely's `sql` tag (values become placeholders of the dialect: `?` or `$n`) in SQL both accept: ON CONFLICT
 * upserts, no INSERT OR IGNORE/REPLACE, no json_each, booleans as 0/1 integers, times as ISO-8601 text.
 *
 * Transactions: `db.transaction(async (tx) => …)` runs its work on one connection and commits at the end
 * (rolls back on a throw). Inside it, use `tx`, never the outer `db`: on SQLite there is one connection and
 * the transaction holds it (the outer `db` would wait for it forever); on PostgreSQL the outer `db` is
 * another pooled connection, outside the transaction. A transaction inside a transaction is the same one.
 * Never await anything but the database inside a transaction: on SQLite every other query waits for it.
 * Read-modify-write sequences go in one transaction and lock what they read (`forUpdate`), or are one
 * UPDATE statement.
 *
 * Schema: ordered migrations, each area registering its own (core-schema.ts, catalog/, tenancy/, …); an
 * applied id is never applied again. A migration's `sql` is its SQLite text; for PostgreSQL, the ids
 * in postgres-schema.ts's baseline are covered by its consolidated schema, and every later migration
 * must carry its PostgreSQL text in `postgres` as well (opening a PostgreSQL database refuses one without).
 */

export type Dialect = 'sqlite' | 'postgres';

export interface Db {
  readonly dialect: Dialect;
  /** The box that seals and opens the secrets this database stores (machine secrets, passwords, keypairs). */
  readonly secrets: SecretBox;
  /**
   * " FOR NO KEY UPDATE" on PostgreSQL (locks the rows a transaction read against other writers), nothing on
   * SQLite (the transaction holds the only connection). Not FOR UPDATE: that lock also blocks the foreign-key
   * checks of rows inserted beneath the locked one (an image reported on a machine whose row a delta holds),
   * which deadlocks as soon as the holder waits for such a row. No caller changes a locked row's key.
   */
  readonly forUpdate: RawBuilder<unknown>;
  all<R>(query: RawBuilder<R>): Promise<R[]>;
  /** The first row, or undefined. */
  get<R>(query: RawBuilder<R>): Promise<R | undefined>;
  /** Runs a statement; resolves to the number of rows it changed. */
  run(query: RawBuilder<unknown>): Promise<number>;
  /**
   * Runs `work` in one transaction (inside one already begun: in that one). On PostgreSQL a transaction
   * rolled back as a deadlock's victim (or for serialization) runs again, whole: `work` keeps its effects in
   * the database, or starts afresh what it changes outside it.
   */
  transaction<T>(work: (tx: Db) => Promise<T>): Promise<T>;
  /** Closes the database (its pool); waits for queries under way. */
  close(): Promise<void>;
}

export interface Migration {
  /** "0001-core", "0100-catalog": sorts in application order. */
  id: string;
  /** The SQLite text. */
  sql: string;
  /** The PostgreSQL text; required of every migration after the PostgreSQL baseline (postgres-schema.ts). */
  postgres?: string;
}

const registered: Migration[] = [...coreMigrations];

/** Adds an area's migrations (called at module load by that area). */
export function registerMigrations(migrations: readonly Migration[]): void {
  for (const m of migrations) {
    if (!registered.some((r) => r.id === m.id)) registered.push(m);
  }
}

/** Every registered migration, in the order they apply. */
export function migrations(): Migration[] {
  return [...registered].sort((a, b) => a.id.localeCompare(b.id));
}

export interface OpenDatabaseOptions {
  /** The key that seals stored secrets (see SecretBox); default: secrets.key beside the SQLite file, or in `dataDir`. */
  secretsKeyFile?: string | undefined;
  /** Where the secrets key is kept by default for a PostgreSQL database (it has no file of its own). */
  dataDir?: string | undefined;
}

/** The box that seals and opens the secrets this database stores. */
export function secretBox(db: Db): SecretBox {
  return db.secrets;
}

/**
 * Opens (creating and migrating) the state store: a `postgres://` or `postgresql://` URL, else a SQLite
 * file path (or ":memory:").
 */
export async function openDatabase(location: string, opts: OpenDatabaseOptions = {}): Promise<Db> {
  if (isPostgresUrl(location)) {
    const { openPostgres } = await import('./postgres.js');
    return openPostgres(location, opts);
  }
  const { openSqlite } = await import('./sqlite.js');
  return openSqlite(location, opts);
}

export function isPostgresUrl(location: string): boolean {
  return /^postgres(ql)?:\/\//i.test(location);
}

export function nowIso(): string {
  return new Date().toISOString();
}

/** A write refused for a duplicate key (SQLite or PostgreSQL). */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === '23505';
}

/** A statement or transaction PostgreSQL rolled back as a deadlock's victim or for serialization: to be run again. */
export function mustTryAgain(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === '40P01' || code === '40001';
}

/** A write refused because a row it references does not exist (SQLite or PostgreSQL). */
export function isForeignKeyViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'SQLITE_CONSTRAINT_FOREIGNKEY' || code === '23503';
}
