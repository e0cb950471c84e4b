// One stampede: fires a request plan at POST /coupons/:id/issues over N keep-alive connections
// with autocannon, records every latency in an HDR histogram, and keeps per-user tallies of what
// was sent, answered and acknowledged (201/202) so the verifier can match them against rows.
import autocannon from 'autocannon';
import * as hdr from 'hdr-histogram-js';
import type { RequestPlan } from './plan.js';

export interface LoadSpec {
  /** Base URL of the server, e.g. http://127.0.0.1:3000 */
  readonly baseUrl: string;
  readonly path: string;
  readonly plan: RequestPlan;
  readonly connections: number;
  /** Stop after this long (cycling through the plan) instead of after one pass of the plan. */
  readonly durationSeconds: number | undefined;
  readonly timeoutSeconds: number;
  /** Called about ten times a second with the number of responses so far. */
  readonly onProgress?: (completed: number) => void;
}

export interface LatencySummary {
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

export interface LoadResult {
  readonly sent: number;
  readonly completed: number;
  /** From the first request sent to the last response received. */
  readonly durationMs: number;
  readonly requestsPerSecond: number;
  /** HTTP status → responses. */
  readonly statuses: ReadonlyMap<number, number>;
  /** Connection errors and timeouts: requests whose outcome the client never learned. */
  readonly errors: number;
  readonly timeouts: number;
  /** Milliseconds, from the HDR histogram (3 significant digits). */
  readonly latencyMs: LatencySummary;
  /** Per user index: requests sent, responses received, 201/202 received. */
  readonly sentByUser: Uint32Array;
  readonly answeredByUser: Uint32Array;
  readonly ackedByUser: Uint32Array;
  /** Per user index: 5xx answers other than 503 (a 504 handler timeout, a 500), after which the issue may still have happened. */
  readonly uncertainByUser: Uint32Array;
  /** performance.now() of the last response: where drain time starts. */
  readonly endedAt: number;
  /** The stampede split at its first 410 (sold out), when there was one: see `SellOutSplit`. */
  readonly sellOut: SellOutSplit | undefined;
}

/**
 * A stampede has two phases of very different cost: until the stock is gone most requests are
 * admissions (token, Redis or the database, a row), after it they are refusals. The split is at
 * the first 410 SOLD_OUT response; the rates are responses per second within each phase.
 */
export interface SellOutSplit {
  readonly before: PhaseRate;
  readonly after: PhaseRate;
}

export interface PhaseRate {
  readonly responses: number;
  readonly ms: number;
  readonly requestsPerSecond: number;
}

const SOLD_OUT = 410;

/** The split, or undefined without a sell-out or with an empty phase. */
export function splitAtSellOut(startedAt: number, endedAt: number, soldOutAt: number, responsesBefore: number, responses: number): SellOutSplit | undefined {
  if (soldOutAt === 0 || responsesBefore === 0 || responses === responsesBefore) return undefined;
  const phase = (n: number, ms: number): PhaseRate => ({ responses: n, ms, requestsPerSecond: (n / Math.max(1, ms)) * 1000 });
  return { before: phase(responsesBefore, soldOutAt - startedAt), after: phase(responses - responsesBefore, endedAt - soldOutAt) };
}

export interface RunningLoad {
  /**
   * Resolves at the last response (autocannon itself reports its end only at its next sample
   * tick), or at `done` when some requests got no answer. Drain time is measured from here.
   */
  readonly finished: Promise<void>;
  readonly done: Promise<LoadResult>;
  /** Live per-user 201/202 counts (final once `finished` resolved). */
  readonly ackedByUser: Uint32Array;
  /** performance.now() of the latest response so far. */
  lastResponseAt(): number;
  /** Ends the stampede early (Ctrl-C); `done` still resolves with what was measured. */
  stop(): void;
}

/** What autocannon keeps per connection between setupRequest and onResponse. */
interface ConnectionContext {
  user?: number;
}

const SUCCESS = new Set([201, 202]);
/** 503 promises nothing was issued; after any other 5xx the request may still have gone through. */
const isUncertain = (status: number) => status >= 500 && status !== 503;
const PROGRESS_INTERVAL_MS = 100;

export function startLoad(spec: LoadSpec): RunningLoad {
  const { plan } = spec;
  const userCount = plan.users.length;
  const sentByUser = new Uint32Array(userCount);
  const answeredByUser = new Uint32Array(userCount);
  const ackedByUser = new Uint32Array(userCount);
  const uncertainByUser = new Uint32Array(userCount);
  const statuses = new Map<number, number>();
  // Microseconds; autoResize keeps a pathological outlier from throwing.
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
  let cursor = 0;
  let completed = 0;
  let lastResponseAt = 0;
  let soldOutAt = 0;
  let responsesBeforeSellOut = 0;
  let markFinished: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    markFinished = resolve;
  });
  const expected = spec.durationSeconds === undefined ? plan.order.length : Number.POSITIVE_INFINITY;

  let settle: (err: unknown, result: autocannon.Result | undefined) => void = () => {};
  const startedAt = performance.now();
  const instance = autocannon(
    {
      url: spec.baseUrl,
      connections: spec.connections,
      pipelining: 1,
      timeout: spec.timeoutSeconds,
      // autocannon notices the end only at its next sample tick; keep that short.
      sampleInt: 100,
      ...(spec.durationSeconds === undefined ? { amount: plan.order.length } : { duration: spec.durationSeconds }),
      requests: [
        {
          method: 'POST',
          path: spec.path,
          // Every connection draws the next entry of the one shared plan, so the order holds
          // across connections. With pipelining 1 a connection has one request in flight, so
          // its context names the user the next response belongs to.
          setupRequest: (request, context) => {
            const user = plan.order[cursor++ % plan.order.length]!;
            (context as ConnectionContext).user = user;
            sentByUser[user]!++;
            return { ...request, headers: { ...request.headers, authorization: plan.users[user]!.authorization } };
          },
          onResponse: (status, _body, context) => {
            const user = (context as ConnectionContext).user;
            completed++;
            lastResponseAt = performance.now();
            statuses.set(status, (statuses.get(status) ?? 0) + 1);
            if (status === SOLD_OUT && soldOutAt === 0) {
              soldOutAt = lastResponseAt;
              responsesBeforeSellOut = completed - 1;
            }
            if (user !== undefined) {
              answeredByUser[user]!++;
              if (SUCCESS.has(status)) ackedByUser[user]!++;
              else if (isUncertain(status)) uncertainByUser[user]!++;
            }
            if (completed >= expected) markFinished();
          },
        },
      ],
    },
    (err: unknown, result: autocannon.Result | undefined) => settle(err, result),
  );
  instance.on('response', (_client, _status, _bytes, responseTimeMs) => {
    histogram.recordValue(Math.max(1, Math.round(responseTimeMs * 1000)));
  });

  const ticker = spec.onProgress === undefined ? undefined : setInterval(() => spec.onProgress?.(completed), PROGRESS_INTERVAL_MS);

  const done = new Promise<LoadResult>((resolve, reject) => {
    settle = (err, result) => {
      if (ticker !== undefined) clearInterval(ticker);
      markFinished();
      if (err !== null && err !== undefined) {
        histogram.destroy();
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      spec.onProgress?.(completed);
      const endedAt = lastResponseAt === 0 ? performance.now() : lastResponseAt;
      const durationMs = Math.max(1, endedAt - startedAt);
      const ms = (p: number) => histogram.getValueAtPercentile(p) / 1000;
      const latencyMs: LatencySummary =
        histogram.totalCount === 0
          ? { p50: 0, p95: 0, p99: 0, max: 0, mean: 0 }
          : { p50: ms(50), p95: ms(95), p99: ms(99), max: histogram.maxValue / 1000, mean: histogram.mean / 1000 };
      histogram.destroy();
      resolve({
        sent: cursor,
        completed,
        durationMs,
        requestsPerSecond: (completed / durationMs) * 1000,
        statuses,
        errors: result?.errors ?? 0,
        timeouts: result?.timeouts ?? 0,
        latencyMs,
        sentByUser,
        answeredByUser,
        ackedByUser,
        uncertainByUser,
        endedAt,
        sellOut: splitAtSellOut(startedAt, endedAt, soldOutAt, responsesBeforeSellOut, completed),
      });
    };
  });

  return { finished, done, ackedByUser, lastResponseAt: () => (lastResponseAt === 0 ? performance.now() : lastResponseAt), stop: () => instance.stop() };
}
