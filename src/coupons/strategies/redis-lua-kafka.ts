// redis-lua-kafka: the seeds' Kafka pipeline. One Lua script (admit-produce.lua) decides the
// attempt as redis-lua-async does and marks the admission "producing"; the API then produces the
// issuance to the Kafka topic (batched across requests: src/kafka/producer.ts) and answers 202
// only once Kafka acknowledged it; `couponrush worker` consumes the topic into the database.
//
//   acked    202 PENDING; the producing mark is dropped. The record is in Kafka's log: the 202
//            survives losing Redis entirely (the rebuild counts the unconsumed records).
//   refused  the record is certainly not in the log: the seat is released in Redis
//            (compensation) and the answer is 503, nothing issued.
//   unknown  the record may be in the log: OUTCOME_UNKNOWN, and the seat stays marked producing
//            until `reconcile` settles it from the database and the topic (freeing it now would
//            issue it twice over the stock if the record lands).
//
// A process that dies between admission and produce leaves a marked seat no 202 promised:
// `reconcile` frees it once it is older than any produce can take. A record produced twice for
// one user (a retried lost admission) is harmless: the worker's insert skips a pair already there.
import type { Logger } from '../../util/logger.js';
import type { Db } from '../../db/index.js';
import type { KafkaHandle } from '../../kafka/client.js';
import { cachedCoupons, heldInKafka } from '../queued-admission.js';
import { AdmissionBatcher } from '../../redis/admissions.js';
import { admittedCounts, CampaignStates, checkAdmission } from '../../redis/campaign-state.js';
import type { RedisHandle } from '../../redis/client.js';
import { wroteNothing, type AdmitEnqueueResult } from '../../redis/scripts.js';
import { askUntil } from '../../util/ask-until.js';
import { ACCEPTED, ALREADY_ISSUED, OUTCOME_UNKNOWN, unavailable, type Coupon, type IssueOutcome } from '../domain.js';
import { findIssue, loadIssuedUsers } from '../repository.js';
import { admissionStatus, CampaignRefs, redisOf, type CampaignRef } from './redis-shared.js';
import type { IssueStrategy, StrategyContext, StrategyModule } from './types.js';
import { carriedTraceparent, type Span, type Tracing } from '../../tracing/tracing.js';

const NOT_PRODUCED = unavailable('Kafka did not take the issuance; nothing was issued');

/**
 * Everyone a rebuilt state must count as admitted: the database's rows, the records the worker
 * has not consumed yet, and the live dead letters. Read after `settleMs`, so that every produce
 * begun before Redis lost the state has been acknowledged (and is in the log) or given up.
 */
export async function kafkaAdmittedUsers(db: Db, kafka: KafkaHandle, couponId: number, settleMs: number): Promise<string[]> {
  if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
  const held = (await heldInKafka(kafka, cachedCoupons(db))).get(couponId) ?? new Set<string>();
  return [...new Set([...(await loadIssuedUsers(db, couponId)), ...held])];
}

export class RedisLuaKafka implements IssueStrategy {
  private readonly refs: CampaignRefs;
  private readonly states: CampaignStates;
  /** At creation nobody is admitted: no need to read the topic. */
  private readonly creation: CampaignStates;
  private readonly admissions: AdmissionBatcher<AdmitEnqueueResult>;
  /** Acknowledged admissions whose producing mark is still to drop, per campaign (one ZREM each per turn). */
  private readonly acked = new Map<number, string[]>();
  private ackFlush: Promise<void> | undefined;

  constructor(
    private readonly redis: RedisHandle,
    private readonly db: Db,
    private readonly kafka: KafkaHandle,
    private readonly log: Logger,
    tracing?: Tracing,
  ) {
    this.refs = new CampaignRefs(redis);
    const settleMs = kafka.settings.produceTimeoutMs + 1_000;
    this.states = new CampaignStates(redis, (id) => kafkaAdmittedUsers(db, kafka, id, settleMs), log, false);
    this.creation = new CampaignStates(redis, () => Promise.resolve([]), log, false);
    // Not waited for (REDIS_WAIT_REPLICAS): the 202 rests on Kafka's acknowledgement, and a state
    // that lost admissions in a failover is settled from the topic (UNSETTLED).
    this.admissions = new AdmissionBatcher((keys, _couponId, attempts) => redis.scripts.admitProduce(keys, attempts), tracing);
  }

  prepare(coupon: Coupon): Promise<void> {
    return this.creation.prepare(coupon);
  }

