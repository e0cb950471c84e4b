// One campaign live: issued against stock, answers per second by outcome, p50/p99, the queue,
// rows persisted against seats admitted, and the moment it sold out. Fed by the server-sent
// events of /admin/console/stream (one sample a second); the last five minutes are kept.
import { useEffect, useMemo, useState } from 'preact/hooks';
import { follow, isAuthProblem, type ConsoleSample, type Problem } from './api.js';
import { Chart, formatNumber, type Line } from './chart.js';
import { clock, span } from './time.js';

const KEPT = 300;

/** The outcomes a stampede produces, in the order an operator reads them; the rest are summed. */
const OUTCOMES: Array<{ status: string; label: string; color: string }> = [
  { status: '201', label: '201 issued', color: '#1b7f3b' },
  { status: '202', label: '202 accepted', color: '#2f9e6e' },
  { status: '409', label: '409 already', color: '#8a6d00' },
  { status: '410', label: '410 sold out', color: '#6b5bd6' },
  { status: '429', label: '429 limited', color: '#c76b00' },
  { status: '503', label: '503 unavailable', color: '#c0392b' },
];
const OTHER = { label: 'other', color: '#777' };

export function Live({ id, onAuthLost }: { id: number; onAuthLost: (p: Problem) => void }) {
  const [samples, setSamples] = useState<ConsoleSample[]>([]);
  const [state, setState] = useState<'connecting' | 'live' | 'reconnecting' | Problem>('connecting');
  // Stream lag and dead letters exist only for a campaign with a Redis stream (the samples carry
  // `stream` then); once seen, the chart keeps those lines for this campaign.
  const [hasStream, setHasStream] = useState(false);

  useEffect(() => {
    const abort = new AbortController();
    setSamples([]);
    setHasStream(false);
    void follow(
      id,
      (s) => {
        setSamples((prev) => [...prev.slice(-(KEPT - 1)), s]);
        if (s.campaign?.stream !== undefined) setHasStream(true);
      },
      (st) => {
        if (typeof st === 'object' && isAuthProblem(st)) onAuthLost(st);
        setState(st);
      },
      abort.signal,
    );
    return () => abort.abort();
  }, [id]);

  const last = samples.at(-1);
  // A second whose campaign read failed keeps the last known numbers on screen, marked as such.
  const c = last?.campaign ?? (last?.campaignUnreadable === undefined ? undefined : [...samples].reverse().find((s) => s.campaign !== undefined)?.campaign);
  // A stream that stays open but brings nothing (the counters could not be read) is not "live".
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1_000);
    return () => clearInterval(t);
  }, []);
  const silentFor = last === undefined ? 0 : Math.round((now - last.at) / 1000);
  const columns = useMemo(() => chartColumns(samples, hasStream), [samples, hasStream]);

  if (last !== undefined && last.campaign === undefined && last.campaignUnreadable === undefined) {
    return (
      <section>
        <h1>Campaign #{id}</h1>
        <p class="error" role="alert">
          No campaign #{id} here. <a href="#/">Back to the campaigns</a>
        </p>
      </section>
    );
  }
  const rate = (status: string) => last?.answersPerSecond[status] ?? 0;
  const perSecond = Object.values(last?.answersPerSecond ?? {}).reduce((a, b) => a + b, 0);
  const backlog = c === undefined ? 0 : c.admitted - c.persisted;

  return (
    <section aria-labelledby="live-title">
      <p>
        <a href="#/">← Campaigns</a>
      </p>
      <h1 id="live-title">
        {c?.name ?? `Campaign #${id}`} <span class="muted">#{id}</span>
      </h1>
      <p class="muted">
        {c === undefined ? '' : `${c.strategy} · window ${span(c.issueStartsAt, c.issueEndsAt, true)} · `}
        <span role="status" class={`feed feed-${typeof state === 'string' ? state : 'error'}`}>
          {typeof state !== 'string'
            ? `stream refused: ${state.code}`
            : state === 'live'
              ? last?.campaignUnreadable !== undefined
                ? `the campaign could not be read (${last.campaignUnreadable}); the numbers shown are the last known`
                : silentFor > 3
                ? `no new numbers for ${silentFor} s (a store may be away)`
                : 'live, every second'
              : state === 'connecting'
                ? 'connecting…'
                : 'connection lost, reconnecting…'}
        </span>
      </p>
      <dl class="tiles">
        <div>
          <dt>Issued (rows)</dt>
          <dd data-field="persisted">
            {c === undefined ? '–' : formatNumber(c.persisted)} <small>/ {c === undefined ? '–' : formatNumber(c.total)}</small>
          </dd>
        </div>
        <div>
          <dt>Admitted</dt>
          <dd data-field="admitted">{c === undefined ? '–' : formatNumber(c.admitted)}</dd>
        </div>
        <div>
          <dt>Remaining</dt>
          <dd data-field="remaining">{c === undefined ? '–' : formatNumber(c.remaining)}</dd>
        </div>
        <div>
          <dt>Status</dt>
          <dd data-field="status" aria-live="polite">
            <span class={`status status-${c?.status ?? 'none'}`}>{c?.status.replace('_', ' ') ?? '–'}</span>
          </dd>
        </div>
        <div>
          <dt>Sold out at</dt>
          <dd data-field="sold-out-at">{c?.status === 'SOLD_OUT' || (c !== undefined && c.remaining === 0) ? (c.soldOutAt === null ? 'before this console opened' : clock(c.soldOutAt)) : '–'}</dd>
        </div>
        <div>
          <dt>Answers/s</dt>
          <dd data-field="rate">{formatNumber(perSecond)}</dd>
        </div>
        <div>
          <dt>p50 · p99</dt>
          <dd data-field="latency">
            {num(last?.latencyMs.p50)} · {num(last?.latencyMs.p99)} <small>ms</small>
          </dd>
        </div>
        <div>
          <dt>Queue backlog</dt>
          <dd data-field="backlog">{c === undefined ? '–' : formatNumber(backlog)}</dd>
        </div>
      </dl>
      <p class="hint">
        Answers and latency: the issue route, all campaigns, summed over {last?.processes === undefined ? 'every process of this API' : `${last.processes} API process${last.processes === 1 ? '' : 'es'}`}. Stock, rows,
        admissions and queue: this campaign’s own, read from the stores.
      </p>
      <div class="charts">
        <Chart
          title="Issued vs stock"
          summary={c === undefined ? '' : `${c.persisted} rows persisted and ${c.admitted} admitted of ${c.total}.`}
          // Admitted is a wide pale band and rows a thin dark line drawn over it, so both show where they coincide.
          lines={[
            { label: 'admitted', color: 'rgba(47, 111, 222, 0.4)', width: 7 },
            { label: 'rows persisted', color: '#14602c' },
            { label: 'stock', color: '#999', dash: [6, 4] },
          ]}
          data={columns.stock}
        />
        <Chart
          title="Answers per second by outcome"
          summary={OUTCOMES.map((o) => `${o.label}: ${formatNumber(rate(o.status))}`).join(', ')}
          lines={[...OUTCOMES.map((o): Line => ({ label: o.label, color: o.color })), { label: OTHER.label, color: OTHER.color }]}
          data={columns.answers}
        />
        <Chart title="Latency (issue route)" summary={`p50 ${ms(last?.latencyMs.p50)}, p99 ${ms(last?.latencyMs.p99)}`} unit=" ms" lines={[{ label: 'p50', color: '#2f6fde' }, { label: 'p99', color: '#c0392b' }]} data={columns.latency} />
        <Chart
          key={hasStream ? 'queue-stream' : 'queue'}
          title="Queue"
          summary={`backlog ${backlog}${c?.stream === undefined ? '' : `, stream length ${c.stream.length}, lag ${c.stream.lag ?? 'unknown'}, dead letters ${c.stream.dead}`}`}
          lines={[
            { label: 'backlog (admitted − rows)', color: '#2f6fde' },
            ...(hasStream
              ? [
                  { label: 'stream lag', color: '#c76b00' },
                  { label: 'dead letters', color: '#c0392b' },
                ]
              : []),
          ]}
          data={columns.queue}
        />
      </div>
    </section>
  );
}

