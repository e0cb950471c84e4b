// The console's live numbers. One sampler per process, running only while a console is open: once
// a second it reads the issue route's counters of every API process it can see (the Redis board,
// or the cluster-wide /metrics text without Redis), the watched campaigns' stock and their queues,
// and pushes one sample to every open console. The issue path does nothing for it: requests bump
// the cells they always bumped, and a thousand open consoles still mean one reading a second.
import { campaignStatus, remainingStock, type CampaignStatus } from '../coupons/domain.js';
import type { CouponService } from '../coupons/service.js';
import { ISSUE_ROUTE_URL } from '../coupons/paths.js';
import { readExposition } from '../metrics/exposition.js';
import type { IssueCounters } from '../metrics/index.js';

export const SAMPLE_INTERVAL_MS = 1_000;
/** Campaigns whose sell-out moment is remembered (the latest watched). */
const REMEMBERED = 64;

export interface CampaignSample {
  readonly id: number;
  readonly name: string;
  readonly strategy: string;
  readonly total: number;
  /** Rows committed to the database. */
  readonly persisted: number;
  /** Seats taken: rows, plus admissions still queued for the async strategies. */
  readonly admitted: number;
  readonly remaining: number;
  readonly status: CampaignStatus;
  readonly issueStartsAt: string;
  readonly issueEndsAt: string;
  /** When a sampler first saw it sold out (ms); null when it already was at the first look. */
  readonly soldOutAt: number | null;
  /** The campaign's Redis stream (redis-lua-async*), when Redis has one. */
  readonly stream?: { readonly length: number; readonly lag: number | null; readonly pending: number; readonly dead: number };
}

export interface ConsoleSample {
  readonly at: number;
  /** API processes whose answers are counted; absent when the source cannot tell. */
  readonly processes?: number;
  /** Issue-route answers by status since the API processes started. */
  readonly answers: Readonly<Record<string, number>>;
  /** The same over the last interval, per second. */
  readonly answersPerSecond: Readonly<Record<string, number>>;
  /** Issue-route latency over the last interval, from the histogram's buckets; null with no answers. */
  readonly latencyMs: { readonly p50: number | null; readonly p99: number | null };
  /** The watched campaign; absent for a console that watches none, or one that does not exist. */
  readonly campaign?: CampaignSample;
  /** Set instead of `campaign` when the stores could not be read this second (the campaign may exist). */
  readonly campaignUnreadable?: string;
}

type Push = (sample: ConsoleSample) => void;

interface Subscriber {
  readonly couponId: number | undefined;
  readonly push: Push;
}

export type StreamSample = NonNullable<CampaignSample['stream']>;

/** The issue-route counters of the API processes a sampler can see, and how many it counted. */
export interface CountersReading {
  readonly counters: IssueCounters;
  /** Undefined when the source cannot tell (the cluster's /metrics sum). */
  readonly processes?: number;
}

export interface ConsoleFeedDeps {
  readonly service: CouponService;
  readonly counters: () => Promise<CountersReading>;
  /** Campaign streams (Redis) by coupon id; absent without Redis. */
  readonly streams?: () => Promise<ReadonlyMap<number, StreamSample>>;
}

interface Reading extends IssueCounters {
  readonly at: number;
  readonly processes: number | undefined;
}

const RESPONSES = 'couponrush_http_responses_total';
const LATENCY = 'couponrush_issue_request_duration_seconds_bucket';
const EXPOSED = new Set([RESPONSES, LATENCY]);

/** Counters from the exposition text (Metrics.render: every worker of `serve --workers N`). */
export function countersFromExposition(render: () => Promise<string>): () => Promise<CountersReading> {
  return async () => {
    const series = readExposition(await render(), EXPOSED);
    const answers: Record<string, number> = {};
    for (const s of series.get(RESPONSES) ?? []) {
      if (s.labels.route === ISSUE_ROUTE_URL && s.labels.method === 'POST' && s.labels.status !== undefined) {
        answers[s.labels.status] = (answers[s.labels.status] ?? 0) + s.value;
      }
    }
    const buckets = (series.get(LATENCY) ?? [])
      .map((s): [number, number] => [s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), s.value])
      .sort((a, b) => a[0] - b[0]);
    return { counters: { answers, buckets } };
  };
}

export class ConsoleFeed {
  private readonly subscribers = new Set<Subscriber>();
  private timer: NodeJS.Timeout | undefined;
  private previous: Reading | undefined;
  private sampling = false;
  /** Per watched campaign: 'open' until a sample sees it sold out, then when (null: already at the first look). */
  private readonly soldOut = new Map<number, number | null | 'open'>();

  constructor(private readonly deps: ConsoleFeedDeps) {}

