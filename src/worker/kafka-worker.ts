// The Kafka worker: persists the issuance topic (redis-lua-kafka) into the database, through
// the one persistence loop (persist-loop.ts: validate, one transaction per batch, dead letters,
// acknowledge), in the consumer group `couponrush-workers` (several workers share the
// partitions; a dead one's are reassigned after its session times out). This module is the
// topic's side of it, the source:
//
//   reading    records gather in a buffer at most a batch ahead; a batch is up to
//              WORKER_BATCH_SIZE records, or what came within WORKER_LINGER_MS of the first.
//              Validation is validateRecord (size, key, the API's authenticator, then the fields).
//   redelivery `held`: offsets are a prefix, so nothing may be skipped. A record the database
//              refuses is retried at once (its deliveries are the attempts); a batch an outage
//              (the database, or the broker not taking dead letters) stops is retried until it is
//              done, and a stop with it still held commits nothing more: the batch and everything
//              after it are delivered again.
//   dead letters  bounded whatever the record held (src/kafka/dead-letters.ts), in one send when
//              the broker takes it; one the broker refuses for its size is sent again without the
//              value. A refused admission enters the held index (its user hears HELD).
//   acknowledge  commits the batch's last offset per partition: once every record of it is a row
//              or a dead letter, and batches go in order, so what is committed is always a
//              contiguous prefix.
//   broker away  the consumer is reopened from the committed offsets (backoff ≤ 1 s).
//   stop()     stops taking records, lets the loop finish what is buffered, leaves the group.
import type { Logger } from '../util/logger.js';
import type { Message, MessagesStream, Producer } from '@platformatic/kafka';
import { cachedCoupons, validateRecord, type CouponLookup, type Validation } from '../coupons/queued-admission.js';
import { KAFKA_WORKER_GROUP, type KafkaHandle } from '../kafka/client.js';
import { deadLetterId, deadLetterProducer, deadLetterRecord, type DeadLetterRecord } from '../kafka/dead-letters.js';
import { refusedForItsSize } from '../kafka/producer.js';
import type { RedisHandle } from '../redis/client.js';
import { Backoff } from '../util/backoff.js';
import { started } from '../util/lifecycle.js';
import { Pause } from '../util/pause.js';
import { PersistLoop, type Doomed, type IssuanceSource, type PersistLoopDeps } from './persist-loop.js';

type Record = Message<string, string, string, string>;

/** Backoff bound of rejoining the group: a backlog waits at most this long. */
const MAX_BACKOFF_MS = 1_000;
/** The broker's default floor for a consumer's session. */
const MIN_SESSION_MS = 6_000;
/** With an empty buffer, read() returns [] after this long (the loop asks again). */
const IDLE_READ_MS = 1_000;

export interface KafkaWorkerDeps extends PersistLoopDeps {
  readonly kafka: KafkaHandle;
  /** For the held index (a refused admission's user hears HELD); absent, nobody does. */
  readonly redis?: RedisHandle | undefined;
  readonly consumer: string;
}

/** The Kafka worker: the persistence loop over the issuance topic. */
export class KafkaIssueWorker extends PersistLoop<Record> {
  constructor(deps: KafkaWorkerDeps) {
    const log = deps.log.child({ kafkaWorker: deps.consumer });
    super(new TopicSource(deps, log, cachedCoupons(deps.db)), { ...deps, log });
  }
}

/** Creates a Kafka worker and starts it (resolves once it joined the group). */
export function startKafkaWorker(deps: KafkaWorkerDeps): Promise<KafkaIssueWorker> {
  return started(new KafkaIssueWorker(deps));
}

/** A send that got no answer in time (the producer is replaced: the broker may be away). */
class SendTimeout extends Error {}

class TopicSource implements IssuanceSource<Record> {
  readonly queue = 'kafka';
  readonly noun = 'record';
  readonly redelivery = 'held';
  private consumer: ReturnType<KafkaHandle['consumer']> | undefined;
  private stream: MessagesStream<string, string, string, string> | undefined;
  private dead: Producer<string, string, string, string> | undefined;
  private readonly buffer: Record[] = [];
  /** Woken when a record arrives (or at a stop). */
  private readonly arrived = new Pause();
  private roomMade: (() => void) | undefined;
  private pump: Promise<void> | undefined;
  private stopping = false;

