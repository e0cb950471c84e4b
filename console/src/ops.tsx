// Operations: readiness of each store (GET /readyz), reconcile status per campaign (read-only;
// repairs stay with `couponrush reconcile --repair`), and the dead letters with their replay.
import { useEffect, useState } from 'preact/hooks';
import { call, isAuthProblem, type ConsoleInfo, type Problem } from './api.js';
import { TableHead } from './ui.js';

interface Report {
  couponId: number;
  strategy: string;
  status: 'OK' | 'DRIFT';
  problems: string[];
  total: number;
  dbRows: number;
  queued: number;
  dead: number;
}
interface DeadLetter {
  couponId: number;
  id: string;
  reason: string;
  deliveries: number;
  failedAt: string;
  entry: Record<string, string>;
  queue: string;
}

export function Operations({ info, onAuthLost }: { info: ConsoleInfo; onAuthLost: (p: Problem) => void }) {
  return (
    <div class="ops">
      <h1>Operations</h1>
      <Readiness info={info} onAuthLost={onAuthLost} />
      <Reconcile info={info} onAuthLost={onAuthLost} />
      <DeadLetters info={info} onAuthLost={onAuthLost} />
    </div>
  );
}

function Readiness({ info, onAuthLost }: { info: ConsoleInfo; onAuthLost: (p: Problem) => void }) {
  const [state, setState] = useState<{ at: Date; stores: Record<string, string> } | Problem | undefined>(undefined);
  const check = async () => {
    const r = await call<Record<string, string>>('GET', '/admin/console/health');
    if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
    setState(r.ok ? { at: new Date(), stores: r.value } : r.problem);
  };
  useEffect(() => {
    void check();
    const t = setInterval(() => void check(), 5_000);
    return () => clearInterval(t);
  }, []);
  return (
    <section class="card" aria-labelledby="ready-title">
      <h2 id="ready-title">Readiness</h2>
      {state === undefined ? (
        <p>Checking…</p>
      ) : 'code' in state ? (
        <p class="error" role="alert">
          The API did not answer: {state.title}
          {state.detail === undefined ? '' : ` (${state.detail})`}
        </p>
      ) : (
        <>
          <ul class="checks" aria-live="polite">
            {Object.entries(state.stores).map(([store, text]) => (
              <li key={store} data-store={store}>
                <span class={text === 'ok' ? 'ok' : 'bad'} aria-hidden="true">
                  {text === 'ok' ? '✓' : '✗'}
                </span>{' '}
                {store}: {text}
              </li>
            ))}
          </ul>
          <p class="hint">
            Checked {state.at.toLocaleTimeString()}, every 5 seconds. {info.stores.kafka ? 'Kafka is not part of /readyz: only its campaigns and the events need it.' : ''}
          </p>
        </>
      )}
    </section>
  );
}

function Reconcile({ info, onAuthLost }: { info: ConsoleInfo; onAuthLost: (p: Problem) => void }) {
  const [result, setResult] = useState<{ applies: boolean; reason?: string; campaigns: Report[] } | Problem | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const run = async () => {
    setBusy(true);
    const r = await call<{ applies: boolean; reason?: string; campaigns: Report[] }>('GET', '/admin/reconcile');
    setBusy(false);
    if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
    setResult(r.ok ? r.value : r.problem);
  };
  return (
    <section class="card" aria-labelledby="rec-title">
      <h2 id="rec-title">Reconcile status</h2>
      <p class="hint">Compares each Redis-admitted campaign with the database and the queue (read-only). Repair with <code>couponrush reconcile --repair</code>.</p>
      <button type="button" onClick={run} disabled={busy || !info.stores.redis}>
        {busy ? 'Checking…' : 'Check now'}
      </button>
      {!info.stores.redis && <p>Without Redis every campaign is decided in the database: nothing to reconcile.</p>}
      {result !== undefined && 'code' in result && (
        <p class="error" role="alert">
          {result.title}: {result.detail}
        </p>
      )}
      {result !== undefined && 'campaigns' in result && (
        <div class="table-wrap">
          {result.campaigns.length === 0 ? (
            <p>{result.applies ? 'No Redis-admitted campaign in the retention window.' : result.reason}</p>
          ) : (
            <table>
              <TableHead columns={['Campaign', 'Strategy', 'Status', '#Rows', '#Queued', '#Dead', 'Problems']} />
              <tbody>
                {result.campaigns.map((c) => (
                  <tr key={c.couponId}>
                    <th scope="row">
                      <a href={`#/campaigns/${c.couponId}`}>#{c.couponId}</a>
                    </th>
                    <td>{c.strategy}</td>
                    <td class={c.status === 'OK' ? 'ok' : 'bad'}>{c.status}</td>
                    <td class="num">{c.dbRows}</td>
                    <td class="num">{c.queued}</td>
                    <td class="num">{c.dead}</td>
                    <td>{c.problems.join(' · ') || '—'}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </section>
  );
}

function DeadLetters({ info, onAuthLost }: { info: ConsoleInfo; onAuthLost: (p: Problem) => void }) {
  const [items, setItems] = useState<DeadLetter[] | Problem | undefined>(undefined);
  const [message, setMessage] = useState<string | undefined>(undefined);
  const load = async () => {
    const r = await call<{ items: DeadLetter[] }>('GET', '/admin/dead-letters?limit=200');
    if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
    setItems(r.ok ? r.value.items : r.problem);
  };
  useEffect(() => {
    if (info.stores.redis) void load();
  }, []);
  const replay = async (couponId: number, ids?: string[]) => {
    const r = await call<{ replayed: unknown[]; notFound: string[] }>('POST', '/admin/dead-letters/replay', ids === undefined ? { couponId } : { couponId, ids });
    if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
    setMessage(r.ok ? `Replayed ${r.value.replayed.length}${r.value.notFound.length > 0 ? `, ${r.value.notFound.length} not found` : ''} of campaign #${couponId}.` : `Replay refused: ${r.problem.code} ${r.problem.detail ?? ''}`);
    await load();
  };
  return (
    <section class="card" aria-labelledby="dl-title">
      <h2 id="dl-title">Dead letters</h2>
      {!info.stores.redis ? (
        <p>Only queued strategies (Redis Streams, Kafka) have dead letters; this API runs without Redis.</p>
      ) : (
        <>
          <p class="hint">Issuances the worker could not persist, with the reason. Fix the cause, then replay.</p>
          <button type="button" onClick={() => void load()}>
            Refresh
          </button>
          {message !== undefined && <p role="status">{message}</p>}
          {items === undefined ? (
            <p>Loading…</p>
          ) : 'code' in items ? (
            <p class="error" role="alert">
              {items.title}: {items.detail}
            </p>
          ) : items.length === 0 ? (
            <p>None.</p>
          ) : (
            <div class="table-wrap">
              <table>
                <TableHead columns={['Campaign', 'User', 'Reason', 'Failed', 'Queue', '!Actions']} />
                <tbody>
                  {items.map((d) => (
                    <tr key={`${d.queue}-${d.id}`}>
                      <td>#{d.couponId}</td>
                      <td>{d.entry.u ?? '?'}</td>
                      <td>{d.reason}</td>
                      <td>{new Date(d.failedAt).toLocaleString()}</td>
                      <td>{d.queue}</td>
                      <td>
                        <button type="button" onClick={() => void replay(d.couponId, [d.id])} aria-label={`Replay dead letter ${d.id} of campaign ${d.couponId}`}>
                          Replay
                        </button>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </>
      )}
    </section>
  );
}
