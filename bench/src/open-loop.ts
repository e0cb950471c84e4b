// The open loop: every request leaves at its intended time whatever the server is doing, as people
// press the button when the clock says so. A closed loop (socket-client.ts) slows down exactly when
// the server does and leaves the waiting out of its percentiles (coordinated omission); here the
// latency runs from the intended send time, connections are opened as needed up to a cap (a few
// before the clock starts), and an arrival that finds every connection busy at the cap waits and
// is counted as the generator's own shortfall. Each arrival is a client that behaves as the README's client table says: a 429 or 503
// with Retry-After is retried after it (bounded), so the time to a final answer is known per arrival.
import * as hdr from 'hdr-histogram-js';
import { Connection, sweepTimeouts, type ConnectionOwner, type Head } from './socket-client.js';

export const ARRIVAL_SHAPES = ['uniform', 'poisson'] as const;
export type ArrivalShape = (typeof ARRIVAL_SHAPES)[number];

/** A client retries a 429/503 with Retry-After at most this often… */
export const MAX_RETRIES = 5;
/** …and not once the retry would leave later than this after its first attempt's intended time. */
export const MAX_SESSION_MS = 30_000;
/** The generator fell behind when it sent less than this share of the offered rate… */
export const ACHIEVED_SHARE_WARNING = 0.95;
/** …or when the p99 of (actual − intended) send time is above this. */
export const SEND_LAG_P99_WARNING_MS = 10;

/**
 * At most this many connections being opened at once: after a stall of a few ms the backlog would
 * otherwise open hundreds at a time, whose handshakes cost the shared cores more than the stall.
 */
export const MAX_CONNECTING = 8;
const TIMEOUT_SWEEP_MS = 250;
const RECONNECT_DELAY_MS = 50;

/**
 * Intended send times, ms from the start, ascending: `count` arrivals within `windowMs`. Uniform:
 * evenly spaced. Poisson: `count` independent uniform instants in the window, sorted — a Poisson
 * process conditioned on `count` arrivals, with its bunches and gaps.
 */
export function arrivalOffsets(count: number, windowMs: number, shape: ArrivalShape): Float64Array {
  const offsets = new Float64Array(count);
  if (shape === 'uniform') {
    for (let i = 0; i < count; i++) offsets[i] = (i * windowMs) / count;
    return offsets;
  }
  for (let i = 0; i < count; i++) offsets[i] = Math.random() * windowMs;
  return offsets.sort();
}

export interface OpenLoadSpec {
  readonly host: string;
  readonly port: number;
  /** Each arrival's intended send time, ms after the start (ascending; arrivalOffsets). */
  readonly offsetsMs: Float64Array;
  /** The window the arrivals were offered in (the offered rate is arrivals over it). */
  readonly windowMs: number;
  readonly maxConnections: number;
  /** Connections opened before the clock starts (more are opened as needed, up to the cap). */
  readonly initialConnections: number;
  readonly timeoutMs: number;
  /** Who arrival `arrival` is, and the bytes of its request (the same for each of its attempts). */
  request(arrival: number): { readonly bytes: Buffer; readonly user: number };
  /** An attempt of `user`'s is written. */
  onAttempt(user: number): void;
  /** Every answer, its latency from the attempt's intended send time, µs. */
  onResponse(user: number, status: number, latencyUs: number): void;
}

export interface Percentiles {
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
}

/** What the open loop reports beside the per-request tallies (all times in ms). */
export interface OpenLoopSummary {
  readonly arrivals: number;
  readonly windowMs: number;
  readonly maxConnections: number;
  readonly offeredPerSecond: number;
  /** First attempts sent over the time they took (at least the window). */
  readonly achievedPerSecond: number;
  /** Actual − intended send time of every attempt. */
  readonly sendLagMs: Percentiles;
  /** Attempts that found every connection busy with the cap reached and waited for one: the generator's shortfall. */
  readonly waitedForConnection: number;
  /** Attempts that waited for a connection longer than the request timeout and were never sent. */
  readonly neverSent: number;
  readonly peakConnections: number;
  readonly attempts: number;
  /** Attempts after a 429/503 with Retry-After. */
  readonly retries: number;
  /** Arrivals whose last answer was still a 429/503 when the retry bound was reached. */
  readonly gaveUp: number;
  /** Arrivals that ended without an answer (connection broken, timeout, never sent). */
  readonly unanswered: number;
  /** Per arrival: from its intended send time to its final answer (those that got one). */
  readonly timeToFinalAnswerMs: Percentiles;
  /** The first 410, after the start; null without a sell-out. */
  readonly soldOutAtMs: number | null;
  /** From the first 410 to the last arrival's final 410: how long the last user waited to learn it. */
  readonly lastLearnedSoldOutAfterMs: number | null;
}

