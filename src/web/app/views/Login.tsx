import { type FormEvent, useState } from 'react';
import { describeError } from '../api.js';

/** Log in with an API key (stk_…): the superadmin's admin.token or a user's key from tokens/. */
export function Login({ onLogin }: { onLogin: (token: string) => Promise<void> }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    onLogin(token.trim())
      .catch((err: unknown) => setError(describeError(err)))
      .finally(() => setBusy(false));
  };

  return (
    <main className="container login">
      <article>
        <header>
          <h1>Stowage</h1>
          <p>Which image is on which machine, and what is moving now.</p>
        </header>
        <form onSubmit={submit}>
          <label>
            API key
            <input
              type="password"
              name="token"
              autoComplete="off"
              placeholder="stk_…"
              value={token}
              onChange={(e) => setToken(e.target.value)}
              aria-invalid={error ? true : undefined}
              required
            />
            <small>
              The same key stowctl uses (<code>STOWAGE_TOKEN</code>); the first superadmin key is in <code>&lt;data-dir&gt;/admin.token</code>.
            </small>
          </label>
          {error && (
            <p className="error-note" role="alert">
              {error}
            </p>
          )}
          <button type="submit" aria-busy={busy} disabled={busy || token.trim() === ''}>
            Log in
          </button>
        </form>
      </article>
    </main>
  );
}
