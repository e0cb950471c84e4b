// Operations: readiness of each store (GET /readyz), reconcile status per campaign (read-only;
// repairs stay with `couponrush reconcile --repair`), and the dead letters: replay or discard the
// held ones, see the discarded ones.
import { useEffect, useState } from 'preact/hooks';
import { call, isAuthProblem, type ConsoleInfo, type Problem } from './api.js';
import { clock, dateTime } from './time.js';
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
  state: 'held' | 'discarded';
  settledAt?: string;
  /** Kafka: only part of the record was kept; it can be discarded, never replayed. */
  truncated?: boolean;
}
interface Refused {
  id: string;
  reason: string;
}

const when = (iso: string | undefined) => (iso === undefined || iso === '' ? '?' : dateTime(iso));
const refusedText = (refused: Refused[]) => (refused.length === 0 ? '' : `; not done: ${refused.map((r) => `${r.id} (${r.reason})`).join(', ')}`);

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
            Checked {clock(state.at)}, every 5 seconds. {info.stores.kafka ? 'Kafka is not part of /readyz: only its campaigns and the events need it.' : ''}
          </p>
        </>
      )}
    </section>
  );
}

function Reconcile({ info, onAuthLost }: { info: ConsoleInfo; onAuthLost: (p: Problem) => void }) {
  const [result, setResult] = useState<{ applies: boolean; reason?: string; campaigns: Report[] } | Problem | undefined>(undefined);
  const [checkedAt, setCheckedAt] = useState<Date | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const run = async () => {
    setBusy(true);
    const r = await call<{ applies: boolean; reason?: string; campaigns: Report[] }>('GET', '/admin/reconcile');
    setBusy(false);
    if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
    setResult(r.ok ? r.value : r.problem);
    setCheckedAt(new Date());
  };
  // Once when the view opens, never on a timer: a check reads every Redis-admitted campaign of the
  // retention window from both stores, so further ones are the operator's click.
  useEffect(() => {
    if (info.stores.redis) void run();
  }, []);
  return (
    <section class="card" aria-labelledby="rec-title">
      <h2 id="rec-title">Reconcile status</h2>
      <p class="hint">Compares each Redis-admitted campaign with the database and the queue (read-only). Repair with <code>couponrush reconcile --repair</code>.</p>
      {info.stores.redis ? (
        <p>
          <button type="button" onClick={run} disabled={busy}>
            {busy ? 'Checking…' : checkedAt === undefined ? 'Check now' : 'Check again'}
          </button>
          {checkedAt !== undefined && <span class="muted"> Checked {clock(checkedAt)}.</span>}
        </p>
      ) : (
        <p>Without Redis every campaign is decided in the database: nothing to reconcile.</p>
      )}
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
  const [busy, setBusy] = useState(false);
  const load = async () => {
    const r = await call<{ items: DeadLetter[] }>('GET', '/admin/dead-letters?limit=200');
    if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
    setItems(r.ok ? r.value.items : r.problem);
  };
  useEffect(() => {
    if (info.stores.redis) void load();
  }, []);
  const act = async (action: 'replay' | 'discard', d: DeadLetter) => {
    // A discard breaks the user's 202 for good: ask first.
    if (action === 'discard' && !window.confirm(`Discard dead letter ${d.id} of campaign #${d.couponId}? User ${d.entry.u ?? '?'} loses this issuance and may issue again.`)) return;
    setBusy(true);
    try {
      if (action === 'replay') {
        const r = await call<{ replayed: unknown[]; notFound: string[]; refused: Refused[] }>('POST', '/admin/dead-letters/replay', { couponId: d.couponId, ids: [d.id] });
        if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
        setMessage(
          r.ok
            ? `Replayed ${r.value.replayed.length}${r.value.notFound.length > 0 ? `, ${r.value.notFound.length} not found` : ''}${refusedText(r.value.refused)} of campaign #${d.couponId}.`
            : `Replay refused: ${r.problem.code} ${r.problem.detail ?? ''}`,
        );
      } else {
        const r = await call<{ discarded: Array<{ released: boolean }>; notFound: string[]; refused: Refused[] }>('POST', '/admin/dead-letters/discard', { couponId: d.couponId, ids: [d.id] });
        if (!r.ok && isAuthProblem(r.problem)) return onAuthLost(r.problem);
        const released = r.ok ? r.value.discarded.filter((x) => x.released).length : 0;
        setMessage(
          r.ok
            ? `Discarded ${r.value.discarded.length} (${released} seat${released === 1 ? '' : 's'} given back)${r.value.notFound.length > 0 ? `, ${r.value.notFound.length} not found` : ''}${refusedText(r.value.refused)} of campaign #${d.couponId}.`
            : `Discard refused: ${r.problem.code} ${r.problem.detail ?? ''}`,
        );
      }
      await load();
    } finally {
      setBusy(false);
    }
  };
  const held = items === undefined || 'code' in items ? [] : items.filter((d) => d.state !== 'discarded');
  const discarded = items === undefined || 'code' in items ? [] : items.filter((d) => d.state === 'discarded');
  return (
    <section class="card" aria-labelledby="dl-title">
      <h2 id="dl-title">Dead letters</h2>
      {!info.stores.redis ? (
        <p>Only queued strategies (Redis Streams, Kafka) have dead letters; this API runs without Redis.</p>
      ) : (
        <>
          <p class="hint">
            Issuances the worker could not persist, with the reason; their users hear HELD. Fix the cause, then replay. Discard only what will never be honoured: the seat goes back
            and the user may issue again.
          </p>
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
          ) : (
            <>
              <h3 id="dl-held">Held</h3>
              {held.length === 0 ? (
                <p>None.</p>
              ) : (
                <div class="table-wrap">
                  <table aria-labelledby="dl-held">
                    <TableHead columns={['Campaign', 'User', 'Reason', 'Failed', 'Queue', '!Actions']} />
                    <tbody>
                      {held.map((d) => (
                        <tr key={`${d.queue}-${d.id}`}>
                          <td>#{d.couponId}</td>
                          <td>{d.entry.u ?? '?'}</td>
                          <td class="wrap">
                            {d.reason}
                            {d.truncated === true && <span class="muted"> (truncated: it can only be discarded)</span>}
                          </td>
                          <td>{when(d.failedAt)}</td>
                          <td>{d.queue}</td>
                          <td class="actions">
                            <button
                              type="button"
                              disabled={busy || d.truncated === true}
                              title={d.truncated === true ? 'Only part of the record was kept: it cannot be replayed' : undefined}
                              onClick={() => void act('replay', d)}
                              aria-label={`Replay dead letter ${d.id} of campaign ${d.couponId}`}
                            >
                              Replay
                            </button>{' '}
                            <button type="button" class="secondary" disabled={busy} onClick={() => void act('discard', d)} aria-label={`Discard dead letter ${d.id} of campaign ${d.couponId}`}>
                              Discard
                            </button>
                          </td>
                        </tr>
                      ))}
                    </tbody>
                  </table>
                </div>
              )}
              {discarded.length > 0 && (
                <>
                  <h3 id="dl-discarded">Discarded</h3>
                  <div class="table-wrap">
                    <table aria-labelledby="dl-discarded">
                      <TableHead columns={['Campaign', 'User', 'Reason', 'Failed', 'Discarded', 'Queue']} />
                      <tbody>
                        {discarded.map((d) => (
                          <tr key={`${d.queue}-${d.id}-discarded`}>
                            <td>#{d.couponId}</td>
                            <td>{d.entry.u ?? '?'}</td>
                            <td class="wrap">{d.reason}</td>
                            <td>{when(d.failedAt)}</td>
                            <td>{when(d.settledAt)}</td>
                            <td>{d.queue}</td>
                          </tr>
                        ))}
                      </tbody>
                    </table>
                  </div>
                </>
              )}
            </>
          )}
        </>
      )}
    </section>
  );
}
