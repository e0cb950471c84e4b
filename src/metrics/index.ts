// Prometheus series of one process: the only module that knows prom-client. The domain reports
// outcomes through `IssueObserver`, HTTP hooks report route + status + time, protections report
// what they shed, and gauges (pool, stock) are read at scrape time, never on the hot path.
// Hot-path series are plain cells (cells.ts) that prom-client reads at scrape time, so recording
// is a map lookup and an add.
import cluster from 'node:cluster';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Coupon, IssueOutcome, IssueOutcomeKind } from '../coupons/domain.js';
import { ISSUE_ROUTE_URL } from '../coupons/paths.js';
import { campaignStock } from '../coupons/repository.js';
import type { IssueObserver } from '../coupons/service.js';
import { STRATEGY_NAMES } from '../coupons/strategies/index.js';
import type { Db } from '../db/index.js';
import { within } from '../util/within.js';
import { CellCounter, CellHistogram, type Cell } from './cells.js';
import { installWorkerResponder, renderClusterMetrics } from './cluster.js';

export const METRICS_CONTENT_TYPE = Registry.PROMETHEUS_CONTENT_TYPE;
/** Where the exposition is served: the API's route and the worker's bare listener. */
export const METRICS_PATH = '/metrics';

const OUTCOME_KINDS = [
  'ISSUED',
  'ACCEPTED',
  'ALREADY_ISSUED',
  'SOLD_OUT',
  'WINDOW_NOT_OPEN',
  'WINDOW_CLOSED',
  'COUPON_NOT_FOUND',
  'UNAVAILABLE',
  'OUTCOME_UNKNOWN',
] as const satisfies readonly IssueOutcomeKind[];

/** Why a request was refused before the domain saw it: the `reason` label of couponrush_requests_shed_total. */
export const SHED_REASONS = ['overloaded', 'rate_limited_user', 'rate_limited_ip', 'timeout'] as const;
export type ShedReason = (typeof SHED_REASONS)[number];

/** Issue-route latency buckets (seconds): the interesting range is 1 ms – 1 s. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Campaigns shown by the stock gauges: open now, or ended/starting within this margin. */
const STOCK_WINDOW_MS = 3600_000;
const STOCK_QUERY_LIMIT = 200;
/** A scrape must answer even when the database does not. */
const SCRAPE_QUERY_TIMEOUT_MS = 1_000;

/** A campaign the stock gauges show. */
export interface StockCampaign {
  readonly id: number;
  readonly strategy: string;
}

/** Remaining stock per coupon id, from wherever admission is decided (Redis for the Redis-admitted strategies). */
export type StockReader = (campaigns: readonly StockCampaign[]) => Promise<ReadonlyMap<number, number>>;

interface StockRow {
  id: number;
  total: number;
  /** Rows committed to the database. */
  persisted: number;
  /** Not yet admitted: from a StockReader (Redis) when there is one, else total − persisted. */
  remaining: number;
}

export interface MetricsOptions {
  db: Db;
  /** Adds the prom-client process/runtime series (off in tests that build many apps). */
  processMetrics?: boolean;
}

export type RouteRecorder = (statusCode: number, seconds: number) => void;

/** The issue route's answers and latency in one process, cumulative since it started. */
export interface IssueCounters {
  /** Responses by status code. */
  readonly answers: Readonly<Record<string, number>>;
  /** [upper bound in seconds, answers at or below it], ending with [Infinity, all answers]. */
  readonly buckets: ReadonlyArray<readonly [number, number]>;
}

export class Metrics implements IssueObserver {
  readonly registry = new Registry();
  private readonly outcomes: CellCounter<'strategy' | 'outcome'>;
  private readonly outcomeCells = new Map<string, Record<IssueOutcomeKind, Cell>>();
  private readonly admitted: CellCounter<'coupon'>;
  private readonly admittedCells = new Map<number, Cell>();
  private readonly httpResponses: CellCounter<'route' | 'method' | 'status'>;
  private readonly issueLatency: CellHistogram;
  private readonly shed: Record<ShedReason, Cell>;
  /** Issue requests answered before the token is read: a closed window, a known sell-out (routes/issue-handler.ts). */
  readonly answeredEarly: Cell;
  private readonly stockReaders: StockReader[] = [];