  constructor(
    private readonly deps: KafkaWorkerDeps,
    private readonly log: Logger,
    private readonly coupons: CouponLookup,
  ) {}

  /** Joins the group; resolves once the first stream is open (a broker that is down fails it). */
  async open(): Promise<void> {
    this.stream = await this.openStream();
    this.pump = this.take(this.stream);
  }

  /** Nothing is ours after a restart: the group delivers again from the committed offsets. */
  async *recover(): AsyncGenerator<readonly Record[], void, undefined> {}

  /** A new consumer in the group and its stream, from the committed offsets. */
  private async openStream(): Promise<MessagesStream<string, string, string, string>> {
    const session = Math.min(60_000, Math.max(MIN_SESSION_MS, this.deps.config.claimIdleMs));
    const consumer = this.deps.kafka.consumer(KAFKA_WORKER_GROUP, `couponrush-worker-${this.deps.consumer}`);
    this.consumer = consumer;
    const stream = await consumer.consume({
      topics: [this.deps.kafka.topics.issuances],
      mode: 'committed',
      fallbackMode: 'earliest',
      maxWaitTime: 100,
      sessionTimeout: session,
      heartbeatInterval: Math.floor(session / 6),
    });
    stream.on('error', (err: unknown) => this.log.error({ err }, 'kafka worker: the consumer stream failed; reopening it'));
    return stream;
  }

  interrupt(): void {
    this.stopping = true;
    this.arrived.wake();
    this.makeRoom();
  }

  async close(): Promise<void> {
    await this.stream?.close().catch(() => undefined);
    await this.pump;
    await this.consumer?.close().catch(() => undefined);
    await this.dead?.close().catch(() => undefined);
  }

  /**
   * Moves records from the stream into the buffer, at most a batch ahead: while the buffer is
   * full it stops reading, and the stream stops fetching (its own backpressure; pausing it
   * instead can leave it stalled).
   */
  private async take(first: MessagesStream<string, string, string, string>): Promise<void> {
    let stream = first;
    const backoff = new Backoff(100, MAX_BACKOFF_MS);
    while (!this.stopping) {
      try {
        for await (const m of stream as AsyncIterable<Record>) {
          backoff.reset();
          this.buffer.push(m);
          this.arrived.wake();
          while (this.buffer.length >= this.deps.config.batchSize && !this.stopping) await new Promise<void>((r) => (this.roomMade = r));
          if (this.stopping) return;
        }
        if (this.stopping) return;
      } catch (err) {
        if (this.stopping) return;
        this.log.error({ err }, 'kafka worker: reading the topic failed');
      }
      // The stream ended or failed (the broker went away): a new consumer resumes from the last
      // committed offsets; records already in the buffer come again, which the insert tolerates.
      await new Promise((r) => setTimeout(r, backoff.next()));
      await this.consumer?.close().catch(() => undefined);
      try {
        if (this.stopping) return;
        stream = await this.openStream();
        this.stream = stream;
      } catch (err) {
        this.log.error({ err }, 'kafka worker: rejoining the group failed; retrying');
      }
    }
  }

  private makeRoom(): void {
    const r = this.roomMade;
    this.roomMade = undefined;
    r?.();
  }

  /** The next batch from the buffer; once stopping, what is left of it. */
  async read(): Promise<readonly Record[]> {
    const { batchSize, lingerMs } = this.deps.config;
    if (this.buffer.length === 0) {
      if (this.stopping) return [];
      await this.arrived.for(IDLE_READ_MS);
      if (this.buffer.length === 0) return [];
    }
    // A partial batch: let the next records join it (see WorkerConfig.lingerMs).
    if (this.buffer.length < batchSize && lingerMs > 0 && !this.stopping) await new Promise((r) => setTimeout(r, lingerMs));
    const batch = this.buffer.splice(0, batchSize);
    this.makeRoom();
    return batch;
  }

