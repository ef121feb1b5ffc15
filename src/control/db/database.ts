import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { ensurePrivateDirSync, ensurePrivateFileSync, restrictFilesSync } from '../../private-files.js';
import { SecretBox } from '../auth/secret-box.js';
import { coreMigrations } from './core-schema.js';

/**
 * The control plane's state store: one SQLite file (WAL), schema by ordered migrations. Each area of the
 * control plane owns its migrations (core-schema.ts, catalog/, tenancy/); ids sort in the order they apply
 * and an applied id is never applied again.
 */

export type Db = Database.Database;

export interface Migration {
  /** "0001-core", "0100-catalog": sorts in application order. */
  id: string;
  sql: string;
}

const registered: Migration[] = [...coreMigrations];

/** Adds an area's migrations (called at module load by that area). */
export function registerMigrations(migrations: readonly Migration[]): void {
  for (const m of migrations) {
    if (!registered.some((r) => r.id === m.id)) registered.push(m);
  }
}

export interface OpenDatabaseOptions {
  /** The key that seals stored secrets (see SecretBox); default: secrets.key beside the database file. */
  secretsKeyFile?: string | undefined;
}

const boxes = new WeakMap<Db, SecretBox>();

/** The box that seals and opens the secrets this database stores. */
export function secretBox(db: Db): SecretBox {
  const box = boxes.get(db);
  if (!box) throw new Error('database opened without openDatabase(): no secrets key');
  return box;
}

/**
 * Opens (creating) the state store. The file, its -wal and -shm are 0600 in a 0700 directory (SQLite
 * gives -wal/-shm the database file's mode), deleted rows are overwritten, and the secrets key is loaded.
 */
export function openDatabase(path: string, opts: OpenDatabaseOptions = {}): Db {
  const inMemory = path === ':memory:';
  if (!inMemory) {
    ensurePrivateDirSync(dirname(path));
    ensurePrivateFileSync(path);
  }
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  if (!inMemory) restrictFilesSync([`${path}-wal`, `${path}-shm`]);
  db.pragma('secure_delete = ON');
  db.pragma('synchronous = NORMAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  boxes.set(db, inMemory ? SecretBox.ephemeral() : SecretBox.fromKeyFile(opts.secretsKeyFile ?? join(dirname(path), 'secrets.key')));
  return db;
}

function migrate(db: Db): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
  const applied = new Set(db.prepare('SELECT id FROM schema_migrations').pluck().all() as string[]);
  const pending = [...registered].sort((a, b) => a.id.localeCompare(b.id)).filter((m) => !applied.has(m.id));
  const record = db.prepare('INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)');
  for (const m of pending) {
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.id, new Date().toISOString());
    })();
  }
}

export function nowIso(): string {
  return new Date().toISOString();
}
