// Dead letters of the issuance topic: records the worker could not persist, on `<topic>.dead`.
//
// A dead letter's id is its source record's `partition-offset`; its key is that id, and it is
// bounded whatever the source record held: its value is the source value when that is at most
// MAX_RECORD_VALUE_BYTES, else the first MAX_RECORD_VALUE_BYTES of it (`truncated`), or nothing
// at all when the broker refused even that (`truncated`, the digest alone). Its headers say where
// it came from (source topic, partition, offset, key, authenticator), the SHA-256 of the whole
// source value, why it failed (at most 1 KiB, never a whole field) and whether it is `invalid`
// (failed validation: holds no seat) or `refused` (a valid admission the database refused:
// holds its seat until replayed or discarded).
//
// Kafka's Node client writes an empty value where a tombstone would be null, so a dead letter is
// settled by bookkeeping instead: a later record with the same key and a `settled` header
// (`replayed` or `discarded`). Reading the topic and keeping the last record per id gives the
// live dead letters and the settled ones.
import { createHash } from 'node:crypto';
import type { Producer } from '@platformatic/kafka';
import { COUPON_ID_PATTERN } from '../coupons/ids.js';
import type { KafkaHandle, TopicRecord } from './client.js';
import { idempotentProducer } from './producer.js';
import { AUTH_HEADER, decodeFields, MAX_RECORD_VALUE_BYTES } from './records.js';

/** The dead letter's header names. */
export const DEAD = {
  reason: 'reason',
  kind: 'kind',
  deliveries: 'deliveries',
  failedAt: 'failed-at',
  sourceTopic: 'source-topic',
  sourcePartition: 'source-partition',
  sourceOffset: 'source-offset',
  sourceKey: 'source-key',
  sourceAuth: 'source-auth',
  sourceBytes: 'source-bytes',
  digest: 'digest',
  truncated: 'truncated',
  settled: 'settled',
  settledAt: 'settled-at',
} as const;

/** `invalid`: failed validation, holds no seat. `refused`: valid, the database refused it. */
export type DeadLetterKind = 'invalid' | 'refused';

/** A source key longer than this is kept cut (a valid key is a coupon id of at most 10 digits). */
const MAX_SOURCE_KEY = 256;
/** An authenticator longer than this is not one: it is left out. */
const MAX_SOURCE_AUTH = 100;

export function deadLetterId(partition: number, offset: bigint): string {
  return `${partition}-${offset}`;
}

/** What the worker knows of a record it dead-letters. */
export interface SourceRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: bigint;
  readonly key: string | undefined;
  readonly value: string | undefined;
  readonly headers: ReadonlyMap<string, string>;
}

/** One dead letter as produced: key, value and headers. */
export interface DeadLetterRecord {
  readonly key: string;
  readonly value: string;
  readonly headers: Map<string, string>;
}

/**
 * The dead letter of `source`, bounded: `full` keeps the value when it fits, `cut` keeps its first
 * MAX_RECORD_VALUE_BYTES, `bare` keeps none of it (for a broker that refused the others).
 */
export function deadLetterRecord(source: SourceRecord, kind: DeadLetterKind, reason: string, deliveries: number, form: 'full' | 'cut' | 'bare'): DeadLetterRecord {
  const value = source.value ?? '';
  const bytes = Buffer.from(value, 'utf8');
  const fits = bytes.length <= MAX_RECORD_VALUE_BYTES;
  const kept = form === 'bare' ? '' : fits ? value : bytes.subarray(0, MAX_RECORD_VALUE_BYTES).toString('utf8');
  const truncated = form === 'bare' ? bytes.length > 0 : !fits;
  const headers = new Map<string, string>([
    [DEAD.reason, reason],
    [DEAD.kind, kind],
    [DEAD.deliveries, String(deliveries)],
    [DEAD.failedAt, String(Date.now())],
    [DEAD.sourceTopic, source.topic],
    [DEAD.sourcePartition, String(source.partition)],
    [DEAD.sourceOffset, String(source.offset)],
    [DEAD.sourceKey, (source.key ?? '').slice(0, MAX_SOURCE_KEY)],
    [DEAD.sourceBytes, String(bytes.length)],
    [DEAD.digest, createHash('sha256').update(bytes).digest('hex')],
  ]);
  const auth = source.headers.get(AUTH_HEADER);
  if (auth !== undefined && auth.length <= MAX_SOURCE_AUTH) headers.set(DEAD.sourceAuth, auth);
  if (truncated) headers.set(DEAD.truncated, '1');
  return { key: deadLetterId(source.partition, source.offset), value: kept, headers };
}

