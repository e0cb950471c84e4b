// The worker's /metrics series, from its real registry over stand-in sources: rows written per
// queue (stream entries and Kafka records apart), the Kafka group's lag per partition, events
// published and the outbox backlog, and a scrape that does not wait on a broker that does not
// answer. Needs nothing (the Kafka suites check the lag against a real broker).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { registerWorkerMetrics } from '../src/metrics/worker.js';
import type { RedisHandle } from '../src/redis/client.js';
import { sample } from './ops-helpers.js';

// Nothing is read from it but the stream registry, which fails and leaves the stream series out.
const redis = { client: { on: () => undefined } } as unknown as RedisHandle;

describe("the worker's metrics", () => {
  it('counts rows written per queue, and says in the help what each counts', async () => {
    const registry = new Registry();
    const observers = registerWorkerMetrics(registry, redis, { topic: 'issues', lag: async () => [] });
    observers.stream.batchWritten(3, 0.01);
    observers.kafka.batchWritten(5, 0.02);
    observers.kafka.deadLettered?.('invalid');
    const text = await registry.metrics();
    assert.equal(sample(text, 'couponrush_worker_rows_written_total', { queue: 'stream' }), 3);
    assert.equal(sample(text, 'couponrush_worker_rows_written_total', { queue: 'kafka' }), 5);
    assert.equal(sample(text, 'couponrush_worker_dead_lettered_total', { queue: 'kafka', reason: 'invalid' }), 1);
    assert.equal(sample(text, 'couponrush_worker_dead_lettered_total', { queue: 'stream', reason: 'invalid' }), 0);
    assert.match(text, /# HELP couponrush_worker_rows_written_total .*stream = Redis Stream entries, kafka = Kafka records/);
  });

  it('without Kafka: no Kafka series and no kafka queue label', async () => {
    const registry = new Registry();
    registerWorkerMetrics(registry, redis).stream.batchWritten(1, 0.001);
    const text = await registry.metrics();
    assert.doesNotMatch(text, /couponrush_kafka_|couponrush_events_|queue="kafka"/);
    assert.equal(sample(text, 'couponrush_worker_rows_written_total'), 1);
  });

  it('reports the Kafka group lag per partition, events published and the outbox backlog at scrape time', async () => {
    const registry = new Registry();
    let published = 7;
    registerWorkerMetrics(registry, redis, {
      topic: 'couponrush.issuances',
      lag: async () => [
        { partition: 0, end: 10n, lag: 0n },
        { partition: 1, end: 42n, lag: 12n },
      ],
      events: { topic: 'coupon.issued', published: () => published, pending: async () => 4 },
    });
    let text = await registry.metrics();
    assert.equal(sample(text, 'couponrush_kafka_consumer_lag', { topic: 'couponrush.issuances', partition: '0' }), 0);
    assert.equal(sample(text, 'couponrush_kafka_consumer_lag', { topic: 'couponrush.issuances', partition: '1' }), 12);
    assert.equal(sample(text, 'couponrush_events_published_total'), 7);
    assert.equal(sample(text, 'couponrush_events_outbox_pending', { topic: 'coupon.issued' }), 4);
    published = 10;
    text = await registry.metrics();
    assert.equal(sample(text, 'couponrush_events_published_total'), 10, 'a counter of what was acknowledged, not of scrapes');
  });

  it('a broker or database that does not answer leaves those series out, within the bound', async () => {
    const registry = new Registry();
    const never = new Promise<never>(() => undefined);
    registerWorkerMetrics(registry, redis, { topic: 't', lag: () => never, events: { topic: 'coupon.issued', published: () => 0, pending: () => never } });
    const started = performance.now();
    const text = await registry.metrics();
    assert.ok(performance.now() - started < 5_000, 'the scrape answered');
    assert.equal(sample(text, 'couponrush_kafka_consumer_lag', { topic: 't' }), undefined);
    assert.equal(sample(text, 'couponrush_events_outbox_pending', { topic: 'coupon.issued' }), undefined);
    assert.equal(sample(text, 'couponrush_events_published_total'), 0);
  });
});
