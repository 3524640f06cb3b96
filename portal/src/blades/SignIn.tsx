/** Sign in: a user (user principal name + password) or an app such as the bootstrap admin (application id + secret). */
import { useState, type FormEvent } from 'react';
import { signIn, takeSignOutReason } from '../session';
import { navigate } from '../router';
import { ErrorBox, Field, Notice } from '../ui';

export function SignIn(props: { returnTo: string }) {
  const [mode, setMode] = useState<'user' | 'app'>('user');
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [clientId, setClientId] = useState('');
  const [clientSecret, setClientSecret] = useState('');
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const [reason] = useState(() => takeSignOutReason());

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await signIn(mode === 'user' ? { kind: 'user', username: username.trim(), password } : { kind: 'app', clientId: clientId.trim(), clientSecret });
      navigate(props.returnTo || '/', { replace: true });
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="signin" id="main">
      <form onSubmit={(e) => void submit(e)} aria-labelledby="signin-title" className="card">
        <h1 id="signin-title">Sign in to rsvault</h1>
        {reason && <Notice kind="warning">{reason}</Notice>}
        <div role="radiogroup" aria-label="Sign in as" className="segmented">
          <label>
            <input type="radio" name="mode" checked={mode === 'user'} onChange={() => setMode('user')} /> User
          </label>
          <label>
            <input type="radio" name="mode" checked={mode === 'app'} onChange={() => setMode('app')} /> Application (service principal)
          </label>
        </div>
        {mode === 'user' ? (
          <>
            <Field label="User name" hint="The user principal name, e.g. alice@rsvault.localhost">
              {(id, d) => <input id={id} aria-describedby={d} autoComplete="username" required value={username} onChange={(e) => setUsername(e.target.value)} />}
            </Field>
            <Field label="Password">
              {(id) => <input id={id} type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />}
            </Field>
          </>
        ) : (
          <>
            <Field label="Application (client) ID" hint="The bootstrap admin's clientId is in <data-dir>/credentials.json">
              {(id, d) => <input id={id} aria-describedby={d} autoComplete="username" required value={clientId} onChange={(e) => setClientId(e.target.value)} />}
            </Field>
            <Field label="Client secret">
              {(id) => <input id={id} type="password" autoComplete="current-password" required value={clientSecret} onChange={(e) => setClientSecret(e.target.value)} />}
            </Field>
          </>
        )}
        <ErrorBox error={error} title="Sign-in failed" />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
      </form>
    </main>
  );
}
