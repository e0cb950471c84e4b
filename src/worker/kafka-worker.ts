// The Kafka worker: persists the issuance topic (redis-lua-kafka) into the database, in the
// consumer group `couponrush-workers` (several workers share the partitions; a dead one's are
// reassigned after its session times out).
//
//   batch      records gather up to WORKER_BATCH_SIZE, or for WORKER_LINGER_MS after the first;
//              each is validated (src/coupons/queued-admission.ts: size, key, the API's
//              authenticator, fields, window); the valid ones are written in ONE transaction
//              (rows + issued counts). A redelivered record is harmless: the insert skips a pair
//              already there.
//   poison     a record that does not validate goes to the dead-letter topic at once, bounded
//              whatever it holds (src/kafka/dead-letters.ts): a broker refusing the dead letter
//              for its size gets a shorter one. A record the database refuses
//              WORKER_MAX_DELIVERIES times is dead-lettered with the error; it keeps its seat
//              (the held index tells its user HELD).
//   offsets    committed only after every record of the batch is persisted or dead-lettered, and
//              batches are taken in order: what is committed is always a contiguous prefix.
//   outage     the database or the broker being away dead-letters nothing: the batch in hand is
//              retried (backoff ≤ 1 s), offsets uncommitted. A stop with that batch still held
//              commits nothing more: the batch and everything after it are redelivered.
//   stop()     stops taking records, finishes the batch in hand, commits, leaves the group.
import type { Logger } from '../util/logger.js';
import type { Message, MessagesStream, Producer } from '@platformatic/kafka';
import type { WorkerConfig } from '../config.js';
import { boundedReason, cachedCoupons, validateRecord, type CouponLookup } from '../coupons/queued-admission.js';
import { insertIssues, type NewIssue } from '../coupons/repository.js';
import type { Db } from '../db/index.js';
import { KAFKA_WORKER_GROUP, type KafkaHandle } from '../kafka/client.js';
import { deadLetterProducer, deadLetterRecord, type DeadLetterKind, type DeadLetterRecord } from '../kafka/dead-letters.js';
import { refusedForItsSize } from '../kafka/producer.js';
import type { RedisHandle } from '../redis/client.js';
import { isDependencyUnavailable } from '../util/dependency-errors.js';
import { Pause } from '../util/pause.js';
import type { WorkerObserver } from './worker.js';

type Record = Message<string, string, string, string>;

/** Backoff bound of a held batch and of rejoining the group: a backlog waits at most this long. */
const MAX_BACKOFF_MS = 1_000;
const STOP_GRACE_MS = 10_000;
/** The broker's default floor for a consumer's session. */
const MIN_SESSION_MS = 6_000;

export interface KafkaWorkerDeps {
  readonly db: Db;
  readonly kafka: KafkaHandle;
  /** For the held index (a refused admission's user hears HELD); absent, nobody does. */
  readonly redis?: RedisHandle | undefined;
  readonly config: WorkerConfig;
  readonly log: Logger;
  readonly consumer: string;
  readonly observer?: WorkerObserver;
}

/** A record to dead-letter, and why. */
interface Doomed {
  readonly m: Record;
  readonly kind: DeadLetterKind;
  readonly reason: string;
  readonly deliveries: number;
  /** The admitted user, for a refused admission (its seat is held). */
  readonly heldUser?: { readonly couponId: number; readonly userId: string };
}

/** A send that got no answer in time (the producer is replaced: the broker may be away). */
class SendTimeout extends Error {}

export class KafkaIssueWorker {
  private consumer: ReturnType<KafkaHandle['consumer']> | undefined;
  private stream: MessagesStream<string, string, string, string> | undefined;
  private dead: Producer<string, string, string, string> | undefined;
  private readonly buffer: Record[] = [];
  private readonly pause = new Pause();
  private roomMade: (() => void) | undefined;
  private pump: Promise<void> | undefined;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private observer: WorkerObserver | undefined;
  private readonly coupons: CouponLookup;
  private readonly log: Logger;
  /** Records written and committed since start (for logs and tests). */
  written = 0;
  deadLettered = 0;

