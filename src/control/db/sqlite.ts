import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { DummyDriver, Kysely, type RawBuilder, SqliteAdapter, SqliteIntrospector, SqliteQueryCompiler, sql } from 'kysely';
import { ensurePrivateDirSync, ensurePrivateFileSync, restrictFilesSync } from '../../private-files.js';
import { SecretBox } from '../auth/secret-box.js';
import { type Db, type OpenDatabaseOptions, migrations } from './database.js';

/**
 * The SQLite state store: one file (WAL) and one connection. Queries are compiled by kysely (the `sql` tag,
 * as on PostgreSQL) and run on better-sqlite3 statements compiled once and kept: better-sqlite3 is
 * synchronous, so a query is a few microseconds on the event loop, where kysely's own SqliteDriver (a
 * prepare and an async connection hand-over per query) costs ten times that on the hot paths.
 *
 * Transactions: one at a time, holding the connection from BEGIN to COMMIT. While one is open, every
 * other query and transaction waits for it to end (they would otherwise run inside it, on the same
 * connection); with none open, a query runs at once.
 */

/** Statements kept compiled, by SQL text; a query with a variable IN list makes new texts, so the cache is bounded. */
const STATEMENT_CACHE_MAX = 512;

/** Compiles `sql` queries for SQLite (placeholders `?`); it never runs anything itself. */
const compiler = new Kysely<unknown>({
  dialect: {
    createAdapter: () => new SqliteAdapter(),
    createDriver: () => new DummyDriver(),
    createIntrospector: (db) => new SqliteIntrospector(db),
    createQueryCompiler: () => new SqliteQueryCompiler(),
  },
});

/** The connection and what all handles on it share: the statement cache and the open transaction. */
class Connection {
  private readonly statements = new Map<string, Database.Statement>();
  /** Settles when the open transaction ends; undefined while none is open. */
  transactionEnded: Promise<void> | undefined;
  closed = false;

  constructor(readonly raw: Database.Database) {}

  statement(text: string): Database.Statement {
    let statement = this.statements.get(text);
    if (!statement) {
      if (this.statements.size >= STATEMENT_CACHE_MAX) this.statements.clear();
      statement = this.raw.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }

}

class SqliteDb implements Db {
  readonly dialect = 'sqlite' as const;
  readonly forUpdate = sql``;

  constructor(
    private readonly connection: Connection,
    readonly secrets: SecretBox,
    /** Set for the handle of the open transaction: its queries run at once, inside it. */
    private readonly inTransaction: boolean,
  ) {}

  async all<R>(query: RawBuilder<R>): Promise<R[]> {
    // Checked again after every wait, with nothing awaited between the check and the query.
    if (!this.inTransaction) while (this.connection.transactionEnded) await this.connection.transactionEnded;
    const { statement, parameters } = this.prepare(query);
    if (!statement.reader) {
      statement.run(parameters);
      return [];
    }
    return statement.all(parameters) as R[];
  }

  async get<R>(query: RawBuilder<R>): Promise<R | undefined> {
    return (await this.all(query))[0];
  }

  async run(query: RawBuilder<unknown>): Promise<number> {
    if (!this.inTransaction) while (this.connection.transactionEnded) await this.connection.transactionEnded;
    const { statement, parameters } = this.prepare(query);
    return statement.run(parameters).changes;
  }

  async transaction<T>(work: (tx: Db) => Promise<T>): Promise<T> {
    if (this.inTransaction) return work(this);
    const connection = this.connection;
    while (connection.transactionEnded) await connection.transactionEnded;
    if (connection.closed) throw new Error('the database is closed');
    let end!: () => void;
    connection.transactionEnded = new Promise((resolve) => (end = resolve));
    try {
      connection.raw.exec('BEGIN');
      const result = await work(new SqliteDb(connection, this.secrets, true));
      connection.raw.exec('COMMIT');
      return result;
    } catch (err) {
      if (connection.raw.inTransaction) connection.raw.exec('ROLLBACK');
      throw err;
    } finally {
      connection.transactionEnded = undefined;
      end();
    }
  }

  async close(): Promise<void> {
    if (this.inTransaction) throw new Error('a transaction cannot close the database');
    while (this.connection.transactionEnded) await this.connection.transactionEnded;
    if (this.connection.closed) return;
    this.connection.closed = true;
    this.connection.raw.close();
  }

  private prepare(query: RawBuilder<unknown>): { statement: Database.Statement; parameters: unknown[] } {
    const compiled = query.compile(compiler);
    return { statement: this.connection.statement(compiled.sql), parameters: compiled.parameters as unknown[] };
  }
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
  return new SqliteDb(new Connection(db), secrets, false);
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
