// redis-lua-async: ONE Lua script (admit-enqueue.lua) checks the window, the duplicate and the
// stock, records the user and XADDs the issuance to the campaign's stream — nothing is admitted
// without being queued. The API answers 202 PENDING; the worker persists (src/worker/). One Redis
// round trip per request, shared with the attempts that arrive alongside it (AdmissionBatcher);
// a missing campaign state is rebuilt from the database (and the queue) and the attempt retried once.
import type { FastifyBaseLogger } from 'fastify';
import type { Db } from '../../db/index.js';
import { SOLD_OUT, unavailable, type Coupon, type IssueOutcome } from '../domain.js';
import type { RedisHandle } from '../../redis/client.js';
import { CampaignStates } from '../../redis/campaign-state.js';
import { AdmissionBatcher } from '../../redis/admissions.js';
import { MISSING } from '../../redis/scripts.js';
import { CampaignRefs, redisOf } from './redis-shared.js';
import type { IssueStrategy, StrategyModule } from './types.js';

const NOT_REBUILT = unavailable('campaign state is missing in Redis and could not be rebuilt');

export class RedisLuaAsync implements IssueStrategy {
  protected readonly refs: CampaignRefs;
  private readonly states: CampaignStates;
  private readonly admissions: AdmissionBatcher;

  constructor(
    protected readonly redis: RedisHandle,
    db: Db,
    log: FastifyBaseLogger,
  ) {
    this.refs = new CampaignRefs(redis);
    this.states = new CampaignStates(redis, db, log, true);
    this.admissions = new AdmissionBatcher(redis.scripts);
  }

  prepare(coupon: Coupon): Promise<void> {
    return this.states.prepare(coupon);
  }

  async issue(coupon: Coupon, userId: string, now: Date, requestId?: string): Promise<IssueOutcome> {
    const ref = this.refs.get(coupon.id);
    const nowMs = now.getTime();
    let outcome = await this.admissions.admit(ref.keys, ref.id, userId, nowMs, requestId ?? '');
    if (outcome === MISSING) {
      await this.states.rebuild(coupon);
      outcome = await this.admissions.admit(ref.keys, ref.id, userId, nowMs, requestId ?? '');
      if (outcome === MISSING) return NOT_REBUILT;
    }
    if (outcome === SOLD_OUT) this.soldOut(coupon.id);
    return outcome;
  }

  /** Admitted (in the set) but not necessarily persisted; the service asks only when no row exists. */
  async isPending(coupon: Coupon, userId: string): Promise<boolean> {
    return (await this.redis.client.sismember(this.refs.get(coupon.id).keys.users, userId)) === 1;
  }

  /** Redis said SOLD_OUT for this coupon (the cached variant remembers it). */
  protected soldOut(_couponId: number): void {}
}

export const redisLuaAsync: StrategyModule = {
  summary: 'one Lua script admits and enqueues to a Redis Stream (202 PENDING); the worker batch-writes to the database',
  requires: ['redis'],
  create: (ctx) => new RedisLuaAsync(redisOf(ctx), ctx.db, ctx.log),
};
