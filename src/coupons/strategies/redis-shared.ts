// What the Redis strategies share: getting the Redis handle from the context, per-coupon key
// names computed once (the hot path allocates no strings for them), and the database write of
// the synchronous ones.
import type { Db } from '../../db/index.js';
import { ALREADY_ISSUED, ISSUED, SOLD_OUT, type IssueOutcome } from '../domain.js';
import { insertIssueIfAbsent } from '../repository.js';
import type { RedisHandle } from '../../redis/client.js';
import type { CampaignKeys } from '../../redis/keys.js';
import { rollbackWith, transactionOutcome } from './shared.js';
import type { StrategyContext } from './types.js';

export function redisOf(ctx: StrategyContext): RedisHandle {
  // StrategySet only creates a strategy whose `requires` are available; this is a bug guard.
  if (ctx.redis === undefined) throw new Error('this strategy needs REDIS_URL');
  return ctx.redis;
}

export interface CampaignRef {
  readonly keys: CampaignKeys;
  /** The coupon id as the string the scripts receive. */
  readonly id: string;
}

const MAX_CACHED = 10_000;

/** Key names per coupon, computed on first use. */
export class CampaignRefs {
  private readonly refs = new Map<number, CampaignRef>();

  constructor(private readonly redis: RedisHandle) {}

  get(couponId: number): CampaignRef {
    let ref = this.refs.get(couponId);
    if (ref === undefined) {
      if (this.refs.size >= MAX_CACHED) this.refs.clear();
      ref = { keys: this.redis.keys.campaign(couponId), id: String(couponId) };
      this.refs.set(couponId, ref);
    }
    return ref;
  }
}

/**
 * The database half of redis-lock and redis-lua-sync: insert the row unless the user has one
 * (UNIQUE decides) and bump the counter only while below the stock (the conditional UPDATE
 * decides), in one transaction. Exact on its own; Redis only keeps contention off it.
 */
export function insertAndCount(db: Db, couponId: number, userId: string, now: Date): Promise<IssueOutcome> {
  return transactionOutcome(db, async (tx) => {
    if (!(await insertIssueIfAbsent(tx, couponId, userId, now))) return ALREADY_ISSUED;
    const { rowCount } = await tx.query(
      `UPDATE coupons SET issued_quantity = issued_quantity + 1
        WHERE id = $1 AND issued_quantity < total_quantity`,
      [couponId],
    );
    return rowCount === 1 ? ISSUED : rollbackWith(SOLD_OUT);
  });
}
