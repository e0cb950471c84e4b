// redis-lua-async: ONE Lua script (admit-enqueue.lua) checks the window, the duplicate and the
// stock, records the user and XADDs the issuance to the campaign's stream — nothing is admitted
// without being queued. The API answers 202 PENDING; the worker persists (src/worker/). One Redis
// round trip per request, shared with the attempts that arrive alongside it (AdmissionBatcher);
// a missing campaign state is rebuilt from the database (and the queue) and the attempt retried once.
// A call that fails may have run in Redis with its answer lost (a crash, a reset connection):
// the attempt then asks Redis whether the user is admitted before it answers (askUntil), and says
// OUTCOME_UNKNOWN when Redis cannot tell in time. A state another Redis server created (a
// failover, a restart: UNSETTLED) is settled against the database and the queue before anyone is
// admitted there. Admissions go out on the admission channel (redis/admission-channel.ts): with
// REDIS_WAIT_REPLICAS a 202 only once the replicas have it (OUTCOME_UNKNOWN when they do not
// confirm in time).
import type { Logger } from '../../util/logger.js';
import type { Db } from '../../db/index.js';
import { ACCEPTED, ALREADY_ISSUED, OUTCOME_UNKNOWN, SOLD_OUT, type Coupon, type IssueOutcome } from '../domain.js';
import { findIssue, loadIssuedUsers } from '../repository.js';
import type { RedisHandle } from '../../redis/client.js';
import { admittedCounts, CampaignStates, checkAdmission } from '../../redis/campaign-state.js';
import type { AdmissionChannel, ChannelAdmission } from '../../redis/admission-channel.js';
import { AdmissionBatcher } from '../../redis/admissions.js';
import { wroteNothing } from '../../redis/scripts.js';
import { askUntil } from '../../util/ask-until.js';
import { admissionStatus, CampaignRefs, redisOf, type CampaignRef } from './redis-shared.js';
import type { IssueStrategy, StrategyModule } from './types.js';
import type { Span, Tracing } from '../../tracing/tracing.js';


export class RedisLuaAsync implements IssueStrategy {
  protected readonly refs: CampaignRefs;
  private readonly states: CampaignStates;
  private readonly channel: AdmissionChannel;
  private readonly admissions: AdmissionBatcher<ChannelAdmission>;

  constructor(
    protected readonly redis: RedisHandle,
    private readonly db: Db,
    log: Logger,
    tracing?: Tracing,
  ) {
    this.refs = new CampaignRefs(redis);
    this.states = new CampaignStates(redis, (id) => loadIssuedUsers(db, id), log, true);
    const channel = redis.admissions();
    this.channel = channel;
    this.admissions = new AdmissionBatcher((keys, couponId, attempts) => channel.admitEnqueue(keys, couponId, attempts), tracing);
  }

  prepare(coupon: Coupon): Promise<void> {
    return this.states.prepare(coupon);
  }

  async issue(coupon: Coupon, userId: string, now: Date, requestId?: string, span?: Span): Promise<IssueOutcome> {
    const ref = this.refs.get(coupon.id);
    const nowMs = now.getTime();
    const outcome = await this.states.admit(coupon, () => this.admit(ref, userId, nowMs, requestId ?? '', span));
    if (outcome === SOLD_OUT) this.soldOut(coupon.id);
    return outcome;
  }

  /**
   * One admission; when the call fails, what Redis (and the database) then say of the user.
   * Throws only when nothing was admitted.
   */
  private async admit(ref: CampaignRef, userId: string, nowMs: number, requestId: string, span: Span | undefined): Promise<ChannelAdmission> {
    try {
      return await this.admissions.admit(ref.keys, ref.id, userId, nowMs, requestId, span);
    } catch (err) {
      // Never reached Redis, or refused by a primary short of replicas: nothing was admitted.
      if (wroteNothing(err)) throw err;
      const check = await askUntil(() => checkAdmission(this.redis, ref.keys, userId, nowMs));
      // Admitted, but no WAIT confirmed it: it may not survive a failover.
      if (check === 'admitted') return this.channel.confirmsAdmissions ? OUTCOME_UNKNOWN : ACCEPTED;
      // A row settles it whatever Redis lost; without one, only an intact state says "not admitted".
      const row = await findIssue(this.db, Number(ref.id), userId).catch(() => undefined);
      if (row !== undefined) return ALREADY_ISSUED;
      if (check === 'not-admitted') throw err;
      return OUTCOME_UNKNOWN;
    }
  }

  admitted(couponIds: readonly number[]): Promise<ReadonlyMap<number, number>> {
    return admittedCounts(this.redis, couponIds);
  }

  /**
   * Admitted (in the set) but not necessarily persisted; 'held' when its entry was dead-lettered
   * (the held index). One round trip; the service asks only when no row exists.
   */
  async isPending(coupon: Coupon, userId: string): Promise<boolean | 'held'> {
    const { admitted, held } = await admissionStatus(this.redis, this.refs.get(coupon.id).keys, userId);
    if (!admitted) return false;
    return held ? 'held' : true;
  }

  /** Redis said SOLD_OUT for this coupon (the cached variant remembers it). */
  protected soldOut(_couponId: number): void {}
}

export const redisLuaAsync: StrategyModule = {
  summary: 'one Lua script admits and enqueues to a Redis Stream (202 PENDING); the worker batch-writes to the database',
  requires: ['redis'],
  admission: 'redis',
  queued: true,
  queue: 'redis-stream',
  mayOverIssue: false,
  create: (ctx) => new RedisLuaAsync(redisOf(ctx), ctx.db, ctx.log, ctx.tracing),
};