const num = (v: number | null | undefined) => (v === null || v === undefined ? '–' : v < 10 ? v.toFixed(1) : String(Math.round(v)));
const ms = (v: number | null | undefined) => (v === null || v === undefined ? '–' : `${num(v)} ms`);

function chartColumns(samples: ConsoleSample[], hasStream: boolean) {
  const x = samples.map((s) => s.at / 1000);
  const col = (f: (s: ConsoleSample) => number | null | undefined) => samples.map((s) => f(s) ?? null);
  const known = new Set(OUTCOMES.map((o) => o.status));
  return {
    stock: [x, col((s) => s.campaign?.admitted), col((s) => s.campaign?.persisted), col((s) => s.campaign?.total)],
    answers: [
      x,
      ...OUTCOMES.map((o) => col((s) => s.answersPerSecond[o.status] ?? 0)),
      col((s) => Object.entries(s.answersPerSecond).reduce((sum, [status, n]) => (known.has(status) ? sum : sum + n), 0)),
    ],
    latency: [x, col((s) => s.latencyMs.p50), col((s) => s.latencyMs.p99)],
    queue: [
      x,
      col((s) => (s.campaign === undefined ? null : s.campaign.admitted - s.campaign.persisted)),
      ...(hasStream ? [col((s) => s.campaign?.stream?.lag), col((s) => s.campaign?.stream?.dead)] : []),
    ],
  };
}
