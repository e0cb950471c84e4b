// The worker's series: issuances persisted, claimed and dead-lettered per queue (Redis Streams,
// Kafka), batch size and duration (the workers report them through their WorkerObserver hook),
// the streams themselves (metrics/redis.ts), and with Kafka the worker group's lag per partition,
// the events published and the outbox backlog (read at scrape time). A `couponrush worker`
// process gets its own registry and listener; with `serve --with-worker` the series join the
// API's registry.
// A scrape never waits long for Kafka or the database: an unanswered read leaves the series out.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Db } from '../db/index.js';
import type { PartitionLag } from '../kafka/client.js';
import type { RedisHandle } from '../redis/client.js';
import { within } from '../util/within.js';
import type { WorkerObserver } from '../worker/persist-loop.js';
import { registerPoolMetrics } from './index.js';
import { countRedisErrors, registerStreamMetrics } from './redis.js';

const DEAD_LETTER_REASONS = ['invalid', 'refused'] as const;
/** Where an issuance waited before the worker persisted it. */
export type WorkerQueue = 'stream' | 'kafka';
const SCRAPE_READ_TIMEOUT_MS = 2_000;

/** One observer per queue: pass `stream` to the stream worker's observe(), `kafka` to the Kafka worker's. */
export interface WorkerObservers {
  readonly stream: WorkerObserver;
  readonly kafka: WorkerObserver;
}

/** What the Kafka series are read from (the callers own the handles). */
export interface KafkaMetricsSources {
  /** The issuance topic, and the worker group's lag on each of its partitions (KafkaHandle.lag). */
  readonly topic: string;
  readonly lag: () => Promise<readonly PartitionLag[]>;
  /** With KAFKA_EVENTS=on: events Kafka acknowledged since start, and the outbox rows waiting. */
  readonly events?: { readonly topic: string; readonly published: () => number; readonly pending: () => Promise<number> };
}

/** Registers the worker series on `registry`; pass the observers to the workers' `observe()`. */
export function registerWorkerMetrics(registry: Registry, redis: RedisHandle, kafka?: KafkaMetricsSources): WorkerObservers {
  registerStreamMetrics(registry, redis);
  const registers = [registry];
  const written = new Counter({
    name: 'couponrush_worker_rows_written_total',
    help: 'Issuances committed to the database and acknowledged, by queue: stream = Redis Stream entries, kafka = Kafka records (a redelivery of a committed one inserts nothing)',
    labelNames: ['queue'],
    registers,
  });
  const claimed = new Counter({
    name: 'couponrush_worker_claimed_total',
    help: 'Stream entries taken over from idle consumers (a dead or stuck worker)',
    registers,
  });
  const deadLettered = new Counter({
    name: 'couponrush_worker_dead_lettered_total',
    help: 'Issuances moved to a dead-letter stream or topic, by queue: invalid (did not validate) or refused (by the database, too many times)',
    labelNames: ['queue', 'reason'],
    registers,
  });
  const size = new Histogram({
    name: 'couponrush_worker_batch_size',
    help: 'Stream entries or Kafka records per batch written in one transaction',
    buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
    registers,
  });
  const duration = new Histogram({
    name: 'couponrush_worker_batch_duration_seconds',
    help: 'Time to write and acknowledge one batch',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers,
  });
  claimed.inc(0);
  const observerFor = (queue: WorkerQueue): WorkerObserver => {
    const rows = written.labels(queue);
    rows.inc(0);
    const dead = Object.fromEntries(DEAD_LETTER_REASONS.map((r) => [r, deadLettered.labels(queue, r)])) as Record<(typeof DEAD_LETTER_REASONS)[number], Counter.Internal>;
    for (const r of DEAD_LETTER_REASONS) dead[r].inc(0);
    return {
      batchWritten(entries, seconds) {
        rows.inc(entries);
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
  };
  const stream = observerFor('stream');
  if (kafka === undefined) {
    // No Kafka worker here: its series would only ever read zero.
    return { stream, kafka: { batchWritten: () => undefined } };
  }
  registerKafkaMetrics(registry, kafka);
  return { stream, kafka: observerFor('kafka') };
}

function registerKafkaMetrics(registry: Registry, kafka: KafkaMetricsSources): void {
  const registers = [registry];
  let reading: Promise<readonly PartitionLag[] | undefined> | undefined;
  const lagNow = () => {
    // Concurrent scrapes share one read; a broker that does not answer costs each at most the bound.
    reading ??= within(kafka.lag(), SCRAPE_READ_TIMEOUT_MS, 'kafka lag read timed out')
      .catch(() => undefined)
      .finally(() => setImmediate(() => (reading = undefined)));
    return reading;
  };
  new Gauge({
    name: 'couponrush_kafka_consumer_lag',
    help: "Records on the issuance topic the worker group has not committed yet, per partition (the group's, so every worker reports the same; absent when the brokers did not answer the scrape)",
    labelNames: ['topic', 'partition'],
    registers,
    async collect() {
      const partitions = await lagNow();
      this.reset();
      for (const p of partitions ?? []) this.labels(kafka.topic, String(p.partition)).set(Number(p.lag));
    },
  });
  const events = kafka.events;
  if (events === undefined) return;
  let counted = 0;
  new Counter({
    name: 'couponrush_events_published_total',
    help: 'Issued-coupon events this process published and Kafka acknowledged (KAFKA_EVENTS=on; at least once: a round published again after a failed commit counts again)',
    registers,
    collect() {
      const now = events.published();
      this.inc(now - counted);
      counted = now;
    },
  });
  new Gauge({
    name: 'couponrush_events_outbox_pending',
    help: 'Issued-coupon events waiting in the outbox for the events topic (absent when the database did not answer the scrape)',
    labelNames: ['topic'],
    registers,
    async collect() {
      const pending = await within(events.pending(), SCRAPE_READ_TIMEOUT_MS, 'outbox read timed out').catch(() => undefined);
      this.reset();
      if (pending !== undefined) this.labels(events.topic).set(pending);
    },
  });
}

/** The registry of a `couponrush worker` process: its own process, pool and Redis series too. */
export function createWorkerRegistry(db: Db, redis: RedisHandle, kafka?: KafkaMetricsSources): { registry: Registry; observer: WorkerObserver; observers: WorkerObservers } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  registerPoolMetrics(registry, db);
  countRedisErrors(registry, redis);
  const observers = registerWorkerMetrics(registry, redis, kafka);
  return { registry, observer: observers.stream, observers };
}
