import { type FormEvent, useState } from 'react';
import { type Api, type User, describeError } from '../api.js';
import { stowctl } from '../commands.js';
import { Command } from '../components/Command.js';
import { ErrorNote } from '../components/Notes.js';
import { TaskView } from '../components/TaskView.js';
import { bytes, shortDigest } from '../format.js';
import { usePoll } from '../hooks.js';

/**
 * The registry catalog through the admin GraphQL API (so admins and users see their domain's images):
 * rescan a registry, preload an image onto the machines a selector names, unload it. Each task started
 * here is followed live.
 */

interface CatalogImage {
  name: string;
  humanized_name: string;
  tag: string;
  registry: string;
  digest: string;
  size_bytes: number | string;
  aliases: string[];
  supported_accelerators: string[];
  installed: boolean;
  installed_agents: string[] | null;
}

const IMAGES_QUERY = '{ images { name humanized_name tag registry digest size_bytes aliases supported_accelerators installed installed_agents } }';

interface Task {
  id: string;
  title: string;
}

export function CatalogView({ api, user }: { api: Api; user: User }) {
  const images = usePoll(() => api.gql<{ images: CatalogImage[] }>(IMAGES_QUERY), 3000, [api]);
  const registries = usePoll(
    () => (user.role === 'superadmin' ? api.rest<{ registries: Array<{ name: string }> }>('GET', '/api/v1/admin/registries') : Promise.resolve({ registries: [] })),
    30_000,
    [api, user.role],
  );
  const [registry, setRegistry] = useState('');
  const [reference, setReference] = useState('');
  const [selector, setSelector] = useState('*');
  const [tasks, setTasks] = useState<Task[]>([]);
  const [error, setError] = useState<string>();
  const list = images.data?.images ?? [];
  const registryNames = registries.data?.registries.map((r) => r.name) ?? [];

  const run = (mutation: 'rescan_images' | 'preload_image' | 'unload_image', variables: Record<string, string>, title: string) => {
    setError(undefined);
    const args = Object.keys(variables);
    // target_agents is a list in the schema (Backend.AI's shape); one selector string is its one item.
    const query = `mutation(${args.map((a) => `$${a}: ${a === 'target_agents' ? '[String]!' : 'String!'}`).join(', ')}) { ${mutation}(${args.map((a) => `${a}: $${a}`).join(', ')}) { ok msg task_id } }`;
    api
      .gql<Record<string, { ok: boolean; msg: string; task_id: string | null }>>(query, variables)
      .then((data) => {
        const result = data[mutation];
        if (!result?.ok || !result.task_id) throw new Error(result?.msg || `${mutation} was not accepted`);
        setTasks((t) => [{ id: result.task_id!, title }, ...t]);
      })
      .catch((err: unknown) => setError(describeError(err)));
  };

  const rescan = (e: FormEvent) => {
    e.preventDefault();
    if (registry.trim()) run('rescan_images', { registry: registry.trim() }, `rescan ${registry.trim()}`);
  };

  return (
    <section>
      <h2>Catalog</h2>
      <Command line={stowctl.catalogList()} />
      <ErrorNote error={images.error} />

      <div className="grid actions">
        <form onSubmit={rescan} data-testid="rescan-form">
          <h3>Rescan a registry</h3>
          <input list="registries" placeholder="registry (host:port)" aria-label="registry" value={registry} onChange={(e) => setRegistry(e.target.value)} required />
          <datalist id="registries">
            {registryNames.map((r) => (
              <option key={r} value={r} />
            ))}
          </datalist>
          <Command line={stowctl.rescan(registry.trim() || 'REGISTRY')} />
          <button type="submit">Rescan</button>
        </form>
        <form onSubmit={(e) => e.preventDefault()} data-testid="preload-form">
          <h3>Preload or unload</h3>
          <input placeholder="reference (registry/name:tag or alias)" aria-label="reference" value={reference} onChange={(e) => setReference(e.target.value)} />
          <input aria-label="target agents" placeholder="*, machine IDs, label:key=value, scaling_group:name" value={selector} onChange={(e) => setSelector(e.target.value)} />
          <small>
            Agents: <code>*</code> (every online machine), machine IDs (comma-separated), <code>label:key=value</code>, <code>scaling_group:name</code>.
          </small>
          <Command line={stowctl.preload(reference.trim() || 'REFERENCE', selector.trim() || 'SELECTOR')} />
          <div className="grid">
            <button type="button" disabled={!reference.trim() || !selector.trim()} onClick={() => run('preload_image', { reference: reference.trim(), target_agents: selector.trim() }, `preload ${reference.trim()}`)}>
              Preload
            </button>
            <button
              type="button"
              className="secondary"
              disabled={!reference.trim() || !selector.trim()}
              onClick={() => run('unload_image', { reference: reference.trim(), target_agents: selector.trim() }, `unload ${reference.trim()}`)}
            >
              Unload
            </button>
          </div>
          <small>
            Unload: <code>{stowctl.unload(reference.trim() || 'REFERENCE', selector.trim() || 'SELECTOR')}</code>
          </small>
        </form>
      </div>
      <ErrorNote error={error} />
      {tasks.map((t) => (
        <div key={t.id} className="detail">
          <small>{t.title}</small> <Command line={stowctl.taskWatch(t.id)} />
          <TaskView api={api} taskId={t.id} onEnd={images.refresh} />
        </div>
      ))}

      {images.data && list.length === 0 && <p>The catalog is empty: rescan a registry.</p>}
      {list.length > 0 && (
        <div className="overflow-auto">
          <table className="striped" data-testid="catalog">
            <thead>
              <tr>
                <th>reference</th>
                <th>title</th>
                <th>digest</th>
                <th>size</th>
                <th>accelerators</th>
                <th>installed on</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {list.map((img) => {
                const ref = `${img.registry}/${img.name}:${img.tag}`;
                return (
                  <tr key={`${ref} ${img.digest}`} data-testid={`catalog-${ref}`}>
                    <td>
                      {ref}
                      {img.aliases.length > 0 && <small> (alias {img.aliases.join(', ')})</small>}
                    </td>
                    <td>{img.humanized_name}</td>
                    <td title={img.digest}>
                      <code>{shortDigest(img.digest)}</code>
                    </td>
                    <td>{bytes(Number(img.size_bytes))}</td>
                    <td>{img.supported_accelerators.join(', ') || '—'}</td>
                    <td data-testid="installed">{img.installed_agents ? img.installed_agents.join(', ') || '—' : img.installed ? 'yes' : 'no'}</td>
                    <td>
                      <button type="button" className="outline small" onClick={() => setReference(ref)}>
                        Select
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
