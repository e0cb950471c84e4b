// The real Apache Kafka broker the Kafka suites run against (scripts/kafka-broker.ts): fetched
// from Maven Central once, started as a single KRaft node on a free port, answering the Kafka
// protocol; a graceful stop, a restart on the same log, and a kill -9 behave as a broker does.
// Needs `java` (17+) and `mvn` on PATH, or KAFKA_LIBS; without them it skips loudly (fails under CI).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { after, describe, it, type TestContext } from 'node:test';
import { answersKafka, startKafka, type KafkaBroker } from '../scripts/kafka-broker.js';
import { missing } from './helpers.js';

const has = (command: string) => promisify(execFile)(command, ['-version']).then(() => true, () => false);

async function needJava(t: TestContext): Promise<boolean> {
  if (!(await has('java'))) {
    missing(t, 'java (JDK 17+) is not on PATH — install it to run the Kafka tests');
    return false;
  }
  if (process.env.KAFKA_LIBS === undefined && !(await has('mvn'))) {
    missing(t, 'mvn is not on PATH (it fetches the Kafka jars) — install Maven or set KAFKA_LIBS');
    return false;
  }
  return true;
}

describe('the Kafka broker for the tests', () => {
  let broker: KafkaBroker | undefined;
  after(async () => {
    await broker?.stop();
  });

  it('starts a single KRaft node that answers the Kafka protocol, restarts on its log, and stops', async (t) => {
    if (!(await needJava(t))) return;
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