export interface KafkaDeadLetter {
  /** The source record's partition-offset (what replay and discard take). */
  readonly id: string;
  readonly couponId: number;
  readonly reason: string;
  readonly kind: DeadLetterKind;
  readonly deliveries: number;
  readonly failedAt: string;
  /** The source record's key, value (whole unless truncated) and authenticator. */
  readonly sourceKey: string;
  readonly value: string;
  readonly auth: string | undefined;
  /** The value kept is not the whole source value: it can only be discarded, never replayed. */
  readonly truncated: boolean;
  /** SHA-256 (hex) of the whole source value. */
  readonly digest: string;
  /** Its fields when it is a JSON object of strings ({c, u, t, r}), else empty. */
  readonly entry: Record<string, string>;
  /** Set once replayed or discarded (then it is no longer live). */
  readonly settled?: { readonly how: 'replayed' | 'discarded'; readonly at: string } | undefined;
}

function isoOf(ms: string | undefined): string {
  const n = Number(ms);
  return ms !== undefined && Number.isFinite(n) && n > 0 ? new Date(n).toISOString() : '';
}

function toDeadLetter(r: TopicRecord): KafkaDeadLetter | undefined {
  if (r.key === undefined) return undefined;
  const value = r.value ?? '';
  const fields = decodeFields(value);
  const entry: Record<string, string> = fields === undefined ? {} : Object.fromEntries(fields);
  const sourceKey = r.headers.get(DEAD.sourceKey) ?? '';
  // The source key names the campaign; a value that is not even JSON still has one.
  const coupon = COUPON_ID_PATTERN.test(sourceKey) ? Number(sourceKey) : Number(entry.c);
  const kind = r.headers.get(DEAD.kind) === 'refused' ? 'refused' : 'invalid';
  return {
    id: r.key,
    couponId: Number.isSafeInteger(coupon) && coupon > 0 ? coupon : 0,
    reason: r.headers.get(DEAD.reason) ?? '',
    kind,
    deliveries: Number(r.headers.get(DEAD.deliveries) ?? 0) || 0,
    failedAt: isoOf(r.headers.get(DEAD.failedAt)),
    sourceKey,
    value,
    auth: r.headers.get(DEAD.sourceAuth),
    truncated: r.headers.get(DEAD.truncated) === '1',
    digest: r.headers.get(DEAD.digest) ?? '',
    entry,
  };
}

/** A record that settles the dead letter `id` (the client cannot write a null tombstone). */
export function settlementRecord(id: string, how: 'replayed' | 'discarded'): DeadLetterRecord {
  return { key: id, value: '', headers: new Map([[DEAD.settled, how], [DEAD.settledAt, String(Date.now())]]) };
}

