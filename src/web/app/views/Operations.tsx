import { useState } from 'react';
import type { Operation } from '../../../control/wire.js';
import { type Api, type User, describeError } from '../api.js';
import { stowctl } from '../commands.js';
import { Command } from '../components/Command.js';
import { Badge, ErrorNote } from '../components/Notes.js';
import { TaskView } from '../components/TaskView.js';
import { ago, shortDigest } from '../format.js';
import { usePoll } from '../hooks.js';

const ENDED = new Set(['succeeded', 'partially_failed', 'failed', 'cancelled']);

/** Recent operations; one opened follows its per-target progress live over SSE and can be cancelled. */
export function OperationsView({ api }: { api: Api; user: User }) {
  const ops = usePoll(() => api.rest<{ operations: Operation[] }>('GET', '/api/v1/operations?limit=50'), 2000, [api]);
  const [open, setOpen] = useState<string | undefined>(() => /^#\/operations\/([A-Za-z0-9_-]+)$/.exec(window.location.hash)?.[1]);
  const [lookup, setLookup] = useState('');
  const [cancelError, setCancelError] = useState<string>();
  const list = ops.data?.operations ?? [];
  const opened = list.find((o) => o.id === open);

  const cancel = (id: string) => {
    setCancelError(undefined);
    api
      .rest('POST', `/api/v1/operations/${encodeURIComponent(id)}/cancel`)
      .then(() => ops.refresh())
      .catch((err: unknown) => setCancelError(describeError(err)));
  };

  return (
    <section>
      <h2>Operations</h2>
      <Command line={stowctl.operationList()} />
      <ErrorNote error={ops.error} />
      <form
        className="filters"
        onSubmit={(e) => {
          e.preventDefault();
          if (lookup.trim()) setOpen(lookup.trim());
        }}
      >
        <input type="search" placeholder="op-… (an operation or task ID)" aria-label="operation ID" value={lookup} onChange={(e) => setLookup(e.target.value)} />
        <button type="submit" className="outline">
          Follow
        </button>
      </form>
      {list.length > 0 && (
        <div className="overflow-auto">
          <table className="striped" data-testid="operations">
            <thead>
              <tr>
                <th>operation</th>
                <th>kind</th>
                <th>status</th>
                <th>artifact</th>
                <th>targets</th>
                <th>by</th>
                <th>started</th>
              </tr>
            </thead>
            <tbody>
              {list.map((o) => (
                <tr key={o.id} data-testid={`operation-${o.id}`} data-status={o.status} aria-selected={o.id === open}>
                  <td>
                    <a
                      href={`#/operations/${o.id}`}
                      onClick={(e) => {
                        e.preventDefault();
                        const next = o.id === open ? undefined : o.id;
                        setOpen(next);
                        window.history.replaceState(null, '', next ? `#/operations/${next}` : '#/operations');
                      }}
                    >
                      {o.id}
                    </a>
                  </td>
                  <td>{o.kind}</td>
                  <td>
                    <Badge status={o.status} /> <small>{o.stage}</small>
                  </td>
                  <td>{o.artifact.reference ?? shortDigest(o.artifact.digest)}</td>
                  <td>
                    {o.targets.filter((t) => t.status === 'present' || t.status === 'skipped_present' || t.status === 'absent').length}/{o.targets.length}
                  </td>
                  <td>{o.actor}</td>
                  <td title={o.created_at}>{ago(o.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {open && (
        <div className="detail">
          <Command line={stowctl.operationGet(open)} />
          <TaskView api={api} taskId={open} />
          {(!opened || !ENDED.has(opened.status)) && (
            <>
              <Command line={stowctl.operationCancel(open)} />
              <button type="button" className="secondary" onClick={() => cancel(open)}>
                Cancel operation
              </button>
            </>
          )}
          <ErrorNote error={cancelError} />
        </div>
      )}
    </section>
  );
}
