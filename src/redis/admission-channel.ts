// The admission channel of redis-lua-async*: where their admit-enqueue batches go. Without
// REDIS_WAIT_REPLICAS, the command connection (batches are sent at once, not auto-pipelined).
// With REDIS_WAIT_REPLICAS=N, a connection of its own, each batch pipelined with `WAIT N timeout`
// on the connection that serves the campaign's slot (the one node, the primary Sentinel names, or
// the Cluster master of the slot): WAIT counts the replicas that have that connection's writes,
// and blocks it meanwhile, which is why the hot path's other commands are not on it. Fewer than N
// in time: the batch's admissions are not confirmed (they may not survive a failover) and answer
// OUTCOME_UNKNOWN (docs/architecture.md, invariants 4, 7 and 10).
//
// A write the primary refuses outright (NOREPLICAS, from min-replicas-to-write) did nothing: it is
// thrown as it is, and the route answers 503.
import { ACCEPTED, OUTCOME_UNKNOWN } from '../coupons/domain.js';
import type { CampaignKeys } from './keys.js';
import type { AdmissionAttempt, AdmitEnqueueResult, Scripts } from './scripts.js';

export interface AdmissionChannelOptions {
  /** REDIS_WAIT_REPLICAS: replicas that must have an admission before it is confirmed (0: none). */
  readonly waitReplicas: number;
  /** REDIS_WAIT_TIMEOUT_MS: WAIT's own timeout. */
  readonly waitTimeoutMs: number;
}

/** A queued admission's result on the channel: ACCEPTED only once the replicas confirmed it. */
export type ChannelAdmission = AdmitEnqueueResult | typeof OUTCOME_UNKNOWN;

export class AdmissionChannel {
  /** Admissions answered OUTCOME_UNKNOWN because fewer than `waitReplicas` replicas confirmed them in time. */
  unconfirmed = 0;

  constructor(
    /** Bound to the channel's connection (the command connection when nothing waits). */
    private readonly scripts: Scripts,
    readonly options: AdmissionChannelOptions,
  ) {}

  /** admit-enqueue: with REDIS_WAIT_REPLICAS, an admission the replicas did not confirm in time is OUTCOME_UNKNOWN. */
  async admitEnqueue(keys: CampaignKeys, couponId: string, attempts: readonly AdmissionAttempt[]): Promise<ChannelAdmission[]> {
    const { waitReplicas, waitTimeoutMs } = this.options;
    if (waitReplicas === 0) return this.scripts.admitEnqueue(keys, couponId, attempts);
    const { results, replicas } = await this.scripts.admitEnqueueReplicated(keys, couponId, attempts, waitReplicas, waitTimeoutMs);
    if (replicas >= waitReplicas) return results;
    const out = results.map((r) => (r === ACCEPTED ? OUTCOME_UNKNOWN : r));
    this.unconfirmed += out.filter((r) => r === OUTCOME_UNKNOWN).length;
    return out;
  }

  /** Whether an admission found in Redis after its call failed may be said to be ACCEPTED (nothing confirmed it with WAIT). */
  get confirmsAdmissions(): boolean {
    return this.options.waitReplicas > 0;
  }
}
