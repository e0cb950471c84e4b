// The Kafka worker: persists the issuance topic (redis-lua-kafka) into the database, in the
// consumer group `couponrush-workers` (several workers share the partitions; a dead one's are
// reassigned after its session times out).
//
//   batch      records gather up to WORKER_BATCH_SIZE, or for WORKER_LINGER_MS after the first;
//              the valid ones are written in ONE transaction (rows + issued counts), and the
//              offsets are committed only after that commit. A redelivered record (a worker
//              killed between commit and offset commit) is harmless: the insert skips a pair
//              already there.
//   poison     a record that does not validate goes to the dead-letter topic with the reason at
//              once; a record the database refuses WORKER_MAX_DELIVERIES times, with the error.
//              Its offset is committed only after the dead letter is acknowledged.
//   outage     the database being down dead-letters nothing: the batch in hand is retried with
//              backoff, offsets uncommitted.
//   stop()     stops taking records, finishes the batch in hand, commits, leaves the group.
import type { FastifyBaseLogger } from 'fastify';
import type { Message, MessagesStream, Producer } from '@platformatic/kafka';
import type { WorkerConfig } from '../config.js';
import type { Coupon } from '../coupons/domain.js';
import { findCoupon, insertIssues, type NewIssue } from '../coupons/repository.js';
import type { Db } from '../db/index.js';
import { KAFKA_WORKER_GROUP, type KafkaHandle } from '../kafka/client.js';
import { deadLetterId, deadLetterProducer } from '../kafka/dead-letters.js';
import { decodeFields } from '../kafka/records.js';
import { isDependencyUnavailable } from '../util/dependency-errors.js';
import { Pause } from '../util/pause.js';
import { validateEntry } from './entry.js';
import type { WorkerObserver } from './worker.js';

type Record = Message<string, string, string, string>;

const MAX_BACKOFF_MS = 5_000;
const STOP_GRACE_MS = 10_000;
const MAX_CACHED_COUPONS = 10_000;
/** The broker's default floor for a consumer's session. */
const MIN_SESSION_MS = 6_000;

export interface KafkaWorkerDeps {
  readonly db: Db;
  readonly kafka: KafkaHandle;
  readonly config: WorkerConfig;
  readonly log: FastifyBaseLogger;
  readonly consumer: string;
  readonly observer?: WorkerObserver;
}

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
  private readonly coupons = new Map<number, Coupon>();
  private readonly log: FastifyBaseLogger;
  /** Records written and committed since start (for logs and tests). */
  written = 0;
  deadLettered = 0;

  constructor(private readonly deps: KafkaWorkerDeps) {
    this.observer = deps.observer;
    this.log = deps.log.child({ kafkaWorker: deps.consumer });
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
    // A batch stuck on a broker that is away (its dead letter cannot be produced) is left
    // uncommitted after the grace: the group hands it to the next worker.
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
      backoff = Math.min(MAX_BACKOFF_MS, Math.max(250, backoff * 2));
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
      await this.untilDone(batch);
    }
  }

  /** Processes the batch in hand until it is done: an outage is waited out, never skipped. */
  private async untilDone(batch: readonly Record[]): Promise<void> {
    let backoff = 0;
    for (;;) {
      try {
        await this.process(batch);
        return;
      } catch (err) {
        if (this.stopping) {
          // Uncommitted: the group hands these records to the next worker.
          this.log.warn({ err, records: batch.length }, 'kafka worker: stopping with a batch not written; its records will be redelivered');
          return;
        }
        backoff = Math.min(MAX_BACKOFF_MS, Math.max(200, backoff * 2));
        this.log.error({ err, retryInMs: backoff }, 'kafka worker: batch failed; retrying it');
        await new Promise((r) => setTimeout(r, backoff));
      }
    }
  }

  private async coupon(couponId: number): Promise<Coupon | undefined> {
    let c = this.coupons.get(couponId);
    if (c === undefined) {
      c = await findCoupon(this.deps.db, couponId);
      if (c !== undefined) {
        if (this.coupons.size >= MAX_CACHED_COUPONS) this.coupons.clear();
        this.coupons.set(couponId, c);
      }
    }
    return c;
  }

  /** Validate, write the valid records in one transaction, dead-letter the rest, then commit. */
  private async process(batch: readonly Record[]): Promise<void> {
    const valid: Array<{ m: Record; issue: NewIssue }> = [];
    for (const m of batch) {
      const couponId = /^[1-9][0-9]{0,9}$/.test(m.key ?? '') ? Number(m.key) : 0;
      const fields = decodeFields(m.value);
      if (fields === undefined || couponId === 0) {
        await this.deadLetter(m, 'invalid', fields === undefined ? 'invalid record: the value is not a JSON object of strings' : `invalid record: key ${JSON.stringify(m.key)} is not a coupon id`, 1);
        continue;
      }
      const v = validateEntry({ id: deadLetterId(m.partition, m.offset), fields, raw: [] }, couponId, await this.coupon(couponId));
      if (v.ok) valid.push({ m, issue: v.issue });
      else await this.deadLetter(m, 'invalid', `invalid record: ${v.reason}`, 1);
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
        for (const v of valid) await this.writeOne(v.m, v.issue);
      }
    }
    await this.commit(batch);
  }

  /** One record, retried up to WORKER_MAX_DELIVERIES times, then dead-lettered with the error. */
  private async writeOne(m: Record, issue: NewIssue): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.deps.db.transaction((tx) => insertIssues(tx, [issue]));
        this.written++;
        return;
      } catch (err) {
        if (isDependencyUnavailable(err)) throw err;
        if (attempt >= this.deps.config.maxDeliveries) {
          await this.deadLetter(m, 'refused', `database refused it on ${attempt} deliveries: ${(err as Error).message}`, attempt);
          return;
        }
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  private async deadLetter(m: Record, kind: 'invalid' | 'refused', reason: string, deliveries: number): Promise<void> {
    this.dead ??= deadLetterProducer(this.deps.kafka, `couponrush-worker-dlq-${this.deps.consumer}`);
    const id = deadLetterId(m.partition, m.offset);
    await this.dead.send({
      messages: [
        {
          topic: this.deps.kafka.topics.dead,
          key: id,
          value: m.value ?? '',
          headers: { reason, deliveries: String(deliveries), 'failed-at': String(Date.now()), 'source-key': m.key ?? '' },
        },
      ],
    });
    this.deadLettered++;
    this.observer?.deadLettered?.(kind);
    this.log.error({ id, key: m.key, reason }, 'kafka worker: record dead-lettered');
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
