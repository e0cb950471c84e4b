// Series read from Redis at scrape time: the issuance streams (length, group lag, pending, dead
// letters); plus a counter of Redis errors. (Remaining stock comes from redis/campaign-state.ts
// through Metrics.addStockReader.)
// A scrape never waits long for Redis: an unanswered read leaves the series out.
import { loadReconcileStatus } from '../coupons/reconcile.js';
import { registerReconcileDrift } from './operations.js';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { RedisHandle } from '../redis/client.js';
import { WORKER_GROUP } from '../redis/keys.js';
import { within } from '../util/within.js';

const SCRAPE_READ_TIMEOUT_MS = 1_000;


/**
 * Counts connection and command errors ioredis reports on the handle's command connection,
 * admissions left unconfirmed by WAIT (REDIS_WAIT_REPLICAS), and campaign states settled after a
 * change of primary.
 */
export function countRedisErrors(registry: Registry, redis: RedisHandle): void {
  const errors = new Counter({
    name: 'couponrush_redis_errors_total',
    help: 'Errors reported by the Redis command connection (refused/lost connections, timeouts)',
    registers: [registry],
  });
  errors.inc(0);
  redis.client.on('error', () => errors.inc());
  new Counter({
    name: 'couponrush_redis_wait_unconfirmed_total',
    help: 'Admissions answered OUTCOME_UNKNOWN because fewer than REDIS_WAIT_REPLICAS replicas confirmed them within REDIS_WAIT_TIMEOUT_MS',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(redis.stats.unconfirmed());
    },
  });
  new Counter({
    name: 'couponrush_redis_settles_total',
    help: 'Campaign states this process settled against the database and the queue because they were created on another Redis server (a failover, a restart)',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(redis.stats.settles);
    },
  });
}

export interface StreamStats {
  coupon: number;
  length: number;
  lag: number | undefined;
  pending: number;
  dead: number;
}

/** Every registered campaign stream's length, group lag, pending entries and dead letters. */
export async function readStreamStats(redis: RedisHandle): Promise<StreamStats[]> {
  const ids = (await redis.client.smembers(redis.keys.registry)).map(Number).filter(Number.isSafeInteger);
  if (ids.length === 0) return [];
  // A pipeline per campaign: its keys share a slot, so it also works on a Cluster.
  const replies = await Promise.all(
    ids.map(async (id) => {
      const keys = redis.keys.campaign(id);
      return (await redis.client.pipeline().xlen(keys.stream).call('XINFO', 'GROUPS', keys.stream).xlen(keys.dead).exec()) ?? [];
    }),
  );
  return ids.map((coupon, i) => {
    const [[lenErr, length] = [], [groupsErr, groups] = [], [, dead] = []] = replies[i] ?? [];
    const group = groupsErr == null && Array.isArray(groups) ? findGroup(groups) : undefined;
    return {
      coupon,
      length: lenErr == null ? Number(length) : 0,
      // Redis ≥ 7 reports the group's lag (entries not yet delivered); null when it cannot tell.
      lag: group?.get('lag') == null ? undefined : Number(group.get('lag')),
      pending: Number(group?.get('pending') ?? 0),
      dead: Number(dead ?? 0),
    };
  });
}

function findGroup(groups: unknown[]): Map<string, unknown> | undefined {
  for (const g of groups) {
    if (!Array.isArray(g)) continue;
    const fields = new Map<string, unknown>();
    for (let i = 0; i + 1 < g.length; i += 2) fields.set(String(g[i]), g[i + 1]);
    if (fields.get('name') === WORKER_GROUP) return fields;
  }
  return undefined;
}

/** Stream series (one set per campaign stream the workers read). Identical from every worker. */
export function registerStreamMetrics(registry: Registry, redis: RedisHandle): void {
  let snapshot: Promise<StreamStats[]> | undefined;
  const stats = (): Promise<StreamStats[]> => {
    if (snapshot === undefined) {
      snapshot = within(readStreamStats(redis), SCRAPE_READ_TIMEOUT_MS, 'redis stream stats timed out').catch(() => []);
      void snapshot.finally(() => setImmediate(() => (snapshot = undefined)));
    }
    return snapshot;
  };
  const gauge = (name: string, help: string, value: (s: StreamStats) => number | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['coupon'],
      registers: [registry],
      aggregator: 'max',
      async collect() {
        const all = await stats();
        this.reset();
        for (const s of all) {
          const v = value(s);
          if (v !== undefined) this.set({ coupon: String(s.coupon) }, v);
        }
      },
    });
  gauge('couponrush_stream_length', 'Entries in the campaign issuance stream (trimmed below what the workers acknowledged)', (s) => s.length);
  gauge('couponrush_stream_lag', 'Entries of the stream no worker has read yet (consumer-group lag)', (s) => s.lag);
  gauge('couponrush_stream_pending', 'Entries read by a worker and not yet committed and acknowledged', (s) => s.pending);
  gauge('couponrush_dead_letters', 'Entries in the campaign dead-letter stream, waiting for the runbook', (s) => s.dead);
  // Wherever the queue is watched, so is the periodic reconcile's verdict (kept in Redis).
  registerReconcileDrift(registry, () => loadReconcileStatus(redis));
}
