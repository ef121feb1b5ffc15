import type { Operation, TaskEvent } from '../wire.js';
import { isTargetDone, isTerminal } from '../operations/store.js';

/**
 * Background tasks are operations. Events carry Backend.AI's payload ({task_id, message,
 * current_progress, total_progress}, plus `errors` on a partial success) and Stowage's `operation`
 * snapshot beside it. An operation with targets counts finished targets as its progress; one without
 * (rescan) reports its own progress.
 *
 * Names as Backend.AI's manager sends them: bgtask_updated while it runs; bgtask_done for success and
 * for a partial success (some targets failed: `errors` lists them); bgtask_failed; bgtask_cancelled.
 */

export type TaskEventName = 'bgtask_updated' | 'bgtask_done' | 'bgtask_failed' | 'bgtask_cancelled';

/** `taskId` is the ID the subscriber named the task by (its UUID, or the operation ID). */
export function taskEvent(op: Operation, taskId: string = op.id): TaskEvent {
  const withTargets = op.targets.length > 0;
  const current = withTargets ? op.targets.filter((t) => isTargetDone(t.status)).length : op.progress.current;
  const total = withTargets ? op.targets.length : op.progress.total;
  let message = op.progress.message || op.stage;
  if (op.error) message = `${op.error.code}: ${op.error.message}`;
  const event: TaskEvent = { task_id: taskId, message, current_progress: current, total_progress: total, operation: op };
  if (op.status === 'partially_failed') {
    event.errors = op.targets.filter((t) => t.status === 'failed').map((t) => `${t.machine_id}: ${t.failure ? `${t.failure.code}: ${t.failure.message}` : 'failed'}`);
    if (event.errors.length === 0) event.errors = [message];
  }
  return event;
}

/** The SSE event name for the operation's state: bgtask_updated until it ends. */
export function taskEventName(op: Operation): TaskEventName {
  if (!isTerminal(op.status)) return 'bgtask_updated';
  if (op.status === 'succeeded' || op.status === 'partially_failed') return 'bgtask_done';
  if (op.status === 'cancelled') return 'bgtask_cancelled';
  return 'bgtask_failed';
}
