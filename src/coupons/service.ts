// The coupon service: creates campaigns, resolves a coupon to its strategy, applies the window
// rule at the admission instant and hands the attempt to the strategy.
import type { Db } from '../db/index.js';
import {
  COUPON_NOT_FOUND,
  newCouponProblem,
  SOLD_OUT,
  unavailable,
  windowOutcome,
  type Coupon,
  type CouponWithStock,
  type ForegoneRefusal,
  type IssueOutcome,
  type NewCoupon,
  type Refusal,
} from './domain.js';
import { findCoupon, findIssue, insertCoupon, listCurrentCoupons, listUserIssues, type UserCoupon } from './repository.js';
import { isStrategyName, unavailableReason, type StrategyName, type StrategySet } from './strategies/index.js';
import type { IssueStrategy } from './strategies/types.js';
import { ATTR, endSpan, type Span, type Tracing } from '../tracing/tracing.js';

/** Coupons are immutable, so their metadata is cached for the life of the process. */
const COUPON_CACHE_LIMIT = 10_000;

/** A refused campaign names the field at fault, so a form can show the reason beside it. */
export type CreateCouponResult =
  | { ok: true; coupon: CouponWithStock }
  | { ok: false; code: 'VALIDATION_FAILED' | 'STRATEGY_UNAVAILABLE'; field: keyof NewCoupon; detail: string };

/**
 * HELD: admitted, but the worker could not persist the issuance and dead-lettered it; it waits
 * for an operator's replay (then PENDING, ISSUED) or discard (then NOT_ISSUED: the user may try
 * again). UNKNOWN: admitted, but whether the issuance was queued is not confirmed yet
 * (redis-lua-kafka).
 */
export type IssueStatus = 'ISSUED' | 'PENDING' | 'HELD' | 'UNKNOWN' | 'NOT_ISSUED' | 'COUPON_NOT_FOUND';

/**
 * Told about every decided issue attempt (not about exceptions: those surface as HTTP errors).
 * Metrics implement it; the domain never sees Prometheus. Must be cheap and must not throw.
 */
export interface IssueObserver {
  issueDecided(coupon: Coupon | undefined, outcome: IssueOutcome): void;
}

export class CouponService {
  private readonly coupons = new Map<number, Coupon>();

  constructor(
    private readonly db: Db,
    private readonly strategies: StrategySet,
    readonly defaultStrategy: StrategyName,
    private readonly observer?: IssueObserver,
    /** Present when tracing is on: each admission of a traced request gets a span. */
    private readonly tracing?: Tracing,
  ) {}

  async create(input: Omit<NewCoupon, 'strategy'> & { strategy?: string | undefined }): Promise<CreateCouponResult> {
    const strategy = input.strategy ?? this.defaultStrategy;
    if (!isStrategyName(strategy)) return { ok: false, code: 'VALIDATION_FAILED', field: 'strategy', detail: `unknown strategy ${strategy}` };
    const reason = unavailableReason(strategy, this.strategies.available);
    if (reason !== undefined) return { ok: false, code: 'STRATEGY_UNAVAILABLE', field: 'strategy', detail: reason };
    const candidate: NewCoupon = { ...input, strategy };
    const problem = newCouponProblem(candidate, Date.now());
    if (problem !== undefined) return { ok: false, code: 'VALIDATION_FAILED', ...problem };
    const coupon = await insertCoupon(this.db, candidate);
    await this.strategies.get(strategy).prepare?.(coupon);
    this.remember(coupon);
    return { ok: true, coupon };
  }

  async get(id: number): Promise<CouponWithStock | undefined> {
    const coupon = await findCoupon(this.db, id);
    return coupon === undefined ? undefined : (await this.withAdmissions([coupon]))[0];
  }

  async listCurrent(now = new Date()): Promise<CouponWithStock[]> {
    return this.withAdmissions(await listCurrentCoupons(this.db, now));
  }

  /**
   * Adds what each campaign has admitted where admission runs ahead of the rows (the Redis
   * strategies), so that its remaining stock and SOLD_OUT status are those of the admissions. A
   * store that cannot be asked fails the read: the rows alone would not be the truth.
   */
  private async withAdmissions(coupons: CouponWithStock[]): Promise<CouponWithStock[]> {
    const byStrategy = new Map<IssueStrategy, number[]>();
    for (const c of coupons) {
      const strategy = this.strategyFor(c);
      if (strategy?.admitted === undefined) continue;
      const ids = byStrategy.get(strategy);
      if (ids === undefined) byStrategy.set(strategy, [c.id]);
      else ids.push(c.id);
    }
    if (byStrategy.size === 0) return coupons;
    const admitted = new Map<number, number>();
    await Promise.all(
      [...byStrategy].map(async ([strategy, ids]) => {
        for (const [id, n] of await strategy.admitted!(ids)) admitted.set(id, n);
      }),
    );
    return coupons.map((c) => (admitted.has(c.id) ? { ...c, admittedCount: admitted.get(c.id) } : c));
  }

