import { useEffect, useMemo, useState } from 'react';
import { Api, type User } from './api.js';
import { Login } from './views/Login.js';
import { CatalogView } from './views/Catalog.js';
import { MachinesView } from './views/Machines.js';
import { MatrixView } from './views/Matrix.js';
import { OperationsView } from './views/Operations.js';

/** The API key lives in sessionStorage: it goes when the tab closes, and never into a URL. */
const TOKEN_KEY = 'stowage.token';

const TABS = [
  { id: 'machines', title: 'Machines' },
  { id: 'matrix', title: 'Images × machines' },
  { id: 'operations', title: 'Operations' },
  { id: 'catalog', title: 'Catalog' },
] as const;
type TabId = (typeof TABS)[number]['id'];

function tabFromHash(): TabId | undefined {
  const id = window.location.hash.replace(/^#\/?/, '').split('/')[0];
  return TABS.find((t) => t.id === id)?.id;
}

/** The cluster views read the superadmin's REST API; other roles start where they can act. */
function defaultTab(user: User): TabId {
  return user.role === 'superadmin' ? 'matrix' : 'catalog';
}

export function App() {
  const [session, setSession] = useState<{ api: Api; user: User }>();
  const [checking, setChecking] = useState(() => sessionStorage.getItem(TOKEN_KEY) !== null);
  const [hashTab, setTab] = useState<TabId | undefined>(tabFromHash);

  useEffect(() => {
    const onHash = () => setTab(tabFromHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  // A key kept from earlier in this tab is checked again: it may have been revoked since.
  useEffect(() => {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return;
    const api = new Api(token);
    whoami(api)
      .then((user) => setSession({ api, user }))
      .catch(() => sessionStorage.removeItem(TOKEN_KEY))
      .finally(() => setChecking(false));
  }, []);

  const login = async (token: string) => {
    const api = new Api(token);
    const user = await whoami(api);
    sessionStorage.setItem(TOKEN_KEY, token);
    setSession({ api, user });
  };
  const logout = () => {
    sessionStorage.removeItem(TOKEN_KEY);
    setSession(undefined);
  };

  const tab = hashTab ?? (session ? defaultTab(session.user) : 'matrix');
  const view = useMemo(() => {
    if (!session) return null;
    const props = { api: session.api, user: session.user };
    switch (tab) {
      case 'machines':
        return <MachinesView {...props} />;
      case 'matrix':
        return <MatrixView {...props} />;
      case 'operations':
        return <OperationsView {...props} />;
      case 'catalog':
        return <CatalogView {...props} />;
    }
  }, [session, tab]);

  if (checking) return <main className="container" aria-busy="true" />;
  if (!session) return <Login onLogin={login} />;
  return (
    <>
      <header className="container-fluid app-header">
        <nav>
          <ul>
            <li>
              <strong>Stowage</strong>
            </li>
            {TABS.map((t) => (
              <li key={t.id}>
                <a href={`#/${t.id}`} aria-current={t.id === tab ? 'page' : undefined}>
                  {t.title}
                </a>
              </li>
            ))}
          </ul>
          <ul>
            <li data-testid="whoami">
              {session.user.name} <small>({session.user.role}{session.user.domain ? `, ${session.user.domain}` : ''})</small>
            </li>
            <li>
              <button type="button" className="secondary outline" onClick={logout}>
                Log out
              </button>
            </li>
          </ul>
        </nav>
      </header>
      <main className="container-fluid">
        {session.user.role !== 'superadmin' && tab !== 'catalog' && (
          <p className="role-note">
            Machines, the matrix and operations come from the cluster API, which is the superadmin's: as {session.user.role} of{' '}
            {session.user.domain ?? 'no domain'}, the <a href="#/catalog">catalog</a> is yours.
          </p>
        )}
        {view}
      </main>
    </>
  );
}

async function whoami(api: Api): Promise<User> {
  return (await api.rest<{ user: User }>('GET', '/api/v1/whoami')).user;
}
