// The stream worker's series: entries persisted, claimed and dead-lettered, batch size and
// duration (the worker reports them through its WorkerObserver hook), and the streams themselves
// (metrics/redis.ts). A `couponrush worker` process gets its own registry and listener; with
// `serve --with-worker` the series join the API's registry.
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from '../db/index.js';
import type { RedisHandle } from '../redis/client.js';
import type { WorkerObserver } from '../worker/worker.js';
import { registerPoolMetrics } from './index.js';
import { countRedisErrors, registerStreamMetrics } from './redis.js';

const DEAD_LETTER_REASONS = ['invalid', 'refused'] as const;

/** Registers the worker series on `registry`; pass the result to `worker.observe()`. */
export function registerWorkerMetrics(registry: Registry, redis: RedisHandle): WorkerObserver {
  registerStreamMetrics(registry, redis);
  const registers = [registry];
  const written = new Counter({
    name: 'couponrush_worker_rows_written_total',
    help: 'Stream entries committed to the database and acknowledged (redeliveries of committed entries insert nothing)',
    registers,
  });
  const claimed = new Counter({
    name: 'couponrush_worker_claimed_total',
    help: 'Stream entries taken over from idle consumers (a dead or stuck worker)',
    registers,
  });
  const deadLettered = new Counter({
    name: 'couponrush_worker_dead_lettered_total',
    help: 'Stream entries moved to a dead-letter stream: invalid (did not validate) or refused (by the database, too many times)',
    labelNames: ['reason'],
    registers,
  });
  const size = new Histogram({
    name: 'couponrush_worker_batch_size',
    help: 'Entries per batch written in one statement',
    buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
    registers,
  });
  const duration = new Histogram({
    name: 'couponrush_worker_batch_duration_seconds',
    help: 'Time to write and acknowledge one batch',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  written.inc(0);
  claimed.inc(0);
  const dead = Object.fromEntries(DEAD_LETTER_REASONS.map((r) => [r, deadLettered.labels(r)])) as Record<(typeof DEAD_LETTER_REASONS)[number], Counter.Internal>;
  for (const r of DEAD_LETTER_REASONS) dead[r].inc(0);
  return {
    batchWritten(entries, seconds) {
      written.inc(entries);
      size.observe(entries);
      duration.observe(seconds);
    },
    claimed(entries) {
      claimed.inc(entries);
    },
    deadLettered(reason) {
      dead[reason].inc();
    },
  };
}

/** The registry of a `couponrush worker` process: its own process, pool and Redis series too. */
export function createWorkerRegistry(db: Db, redis: RedisHandle): { registry: Registry; observer: WorkerObserver } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  registerPoolMetrics(registry, db);
  countRedisErrors(registry, redis);
  return { registry, observer: registerWorkerMetrics(registry, redis) };
}
