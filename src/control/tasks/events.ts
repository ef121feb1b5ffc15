import type { Operation, TaskEvent } from '../wire.js';
import { isTargetDone, isTerminal } from '../operations/store.js';

/**
 * Background tasks are operations: task_id is the operation ID. An operation with targets counts
 * finished targets as its progress; one without (rescan) reports its own progress.
 */

export type TaskEventName = 'bgtask_updated' | 'bgtask_done' | 'bgtask_failed' | 'bgtask_cancelled';

export function taskEvent(op: Operation): TaskEvent {
  const withTargets = op.targets.length > 0;
  const current = withTargets ? op.targets.filter((t) => isTargetDone(t.status)).length : op.progress.current;
  const total = withTargets ? op.targets.length : op.progress.total;
  let message = op.progress.message || op.stage;
  if (op.error) message = `${op.error.code}: ${op.error.message}`;
  return { task_id: op.id, current_progress: current, total_progress: total, message, operation: op };
}

/** The SSE event name for the operation's state: bgtask_updated until it ends. */
export function taskEventName(op: Operation): TaskEventName {
  if (!isTerminal(op.status)) return 'bgtask_updated';
  if (op.status === 'succeeded') return 'bgtask_done';
  if (op.status === 'cancelled') return 'bgtask_cancelled';
  return 'bgtask_failed';
}
