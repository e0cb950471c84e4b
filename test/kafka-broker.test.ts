// The real Apache Kafka broker the Kafka suites run against (scripts/kafka-broker.ts): fetched
// from Maven Central once, started as a single KRaft node on a free port, answering the Kafka
// protocol; a graceful stop, a restart on the same log, and a kill -9 behave as a broker does.
// Needs `java` (17+) and `mvn` on PATH, or KAFKA_LIBS; without them it skips loudly (fails under CI).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { answersKafka, startKafka, type KafkaBroker } from '../scripts/kafka-broker.js';
import { needKafkaTools } from './kafka-helpers.js';

describe('the Kafka broker for the tests', () => {
  let broker: KafkaBroker | undefined;
  after(async () => {
    await broker?.stop();
  });

  it('starts a single KRaft node that answers the Kafka protocol, restarts on its log, and stops', async (t) => {
    if (!(await needKafkaTools(t))) return;
    broker = await startKafka();
    assert.match(broker.brokers, /^127\.0\.0\.1:\d+$/);
    assert.ok(await answersKafka(broker.port), 'ApiVersions answered with error code 0');

    await broker.kill();
    assert.equal(await answersKafka(broker.port, 500), false, 'kill -9: nothing answers');
    assert.ok(existsSync(broker.dataDir), 'the log survives a kill');
    await broker.restart();
    assert.ok(await answersKafka(broker.port), 'restarted on the same port and log');

    await broker.stop();
    assert.equal(await answersKafka(broker.port, 500), false, 'stopped');
    assert.equal(existsSync(broker.dataDir), false, 'its data removed');
    broker = undefined;
  });
});
