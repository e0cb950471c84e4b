// The console's shell: the login screen until a token works, then three views chosen by the
// URL's hash (#/ campaigns, #/campaigns/<id> one campaign live, #/ops operations).
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { COUPON_ID_DIGITS } from '../../src/coupons/ids.js';
import { call, isAuthProblem, token, type ConsoleInfo, type Problem } from './api.js';
import { Campaigns } from './campaigns.js';
import { Live } from './live.js';
import { Operations } from './ops.js';
import { zoneNote } from './time.js';

type Route = { view: 'campaigns' } | { view: 'live'; id: number } | { view: 'ops' };

/** #/campaigns/<id>, the id as the API writes it. */
const LIVE_HASH = new RegExp(`^#/campaigns/(${COUPON_ID_DIGITS})$`);

function route(hash: string): Route {
  const live = LIVE_HASH.exec(hash);
  if (live !== null) return { view: 'live', id: Number(live[1]) };
  if (hash === '#/ops') return { view: 'ops' };
  return { view: 'campaigns' };
}

function Login({ onIn, refused }: { onIn: (info: ConsoleInfo) => void; refused: Problem | undefined }) {
  const [value, setValue] = useState('');
  const [problem, setProblem] = useState<Problem | undefined>(refused);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    const r = await call<ConsoleInfo>('GET', '/admin/console/info', undefined, value.trim());
    setBusy(false);
    if (r.ok) {
      token.set(value.trim());
      onIn(r.value);
    } else setProblem(r.problem);
  };
  return (
    <main class="login">
      <h1>couponrush console</h1>
      <form onSubmit={submit} aria-describedby={problem === undefined ? undefined : 'login-error'}>
        <label for="token">Admin token</label>
        <input id="token" name="token" type="password" autocomplete="current-password" required value={value} onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        <p class="hint">Printed by <code>npm start</code> (embedded mode) or set as <code>ADMIN_TOKEN</code>. Kept in this tab only.</p>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
        {problem !== undefined && (
          <p id="login-error" class="error" role="alert">
            {isAuthProblem(problem) ? `That token was refused (${problem.status} ${problem.code}).` : `${problem.title}${problem.detail === undefined ? '' : `: ${problem.detail}`}`}
          </p>
        )}
      </form>
    </main>
  );
}

function App() {
  const [info, setInfo] = useState<ConsoleInfo | undefined>(undefined);
  const [refused, setRefused] = useState<Problem | undefined>(undefined);
  const [checking, setChecking] = useState(token.get() !== null);
  const [where, setWhere] = useState<Route>(route(location.hash));

  useEffect(() => {
    const onHash = () => setWhere(route(location.hash));
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  useEffect(() => {
    if (token.get() === null) return;
    void call<ConsoleInfo>('GET', '/admin/console/info').then((r) => {
      setChecking(false);
      if (r.ok) setInfo(r.value);
      else {
        token.clear();
        setRefused(r.problem);
      }
    });
  }, []);

  const signOut = () => {
    token.clear();
    setInfo(undefined);
    setRefused(undefined);
  };
  /** A data route said the token no longer works (rotated): back to the login screen. */
  const onAuthLost = (p: Problem) => {
    token.clear();
    setInfo(undefined);
    setRefused(p);
  };

  if (checking) return <p class="loading">Checking the saved token…</p>;
  if (info === undefined) return <Login onIn={setInfo} refused={refused} />;
  return (
    <>
      <header>
        <span class="brand">couponrush</span>
        <nav aria-label="Console">
          <a href="#/" aria-current={where.view !== 'ops' ? 'page' : undefined}>
            Campaigns
          </a>
          <a href="#/ops" aria-current={where.view === 'ops' ? 'page' : undefined}>
            Operations
          </a>
        </nav>
        <span class="stores" title="stores this API process uses">
          {info.stores.database}
          {info.stores.redis ? ' · Redis' : ''}
          {info.stores.kafka ? ' · Kafka' : ''}
        </span>
        <span class="zone" data-field="zone" title="every time on this page is in your browser’s time zone, on a 24-hour clock">
          times in {zoneNote()}
        </span>
        <button type="button" class="link" onClick={signOut}>
          Sign out
        </button>
      </header>
      <main>
        {where.view === 'campaigns' && <Campaigns info={info} onAuthLost={onAuthLost} />}
        {where.view === 'live' && <Live id={where.id} onAuthLost={onAuthLost} />}
        {where.view === 'ops' && <Operations info={info} onAuthLost={onAuthLost} />}
      </main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
