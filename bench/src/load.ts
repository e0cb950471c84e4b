// One stampede: fires a request plan at POST /coupons/:id/issues over N keep-alive connections,
// records every latency in an HDR histogram, and keeps per-user tallies of what was sent,
// answered and acknowledged (201/202) so the verifier can match them against rows. Two load
// generators behind one tally: the bench's own raw-socket client (the default: it costs a
// fraction of the servers' CPU per request) and autocannon (kept to compare with); the raw-socket
// client also runs open-loop (open-loop.ts: arrivals at their intended times).
import autocannon from 'autocannon';
import * as hdr from 'hdr-histogram-js';
import type { RequestPlan } from './plan.js';
import { startOpenLoad, type OpenLoopSummary } from './open-loop.js';
import { startSocketLoad } from './socket-client.js';

export const GENERATORS = ['sockets', 'autocannon'] as const;
export type Generator = (typeof GENERATORS)[number];

export interface LoadSpec {
  /** Base URL of the server, e.g. http://127.0.0.1:3000 */
  readonly baseUrl: string;
  readonly path: string;
  readonly plan: RequestPlan;
  readonly connections: number;
  /** Stop after this long (cycling through the plan) instead of after one pass of the plan. */
  readonly durationSeconds: number | undefined;
  readonly timeoutSeconds: number;
  readonly generator: Generator;
  /**
   * Open loop (the raw-socket client only): each entry of the plan is an arrival sent at its
   * intended time over `connections` opened first and more opened as needed, instead of a closed loop.
   */
  readonly openLoop?: OpenLoopPlan;
  /** Called about ten times a second with the number of responses so far. */
  readonly onProgress?: (completed: number) => void;
  /** Called once, at the first 410 SOLD_OUT: where the refusal phase starts. */
  readonly onSellOut?: () => void;
}

/** The arrivals of an open-loop stampede: entry i of the plan (cycled) is sent at `offsetsMs[i]`. */
export interface OpenLoopPlan {
  readonly offsetsMs: Float64Array;
  readonly windowMs: number;
  readonly maxConnections: number;
}

export interface LatencySummary {
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  /** Added with the open loop (reports of schema 2 on). */
  readonly p999?: number;
  readonly max: number;
  readonly mean: number;
}

export interface LoadResult {
  readonly generator: Generator;
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
  /** Milliseconds, from the HDR histogram (3 significant digits); in the open loop from each attempt's intended send time. */
  readonly latencyMs: LatencySummary;
  /** Open loop only: offered vs achieved, send lag, retries, time to a final answer per arrival. */
  readonly openLoop?: OpenLoopSummary;
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
  /** CPU time (user + system) of this process — the load generator — from the first request to the last response, ms. */
  readonly generatorCpuMs: number;
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
  /** The server's CPU µs per response within the phase (filled in by the bench, which probes it). */
  readonly cpuUsPerResponse?: number;
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

const SUCCESS = new Set([201, 202]);
/** 503 promises nothing was issued; after any other 5xx the request may still have gone through. */
const isUncertain = (status: number) => status >= 500 && status !== 503;
const PROGRESS_INTERVAL_MS = 100;

/** What both generators report to: every request sent and every answer, per user. */
class Tally {
  readonly sentByUser: Uint32Array;
  readonly answeredByUser: Uint32Array;
  readonly ackedByUser: Uint32Array;
  readonly uncertainByUser: Uint32Array;
  readonly statuses = new Map<number, number>();
  // Microseconds; autoResize keeps a pathological outlier from throwing.
  readonly histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
  cursor = 0;
  completed = 0;
  lastResponseAt = 0;
  soldOutAt = 0;
  responsesBeforeSellOut = 0;

  constructor(
    private readonly plan: RequestPlan,
    private readonly expected: number,
    private readonly onFinished: () => void,
    private readonly onSellOut: (() => void) | undefined,
  ) {
    const n = plan.users.length;
    this.sentByUser = new Uint32Array(n);
    this.answeredByUser = new Uint32Array(n);
    this.ackedByUser = new Uint32Array(n);
    this.uncertainByUser = new Uint32Array(n);
  }

  /** The next user of the one shared plan, so the order holds across connections. */
  nextUser(): number {
    const user = this.plan.order[this.cursor % this.plan.order.length]!;
    this.countSend(user);
    return user;
  }

