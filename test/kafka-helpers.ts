// What the Kafka suites share: whether this machine can run a real broker (java, and mvn to
// fetch the jars unless KAFKA_LIBS names them), said loudly when it cannot (and a failure under
// CI=true, through `missing`); and the app on a topic of its own, with its Kafka workers.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, type TestContext } from 'node:test';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { startKafka, type KafkaBroker } from '../scripts/kafka-broker.js';
import { deleteKafkaTopics } from '../src/kafka/client.js';
import { startKafkaWorker, type KafkaIssueWorker } from '../src/worker/kafka-worker.js';
import { issuedRows, missing, needDatabase, needServer } from './helpers.js';
import { REDIS_URL, silent, startRedisTestServer, waitFor, type RedisTestServer } from './redis-helpers.js';

const has = (command: string) => promisify(execFile)(command, ['-version']).then(() => true, () => false);

/** The reason a broker cannot run here, or undefined when it can. */
export async function kafkaToolsMissing(): Promise<string | undefined> {
  if (!(await has('java'))) return 'java (JDK 17+) is not on PATH — install it to run the Kafka tests';
  if (process.env.KAFKA_LIBS === undefined && !(await has('mvn'))) return 'mvn is not on PATH (it fetches the Kafka jars) — install Maven or set KAFKA_LIBS';
  return undefined;
}

/** True when a broker can run; else skips loudly (fails under CI=true). */
export async function needKafkaTools(t: TestContext): Promise<boolean> {
  const reason = await kafkaToolsMissing();
  if (reason === undefined) return true;
  missing(t, reason);
  return false;
}

/** A broker, PostgreSQL and Redis are all here (else skipped loudly, or failed under CI=true). */
export async function needKafka(t: TestContext): Promise<boolean> {
  return (await needKafkaTools(t)) && (await needDatabase(t, 'postgres')) && (await needServer(t, 'Redis', REDIS_URL));
}

export const STRATEGY = 'redis-lua-kafka';
/** The API and the workers of a suite share it; a hostile writer does not know it. */
export const RECORD_SECRET = randomBytes(32).toString('base64url');

export interface KafkaServer extends RedisTestServer {
  readonly topic: string;
  startKafkaWorker(name: string): Promise<KafkaIssueWorker>;
}

/** The app with KAFKA_BROKERS on a topic of its own (deleted by close()). */
export async function startKafkaServer(broker: KafkaBroker, env: Record<string, string> = {}): Promise<KafkaServer> {
  const topic = env.KAFKA_TOPIC ?? `crtest-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const server = await startRedisTestServer({ KAFKA_BROKERS: broker.brokers, KAFKA_TOPIC: topic, KAFKA_PRODUCE_TIMEOUT_MS: '1500', KAFKA_PARTITIONS: '3', WORKER_LINGER_MS: '10', KAFKA_RECORD_SECRET: RECORD_SECRET, ...env });
  const kafka = server.runtime.kafka;
  if (kafka === undefined) throw new Error('KAFKA_BROKERS did not open Kafka');
  const workers: KafkaIssueWorker[] = [];
  const closeServer = server.close;
  return Object.assign(server, {
    topic,
    async startKafkaWorker(name: string) {
      const w = await startKafkaWorker({ db: server.db, kafka, redis: server.redis, config: server.config.worker, log: process.env.KDEBUG ? pino({ level: 'info' }) : silent, consumer: name });
      workers.push(w);
      return w;
    },
    async close() {
      for (const w of workers) await w.stop();
      await closeServer();
      await deleteKafkaTopics(broker.brokers, [topic, `${topic}.dead`]).catch(() => undefined);
    },
  });
}

export async function waitForRows(server: Pick<KafkaServer, 'db'>, couponId: number, rows: number, timeoutMs = 60_000): Promise<void> {
  await waitFor(`${rows} rows for coupon ${couponId}`, async () => (await issuedRows(server.db, couponId)).rows === rows, timeoutMs);
}

/**
 * One broker for a test file, started before its first test and stopped after its last; the
 * getter gives undefined where the tools are missing (the tests then skip through needKafka).
 */
export function brokerForFile(): () => KafkaBroker | undefined {
  let broker: KafkaBroker | undefined;
  before(async () => {
    if ((await kafkaToolsMissing()) === undefined) broker = await startKafka();
  });
  after(async () => {
    await broker?.stop();
  });
  return () => broker;
}
