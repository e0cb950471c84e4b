// The Kafka handle of one process: the issuance producer (API), the topics (created when absent),
// and bounded reads of a topic's offset range — what `redis-lua-kafka`'s rebuild and `reconcile`
// need to see of the records the worker has not consumed yet. Opened by the runtime (or the CLI),
// closed by whoever opened it. Client: @platformatic/kafka (docs/performance.md says why).
import { randomBytes } from 'node:crypto';
import type { Admin, Consumer, MessagesStream } from '@platformatic/kafka';
import type { Logger } from '../util/logger.js';
import { kafkaLibrary, loadKafkaLibrary } from './library.js';
import { IssuanceProducer } from './producer.js';
import type { RecordSecrets } from './records.js';
import type { Tracing } from '../tracing/tracing.js';

/** The consumer group of `couponrush worker` on the issuance topic. */
export const KAFKA_WORKER_GROUP = 'couponrush-workers';
/** A read of an offset range fails (never returns part of it) after this long. */
const READ_TIMEOUT_MS = 15_000;

export interface KafkaSettings {
  readonly brokers: readonly string[];
  readonly topic: string;
  readonly partitions: number;
  readonly produceTimeoutMs: number;
  /** Issued-coupon events go here when set. */
  readonly eventsTopic?: string | undefined;
  /** The issuance records' authenticator keys (src/kafka/records.ts). */
  readonly recordSecrets: RecordSecrets;
}

/** One record read back from a topic. */
export interface TopicRecord {
  readonly partition: number;
  readonly offset: bigint;
  readonly key: string | undefined;
  readonly value: string | undefined;
  readonly headers: ReadonlyMap<string, string>;
}

/** One partition of a topic as the worker group stands on it. */
export interface PartitionLag {
  readonly partition: number;
  /** The offset the next record will get. */
  readonly end: bigint;
  /** Records the group has not committed yet (all the partition holds when it never committed). */
  readonly lag: bigint;
}

