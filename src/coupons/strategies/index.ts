// The strategy registry. Adding a strategy: write its module, add one line here.
//
// The strategies' headers name "the seeds" they follow: the five portfolio projects couponrush
// grew from, each a first-come-first-served coupon service, and their versions — V0 a database
// row lock (db-pessimistic), V1 a Redis distributed lock (Redisson; redis-lock), V2 Redis Lua plus
// an async queue (redis-lua-async), V3 V2 plus a local cache (Caffeine; redis-lua-async-cached).
// Their other steps keep the names they had (NoLock, synchronized, AtomicQuery, the Kafka
// pipelines); README's strategy table gives each strategy's lineage.
import { dbAtomic } from './db-atomic.js';
import { dbBatch } from './db-batch.js';
import { dbNaive } from './db-naive.js';
import { dbOptimistic } from './db-optimistic.js';
import { dbPessimistic } from './db-pessimistic.js';
import { local } from './local.js';
import { processMutex } from './process-mutex.js';
import { redisLock } from './redis-lock.js';
import { redisLuaAsyncCached } from './redis-lua-async-cached.js';
import { redisLuaAsync } from './redis-lua-async.js';
import { redisLuaSync } from './redis-lua-sync.js';
import { redisLuaKafka } from './redis-lua-kafka.js';
import { SERVICES, type IssueStrategy, type Service, type StrategyContext, type StrategyModule } from './types.js';

export const strategyModules = {
  'db-naive': dbNaive,
  'process-mutex': processMutex,
  'db-pessimistic': dbPessimistic,
  'db-optimistic': dbOptimistic,
  'db-atomic': dbAtomic,
  'db-batch': dbBatch,
  'redis-lock': redisLock,
  'redis-lua-sync': redisLuaSync,
  'redis-lua-async': redisLuaAsync,
  'redis-lua-async-cached': redisLuaAsyncCached,
  'redis-lua-kafka': redisLuaKafka,
  local: local,
} as const satisfies Record<string, StrategyModule>;

export type StrategyName = keyof typeof strategyModules;
export const STRATEGY_NAMES = Object.keys(strategyModules) as StrategyName[];

/** The strategies whose modules declare what `test` asks: every list of strategies elsewhere is one of these. */
export function strategiesWhere(test: (m: StrategyModule) => boolean): StrategyName[] {
  return STRATEGY_NAMES.filter((name) => test(strategyModules[name]));
}

/** What `reconcile` checks: the strategies that keep admission state in Redis, and where those that queue keep their queue. */
export function reconciledStrategies(): { redisAdmitted: StrategyName[]; queued: StrategyName[]; kafka: StrategyName[] } {
  return {
    redisAdmitted: strategiesWhere((m) => m.admission === 'redis'),
    queued: strategiesWhere((m) => m.queued && m.queue === 'redis-stream'),
    kafka: strategiesWhere((m) => m.queued && m.queue === 'kafka'),
  };
}

export function isStrategyName(value: string): value is StrategyName {
  return Object.hasOwn(strategyModules, value);
}

export type Available = Record<Service, boolean>;

/** Why a strategy cannot run with this configuration, or undefined when it can. */
export function unavailableReason(name: StrategyName, available: Available): string | undefined {
  const missing = strategyModules[name].requires.filter((r) => !available[r]);
  return missing.length === 0 ? undefined : `strategy ${name} needs ${missing.map((m) => SERVICES[m]).join(', ')}`;
}

/** The strategies of one process, created on first use and closed together. */
export class StrategySet {
  private readonly instances = new Map<StrategyName, IssueStrategy>();

  constructor(
    private readonly ctx: StrategyContext,
    readonly available: Available,
  ) {}

  get(name: StrategyName): IssueStrategy {
    let s = this.instances.get(name);
    if (s === undefined) {
      const reason = unavailableReason(name, this.available);
      if (reason !== undefined) throw new Error(reason);
      s = strategyModules[name].create(this.ctx);
      this.instances.set(name, s);
    }
    return s;
  }

  async close(): Promise<void> {
    await Promise.all([...this.instances.values()].map((s) => s.close?.()));
    this.instances.clear();
  }
}