  /**
   * `requestId` (optional) is carried into queued issuances, for logs; `request` is the request's
   * span (tracing on), the parent of the admission's.
   */
  async issue(couponId: number, userId: string, requestId?: string, request?: Span): Promise<IssueOutcome> {
    const coupon = this.coupons.get(couponId) ?? (await this.resolve(couponId));
    const outcome = coupon === undefined ? COUPON_NOT_FOUND : await this.decide(coupon, userId, requestId, request);
    this.observer?.issueDecided(coupon, outcome);
    return outcome;
  }

  /**
   * The refusal every caller would get right now, when this instance knows it without a round
   * trip: the campaign's window is closed (metadata cached), or its strategy already knows the
   * stock is gone for everyone (`knownSoldOut`). Such an answer does not depend on who asks — and
   * GET /coupons/:id tells anyone the same — so the issue route gives it before verifying the
   * token: after a sell-out, the rest of the stampede costs no HMAC, no rate-limit entry and no
   * Redis. Undefined: authenticate and `issue` as usual.
   */
  refusalForAnyone(couponId: number, nowMs = Date.now()): ForegoneRefusal | undefined {
    const coupon = this.coupons.get(couponId);
    if (coupon === undefined) return undefined;
    const outcome = windowOutcome(coupon, nowMs) ?? (this.strategyFor(coupon)?.knownSoldOut?.(couponId) === true ? SOLD_OUT : undefined);
    if (outcome !== undefined) this.observer?.issueDecided(coupon, outcome);
    return outcome;
  }

  private async decide(coupon: Coupon, userId: string, requestId: string | undefined, request: Span | undefined): Promise<IssueOutcome> {
    const nowMs = Date.now();
    const closed = windowOutcome(coupon, nowMs);
    if (closed !== undefined) return closed;
    const strategy = this.strategyFor(coupon);
    if (strategy === undefined) return unavailable(`strategy ${coupon.strategy} is not available on this instance`);
    const span = request === undefined ? undefined : this.tracing?.child(request, 'coupon.admit', { attributes: { [ATTR.couponId]: coupon.id, [ATTR.strategy]: coupon.strategy } });
    if (span === undefined) return strategy.issue(coupon, userId, new Date(nowMs), requestId);
    return this.traced(strategy, coupon, userId, nowMs, requestId, span);
  }

  /** The strategy's call under the admission's span, which records the outcome (or the error). */
  private async traced(strategy: IssueStrategy, coupon: Coupon, userId: string, nowMs: number, requestId: string | undefined, span: Span): Promise<IssueOutcome> {
    try {
      const outcome = await strategy.issue(coupon, userId, new Date(nowMs), requestId, span);
      span.setAttribute(ATTR.outcome, outcome.kind);
      endSpan(span);
      return outcome;
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
  }

  async status(couponId: number, userId: string): Promise<IssueStatus> {
    const coupon = this.coupons.get(couponId) ?? (await this.resolve(couponId));
    if (coupon === undefined) return 'COUPON_NOT_FOUND';
    if ((await findIssue(this.db, couponId, userId)) !== undefined) return 'ISSUED';
    const pending = await this.strategyFor(coupon)?.isPending?.(coupon, userId);
    return pending === true ? 'PENDING' : pending === 'held' ? 'HELD' : pending === 'unknown' ? 'UNKNOWN' : 'NOT_ISSUED';
  }

  /** Drops cached metadata of one coupon (or all): it is re-read on next use. Told over Redis pub/sub. */
  forget(couponId: number | undefined): void {
    if (couponId === undefined) this.coupons.clear();
    else this.coupons.delete(couponId);
  }

  async userCoupons(userId: string): Promise<UserCoupon[]> {
    const items = await listUserIssues(this.db, userId);
    const coupons = await this.withAdmissions(items.map((i) => i.coupon));
    return items.map((i, n) => ({ ...i, coupon: coupons[n]! }));
  }

  private strategyFor(coupon: Coupon): IssueStrategy | undefined {
    if (!isStrategyName(coupon.strategy)) return undefined;
    if (unavailableReason(coupon.strategy, this.strategies.available) !== undefined) return undefined;
    return this.strategies.get(coupon.strategy);
  }

  private async resolve(couponId: number): Promise<Coupon | undefined> {
    const coupon = await findCoupon(this.db, couponId);
    if (coupon !== undefined) this.remember(coupon);
    return coupon;
  }

  private remember(coupon: CouponWithStock): void {
    if (this.coupons.size >= COUPON_CACHE_LIMIT) this.coupons.clear();
    // Keep only the immutable part; the issued count changes and is always read fresh.
    const { issuedCount: _issued, ...metadata } = coupon;
    this.coupons.set(coupon.id, metadata);
  }
}
