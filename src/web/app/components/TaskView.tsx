import { useEffect, useState } from 'react';
import type { TaskEvent } from '../../../control/wire.js';
import { type Api, describeError } from '../api.js';
import { bytes, percent } from '../format.js';
import { Badge, ErrorNote, ProgressBar } from './Notes.js';

/**
 * One background task (an operation) followed live over SSE: GET /events/background-task streams
 * bgtask_updated, then bgtask_done / bgtask_failed / bgtask_cancelled. Per-target rows show bytes moved.
 */
export function TaskView({ api, taskId, onEnd }: { api: Api; taskId: string; onEnd?: (event: string) => void }) {
  const [last, setLast] = useState<{ event: string; data: TaskEvent }>();
  const [error, setError] = useState<string>();

  useEffect(() => {
    const abort = new AbortController();
    setLast(undefined);
    setError(undefined);
    api
      .events(
        `/events/background-task?task_id=${encodeURIComponent(taskId)}`,
        (event, data) => {
          // Backend.AI's end-of-stream marker after the final event: no task state in it.
          if (event === 'server_close') return;
          const parsed = JSON.parse(data) as TaskEvent;
          setLast({ event, data: parsed });
          if (event !== 'bgtask_updated') onEnd?.(event);
        },
        abort.signal,
      )
      .catch((err: unknown) => {
        if (!abort.signal.aborted) setError(describeError(err));
      });
    return () => abort.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [api, taskId]);

  if (!last) return error ? <ErrorNote error={error} /> : <p aria-busy="true">Connecting to {taskId}…</p>;
  const { data, event } = last;
  const op = data.operation;
  return (
    <article className="task" data-testid={`task-${taskId}`} data-status={op.status}>
      <header>
        <strong>{op.kind}</strong> <code>{op.id}</code> <Badge status={op.status} /> <small>{op.stage}</small>
        {event !== 'bgtask_updated' && <small className="task-end"> — stream ended ({event})</small>}
      </header>
      <p className="task-message">{data.message}</p>
      <ProgressBar value={data.current_progress} max={data.total_progress} label="task progress" />
      <small>
        {data.current_progress} / {data.total_progress}
      </small>
      {op.targets.length > 0 && (
        <table className="striped targets">
          <thead>
            <tr>
              <th>target</th>
              <th>status</th>
              <th>progress</th>
              <th>bytes</th>
            </tr>
          </thead>
          <tbody>
            {op.targets.map((t) => (
              <tr key={t.machine_id} data-testid={`target-${t.machine_id}`} data-status={t.status}>
                <td>{t.machine_id}</td>
                <td>
                  <Badge status={t.status} />
                  {t.failure && (
                    <small className="bad-text">
                      {' '}
                      {t.failure.code}
                      {t.failure.stage ? ` (stage ${t.failure.stage})` : ''}: {t.failure.message}
                    </small>
                  )}
                </td>
                <td>
                  <ProgressBar value={t.bytes_transferred} max={t.bytes_total} label={`${t.machine_id} progress`} />
                </td>
                <td>
                  {bytes(t.bytes_transferred)} / {bytes(t.bytes_total)}
                  {percent(t.bytes_transferred, t.bytes_total) !== undefined && ` (${percent(t.bytes_transferred, t.bytes_total)}%)`}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {op.error && <ErrorNote error={`${op.error.code}: ${op.error.message}`} />}
    </article>
  );
}
