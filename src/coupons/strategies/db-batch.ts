// db-batch: group commit in the database itself — fast without Redis, and exact with any number
// of API processes. Each process gathers a campaign's attempts for a couple of milliseconds (or
// while its previous batch is in flight) and decides them all in ONE transaction:
//
//   lock the coupon row (SELECT … FOR UPDATE: instances take turns, so the stock is exact)
//   insert the batch, skipping users who hold the coupon (they are told 409)
//   keep as many of the new rows as units are left, in arrival order; delete the rest (410)
//   move the counter by the rows kept; COMMIT; only then answer 201
//
// A sold-out campaign is flagged in every process — by the batch that sells it out, and in the
// others by a poll (every SOLD_OUT_POLL_MS) of the campaigns they have served lately — and from
// then on answered 410 before the token is read, with no database round trip. Like
// redis-lua-async-cached's local flag, that 410 goes to a holder too (not 409).
import type { Logger } from '../../util/logger.js';
import { OutcomeUnknownError, type Db } from '../../db/index.js';
import { ALREADY_ISSUED, ISSUED, OUTCOME_UNKNOWN, SOLD_OUT, unavailable, type Coupon, type IssueOutcome } from '../domain.js';
import { addIssued, findIssue, holdersAmong, insertNewIssues, lockRemaining, removeIssues, soldOutAmong } from '../repository.js';
import type { IssueStrategy, StrategyModule } from './types.js';
import { ATTR, batchSpan, endSpan, KIND, type Span, type Tracing } from '../../tracing/tracing.js';

/** How long an idle campaign waits to gather a batch; under load batches form while one is in flight. */
const GATHER_MS = 2;
const MAX_BATCH = 1_000;
/** How often a process asks the database which of its campaigns another process sold out. */
const SOLD_OUT_POLL_MS = 100;
/** A campaign not asked for in this long is no longer polled. */
const WATCH_FOR_MS = 10_000;

interface Attempt {
  readonly userId: string;
  readonly issuedAt: Date;
  readonly settle: (outcome: IssueOutcome) => void;
  /** The admission's span (tracing on). */
  readonly span: Span | undefined;
}

interface Campaign {
  queue: Attempt[];
  timer: NodeJS.Timeout | undefined;
  /** The batch in flight, if any: the next waits for it. */
  flushing: Promise<void> | undefined;
  lastAsked: number;
}

