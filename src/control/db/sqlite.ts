import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect, type SqliteDatabase, type SqliteStatement } from 'kysely';
import { ensurePrivateDirSync, ensurePrivateFileSync, restrictFilesSync } from '../../private-files.js';
import { SecretBox } from '../auth/secret-box.js';
import { type Db, type OpenDatabaseOptions, migrations } from './database.js';
import { KyselyDb } from './kysely-db.js';

/**
 * The SQLite state store: one file (WAL) and one connection, which a transaction holds until it ends
 * (kysely's SqliteDriver queues every other query behind it). better-sqlite3 runs each statement
 * synchronously, so a query is short work on the event loop, never I/O waited on elsewhere.
 */

/** Statements kept compiled, by SQL text; a query with a variable IN list makes new texts, so the cache is bounded. */
const STATEMENT_CACHE_MAX = 512;

/**
 * better-sqlite3 compiles SQL at every prepare(), which costs more than running a small query, and
 * kysely prepares each query it runs: this hands it the statement compiled the first time instead.
 */
function cachingDatabase(db: Database.Database): SqliteDatabase {
  const cache = new Map<string, Database.Statement>();
  return {
    close: () => db.close(),
    prepare(text: string): SqliteStatement {
      let statement = cache.get(text);
      if (!statement) {
        if (cache.size >= STATEMENT_CACHE_MAX) cache.clear();
        statement = db.prepare(text);
        cache.set(text, statement);
      }
      return statement as unknown as SqliteStatement;
    },
  };
}

/**
 * Opens (creating) a SQLite state store. The file, its -wal and -shm are 0600 in a 0700 directory (SQLite
 * gives -wal/-shm the database file's mode), deleted rows are overwritten, and the secrets key is loaded.
 */
export function openSqlite(path: string, opts: OpenDatabaseOptions = {}): Db {
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
  const secrets = inMemory ? SecretBox.ephemeral() : SecretBox.fromKeyFile(opts.secretsKeyFile ?? join(dirname(path), 'secrets.key'));
  const kysely = new Kysely<unknown>({ dialect: new SqliteDialect({ database: cachingDatabase(db) }) });
  return new KyselyDb('sqlite', kysely, secrets, false, () => kysely.destroy());
}

function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
  const applied = new Set(db.prepare('SELECT id FROM schema_migrations').pluck().all() as string[]);
  const record = db.prepare('INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)');
  for (const m of migrations().filter((m) => !applied.has(m.id))) {
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.id, new Date().toISOString());
    })();
  }
}