  constructor(private readonly deps: KafkaWorkerDeps) {
    this.observer = deps.observer;
    this.log = deps.log.child({ kafkaWorker: deps.consumer });
    this.coupons = cachedCoupons(deps.db);
  }

  observe(observer: WorkerObserver): void {
    this.observer = observer;
  }

  /** Joins the group; resolves once the first stream is open (a broker that is down fails it). */
  async start(): Promise<void> {
    this.stream = await this.open();
    this.pump = this.take(this.stream);
    this.loop = this.run();
    this.log.info({ topic: this.deps.kafka.topics.issuances }, 'kafka worker started');
  }

  /** A new consumer in the group and its stream, from the committed offsets. */
  private async open(): Promise<MessagesStream<string, string, string, string>> {
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

  async stop(): Promise<void> {
    this.stopping = true;
    this.pause.wake();
    this.makeRoom();
    // A batch held by an outage is given up after the grace, uncommitted, and so is everything
    // after it: the group hands them to the next worker.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.loop, new Promise((r) => (timer = setTimeout(r, STOP_GRACE_MS)))]);
    clearTimeout(timer);
    await this.stream?.close().catch(() => undefined);
    await this.pump;
    await this.consumer?.close().catch(() => undefined);
    await this.dead?.close().catch(() => undefined);
    this.log.info({ written: this.written, deadLettered: this.deadLettered }, 'kafka worker stopped');
  }

  /**
   * Moves records from the stream into the buffer, at most a batch ahead: while the buffer is
   * full it stops reading, and the stream stops fetching (its own backpressure; pausing it
   * instead can leave it stalled).
   */
  private async take(first: MessagesStream<string, string, string, string>): Promise<void> {
    let stream = first;
    let backoff = 0;
    while (!this.stopping) {
      try {
        for await (const m of stream as AsyncIterable<Record>) {
          backoff = 0;
          this.buffer.push(m);
          this.pause.wake();
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
      backoff = Math.min(MAX_BACKOFF_MS, Math.max(100, backoff * 2));
      await new Promise((r) => setTimeout(r, backoff));
      await this.consumer?.close().catch(() => undefined);
      try {
        if (this.stopping) return;
        stream = await this.open();
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

  private async run(): Promise<void> {
    const { batchSize, lingerMs } = this.deps.config;
    while (!this.stopping || this.buffer.length > 0) {
      if (this.buffer.length === 0) {
        if (this.stopping) break;
        await this.pause.for(1_000);
        continue;
      }
      // A partial batch: let the next records join it (see WorkerConfig.lingerMs).
      if (this.buffer.length < batchSize && lingerMs > 0 && !this.stopping) await new Promise((r) => setTimeout(r, lingerMs));
      const batch = this.buffer.splice(0, batchSize);
      this.makeRoom();
      if (!(await this.untilDone(batch))) {
        // Stopping with this batch held: nothing after it may be committed (that would skip it).
        this.buffer.length = 0;
        break;
      }
    }
  }

  /** Processes the batch until it is done (true); an outage is waited out, never skipped. */
  private async untilDone(batch: readonly Record[]): Promise<boolean> {
    let backoff = 0;
    for (;;) {
      try {
        await this.process(batch);
        return true;
      } catch (err) {
        if (this.stopping) {
          this.log.warn({ err, records: batch.length }, 'kafka worker: stopping with a batch not written; it and every record after it will be redelivered');
          return false;
        }
        backoff = Math.min(MAX_BACKOFF_MS, Math.max(100, backoff * 2));
        this.log.error({ err, retryInMs: backoff }, 'kafka worker: batch held (a store is away); retrying it');
        await new Promise((r) => setTimeout(r, backoff));
      }
    }
  }

  /** Validate, write the valid records in one transaction, dead-letter the rest, then commit. */
  private async process(batch: readonly Record[]): Promise<void> {
    const valid: Array<{ m: Record; issue: NewIssue }> = [];
    const doomed: Doomed[] = [];
    for (const m of batch) {
      const v = await validateRecord(m, this.deps.kafka.settings.recordSecrets, this.coupons);
      if (v.ok) valid.push({ m, issue: v.issue });
      else doomed.push({ m, kind: 'invalid', reason: `invalid record: ${v.reason}`, deliveries: 1 });
    }
    if (valid.length > 0) {
      const started = performance.now();
      try {
        await this.deps.db.transaction((tx) => insertIssues(tx, valid.map((v) => v.issue)));
        this.written += valid.length;
        this.observer?.batchWritten(valid.length, (performance.now() - started) / 1000);
      } catch (err) {
        if (isDependencyUnavailable(err)) throw err;
        this.log.warn({ err, records: valid.length }, 'kafka worker: batch refused by the database; writing its records one by one');
        for (const v of valid) {
          const refused = await this.writeOne(v.issue);
          if (refused !== undefined) doomed.push({ m: v.m, kind: 'refused', reason: refused.reason, deliveries: refused.deliveries, heldUser: { couponId: v.issue.couponId, userId: v.issue.userId } });
        }
      }
    }
    if (doomed.length > 0) await this.deadLetter(doomed);
    await this.commit(batch);
  }

  /** One record, retried up to WORKER_MAX_DELIVERIES times; what the database said when it kept refusing. */
  private async writeOne(issue: NewIssue): Promise<{ reason: string; deliveries: number } | undefined> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.deps.db.transaction((tx) => insertIssues(tx, [issue]));
        this.written++;
        return undefined;
      } catch (err) {
        if (isDependencyUnavailable(err)) throw err;
        if (attempt >= this.deps.config.maxDeliveries) {
          return { reason: boundedReason(`database refused it on ${attempt} deliveries: ${(err as Error).message}`), deliveries: attempt };
        }
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  /**
   * Dead-letters the records, in one send when the broker takes it; a dead letter the broker
   * refuses for its size is sent again without the source value (digest and headers only).
   * Anything else the broker says is an outage: thrown, and the batch is held.
   */
  private async deadLetter(doomed: readonly Doomed[]): Promise<void> {
    const letter = (d: Doomed, form: 'full' | 'cut' | 'bare') =>
      deadLetterRecord({ topic: d.m.topic, partition: d.m.partition, offset: d.m.offset, key: d.m.key, value: d.m.value, headers: d.m.headers }, d.kind, boundedReason(d.reason), d.deliveries, form);
    try {
      await this.send(doomed.map((d) => letter(d, 'full')));
    } catch (err) {
      if (!refusedForItsSize(err)) throw err;
      for (const d of doomed) {
        try {
          await this.send([letter(d, 'full')]);
        } catch (one) {
          if (!refusedForItsSize(one)) throw one;
          this.log.warn({ partition: d.m.partition, offset: String(d.m.offset) }, 'kafka worker: the broker refused a dead letter for its size; sending it without the value');
          await this.send([letter(d, 'bare')]);
        }
      }
    }
    for (const d of doomed) {
      this.deadLettered++;
      this.observer?.deadLettered?.(d.kind);
      this.log.error({ partition: d.m.partition, offset: String(d.m.offset), reason: boundedReason(d.reason) }, 'kafka worker: record dead-lettered');
      if (d.heldUser !== undefined) await this.markHeld(d.heldUser.couponId, d.heldUser.userId, `${d.m.partition}-${d.m.offset}`);
    }
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

  /** Commits the last record of each partition in the batch (the client resumes after it). */
  private async commit(batch: readonly Record[]): Promise<void> {
    const last = new Map<number, Record>();
    for (const m of batch) {
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

/** Creates a Kafka worker and starts it. */
export async function startKafkaWorker(deps: KafkaWorkerDeps): Promise<KafkaIssueWorker> {
  const worker = new KafkaIssueWorker(deps);
  try {
    await worker.start();
  } catch (err) {
    await worker.stop();
    throw err;
  }
  return worker;
}