export interface OpenLoad {
  /** Resolves once every arrival has a final answer (or none will come) and the connections are closed. */
  readonly done: Promise<OpenLoopSummary & { readonly errors: number; readonly timeouts: number }>;
  /** Sends nothing more and drops what is in flight. */
  stop(): void;
}

export function startOpenLoad(spec: OpenLoadSpec): OpenLoad {
  const run = new OpenLoopRun(spec);
  run.preOpen(Math.min(spec.initialConnections, spec.maxConnections));
  return { done: run.done, stop: () => run.stop() };
}

/** A min-heap of (due time, arrival): the retries waiting for their Retry-After. */
class RetryHeap {
  private readonly due: number[] = [];
  private readonly arrival: number[] = [];

  get size(): number {
    return this.due.length;
  }

  peekDue(): number {
    return this.due[0] ?? Number.POSITIVE_INFINITY;
  }

  push(due: number, arrival: number): void {
    let i = this.due.length;
    this.due.push(due);
    this.arrival.push(arrival);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.due[parent]! <= due) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): number {
    const top = this.arrival[0]!;
    const lastDue = this.due.pop()!;
    const lastArrival = this.arrival.pop()!;
    if (this.due.length > 0) {
      this.due[0] = lastDue;
      this.arrival[0] = lastArrival;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < this.due.length && this.due[l]! < this.due[m]!) m = l;
        if (r < this.due.length && this.due[r]! < this.due[m]!) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }

  private swap(a: number, b: number): void {
    [this.due[a], this.due[b]] = [this.due[b]!, this.due[a]!];
    [this.arrival[a], this.arrival[b]] = [this.arrival[b]!, this.arrival[a]!];
  }
}

const histogram = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3, autoResize: true });

function percentilesMs(h: hdr.Histogram): Percentiles {
  if (h.totalCount === 0) return { p50: 0, p99: 0, p999: 0, max: 0 };
  const ms = (p: number) => h.getValueAtPercentile(p) / 1000;
  return { p50: ms(50), p99: ms(99), p999: ms(99.9), max: h.maxValue / 1000 };
}

/** The arrivals' clock, their connections, and what each arrival (a client) has been told so far. */
class OpenLoopRun implements ConnectionOwner {
  readonly host: string;
  readonly port: number;
  readonly done: Promise<OpenLoopSummary & { errors: number; timeouts: number }>;
  private finish: () => void = () => {};
  /** When the clock started (the first arrival's time 0): once the pre-opened connections are up. */
  private startedAt = 0;
  private readonly count: number;
  /** The current attempt's intended send time, and its number (0: the first), per arrival. */
  private readonly intendedAt: Float64Array;
  private readonly attempt: Uint8Array;
  private nextArrival = 0;
  private outstanding: number;
  private readonly retryHeap = new RetryHeap();
  private readonly waiting: number[] = [];
  private waitingHead = 0;
  private readonly connections = new Set<Connection>();
  private readonly connecting = new Set<Connection>();
  private readonly idleConnections: Connection[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerDue = Number.POSITIVE_INFINITY;
  private readonly sweep: NodeJS.Timeout;
  private stopped = false;
  private ended = false;
  private readonly lag = histogram();
  private readonly final = histogram();
  private readonly n = { attempts: 0, firstAttempts: 0, retries: 0, waited: 0, neverSent: 0, gaveUp: 0, unanswered: 0, errors: 0, timeouts: 0, peak: 0 };
  private lastFirstSendAt = 0;
  private soldOutAt = 0;
  private lastSoldOutFinalAt = 0;

  constructor(private readonly spec: OpenLoadSpec) {
    this.host = spec.host;
    this.port = spec.port;
    this.count = spec.offsetsMs.length;
    this.intendedAt = new Float64Array(this.count);
    this.attempt = new Uint8Array(this.count);
    this.outstanding = this.count;
    this.done = new Promise((resolve) => {
      this.finish = () => resolve({ ...this.summary(), errors: this.n.errors, timeouts: this.n.timeouts });
    });
    this.sweep = setInterval(() => this.sweepTimeouts(), TIMEOUT_SWEEP_MS);
  }

  /**
   * Opens `n` connections, then starts the clock: a drop's first arrivals measure the server, not
   * a storm of handshakes on an empty pool (a connection refused is not retried here).
   */
  preOpen(n: number): void {
    for (let i = 0; i < n; i++) this.open();
    if (n === 0) this.startClock();
  }

  private startClock(): void {
    if (this.startedAt !== 0) return;
    this.startedAt = performance.now();
    this.tick();
  }

  /** Sends every arrival and retry now due, then sleeps until the next one. */
  tick(): void {
    this.timer = undefined;
    this.timerDue = Number.POSITIVE_INFINITY;
    if (this.stopped) return;
    const now = performance.now();
    const offsets = this.spec.offsetsMs;
    while (this.nextArrival < this.count && this.startedAt + offsets[this.nextArrival]! <= now) {
      const i = this.nextArrival++;
      this.dispatch(i, this.startedAt + offsets[i]!);
    }
    while (this.retryHeap.peekDue() <= now) {
      const due = this.retryHeap.peekDue();
      this.dispatch(this.retryHeap.pop(), due);
    }
    const nextArrivalAt = this.nextArrival < this.count ? this.startedAt + offsets[this.nextArrival]! : Number.POSITIVE_INFINITY;
    this.wakeAt(Math.min(nextArrivalAt, this.retryHeap.peekDue()));
    if (this.outstanding === 0) this.wrapUp();
  }

  private wakeAt(due: number): void {
    if (due === Number.POSITIVE_INFINITY || due >= this.timerDue) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => this.tick(), Math.max(0, due - performance.now()));
  }