  validate(m: Record): Promise<Validation> {
    return validateRecord(m, this.deps.kafka.settings.recordSecrets, this.coupons);
  }

  /** A record is retried here, in place: its deliveries are the attempts. */
  async deliveries(_m: Record, attempt: number): Promise<number> {
    return attempt;
  }

  describe(m: Record): { [field: string]: unknown } {
    return { partition: m.partition, offset: String(m.offset) };
  }

  /**
   * Dead-letters the records, in one send when the broker takes it; a dead letter the broker
   * refuses for its size is sent again without the source value (digest and headers only).
   * Anything else the broker says is an outage: thrown, and the batch is held.
   */
  async deadLetter(doomed: readonly Doomed<Record>[]): Promise<Array<{ doomed: Doomed<Record>; letter: string }>> {
    const letter = (d: Doomed<Record>, form: 'full' | 'bare') => {
      const m = d.delivery;
      return deadLetterRecord({ topic: m.topic, partition: m.partition, offset: m.offset, key: m.key, value: m.value, headers: m.headers }, d.kind, d.reason, d.deliveries, form);
    };
    try {
      await this.send(doomed.map((d) => letter(d, 'full')));
    } catch (err) {
      if (!refusedForItsSize(err)) throw err;
      for (const d of doomed) {
        try {
          await this.send([letter(d, 'full')]);
        } catch (one) {
          if (!refusedForItsSize(one)) throw one;
          this.log.warn(this.describe(d.delivery), 'kafka worker: the broker refused a dead letter for its size; sending it without the value');
          await this.send([letter(d, 'bare')]);
        }
      }
    }
    const done = doomed.map((d) => ({ doomed: d, letter: deadLetterId(d.delivery.partition, d.delivery.offset) }));
    for (const { doomed: d, letter: id } of done) if (d.issue !== undefined) await this.markHeld(d.issue.couponId, d.issue.userId, id);
    return done;
  }

  /** One bounded send to the dead-letter topic; a send not answered in time replaces the producer. */
  private async send(records: readonly DeadLetterRecord[]): Promise<void> {
    const kafka = this.deps.kafka;
    const producer = (this.dead ??= deadLetterProducer(kafka, `couponrush-worker-dlq-${this.deps.consumer}`));
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((r) => (timer = setTimeout(() => r('deadline'), kafka.settings.produceTimeoutMs)));
    try {
      const result = await Promise.race([producer.send({ messages: records.map((r) => ({ topic: kafka.topics.dead, key: r.key, value: r.value, headers: r.headers })) }), deadline]);
      if (result === 'deadline') {
        // Its own retries would go on: close it (a dead letter sent twice is read once, by id).
        this.dead = undefined;
        producer.close().catch(() => undefined);
        throw new SendTimeout(`kafka: the dead-letter topic did not acknowledge within ${kafka.settings.produceTimeoutMs} ms`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** The user's seat is held by a dead letter: the status route says HELD. Best effort. */
  private async markHeld(couponId: number, userId: string, id: string): Promise<void> {
    const redis = this.deps.redis;
    if (redis === undefined) return;
    await redis.client.hset(redis.keys.campaign(couponId).held, userId, `kafka:${id}`).catch((err: unknown) => {
      this.log.error({ err, couponId, userId }, 'kafka worker: recording a held seat failed; its user hears PENDING until a replay or discard');
    });
  }

  /** Commits the last record of each partition (the client resumes after it): called once every record of the batch is settled. */
  async acknowledge(settled: readonly Record[]): Promise<void> {
    const last = new Map<number, Record>();
    for (const m of settled) {
      const seen = last.get(m.partition);
      if (seen === undefined || seen.offset < m.offset) last.set(m.partition, m);
    }
    for (const m of last.values()) {
      try {
        await m.commit();
      } catch (err) {
        // A rebalance took the partition: its new owner re-reads from the last commit (harmless).
        this.log.warn({ err, partition: m.partition }, 'kafka worker: offset commit failed; the records will be redelivered');
      }
    }
  }
}