class DbBatch implements IssueStrategy {
  private readonly campaigns = new Map<number, Campaign>();
  private readonly soldOut = new Set<number>();
  private poller: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
    /** Present when tracing is on: each group commit has a span, linked to the sampled admissions in it. */
    private readonly tracing?: Tracing,
  ) {}

  knownSoldOut(couponId: number): boolean {
    return this.soldOut.has(couponId);
  }

  issue(coupon: Coupon, userId: string, now: Date, _requestId?: string, span?: Span): Promise<IssueOutcome> {
    if (this.soldOut.has(coupon.id)) return Promise.resolve(SOLD_OUT);
    const c = this.campaign(coupon.id);
    c.lastAsked = Date.now();
    return new Promise<IssueOutcome>((settle) => {
      c.queue.push({ userId, issuedAt: now, settle, span });
      if (c.flushing === undefined && c.timer === undefined) c.timer = setTimeout(() => this.flush(coupon.id, c), GATHER_MS);
    });
  }

  async close(): Promise<void> {
    if (this.poller !== undefined) clearInterval(this.poller);
    this.poller = undefined;
    for (const [id, c] of this.campaigns) {
      if (c.timer !== undefined) clearTimeout(c.timer);
      c.timer = undefined;
      // A batch in flight starts the next by itself when more are queued: wait for that chain.
      while (c.flushing !== undefined || c.queue.length > 0) await (c.flushing ?? this.flush(id, c));
    }
  }

  private campaign(couponId: number): Campaign {
    let c = this.campaigns.get(couponId);
    if (c === undefined) {
      c = { queue: [], timer: undefined, flushing: undefined, lastAsked: Date.now() };
      this.campaigns.set(couponId, c);
      if (this.poller === undefined) {
        this.poller = setInterval(() => void this.pollSoldOut(), SOLD_OUT_POLL_MS);
        this.poller.unref();
      }
    }
    return c;
  }

  /** Decides the campaign's queued attempts (up to MAX_BATCH) in one transaction, then the next batch if more came. */
  private flush(couponId: number, c: Campaign): Promise<void> {
    c.timer = undefined;
    const batch = c.queue.length <= MAX_BATCH ? c.queue : c.queue.slice(0, MAX_BATCH);
    c.queue = c.queue.length <= MAX_BATCH ? [] : c.queue.slice(MAX_BATCH);
    const run = this.decide(couponId, batch).finally(() => {
      c.flushing = undefined;
      if (c.queue.length > 0) c.flushing = this.flush(couponId, c);
    });
    c.flushing = run;
    return run;
  }

  private async decide(couponId: number, batch: readonly Attempt[]): Promise<void> {
    const span =
      this.tracing === undefined
        ? undefined
        : batchSpan(this.tracing, 'db.batch_admit', batch.map((a) => a.span), { kind: KIND.client, attributes: { [ATTR.couponId]: couponId, [ATTR.batchSize]: batch.length } });
    try {
      await this.decideAll(couponId, batch);
    } finally {
      endSpan(span);
    }
  }

  private async decideAll(couponId: number, batch: readonly Attempt[]): Promise<void> {
    // The same user twice in one batch: the first attempt decides, the others follow it.
    const leaders = new Map<string, Attempt>();
    const followers: Array<{ attempt: Attempt; leader: string }> = [];
    for (const a of batch) {
      if (leaders.has(a.userId)) followers.push({ attempt: a, leader: a.userId });
      else leaders.set(a.userId, a);
    }
    const users = [...leaders.keys()];
    let kept: string[] = [];
    let soldOutNow = false;
    let outcomes: Map<string, IssueOutcome>;
    try {
      outcomes = await this.db.transaction(
        async (tx) => {
          const remaining = (await lockRemaining(tx, couponId)) ?? 0;
          const fresh = new Set(
            remaining === 0 ? [] : await insertNewIssues(tx, couponId, [...leaders.values()].map((a) => ({ couponId, userId: a.userId, issuedAt: a.issuedAt }))),
          );
          const freshInOrder = users.filter((u) => fresh.has(u));
          kept = freshInOrder.slice(0, remaining);
          const surplus = freshInOrder.slice(remaining);
          if (surplus.length > 0) await removeIssues(tx, couponId, surplus);
          if (kept.length > 0) await addIssued(tx, couponId, kept.length);
          // Not inserted: with stock left, the insert skipped them because they hold it; with none,
          // nothing was inserted and the rows say who holds it.
          const others = users.filter((u) => !fresh.has(u));
          const holders = new Set(remaining === 0 ? await holdersAmong(tx, couponId, others) : others);
          soldOutNow = remaining - kept.length <= 0;
          const out = new Map<string, IssueOutcome>();
          for (const u of kept) out.set(u, ISSUED);
          for (const u of surplus) out.set(u, SOLD_OUT);
          for (const u of others) out.set(u, holders.has(u) ? ALREADY_ISSUED : SOLD_OUT);
          return out;
        },
        // If the COMMIT's answer is lost (MySQL): the rows kept are all there or none is. A batch
        // that kept none wrote nothing, and its refusals are true either way.
        { committed: async (q) => kept.length === 0 || (await findIssue(q, couponId, kept[0]!)) !== undefined },
      );
    } catch (err) {
      const outcome = err instanceof OutcomeUnknownError ? OUTCOME_UNKNOWN : unavailable('database write failed');
      this.log.error({ err, couponId, batch: batch.length }, 'db-batch: batch failed');
      for (const a of batch) a.settle(outcome);
      return;
    }
    if (soldOutNow) this.soldOut.add(couponId);
    for (const a of leaders.values()) a.settle(outcomes.get(a.userId) ?? unavailable('not decided'));
    for (const { attempt, leader } of followers) {
      const first = outcomes.get(leader);
      attempt.settle(first === ISSUED || first === ALREADY_ISSUED ? ALREADY_ISSUED : (first ?? unavailable('not decided')));
    }
  }

  /** Asks which served campaigns are sold out (another process may have sold them out); forgets idle ones. */
  private async pollSoldOut(): Promise<void> {
    if (this.polling) return;
    const now = Date.now();
    const ids: number[] = [];
    for (const [id, c] of this.campaigns) {
      if (this.soldOut.has(id)) continue;
      if (now - c.lastAsked > WATCH_FOR_MS && c.queue.length === 0 && c.flushing === undefined) this.campaigns.delete(id);
      else ids.push(id);
    }
    if (ids.length === 0) return;
    this.polling = true;
    try {
      for (const id of await soldOutAmong(this.db, ids)) this.soldOut.add(id);
    } catch (err) {
      this.log.debug({ err }, 'db-batch: sold-out poll failed; the next batch finds out instead');
    } finally {
      this.polling = false;
    }
  }
}

export const dbBatch: StrategyModule = {
  summary:
    'group commit in the database: each process decides a few milliseconds of attempts in one transaction under the coupon row lock — exact with any number of instances, no Redis',
  requires: [],
  admission: 'database',
  queued: false,
  mayOverIssue: false,
  create: ({ db, log, tracing }) => new DbBatch(db, log, tracing),
};