  async issue(coupon: Coupon, userId: string, now: Date, requestId?: string, span?: Span): Promise<IssueOutcome> {
    const ref = this.refs.get(coupon.id);
    const nowMs = now.getTime();
    // Rebuilt or settled from the rows and the topic, read once every produce begun has settled.
    const outcome = await this.states.admit(coupon, () => this.admit(ref, userId, nowMs, span));
    if (outcome !== ACCEPTED) return outcome;
    const record = { couponId: coupon.id, userId, atMs: nowMs, requestId: requestId ?? '', traceparent: carriedTraceparent(span) };
    switch (await this.kafka.producer.produce(record, span)) {
      case 'acked':
        // Dropped before answering, so that a status asked right after the 202 says PENDING.
        await this.dropMark(coupon.id, userId);
        return ACCEPTED;
      case 'refused':
        await this.redis.scripts.releaseUnproduced(ref.keys, [userId]).catch((err: unknown) => {
          // The seat stays marked: reconcile frees it. Nothing was issued either way.
          this.log.warn({ err, couponId: coupon.id, userId }, 'redis-lua-kafka: releasing an unproduced seat failed; reconcile will');
        });
        return NOT_PRODUCED;
      case 'unknown':
        return OUTCOME_UNKNOWN;
    }
  }

  /**
   * One admission; when the call fails, what Redis (and the database) then say of the user.
   * Throws only when nothing was admitted.
   */
  private async admit(ref: CampaignRef, userId: string, nowMs: number, span: Span | undefined): Promise<AdmitEnqueueResult | typeof OUTCOME_UNKNOWN> {
    try {
      return await this.admissions.admit(ref.keys, ref.id, userId, nowMs, '', span);
    } catch (err) {
      if (wroteNothing(err)) throw err;
      const check = await askUntil(() => checkAdmission(this.redis, ref.keys, userId, nowMs));
      const row = await findIssue(this.db, Number(ref.id), userId).catch(() => undefined);
      if (row !== undefined) return ALREADY_ISSUED;
      // Admitted, perhaps by this very call: produce it (a second record for one user is harmless).
      if (check === 'admitted') return ACCEPTED;
      if (check === 'not-admitted') throw err;
      return OUTCOME_UNKNOWN;
    }
  }

  /** Drops the producing mark; the marks of one turn go in one ZREM per campaign. Never rejects. */
  private dropMark(couponId: number, userId: string): Promise<void> {
    let users = this.acked.get(couponId);
    if (users === undefined) this.acked.set(couponId, (users = []));
    users.push(userId);
    if (this.ackFlush === undefined) {
      this.ackFlush = new Promise<void>((resolve) => {
        setImmediate(() => {
          const batch = [...this.acked];
          this.acked.clear();
          this.ackFlush = undefined;
          // A mark left by a failure here is settled by reconcile (the record is in the topic).
          Promise.all(batch.map(([id, list]) => this.redis.client.zrem(this.refs.get(id).keys.producing, ...list).catch(() => undefined))).then(() => resolve());
        });
      });
    }
    return this.ackFlush;
  }

  admitted(couponIds: readonly number[]): Promise<ReadonlyMap<number, number>> {
    return admittedCounts(this.redis, couponIds);
  }

  /**
   * Admitted, its record refused and dead-lettered (the worker's held index): held; admitted and
   * still marked producing: unknown; admitted and acknowledged by Kafka: pending. One round trip.
   */
  async isPending(coupon: Coupon, userId: string): Promise<boolean | 'held' | 'unknown'> {
    const { admitted, held, producing } = await admissionStatus(this.redis, this.refs.get(coupon.id).keys, userId);
    if (!admitted) return false;
    return held ? 'held' : producing ? 'unknown' : true;
  }
}

function kafkaOf(ctx: StrategyContext): KafkaHandle {
  if (ctx.kafka === undefined) throw new Error('this strategy needs KAFKA_BROKERS');
  return ctx.kafka;
}

export const redisLuaKafka: StrategyModule = {
  summary: 'one Lua script admits in Redis; the issuance is produced to Kafka (202 once Kafka acknowledged it); the worker consumes the topic into the database',
  requires: ['redis', 'kafka'],
  admission: 'redis',
  queued: true,
  queue: 'kafka',
  mayOverIssue: false,
  create: (ctx) => new RedisLuaKafka(redisOf(ctx), ctx.db, kafkaOf(ctx), ctx.log, ctx.tracing),
};
