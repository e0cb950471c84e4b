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

/**
 * What the status route needs of an admission that has no row, in one MULTI: admitted (in the
 * set), held (its issuance is a dead letter: the held index), producing (redis-lua-kafka: Kafka
 * has not acknowledged its record yet).
 */
export async function admissionStatus(redis: RedisHandle, keys: CampaignKeys, userId: string): Promise<{ admitted: boolean; held: boolean; producing: boolean }> {
  const replies = await redis.client.multi().sismember(keys.users, userId).hexists(keys.held, userId).zscore(keys.producing, userId).exec();
  if (replies === null) throw new Error('redis: MULTI was aborted');
  const [member, held, mark] = replies.map(([err, reply]) => {
    if (err !== null) throw err;
    return reply;
  });
  return { admitted: member === 1, held: held === 1, producing: mark !== null && mark !== undefined };
}
