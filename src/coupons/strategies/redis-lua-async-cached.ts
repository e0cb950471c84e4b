// redis-lua-async-cached: redis-lua-async plus a local sold-out flag per coupon — once Redis has
// said SOLD_OUT, the rest of the stampede on this instance is answered 410 without touching
// Redis (the seeds' V3). Coupon metadata is cached in process by the service (unknown coupons
// and closed windows never reach Redis); both caches are dropped when a coupon id is published
// on the invalidation channel (rebuild, reconcile --repair) and wholesale after a reconnect of
// the subscriber, since messages may have been missed.
//
// Trade-off: after the stock is gone, a user who already holds the coupon hears 410 SOLD_OUT
// from this short-circuit instead of 409 ALREADY_ISSUED; their coupon is unaffected and
// GET /coupons/:id/issues/me still says ISSUED/PENDING. Because the answer is then the same for
// everyone, the issue route gives it before verifying the caller's token (knownSoldOut).
import { SOLD_OUT, type Coupon, type IssueOutcome } from '../domain.js';
import { RedisLuaAsync } from './redis-lua-async.js';
import { redisOf } from './redis-shared.js';
import type { StrategyModule } from './types.js';
import type { Span } from '../../tracing/tracing.js';

const SOLD_OUT_NOW: Promise<IssueOutcome> = Promise.resolve(SOLD_OUT);
const MAX_FLAGS = 100_000;

class RedisLuaAsyncCached extends RedisLuaAsync {
  private readonly soldOutCoupons = new Set<number>();

  knownSoldOut(couponId: number): boolean {
    return this.soldOutCoupons.has(couponId);
  }

  override issue(coupon: Coupon, userId: string, now: Date, requestId?: string, span?: Span): Promise<IssueOutcome> {
    // The issue route asked knownSoldOut already; the flag may have been set while it
    // authenticated the caller, and callers other than the route do not ask.
    if (this.knownSoldOut(coupon.id)) return SOLD_OUT_NOW;
    return super.issue(coupon, userId, now, requestId, span);
  }

  protected override soldOut(couponId: number): void {
    if (this.soldOutCoupons.size >= MAX_FLAGS) this.soldOutCoupons.clear();
    this.soldOutCoupons.add(couponId);
  }

  /** Forget one coupon's flag, or all of them. */
  invalidate(couponId: number | undefined): void {
    if (couponId === undefined) this.soldOutCoupons.clear();
    else this.soldOutCoupons.delete(couponId);
  }
}

export const redisLuaAsyncCached: StrategyModule = {
  summary: 'redis-lua-async + local sold-out short-circuit and cached metadata invalidated over pub/sub — the default with REDIS_URL',
  requires: ['redis'],
  admission: 'redis',
  queued: true,
  queue: 'redis-stream',
  mayOverIssue: false,
  create: (ctx) => {
    const redis = redisOf(ctx);
    const strategy = new RedisLuaAsyncCached(redis, ctx.db, ctx.log, ctx.tracing);
    redis.onInvalidate((couponId) => strategy.invalidate(couponId));
    return strategy;
  },
};
