// Dead letters of the issuance topic: records the worker could not persist, on `<topic>.dead`.
// A dead letter's id is its source record's `partition-offset`; its key is that id, its value the
// source record's value, its headers the reason, the delivery count and when it failed. A replay
// produces the value back to the issuance topic and then appends a tombstone (the id as key, no
// value) to the dead-letter topic: reading the topic and keeping the last record per id gives the
// live dead letters. A live dead letter holds its user's seat, as in the stream dead letters.
import type { Producer } from '@platformatic/kafka';
import type { KafkaHandle, TopicRecord } from './client.js';
import { idempotentProducer } from './producer.js';
import { decodeFields } from './records.js';

export interface KafkaDeadLetter {
  /** The source record's partition-offset (what replay takes). */
  readonly id: string;
  readonly couponId: number;
  readonly reason: string;
  readonly deliveries: number;
  readonly failedAt: string;
  /** The source record's value. */
  readonly value: string;
  /** Its fields when it is a JSON object of strings ({c, u, t, r}), else empty. */
  readonly entry: Record<string, string>;
}

export function deadLetterId(partition: number, offset: bigint): string {
  return `${partition}-${offset}`;
}

function toDeadLetter(r: TopicRecord): KafkaDeadLetter | undefined {
  if (r.key === undefined || r.value === undefined) return undefined;
  const fields = decodeFields(r.value);
  const entry: Record<string, string> = fields === undefined ? {} : Object.fromEntries(fields);
  // A value that is not even JSON still names its campaign by the source record's key.
  const coupon = Number(entry.c ?? r.headers.get('source-key'));
  const failed = Number(r.headers.get('failed-at'));
  return {
    id: r.key,
    couponId: Number.isSafeInteger(coupon) && coupon > 0 ? coupon : 0,
    reason: r.headers.get('reason') ?? '',
    deliveries: Number(r.headers.get('deliveries') ?? 0),
    failedAt: Number.isFinite(failed) ? new Date(failed).toISOString() : '',
    value: r.value,
    entry,
  };
}

/** The live dead letters, oldest first (tombstoned ones are gone). */
export async function liveDeadLetters(kafka: KafkaHandle): Promise<KafkaDeadLetter[]> {
  const last = new Map<string, TopicRecord>();
  for (const r of await kafka.readAll(kafka.topics.dead)) {
    if (r.key === undefined) continue;
    last.delete(r.key); // re-insert: the map keeps the order of each id's latest record
    last.set(r.key, r);
  }
  return [...last.values()].flatMap((r) => toDeadLetter(r) ?? []);
}

/** A producer for the dead-letter topic and replays (the worker's and the admin route's). */
export function deadLetterProducer(kafka: KafkaHandle, clientId: string): Producer<string, string, string, string> {
  return idempotentProducer(kafka.settings.brokers, clientId, kafka.settings.produceTimeoutMs);
}

export interface KafkaReplayResult {
  readonly replayed: ReadonlyArray<{ readonly id: string; readonly streamId: string }>;
  readonly notFound: readonly string[];
}

/**
 * Produces the dead letters (these ids, or all of the coupon's) back to the issuance topic, then
 * tombstones them. A crash between the two replays one twice: harmless, the worker's insert
 * skips a pair already there.
 */
export async function replayKafkaDeadLetters(kafka: KafkaHandle, couponId: number, ids?: readonly string[]): Promise<KafkaReplayResult> {
  const live = (await liveDeadLetters(kafka)).filter((d) => d.couponId === couponId);
  const byId = new Map(live.map((d) => [d.id, d]));
  const targets = ids ?? live.map((d) => d.id);
  const found = targets.flatMap((id) => byId.get(id) ?? []);
  const notFound = targets.filter((id) => !byId.has(id));
  if (found.length === 0) return { replayed: [], notFound };
  const producer = deadLetterProducer(kafka, 'couponrush-replay');
  try {
    const sent = await producer.send({ messages: found.map((d) => ({ topic: kafka.topics.issuances, key: String(d.couponId), value: d.value })) });
    await producer.send({ messages: found.map((d) => ({ topic: kafka.topics.dead, key: d.id, value: undefined as unknown as string })) });
    const offset = sent.offsets?.[0];
    return {
      replayed: found.map((d, i) => ({ id: d.id, streamId: offset === undefined ? '' : deadLetterId(offset.partition, offset.offset + BigInt(i)) })),
      notFound,
    };
  } finally {
    await producer.close().catch(() => undefined);
  }
}
