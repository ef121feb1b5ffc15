import { randomUUID } from 'node:crypto';
import { type Db, nowIso, registerMigrations } from '../db/database.js';

/**
 * Background-task IDs. Backend.AI clients parse a task_id as a UUID (`BackgroundTask(UUID(task_id))`), so
 * each operation started as a task gets one; the operation keeps its op- ID, and both name the task on
 * the event stream.
 */

registerMigrations([
  {
    id: '0300-task-ids',
    sql: `
      CREATE TABLE task_ids (
        task_id TEXT PRIMARY KEY,
        operation_id TEXT NOT NULL UNIQUE REFERENCES operations(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL
      );
    `,
  },
]);

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The operation's task UUID, made the first time it is asked for. */
export function taskIdFor(db: Db, operationId: string): string {
  const known = db.prepare('SELECT task_id FROM task_ids WHERE operation_id = ?').pluck().get(operationId) as string | undefined;
  if (known) return known;
  const id = randomUUID();
  db.prepare('INSERT INTO task_ids (task_id, operation_id, created_at) VALUES (?, ?, ?)').run(id, operationId, nowIso());
  return id;
}

/** The operation a task ID names: a task UUID (any case), or an operation ID as it is. */
export function operationIdOf(db: Db, taskId: string): string | undefined {
  if (!UUID_RE.test(taskId)) return taskId;
  return (db.prepare('SELECT operation_id FROM task_ids WHERE task_id = ?').pluck().get(taskId.toLowerCase()) as string | undefined) ?? undefined;
}
