// What the Redis strategies share: getting the Redis handle from the context, and per-coupon key
// names computed once (the hot path allocates no strings for them).
import type { RedisHandle } from '../../redis/client.js';
import type { CampaignKeys } from '../../redis/keys.js';
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
