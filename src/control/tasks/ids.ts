import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
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
export async function taskIdFor(db: Db, operationId: string): Promise<string> {
  const known = await db.get<{ task_id: string }>(sql`SELECT task_id FROM task_ids WHERE operation_id = ${operationId}`);
  if (known) return known.task_id;
  // Two first asks at once: one insert wins, and both answer what it wrote.
  await db.run(
    sql`INSERT INTO task_ids (task_id, operation_id, created_at) VALUES (${randomUUID()}, ${operationId}, ${nowIso()}) ON CONFLICT (operation_id) DO NOTHING`,
  );
  const made = await db.get<{ task_id: string }>(sql`SELECT task_id FROM task_ids WHERE operation_id = ${operationId}`);
  if (!made) throw new Error(`no task id recorded for ${operationId}`);
  return made.task_id;
}

/** The operation a task ID names: a task UUID (any case), or an operation ID as it is. */
export async function operationIdOf(db: Db, taskId: string): Promise<string | undefined> {
  if (!UUID_RE.test(taskId)) return taskId;
  return (await db.get<{ operation_id: string }>(sql`SELECT operation_id FROM task_ids WHERE task_id = ${taskId.toLowerCase()}`))?.operation_id;
}