  /** Registers a console; the returned function unregisters it. The sampler runs while any is registered. */
  subscribe(couponId: number | undefined, push: Push): () => void {
    const s: Subscriber = { couponId, push };
    this.subscribers.add(s);
    if (this.timer === undefined) {
      this.timer = setInterval(() => void this.tick(), SAMPLE_INTERVAL_MS);
      void this.tick();
    }
    return () => {
      this.subscribers.delete(s);
      if (this.subscribers.size === 0) this.stop();
    };
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.previous = undefined;
  }

  private async tick(): Promise<void> {
    if (this.sampling) return; // a slow reading skips a beat rather than piling up
    this.sampling = true;
    try {
      const ids = [...new Set([...this.subscribers].map((s) => s.couponId).filter((id): id is number => id !== undefined))];
      const [reading, streams, campaigns] = await Promise.all([
        this.read(),
        ids.length === 0 ? undefined : this.deps.streams?.().catch(() => undefined),
        Promise.all(ids.map((id) => this.deps.service.get(id).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))))),
      ]);
      const previous = this.previous;
      this.previous = reading;
      const base: ConsoleSample = {
        at: reading.at,
        ...(reading.processes === undefined ? {} : { processes: reading.processes }),
        answers: reading.answers,
        answersPerSecond: previous === undefined ? {} : perSecond(previous, reading),
        latencyMs: previous === undefined ? { p50: null, p99: null } : { p50: quantile(previous, reading, 0.5), p99: quantile(previous, reading, 0.99) },
      };
      const byId = new Map<number, CampaignSample | Error>();
      campaigns.forEach((c, i) => {
        if (c === undefined) return;
        if (c instanceof Error) {
          byId.set(ids[i]!, c);
          return;
        }
        const status = campaignStatus(c, reading.at);
        const remaining = remainingStock(c);
        const stream = streams?.get(c.id);
        byId.set(ids[i]!, {
          id: c.id,
          name: c.name,
          strategy: c.strategy,
          total: c.totalQuantity,
          persisted: c.issuedCount,
          admitted: c.totalQuantity - remaining,
          remaining,
          status,
          issueStartsAt: c.issueStartsAt.toISOString(),
          issueEndsAt: c.issueEndsAt.toISOString(),
          soldOutAt: this.soldOutMoment(c.id, remaining === 0, reading.at),
          ...(stream === undefined ? {} : { stream }),
        });
      });
      for (const s of this.subscribers) {
        const campaign = s.couponId === undefined ? undefined : byId.get(s.couponId);
        s.push(campaign === undefined ? base : campaign instanceof Error ? { ...base, campaignUnreadable: campaign.message } : { ...base, campaign });
      }
    } catch {
      // The counters could not be read (Redis away): no sample this second; the console shows the gap.
    } finally {
      this.sampling = false;
    }
  }

  private soldOutMoment(id: number, soldOut: boolean, at: number): number | null {
    const seen = this.soldOut.get(id);
    if (seen === undefined) {
      // First look: a campaign already sold out sold out before anyone watched here.
      this.soldOut.set(id, soldOut ? null : 'open');
      if (this.soldOut.size > REMEMBERED) this.soldOut.delete(this.soldOut.keys().next().value!);
    } else if (soldOut && seen === 'open') {
      this.soldOut.set(id, at);
    }
    const moment = this.soldOut.get(id);
    return soldOut && moment !== 'open' && moment !== undefined ? moment : null;
  }

  private async read(): Promise<Reading> {
    const at = Date.now();
    const { counters, processes } = await this.deps.counters();
    return { at, processes, ...counters };
  }
}

function perSecond(a: Reading, b: Reading): Record<string, number> {
  const seconds = Math.max(0.001, (b.at - a.at) / 1000);
  const out: Record<string, number> = {};
  for (const [status, n] of Object.entries(b.answers)) out[status] = Math.max(0, n - (a.answers[status] ?? 0)) / seconds;
  return out;
}

/**
 * The q-quantile of the answers between two readings, interpolated within its bucket as
 * Prometheus's histogram_quantile does (the top finite bound when it falls in +Inf); ms.
 */
function quantile(a: Reading, b: Reading, q: number): number | null {
  const before = new Map(a.buckets);
  const deltas = b.buckets.map(([le, n]) => [le, n - (before.get(le) ?? 0)] as const);
  const total = deltas.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, cumulative] of deltas) {
    if (cumulative >= rank) {
      if (le === Infinity) return lower * 1000;
      const inBucket = cumulative - below;
      return (lower + (le - lower) * (inBucket === 0 ? 1 : (rank - below) / inBucket)) * 1000;
    }
    lower = le;
    below = cumulative;
  }
  return lower * 1000;
}