  constructor(private readonly options: MetricsOptions) {
    const registry = this.registry;
    this.outcomes = new CellCounter(registry, 'couponrush_issue_outcomes_total', 'Decided issue attempts by the campaign strategy and the outcome', [
      'strategy',
      'outcome',
    ]);
    for (const strategy of STRATEGY_NAMES) this.outcomeCellsFor(strategy);
    this.admitted = new CellCounter(registry, 'couponrush_campaign_admitted_total', 'Issue attempts answered 201/202 (admitted), per campaign', ['coupon']);
    this.httpResponses = new CellCounter(registry, 'couponrush_http_responses_total', 'HTTP responses by route pattern, method and status code', [
      'route',
      'method',
      'status',
    ]);
    this.issueLatency = new CellHistogram(
      registry,
      'couponrush_issue_request_duration_seconds',
      'Time from receiving POST /coupons/:id/issues to answering it, any status',
      LATENCY_BUCKETS,
    );
    const shed = new CellCounter(
      registry,
      'couponrush_requests_shed_total',
      'Requests refused or cut short by a protection: overload (503 OVERLOADED), rate limits (429 RATE_LIMITED), request timeout (504 TIMEOUT)',
      ['reason'],
    );
    this.shed = Object.fromEntries(SHED_REASONS.map((r) => [r, shed.cell({ reason: r })])) as Record<ShedReason, Cell>;
    this.answeredEarly = new CellCounter(
      registry,
      'couponrush_issue_answered_early_total',
      'POST /coupons/:id/issues answered before the token is read, because the answer is the same for every caller: a known sell-out (410) or a closed window (422). Also counted in couponrush_http_responses_total',
      [],
    ).cell({});

    registerPoolMetrics(this.registry, options.db);
    const registers = [this.registry];
    // The campaign gauges are collected in parallel within one scrape and share one stock query.
    // Values are the same in every process, so a cluster scrape keeps one instead of summing.
    const stock = () => this.stockForScrape();
    type StockRow = Awaited<ReturnType<typeof stock>>[number];
    const campaignGauge = (name: string, help: string, aggregator: 'max' | 'min', value: (c: StockRow) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['coupon'],
        registers,
        aggregator,
        async collect() {
          const rows = await stock();
          this.reset();
          for (const c of rows) this.set({ coupon: String(c.id) }, value(c));
        },
      });
    campaignGauge('couponrush_campaign_stock_total', 'Total quantity of campaigns open now or within an hour of their window', 'max', (c) => c.total);
    campaignGauge('couponrush_campaign_persisted', 'Issuances committed to the database (rows), per campaign', 'max', (c) => c.persisted);
    campaignGauge(
      'couponrush_campaign_remaining',
      'Stock not yet admitted (Redis strategies) or not yet committed (database strategies)',
      'min',
      (c) => c.remaining,
    );
    if (options.processMetrics === true) collectDefaultMetrics({ register: this.registry });
    if (cluster.isWorker) installWorkerResponder(this.registry);
  }

  /** A better source of remaining stock than the database (e.g. Redis counters); first answer wins. */
  addStockReader(reader: StockReader): void {
    this.stockReaders.push(reader);
  }

  issueDecided(coupon: Coupon | undefined, outcome: IssueOutcome): void {
    const kind = outcome.kind;
    this.outcomeCellsFor(coupon?.strategy ?? 'none')[kind].n++;
    if (coupon === undefined || (kind !== 'ISSUED' && kind !== 'ACCEPTED')) return;
    let cell = this.admittedCells.get(coupon.id);
    if (cell === undefined) {
      cell = this.admitted.cell({ coupon: String(coupon.id) });
      this.admittedCells.set(coupon.id, cell);
    }
    cell.n++;
  }

  requestShed(reason: ShedReason): void {
    this.shed[reason].n++;
  }

  /** Called once per route at start-up; the returned function runs once per response. */
  routeRecorder(method: string, route: string, isIssueRoute: boolean): RouteRecorder {
    const byStatus = new Map<number, Cell>();
    const responses = this.httpResponses;
    const latency = this.issueLatency;
    const count = (statusCode: number) => {
      let cell = byStatus.get(statusCode);
      if (cell === undefined) {
        cell = responses.cell({ route, method, status: String(statusCode) });
        byStatus.set(statusCode, cell);
      }
      cell.n++;
    };
    if (!isIssueRoute) return count;
    return (statusCode, seconds) => {
      count(statusCode);
      latency.observe(seconds);
    };
  }

  /** This process's issue-route counters, read from the cells (no scrape, no database). */
  issueCounters(): IssueCounters {
    const answers: Record<string, number> = {};
    for (const { labels, cell } of this.httpResponses.series()) {
      if (labels.route === ISSUE_ROUTE_URL && labels.method === 'POST') answers[labels.status] = (answers[labels.status] ?? 0) + cell.n;
    }
    return { answers, buckets: this.issueLatency.cumulative() };
  }

  /** The exposition text; in a cluster worker, the sum over every worker of the cluster. */
  async render(): Promise<string> {
    return cluster.isWorker ? renderClusterMetrics() : this.registry.metrics();
  }

  private outcomeCellsFor(strategy: string): Record<IssueOutcomeKind, Cell> {
    let cells = this.outcomeCells.get(strategy);
    if (cells === undefined) {
      // Exported at 0 from the start, so rate() and dashboards see every series before it moves.
      cells = Object.fromEntries(OUTCOME_KINDS.map((k) => [k, this.outcomes.cell({ strategy, outcome: k })])) as Record<IssueOutcomeKind, Cell>;
      this.outcomeCells.set(strategy, cells);
    }
    return cells;
  }

  private stockSnapshot: Promise<StockRow[]> | undefined;

  private stockForScrape(): Promise<StockRow[]> {
    if (this.stockSnapshot === undefined) {
      this.stockSnapshot = this.readStock();
      void this.stockSnapshot.finally(() => setImmediate(() => (this.stockSnapshot = undefined)));
    }
    return this.stockSnapshot;
  }

  private async readStock(): Promise<StockRow[]> {
    try {
      return await within(this.queryStock(), SCRAPE_QUERY_TIMEOUT_MS, 'stock query timed out');
    } catch {
      return []; // the scrape still answers; the gap in the series shows the outage
    }
  }

  private async queryStock(): Promise<StockRow[]> {
    const now = Date.now();
    const rows = await campaignStock(this.options.db, new Date(now - STOCK_WINDOW_MS), new Date(now + STOCK_WINDOW_MS), STOCK_QUERY_LIMIT);
    const fromReaders = new Map<number, number>();
    for (const reader of this.stockReaders) {
      for (const [id, remaining] of await reader(rows)) if (!fromReaders.has(id)) fromReaders.set(id, remaining);
    }
    return rows.map((r) => ({ id: r.id, total: r.total, persisted: r.issued, remaining: fromReaders.get(r.id) ?? Math.max(0, r.total - r.issued) }));
  }
}


/** Pool gauges of one process (API or worker), read at scrape time. */
export function registerPoolMetrics(registry: Registry, db: Db): void {
  new Gauge({
    name: 'couponrush_db_pool_connections',
    help: 'Database connections of this process by state (in_use, idle)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const s = db.poolStats();
      this.set({ state: 'in_use' }, s.total - s.idle);
      this.set({ state: 'idle' }, s.idle);
    },
  });
  new Gauge({
    name: 'couponrush_db_pool_waiting',
    help: 'Queries/transactions waiting for a database connection in this process',
    registers: [registry],
    collect() {
      this.set(db.poolStats().waiting);
    },
  });
}