  /** An attempt is due: on an idle connection at once, else it waits for one (opening one if the cap allows). */
  private dispatch(arrival: number, intendedAt: number): void {
    this.intendedAt[arrival] = intendedAt;
    const c = this.idleConnections.pop();
    if (c !== undefined) return this.write(c, arrival);
    this.waiting.push(arrival);
    if (this.connections.size < this.spec.maxConnections) this.openIfNeeded();
    else this.n.waited++;
  }

  private openIfNeeded(): void {
    const waiting = this.waiting.length - this.waitingHead;
    if (this.stopped || waiting <= this.connecting.size || this.connecting.size >= MAX_CONNECTING || this.connections.size >= this.spec.maxConnections) return;
    this.open();
  }

  private open(): void {
    const c = new Connection(this);
    this.connections.add(c);
    this.connecting.add(c);
    this.n.peak = Math.max(this.n.peak, this.connections.size);
    c.connect();
  }

  private write(c: Connection, arrival: number): void {
    const now = performance.now();
    this.lag.recordValue(Math.max(1, Math.round((now - this.intendedAt[arrival]!) * 1000)));
    this.n.attempts++;
    if (this.attempt[arrival] === 0) {
      this.n.firstAttempts++;
      this.lastFirstSendAt = now;
    }
    const { bytes, user } = this.spec.request(arrival);
    this.spec.onAttempt(user);
    c.send(bytes, arrival);
  }

  idle(c: Connection): void {
    const opened = this.connecting.delete(c);
    if (this.stopped || !this.connections.has(c)) return c.close();
    if (this.startedAt === 0) {
      this.idleConnections.push(c);
      if (this.connecting.size === 0) this.startClock();
      return;
    }
    const arrival = this.takeWaiting();
    if (arrival === undefined) this.idleConnections.push(c);
    else this.write(c, arrival);
    if (opened) this.openIfNeeded(); // the next one, if the line is still longer than what is being opened
  }

  private takeWaiting(): number | undefined {
    if (this.waitingHead === this.waiting.length) return undefined;
    const arrival = this.waiting[this.waitingHead++]!;
    if (this.waitingHead > 1024 && this.waitingHead * 2 > this.waiting.length) {
      this.waiting.splice(0, this.waitingHead);
      this.waitingHead = 0;
    }
    return arrival;
  }

  answered(arrival: number, head: Head, _sentAt: number): void {
    const now = performance.now();
    const { user } = this.spec.request(arrival);
    this.spec.onResponse(user, head.status, Math.max(1, Math.round((now - this.intendedAt[arrival]!) * 1000)));
    if (head.status === 410 && this.soldOutAt === 0) this.soldOutAt = now;
    const retryAfter = head.retryAfterMs;
    if (retryAfter !== undefined) {
      const firstIntended = this.startedAt + this.spec.offsetsMs[arrival]!;
      if (this.attempt[arrival]! < MAX_RETRIES && now + retryAfter - firstIntended <= MAX_SESSION_MS) {
        this.attempt[arrival]!++;
        this.n.retries++;
        this.retryHeap.push(now + retryAfter, arrival);
        this.wakeAt(now + retryAfter);
        return;
      }
      this.n.gaveUp++;
    }
    this.settle(arrival, head.status, now);
  }

