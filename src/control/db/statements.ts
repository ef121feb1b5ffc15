import type Database from 'better-sqlite3';
import type { Db } from './database.js';

/**
 * Prepared statements, reused: better-sqlite3 compiles SQL on every prepare(), which costs more than
 * running a small query. Hot paths (heartbeats, authentication, operation progress, status queries) ask
 * for their statement here by its SQL text, so each is compiled once per database handle.
 *
 * A cached statement is shared: never switch its mode (pluck(), raw(), expand()) — ask for a plucked
 * value in the caller instead.
 */

const caches = new WeakMap<Db, Map<string, Database.Statement>>();

export function prepared(db: Db, sql: string): Database.Statement {
  let cache = caches.get(db);
  if (!cache) {
    cache = new Map();
    caches.set(db, cache);
  }
  let statement = cache.get(sql);
  if (!statement) {
    statement = db.prepare(sql);
    cache.set(sql, statement);
  }
  return statement;
}
