import type { Machine } from '../../../control/wire.js';
import type { Api, User } from '../api.js';
import { stowctl } from '../commands.js';
import { Command } from '../components/Command.js';
import { Badge, ErrorNote } from '../components/Notes.js';
import { ago, bytes } from '../format.js';
import { usePoll } from '../hooks.js';

/** Every machine: online or offline, labels, scaling group, what its store holds. */
export function MachinesView({ api }: { api: Api; user: User }) {
  const machines = usePoll(() => api.rest<{ machines: Machine[] }>('GET', '/api/v1/machines'), 2000, [api]);
  const list = machines.data?.machines ?? [];
  return (
    <section>
      <h2>Machines</h2>
      <Command line={stowctl.machineList()} />
      <ErrorNote error={machines.error} />
      {machines.data && list.length === 0 && <p>No machine has joined yet.</p>}
      {list.length > 0 && (
        <div className="overflow-auto">
          <table className="striped" data-testid="machines">
            <thead>
              <tr>
                <th>machine</th>
                <th>status</th>
                <th>platform</th>
                <th>scaling group</th>
                <th>labels</th>
                <th>images</th>
                <th title="bytes of the machine's content store, as its agent last reported">disk use</th>
                <th>last seen</th>
              </tr>
            </thead>
            <tbody>
              {list.map((m) => (
                <tr key={m.id} data-testid={`machine-${m.id}`} data-status={m.status}>
                  <td>
                    <strong>{m.id}</strong>
                    <br />
                    <small>{m.agent_url}</small>
                  </td>
                  <td>
                    <Badge status={m.status} />
                  </td>
                  <td>{m.platform}</td>
                  <td>{m.scaling_group ?? '—'}</td>
                  <td>
                    {Object.entries(m.labels).map(([k, v]) => (
                      <span key={k} className="chip">
                        {k}={v}
                      </span>
                    ))}
                  </td>
                  <td data-testid="image-count">{m.image_count}</td>
                  <td data-testid="disk-use">{bytes(m.disk_used_bytes)}</td>
                  <td title={m.last_seen_at}>{ago(m.last_seen_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