  lost(arrival: number, timedOut: boolean): void {
    if (timedOut) this.n.timeouts++;
    else this.n.errors++;
    if (arrival !== -1) this.settle(arrival, 0, performance.now());
  }

  /** An arrival's final answer (status 0: none). */
  private settle(arrival: number, status: number, now: number): void {
    this.outstanding--;
    if (status === 0) this.n.unanswered++;
    else this.final.recordValue(Math.max(1, Math.round((now - this.startedAt - this.spec.offsetsMs[arrival]!) * 1000)));
    if (status === 410) this.lastSoldOutFinalAt = now;
    if (this.outstanding === 0 && this.nextArrival === this.count) this.wrapUp();
  }

  closed(c: Connection): void {
    this.connections.delete(c);
    this.connecting.delete(c);
    const at = this.idleConnections.indexOf(c);
    if (at !== -1) this.idleConnections.splice(at, 1);
    if (this.startedAt === 0 && !this.stopped) {
      this.n.errors++;
      if (this.connecting.size === 0) this.startClock();
      return;
    }
    if (this.stopped || this.outstanding === 0) {
      if (this.connections.size === 0) this.end();
      return;
    }
    // A server that refuses connections is not hammered with reconnects.
    setTimeout(() => this.openIfNeeded(), this.n.errors > 0 ? RECONNECT_DELAY_MS : 0);
  }

  /** Requests in flight too long are lost; attempts that waited for a connection as long are never sent. */
  private sweepTimeouts(): void {
    sweepTimeouts(this.connections, this.spec.timeoutMs);
    const cutoff = performance.now() - this.spec.timeoutMs;
    while (this.waitingHead < this.waiting.length && this.intendedAt[this.waiting[this.waitingHead]!]! < cutoff) {
      this.n.neverSent++;
      this.settle(this.takeWaiting()!, 0, performance.now());
    }
  }

  /** Every arrival has its final answer: close the connections; done once they are closed. */
  private wrapUp(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    for (const c of this.connections) c.close();
    if (this.connections.size === 0) this.end();
  }

  stop(): void {
    this.wrapUp();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    clearInterval(this.sweep);
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.finish();
  }

  private summary(): OpenLoopSummary {
    const sendingMs = Math.max(this.spec.windowMs, this.lastFirstSendAt - this.startedAt, 1);
    const out: OpenLoopSummary = {
      arrivals: this.count,
      windowMs: this.spec.windowMs,
      maxConnections: this.spec.maxConnections,
      offeredPerSecond: (this.count / Math.max(1, this.spec.windowMs)) * 1000,
      achievedPerSecond: (this.n.firstAttempts / sendingMs) * 1000,
      sendLagMs: percentilesMs(this.lag),
      waitedForConnection: this.n.waited,
      neverSent: this.n.neverSent,
      peakConnections: this.n.peak,
      attempts: this.n.attempts,
      retries: this.n.retries,
      gaveUp: this.n.gaveUp,
      unanswered: this.n.unanswered,
      timeToFinalAnswerMs: percentilesMs(this.final),
      soldOutAtMs: this.soldOutAt === 0 ? null : this.soldOutAt - this.startedAt,
      lastLearnedSoldOutAfterMs: this.soldOutAt === 0 ? null : Math.max(0, this.lastSoldOutFinalAt - this.soldOutAt),
    };
    this.lag.destroy();
    this.final.destroy();
    return out;
  }
}

/** Why a run's generator did not offer what was asked (empty when it kept up): the report flags these. */
export function generatorBehind(s: OpenLoopSummary): string[] {
  const reasons: string[] = [];
  if (s.achievedPerSecond < ACHIEVED_SHARE_WARNING * s.offeredPerSecond) {
    reasons.push(`sent ${Math.round(s.achievedPerSecond)}/s of the ${Math.round(s.offeredPerSecond)}/s offered (${Math.round((100 * s.achievedPerSecond) / s.offeredPerSecond)} %)`);
  }
  if (s.sendLagMs.p99 > SEND_LAG_P99_WARNING_MS) reasons.push(`p99 send lag ${s.sendLagMs.p99.toFixed(1)} ms (over ${SEND_LAG_P99_WARNING_MS} ms)`);
  if (s.waitedForConnection > 0) reasons.push(`${s.waitedForConnection} attempt(s) waited for a connection beyond the cap of ${s.maxConnections}`);
  if (s.neverSent > 0) reasons.push(`${s.neverSent} attempt(s) never sent (waited for a connection past the timeout)`);
  return reasons;
}