  countSend(user: number): void {
    this.cursor++;
    this.sentByUser[user]!++;
  }

  answer(user: number | undefined, status: number): void {
    this.completed++;
    this.lastResponseAt = performance.now();
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
    if (status === SOLD_OUT && this.soldOutAt === 0) {
      this.soldOutAt = this.lastResponseAt;
      this.responsesBeforeSellOut = this.completed - 1;
      this.onSellOut?.();
    }
    if (user !== undefined) {
      this.answeredByUser[user]!++;
      if (SUCCESS.has(status)) this.ackedByUser[user]!++;
      else if (isUncertain(status)) this.uncertainByUser[user]!++;
    }
    if (this.completed >= this.expected) this.onFinished();
  }

  latency(us: number): void {
    this.histogram.recordValue(Math.max(1, us));
  }

  result(generator: Generator, startedAt: number, cpuAtStart: NodeJS.CpuUsage, cpuAtLastResponse: NodeJS.CpuUsage | undefined, ended: DriverEnd): LoadResult {
    const { errors, timeouts, openLoop } = ended;
    const endedAt = this.lastResponseAt === 0 ? performance.now() : this.lastResponseAt;
    const durationMs = Math.max(1, endedAt - startedAt);
    const h = this.histogram;
    const ms = (p: number) => h.getValueAtPercentile(p) / 1000;
    const latencyMs: LatencySummary =
      h.totalCount === 0
        ? { p50: 0, p95: 0, p99: 0, p999: 0, max: 0, mean: 0 }
        : { p50: ms(50), p95: ms(95), p99: ms(99), p999: ms(99.9), max: h.maxValue / 1000, mean: h.mean / 1000 };
    h.destroy();
    const cpu = process.cpuUsage(cpuAtStart);
    const at = cpuAtLastResponse ?? cpu;
    return {
      generator,
      sent: this.cursor,
      completed: this.completed,
      durationMs,
      requestsPerSecond: (this.completed / durationMs) * 1000,
      statuses: this.statuses,
      errors,
      timeouts,
      latencyMs,
      sentByUser: this.sentByUser,
      answeredByUser: this.answeredByUser,
      ackedByUser: this.ackedByUser,
      uncertainByUser: this.uncertainByUser,
      endedAt,
      sellOut: splitAtSellOut(startedAt, endedAt, this.soldOutAt, this.responsesBeforeSellOut, this.completed),
      generatorCpuMs: (at.user + at.system) / 1000,
      ...(openLoop === undefined ? {} : { openLoop }),
    };
  }
}

/** How a generator runs: starts sending at once; `ended` settles when it has stopped. */
interface Driver {
  readonly ended: Promise<DriverEnd>;
  stop(): void;
}

interface DriverEnd {
  readonly errors: number;
  readonly timeouts: number;
  readonly openLoop?: OpenLoopSummary;
}

export function startLoad(spec: LoadSpec): RunningLoad {
  // The open loop's answers include retries: it says itself when every arrival has its final answer.
  const expected = spec.durationSeconds === undefined && spec.openLoop === undefined ? spec.plan.order.length : Number.POSITIVE_INFINITY;
  let cpuAtLastResponse: NodeJS.CpuUsage | undefined;
  let markFinished: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    markFinished = () => {
      // The generator's CPU is counted up to the last response, like the server's.
      cpuAtLastResponse ??= process.cpuUsage(cpuAtStart);
      resolve();
    };
  });
  const tally = new Tally(spec.plan, expected, () => markFinished(), spec.onSellOut);
  const cpuAtStart = process.cpuUsage();
  const startedAt = performance.now();
  const driver =
    spec.openLoop !== undefined ? openLoopDriver(spec, spec.openLoop, tally) : spec.generator === 'autocannon' ? autocannonDriver(spec, tally) : socketDriver(spec, tally, startedAt);
  const ticker = spec.onProgress === undefined ? undefined : setInterval(() => spec.onProgress?.(tally.completed), PROGRESS_INTERVAL_MS);
  const done = driver.ended
    .then((ended) => {
      spec.onProgress?.(tally.completed);
      return tally.result(spec.generator, startedAt, cpuAtStart, cpuAtLastResponse, ended);
    })
    .finally(() => {
      if (ticker !== undefined) clearInterval(ticker);
      markFinished();
    });
  return {
    finished,
    done,
    ackedByUser: tally.ackedByUser,
    lastResponseAt: () => (tally.lastResponseAt === 0 ? performance.now() : tally.lastResponseAt),
    stop: () => driver.stop(),
  };
}

