import { useMemo, useState } from 'react';
import type { Availability, Machine, Operation } from '../../../control/wire.js';
import { type Api, type User, describeError } from '../api.js';
import { stowctl } from '../commands.js';
import { Command } from '../components/Command.js';
import { ErrorNote } from '../components/Notes.js';
import { TaskView } from '../components/TaskView.js';
import { bytes, percent, shortDigest } from '../format.js';
import { useOperationStreams, usePoll } from '../hooks.js';

/**
 * Images × machines: one row per platform image (platform manifest digest), one column per machine, a
 * cell per availability record. Availability is polled every second; each running operation is followed
 * over SSE for the bytes its targets have moved, so a distribute shows cells counting up, then present.
 */

const POLL_MS = 1000;
/** A browser keeps six connections per host: streams beyond this many would starve the polls. */
const MAX_STREAMS = 3;

interface Row {
  digest: string;
  indexDigest: string | null;
  platform: string;
  references: string[];
  sizeBytes: number;
  cells: Map<string, Availability>;
}

interface Snapshot {
  machines: Machine[];
  records: Availability[];
  running: Operation[];
}

type StateFilter = 'any' | 'missing' | 'transferring' | 'failed';

export function MatrixView({ api }: { api: Api; user: User }) {
  const snap = usePoll(
    async (): Promise<Snapshot> => {
      const [m, s, o] = await Promise.all([
        api.rest<{ machines: Machine[] }>('GET', '/api/v1/machines'),
        api.rest<{ records: Availability[] }>('GET', '/api/v1/images/status'),
        api.rest<{ operations: Operation[] }>('GET', '/api/v1/operations?status=running&limit=100'),
      ]);
      return { machines: m.machines, records: s.records, running: o.operations };
    },
    POLL_MS,
    [api],
  );
  const [text, setText] = useState('');
  const [platform, setPlatform] = useState('');
  const [group, setGroup] = useState('');
  const [state, setState] = useState<StateFilter>('any');
  const [selected, setSelected] = useState<string>();

  const rows = useMemo(() => buildRows(snap.data?.records ?? []), [snap.data]);
  const platforms = useMemo(() => [...new Set(rows.map((r) => r.platform))].sort(), [rows]);
  const groups = useMemo(() => [...new Set((snap.data?.machines ?? []).map((m) => m.scaling_group ?? ''))].filter(Boolean).sort(), [snap.data]);
  const machines = (snap.data?.machines ?? []).filter((m) => !group || m.scaling_group === group);
  const runningIds = useMemo(() => (snap.data?.running ?? []).slice(0, MAX_STREAMS).map((o) => o.id), [snap.data]);
  const streamed = useOperationStreams(api, runningIds, snap.refresh);
  const progress = useMemo(() => transferProgress(snap.data?.running ?? [], streamed), [snap.data, streamed]);

  const needle = text.trim().toLowerCase();
  const visible = rows.filter((r) => {
    if (platform && r.platform !== platform) return false;
    if (needle && !r.references.some((ref) => ref.toLowerCase().includes(needle)) && !r.digest.includes(needle) && !(r.indexDigest ?? '').includes(needle)) return false;
    const states = machines.map((m) => r.cells.get(m.id)?.presence.state ?? 'absent');
    if (state === 'missing') return states.some((s) => s !== 'present');
    if (state === 'transferring') return states.includes('transferring');
    if (state === 'failed') return states.includes('failed');
    return true;
  });
  const selectedRow = rows.find((r) => r.digest === selected);

  return (
    <section>
      <h2>Images × machines</h2>
      <Command line={stowctl.imageStatus()} />
      <ErrorNote error={snap.error} />
      <div className="filters">
        <input type="search" placeholder="reference or digest" aria-label="filter by reference or digest" value={text} onChange={(e) => setText(e.target.value)} />
        <select aria-label="platform" value={platform} onChange={(e) => setPlatform(e.target.value)}>
          <option value="">every platform</option>
          {platforms.map((p) => (
            <option key={p}>{p}</option>
          ))}
        </select>
        <select aria-label="scaling group" value={group} onChange={(e) => setGroup(e.target.value)}>
          <option value="">every scaling group</option>
          {groups.map((g) => (
            <option key={g}>{g}</option>
          ))}
        </select>
        <select aria-label="state" value={state} onChange={(e) => setState(e.target.value as StateFilter)}>
          <option value="any">any state</option>
          <option value="missing">missing somewhere</option>
          <option value="transferring">transferring</option>
          <option value="failed">failed somewhere</option>
        </select>
      </div>
      {snap.data && rows.length === 0 && <p>No machine holds an image yet.</p>}
      {rows.length > 0 && (
        <div className="overflow-auto">
          <table className="matrix" data-testid="matrix">
            <thead>
              <tr>
                <th>image</th>
                <th>platform</th>
                <th>size</th>
                {machines.map((m) => (
                  <th key={m.id} className={m.status === 'offline' ? 'offline' : undefined} title={`${m.id}: ${m.status}`}>
                    {m.id}
                    {m.status === 'offline' && <small> (offline)</small>}
                  </th>
                ))}
                <th />
              </tr>
            </thead>
            <tbody>
              {visible.map((r) => (
                <tr key={`${r.digest} ${r.platform}`} data-testid={`row-${r.digest}`} aria-selected={r.digest === selected}>
                  <td>
                    <span className="ref">{r.references[0] ?? '<none>'}</span>
                    {r.references.length > 1 && <small> +{r.references.length - 1}</small>}
                    <br />
                    <small title={r.digest}>
                      <code>{shortDigest(r.digest)}</code>
                    </small>
                  </td>
                  <td>{r.platform}</td>
                  <td>{bytes(r.sizeBytes)}</td>
                  {machines.map((m) => (
                    <Cell key={m.id} machine={m.id} row={r} record={r.cells.get(m.id)} progress={progress} />
                  ))}
                  <td>
                    <button type="button" className="outline small" onClick={() => setSelected(r.digest === selected ? undefined : r.digest)}>
                      Distribute…
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <p className="legend">
        <span className="cell present">●</span> present <span className="cell transferring">⟳</span> transferring{' '}
        <span className="cell failed">✗</span> failed <span className="cell absent">·</span> absent
      </p>
      {selectedRow && snap.data && <DistributeForm key={selectedRow.digest} api={api} row={selectedRow} machines={snap.data.machines} onStarted={snap.refresh} />}
    </section>
  );
}

function Cell({ machine, row, record, progress }: { machine: string; row: Row; record: Availability | undefined; progress: Map<string, number | undefined> }) {
  const state = record?.presence.state ?? 'absent';
  let content = '·';
  let title = `${machine}: absent`;
  if (record?.presence.state === 'present') {
    content = '●';
    title = `${machine}: present since ${record.updated_at}`;
  } else if (record?.presence.state === 'transferring') {
    const pct = progress.get(`${record.presence.operation_id} ${machine}`);
    content = pct === undefined ? '⟳' : `⟳ ${pct}%`;
    title = `${machine}: transferring (${record.presence.operation_id})`;
  } else if (record?.presence.state === 'failed') {
    content = '✗';
    title = `${machine}: ${record.presence.failure.code}: ${record.presence.failure.message} (${record.presence.operation_id})`;
  }
  return (
    <td className={`cell ${state}`} title={title} data-testid={`cell-${machine}-${row.digest}`} data-state={state}>
      {content}
    </td>
  );
}

function DistributeForm({ api, row, machines, onStarted }: { api: Api; row: Row; machines: Machine[]; onStarted: () => void }) {
  const holders = machines.filter((m) => m.status === 'online' && row.cells.get(m.id)?.presence.state === 'present');
  const candidates = machines.filter((m) => m.status === 'online' && row.cells.get(m.id)?.presence.state !== 'present');
  const [from, setFrom] = useState(holders[0]?.id ?? '');
  const [to, setTo] = useState<string[]>([]);
  const [error, setError] = useState<string>();
  const [operation, setOperation] = useState<string>();

  const start = () => {
    setError(undefined);
    api
      .rest<{ operation: Operation }>('POST', '/api/v1/operations/distribute', { digest: row.digest, from, to })
      .then((r) => {
        setOperation(r.operation.id);
        onStarted();
      })
      .catch((err: unknown) => setError(describeError(err)));
  };

  return (
    <article className="action" data-testid="distribute-form">
      <header>
        Distribute <strong>{row.references[0] ?? shortDigest(row.digest)}</strong> ({row.platform})
      </header>
      {holders.length === 0 ? (
        <p>No online machine holds this image to distribute it from.</p>
      ) : (
        <>
          <label>
            from
            <select value={from} onChange={(e) => setFrom(e.target.value)}>
              {holders.map((m) => (
                <option key={m.id}>{m.id}</option>
              ))}
            </select>
          </label>
          <fieldset>
            <legend>to</legend>
            {candidates.length === 0 && <small>every online machine holds it already</small>}
            {candidates.map((m) => (
              <label key={m.id}>
                <input type="checkbox" checked={to.includes(m.id)} onChange={(e) => setTo(e.target.checked ? [...to, m.id] : to.filter((x) => x !== m.id))} />
                {m.id}
              </label>
            ))}
          </fieldset>
          <Command line={stowctl.distribute(row.digest, from, to.length ? to : ['…'])} />
          <button type="button" disabled={!from || to.length === 0} onClick={start}>
            Distribute
          </button>
        </>
      )}
      <ErrorNote error={error} />
      {operation && <TaskView api={api} taskId={operation} />}
    </article>
  );
}

function buildRows(records: Availability[]): Row[] {
  const rows = new Map<string, Row>();
  for (const rec of records) {
    const key = `${rec.digest} ${rec.platform}`;
    let row = rows.get(key);
    if (!row) {
      row = { digest: rec.digest, indexDigest: rec.index_digest, platform: rec.platform, references: [], sizeBytes: rec.size_bytes, cells: new Map() };
      rows.set(key, row);
    }
    for (const ref of rec.references) if (!row.references.includes(ref)) row.references.push(ref);
    row.indexDigest ??= rec.index_digest;
    row.cells.set(rec.machine_id, rec);
  }
  const list = [...rows.values()];
  for (const r of list) r.references.sort();
  return list.sort((a, b) => (a.references[0] ?? '~').localeCompare(b.references[0] ?? '~') || a.platform.localeCompare(b.platform) || a.digest.localeCompare(b.digest));
}

/** "<operation id> <machine>" → percent of bytes moved: from the operation's stream when newer than the poll. */
function transferProgress(running: Operation[], streamed: Map<string, Operation>): Map<string, number | undefined> {
  const out = new Map<string, number | undefined>();
  for (const polled of running) {
    const live = streamed.get(polled.id);
    const op = live && live.updated_at >= polled.updated_at ? live : polled;
    for (const t of op.targets) out.set(`${op.id} ${t.machine_id}`, percent(t.bytes_transferred, t.bytes_total));
  }
  return out;
}