/** Every dead letter by id, oldest first: the live ones, and those settled since (with `settled`). */
export async function readDeadLetters(kafka: KafkaHandle): Promise<KafkaDeadLetter[]> {
  const last = new Map<string, { letter: KafkaDeadLetter; settled?: KafkaDeadLetter['settled'] }>();
  for (const r of await kafka.readAll(kafka.topics.dead)) {
    if (r.key === undefined) continue;
    const how = r.headers.get(DEAD.settled);
    const seen = last.get(r.key);
    if (how === 'replayed' || how === 'discarded' || (r.value === undefined || r.value === '') && r.headers.get(DEAD.reason) === undefined) {
      // A settlement (or an empty record of an earlier version's replay): the letter is no longer live.
      if (seen !== undefined) seen.settled = { how: how === 'discarded' ? 'discarded' : 'replayed', at: isoOf(r.headers.get(DEAD.settledAt)) };
      continue;
    }
    const letter = toDeadLetter(r);
    if (letter === undefined) continue;
    last.delete(r.key); // re-insert: the map keeps the order of each id's latest dead letter
    last.set(r.key, { letter });
  }
  return [...last.values()].map(({ letter, settled }) => (settled === undefined ? letter : { ...letter, settled }));
}

/** The live dead letters, oldest first. */
export async function liveDeadLetters(kafka: KafkaHandle): Promise<KafkaDeadLetter[]> {
  return (await readDeadLetters(kafka)).filter((d) => d.settled === undefined);
}

/** A producer for the dead-letter topic and replays (the worker's and the admin route's). */
export function deadLetterProducer(kafka: KafkaHandle, clientId: string): Producer<string, string, string, string> {
  return idempotentProducer(kafka.settings.brokers, clientId, kafka.settings.produceTimeoutMs);
}

const MAX_PARTITION = 2n ** 31n - 1n;
const MAX_OFFSET = 2n ** 63n - 1n;

/** A dead letter's id as Kafka can have made it: partition (int32) - offset (int64), both ≥ 0. */
export function isKafkaDeadLetterId(id: string): boolean {
  const m = /^([0-9]{1,10})-([0-9]{1,19})$/.exec(id);
  return m !== null && BigInt(m[1]!) <= MAX_PARTITION && BigInt(m[2]!) <= MAX_OFFSET;
}

/**
 * Produces these dead letters back to the issuance topic with their original key, value and
 * authenticator (the worker validates each as a new record), then their settlement records, so
 * that they are never live again. Returns each one's new partition-offset, in order. Throws when
 * a send fails; a failure between the two sends leaves them live and replayed (a second replay is
 * harmless: the worker's insert skips a pair already there). Never call it for a truncated one,
 * and claim the ids first (src/worker/kafka-dead-letters.ts): this function does not.
 */
export async function produceReplays(kafka: KafkaHandle, letters: readonly KafkaDeadLetter[]): Promise<string[]> {
  if (letters.length === 0) return [];
  const producer = deadLetterProducer(kafka, 'couponrush-replay');
  try {
    // One send per source key: one key is one partition, and one send of it one batch, so its
    // records have consecutive offsets from the one the broker answers.
    const byKey = new Map<string, number[]>();
    letters.forEach((d, i) => byKey.set(d.sourceKey, [...(byKey.get(d.sourceKey) ?? []), i]));
    const placed: string[] = letters.map(() => '');
    for (const indexes of byKey.values()) {
      const sent = await producer.send({
        messages: indexes.map((i) => {
          const d = letters[i]!;
          return { topic: kafka.topics.issuances, key: d.sourceKey, value: d.value, headers: d.auth === undefined ? new Map() : new Map([[AUTH_HEADER, d.auth]]) };
        }),
      });
      const offset = sent.offsets?.[0];
      if (offset !== undefined) indexes.forEach((i, n) => (placed[i] = deadLetterId(offset.partition, offset.offset + BigInt(n))));
    }
    await producer.send({ messages: letters.map((d) => ({ topic: kafka.topics.dead, ...settlementRecord(d.id, 'replayed') })) });
    return placed;
  } finally {
    await producer.close().catch(() => undefined);
  }
}

/** Produces the `discarded` settlement records of these dead letters (they are never live again). */
export async function produceDiscards(kafka: KafkaHandle, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  const producer = deadLetterProducer(kafka, 'couponrush-discard');
  try {
    await producer.send({ messages: ids.map((id) => ({ topic: kafka.topics.dead, ...settlementRecord(id, 'discarded') })) });
  } finally {
    await producer.close().catch(() => undefined);
  }
}