export interface KafkaHandle {
  readonly settings: KafkaSettings;
  /** The issuance topic and its dead letters. */
  readonly topics: { readonly issuances: string; readonly dead: string };
  readonly producer: IssuanceProducer;
  /** Records of `topic` the worker group has not committed yet (all of them when it never committed). */
  unconsumed(topic?: string): Promise<TopicRecord[]>;
  /** Every record of `topic` (the dead letters). */
  readAll(topic: string): Promise<TopicRecord[]>;
  /** Per partition of `topic`, how far the worker group is behind: offsets only, no record is read. */
  lag(topic?: string): Promise<PartitionLag[]>;
  /** A consumer in `groupId` (the worker's); the caller closes it. */
  consumer(groupId: string, clientId: string): Consumer<string, string, string, string>;
  /** Resolves once a broker answered a metadata request for the issuance topic. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

function admin(settings: KafkaSettings, clientId: string): Admin {
  const { Admin } = kafkaLibrary();
  // Bounded: a process whose brokers do not answer fails its start-up in seconds, saying so.
  return new Admin({ clientId, bootstrapBrokers: [...settings.brokers], timeout: 5_000, retries: 1, retryDelay: 250 });
}

/** Creates the topics unless they exist: replication 3 (or the number of brokers, if fewer). */
export async function ensureTopics(settings: KafkaSettings, topics: readonly string[]): Promise<void> {
  await loadKafkaLibrary();
  const a = admin(settings, 'couponrush-admin');
  try {
    const existing = new Set(await a.listTopics());
    const toCreate = topics.filter((t) => !existing.has(t));
    if (toCreate.length === 0) return;
    const meta = await a.metadata({ topics: [] });
    const replicas = Math.min(3, Math.max(1, meta.brokers.size));
    try {
      await a.createTopics({ topics: toCreate, partitions: settings.partitions, replicas });
    } catch (err) {
      // Another process created them first: fine, as long as they are there now.
      const now = new Set(await a.listTopics());
      if (!toCreate.every((t) => now.has(t))) throw err;
    }
  } finally {
    await a.close();
  }
}

export async function openKafka(settings: KafkaSettings, log: Logger, tracing?: Tracing): Promise<KafkaHandle> {
  const { Consumer, stringDeserializers } = await loadKafkaLibrary();
  const topics = { issuances: settings.topic, dead: `${settings.topic}.dead` };
  await ensureTopics(settings, [topics.issuances, topics.dead, ...(settings.eventsTopic === undefined ? [] : [settings.eventsTopic])]);
  const producer = new IssuanceProducer({ brokers: settings.brokers, topic: topics.issuances, timeoutMs: settings.produceTimeoutMs, clientId: 'couponrush-api', secret: settings.recordSecrets.current }, log, tracing);
  const consumer = (groupId: string, clientId: string) =>
    new Consumer({ groupId, clientId, bootstrapBrokers: [...settings.brokers], deserializers: stringDeserializers, autocommit: false, timeout: 10_000 });

  /**
   * The end offsets of `topic` and the worker group's committed offsets (-1 where it never
   * committed), per partition; with `withEarliest`, the earliest offsets still in the log too.
   */
  async function groupOffsets(topic: string, withEarliest = false): Promise<{ end: bigint[]; committed: bigint[]; earliest: bigint[] }> {
    const probe = consumer(KAFKA_WORKER_GROUP, 'couponrush-reader');
    try {
      const end = (await probe.listOffsets({ topics: [topic] })).get(topic) ?? [];
      const partitions = end.map((_, i) => i);
      const committed = (await probe.listCommittedOffsets({ topics: [{ topic, partitions }] })).get(topic) ?? [];
      const earliest = withEarliest ? ((await probe.listOffsets({ topics: [topic], timestamp: -2n })).get(topic) ?? []) : [];
      return { end, committed, earliest };
    } finally {
      await probe.close().catch(() => undefined);
    }
  }

  /** Reads [from, to) of each partition; `from` per partition (absent: from the start). */
  async function readRange(topic: string, from: (partition: number, earliest: bigint) => bigint): Promise<TopicRecord[]> {
    const reader = consumer(`couponrush-reader-${randomBytes(6).toString('hex')}`, 'couponrush-reader');
    try {
      const latest = (await reader.listOffsets({ topics: [topic] })).get(topic) ?? [];
      const earliest = (await reader.listOffsets({ topics: [topic], timestamp: -2n })).get(topic) ?? [];
      const want = new Map<number, { start: bigint; end: bigint }>();
      latest.forEach((end, p) => {
        const start = from(p, earliest[p] ?? 0n);
        if (start < end) want.set(p, { start, end });
      });
      if (want.size === 0) return [];
      const out: TopicRecord[] = [];
      const stream: MessagesStream<string, string, string, string> = await reader.consume({
        topics: [topic],
        mode: 'manual',
        offsets: [...want].map(([partition, r]) => ({ topic, partition, offset: r.start })),
        maxWaitTime: 100,
      });
      const left = new Set(want.keys());
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`kafka: reading ${topic} did not reach its end offsets within ${READ_TIMEOUT_MS} ms`)), READ_TIMEOUT_MS);
        stream.on('data', (m) => {
          const r = want.get(m.partition);
          if (r === undefined || m.offset < r.start || m.offset >= r.end) return;
          const headers = new Map<string, string>();
          for (const [k, v] of m.headers) headers.set(String(k), String(v));
          out.push({ partition: m.partition, offset: m.offset, key: m.key ?? undefined, value: m.value ?? undefined, headers });
          if (m.offset >= r.end - 1n) left.delete(m.partition);
          if (left.size === 0) {
            clearTimeout(timer);
            resolve();
          }
        });
        stream.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      await stream.close();
      return out;
    } finally {
      await reader.close().catch(() => undefined);
      await deleteGroup(settings, reader.groupId);
    }
  }

  return {
    settings,
    topics,
    producer,
    async ping() {
      const a = admin(settings, 'couponrush-ping');
      try {
        await a.metadata({ topics: [topics.issuances] });
      } finally {
        await a.close().catch(() => undefined);
      }
    },
    async unconsumed(topic = topics.issuances) {
      const { committed } = await groupOffsets(topic);
      // The client commits the last offset it processed and resumes after it; reading from the
      // committed offset itself costs one record and leaves nothing out.
      return readRange(topic, (p, earliest) => {
        const c = committed[p] ?? -1n;
        return c < earliest ? earliest : c;
      });
    },
    readAll(topic) {
      return readRange(topic, (_p, earliest) => earliest);
    },
    async lag(topic = topics.issuances) {
      const { end, committed, earliest } = await groupOffsets(topic, true);
      return end.map((e, partition) => {
        // Committed is the last offset processed (see unconsumed): the group resumes after it.
        const c = committed[partition] ?? -1n;
        const next = c + 1n > (earliest[partition] ?? 0n) ? c + 1n : (earliest[partition] ?? 0n);
        return { partition, end: e, lag: e > next ? e - next : 0n };
      });
    },
    consumer,
    async close() {
      await producer.close();
    },
  };
}

async function deleteGroup(settings: KafkaSettings, groupId: string): Promise<void> {
  const a = admin(settings, 'couponrush-admin');
  try {
    await a.deleteGroups({ groups: [groupId] });
  } catch {
    // A reader's group is empty and harmless; the broker expires it.
  } finally {
    await a.close().catch(() => undefined);
  }
}

/** Deletes topics (the bench's and the tests' own); a topic already gone is not an error. */
export async function deleteKafkaTopics(brokers: string, topics: readonly string[]): Promise<void> {
  const { Admin } = await loadKafkaLibrary();
  const a = new Admin({ clientId: 'couponrush-admin', bootstrapBrokers: brokers.split(','), timeout: 10_000, retries: 2 });
  try {
    const existing = new Set(await a.listTopics());
    const gone = topics.filter((t) => existing.has(t));
    if (gone.length > 0) await a.deleteTopics({ topics: gone });
  } finally {
    await a.close().catch(() => undefined);
  }
}