/** Each user's request, encoded once on first use. */
function requestEncoder(spec: LoadSpec): (user: number) => Buffer {
  const url = new URL(spec.baseUrl);
  const head = `POST ${spec.path} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Length: 0\r\nAuthorization: `;
  const users = spec.plan.users;
  const requests = new Array<Buffer | undefined>(users.length);
  return (user) => (requests[user] ??= Buffer.from(`${head}${users[user]!.authorization}\r\n\r\n`, 'latin1'));
}

function socketDriver(spec: LoadSpec, tally: Tally, startedAt: number): Driver {
  const url = new URL(spec.baseUrl);
  const encode = requestEncoder(spec);
  const load = startSocketLoad({
    host: url.hostname,
    port: Number(url.port || 80),
    connections: spec.connections,
    total: spec.durationSeconds === undefined ? spec.plan.order.length : Number.POSITIVE_INFINITY,
    sendUntil: spec.durationSeconds === undefined ? Number.POSITIVE_INFINITY : startedAt + spec.durationSeconds * 1000,
    timeoutMs: spec.timeoutSeconds * 1000,
    next: () => {
      const user = tally.nextUser();
      return { user, bytes: encode(user) };
    },
    onResponse: (user, status, latencyUs) => {
      tally.latency(latencyUs);
      tally.answer(user, status);
    },
  });
  return { ended: load.done.then(({ errors, timeouts }) => ({ errors, timeouts })), stop: () => load.stop() };
}

function openLoopDriver(spec: LoadSpec, plan: OpenLoopPlan, tally: Tally): Driver {
  const url = new URL(spec.baseUrl);
  const encode = requestEncoder(spec);
  const order = spec.plan.order;
  const load = startOpenLoad({
    host: url.hostname,
    port: Number(url.port || 80),
    offsetsMs: plan.offsetsMs,
    windowMs: plan.windowMs,
    maxConnections: plan.maxConnections,
    initialConnections: spec.connections,
    timeoutMs: spec.timeoutSeconds * 1000,
    request: (arrival) => {
      const user = order[arrival % order.length]!;
      return { user, bytes: encode(user) };
    },
    onAttempt: (user) => tally.countSend(user),
    onResponse: (user, status, latencyUs) => {
      tally.latency(latencyUs);
      tally.answer(user, status);
    },
  });
  return { ended: load.done.then(({ errors, timeouts, ...openLoop }) => ({ errors, timeouts, openLoop })), stop: () => load.stop() };
}

/** What autocannon keeps per connection between setupRequest and onResponse. */
interface ConnectionContext {
  user?: number;
}

function autocannonDriver(spec: LoadSpec, tally: Tally): Driver {
  let settle: (err: unknown, result: autocannon.Result | undefined) => void = () => {};
  const ended = new Promise<{ errors: number; timeouts: number }>((resolve, reject) => {
    settle = (err, result) => {
      if (err !== null && err !== undefined) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve({ errors: result?.errors ?? 0, timeouts: result?.timeouts ?? 0 });
    };
  });
  const instance = autocannon(
    {
      url: spec.baseUrl,
      connections: spec.connections,
      pipelining: 1,
      timeout: spec.timeoutSeconds,
      // autocannon notices the end only at its next sample tick; keep that short.
      sampleInt: 100,
      ...(spec.durationSeconds === undefined ? { amount: spec.plan.order.length } : { duration: spec.durationSeconds }),
      requests: [
        {
          method: 'POST',
          path: spec.path,
          // With pipelining 1 a connection has one request in flight, so its context names the
          // user the next response belongs to.
          setupRequest: (request, context) => {
            const user = tally.nextUser();
            (context as ConnectionContext).user = user;
            return { ...request, headers: { ...request.headers, authorization: spec.plan.users[user]!.authorization } };
          },
          onResponse: (status, _body, context) => tally.answer((context as ConnectionContext).user, status),
        },
      ],
    },
    (err: unknown, result: autocannon.Result | undefined) => settle(err, result),
  );
  instance.on('response', (_client, _status, _bytes, responseTimeMs) => tally.latency(Math.round(responseTimeMs * 1000)));
  return { ended, stop: () => instance.stop() };
}
