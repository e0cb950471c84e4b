// The one persistence loop of the workers. Whichever queue an admission waited in — a campaign's
// Redis Stream (worker.ts) or the Kafka issuance topic (kafka-worker.ts) — its source hands it
// over in batches and these rules, written only here, make it a row or a dead letter:
//
//   batch        each delivery is validated by its source with the one validation
//                (src/coupons/queued-admission.ts); the valid ones are written in ONE transaction
//                (rows + issued counts). A redelivery is harmless: the insert skips a pair already
//                there, and the counter counts only rows inserted.
//   poison       a delivery that does not validate is dead-lettered as `invalid` (it holds no seat).
//   refused      a batch the database refuses (not an outage) is written one by one; a delivery
//                the database refuses WORKER_MAX_DELIVERIES times is dead-lettered as `refused`,
//                with the error (it keeps its seat: its user hears HELD). Until then it comes
//                again as its source's `redelivery` says.
//   acknowledge  only what is a row or a dead letter, after the commit and after the dead letters
//                were taken.
//   outage       a store being away (the database, the queue) dead-letters and acknowledges
//                nothing. A `held` source's batch is retried until it is done: nothing after it
//                may be acknowledged. A `pending` source's stays pending, and the loop first
//                re-reads what the source already delivered to it. Retries back off up to 1 s,
//                so a store that comes back waits at most a second for the worker.
//   stop()       stops reading, finishes the batch in hand (one an outage holds is given up after
//                STOP_GRACE_MS, unacknowledged: it is delivered again), closes the source.
//   traces       with tracing on, each batch has a span (`worker.persist`, its insert a child
//                `db.insert`) linked to every traced issuance in it, and each traced issuance gets
//                `coupon.persist` in its own trace, from the batch's start to its acknowledgement,
//                with how long it waited in the queue (couponrush.queued_ms).
import type { Logger } from '../util/logger.js';
import type { WorkerConfig } from '../config.js';
import { boundedReason, type Validation } from '../coupons/queued-admission.js';
import { insertIssues, type NewIssue } from '../coupons/repository.js';
import type { Db } from '../db/index.js';
import { Backoff } from '../util/backoff.js';
import { isDependencyUnavailable } from '../util/dependency-errors.js';
import { Pause } from '../util/pause.js';
import { ATTR, endSpan, KIND, type Span, type SpanContext, type Tracing } from '../tracing/tracing.js';

/** A held batch or a lost read is retried after at most this long. */
const MAX_BACKOFF_MS = 1_000;
const MIN_BACKOFF_MS = 100;
/** How long stop() waits for a batch an outage holds before giving it up. */
const STOP_GRACE_MS = 10_000;

/** What a metrics module may want to count; every method must be cheap and must not throw. */
export interface WorkerObserver {
  /** A batch committed and was acknowledged (rows inserted may be fewer: redeliveries are skipped). */
  batchWritten(entries: number, seconds: number): void;
  /** Stream entries taken over from idle consumers. */
  claimed?(entries: number): void;
  /** `invalid`: did not validate; `refused`: the database refused it WORKER_MAX_DELIVERIES times. */
  deadLettered?(reason: DeadLetterKind): void;
}

/** `invalid`: did not validate, holds no seat. `refused`: valid, the database kept refusing it. */
export type DeadLetterKind = 'invalid' | 'refused';

/** A delivery to dead-letter, and why. */
export interface Doomed<D> {
  readonly delivery: D;
  readonly kind: DeadLetterKind;
  /** Bounded (boundedReason). */
  readonly reason: string;
  readonly deliveries: number;
  /** A refused admission's issuance: its user's seat is held by the dead letter. */
  readonly issue?: NewIssue;
}

/**
 * Where queued admissions come from, and what its queue does with them. `D` is one delivery (a
 * stream entry, a Kafka record).
 */
export interface IssuanceSource<D> {
  /** For logs and metrics: `stream` or `kafka`. */
  readonly queue: 'stream' | 'kafka';
  /** What a delivery is called in reasons and logs: `entry`, `record`. */
  readonly noun: string;
  /**
   * How a delivery comes again when it could not be settled. `held`: the source cannot move past
   * it (Kafka commits offsets, a contiguous prefix), so a refused write is retried at once and a
   * batch an outage stopped is retried until done. `pending`: it stays pending in the source,
   * which delivers it again later with a higher count (Redis Streams: claimed after
   * WORKER_CLAIM_IDLE_MS), and after an outage the loop re-reads it with recover().
   */
  readonly redelivery: 'held' | 'pending';
  /** Connects; a failure fails the worker's start. */
  open(): Promise<void>;
  /**
   * What was delivered to this consumer and not acknowledged (a restart with the same name, an
   * outage), a batch at a time: persisted before start() resolves and after each outage.
   */
  recover(): AsyncIterable<readonly D[]>;
  /** The next batch; [] when nothing came in a while, or once stopping (then what is left, if anything). */
  read(): Promise<readonly D[]>;
  validate(delivery: D): Promise<Validation>;
  /** How many times the delivery was delivered, this being the `attempt`-th write of it here. */
  deliveries(delivery: D, attempt: number): Promise<number>;
  /** Dead-letters them; returns those it did, with their dead letter's id (a `pending` source may skip one another consumer took meanwhile). */
  deadLetter(doomed: readonly Doomed<D>[]): Promise<ReadonlyArray<{ readonly doomed: Doomed<D>; readonly letter: string }>>;
  /** They are rows or dead letters: the queue may forget them. */
  acknowledge(settled: readonly D[]): Promise<void>;
  /** Log fields naming the delivery. */
  describe(delivery: D): Record<string, unknown>;
  /** stop() was called: end any read or wait in progress. */
  interrupt(): void;
  /** Closes what open() and reading opened; called once the loop ended (or its grace ran out). */
  close(): Promise<void>;
}

export interface PersistLoopDeps {
  readonly db: Db;
  readonly config: WorkerConfig;
  readonly log: Logger;
  readonly observer?: WorkerObserver | undefined;
  /** Present when tracing is on. */
  readonly tracing?: Tracing | undefined;
}

export class PersistLoop<D> {
  protected readonly log: Logger;
  protected observer: WorkerObserver | undefined;
  private readonly db: Db;
  private readonly config: WorkerConfig;
  private readonly tracing: Tracing | undefined;
  private readonly pause = new Pause();
  private stopping = false;
  private loop: Promise<void> | undefined;
  /** Issuances written and acknowledged since start (for logs and tests). */
  written = 0;
  deadLettered = 0;

  constructor(
    private readonly source: IssuanceSource<D>,
    deps: PersistLoopDeps,
  ) {
    this.db = deps.db;
    this.config = deps.config;
    this.log = deps.log;
    this.observer = deps.observer;
    this.tracing = deps.tracing;
  }

  /** Reports to `observer` from now on (metrics are often built after the worker they observe). */
  observe(observer: WorkerObserver): void {
    this.observer = observer;
  }

  /** Opens the source and persists what it already delivered to us; then the loop runs. */
  async start(): Promise<void> {
    await this.source.open();
    await this.recover();
    this.loop = this.run();
    this.log.info({ queue: this.source.queue }, 'worker started');
  }

  /** SIGTERM: stop reading, finish and acknowledge the batch in hand, close the source. */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.pause.wake();
      this.source.interrupt();
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.loop, new Promise((r) => (timer = setTimeout(r, STOP_GRACE_MS)))]);
    clearTimeout(timer);
    await this.source.close();
    this.log.info({ queue: this.source.queue, written: this.written, deadLettered: this.deadLettered }, 'worker stopped');
  }

  private async recover(): Promise<void> {
    for await (const batch of this.source.recover()) {
      if (batch.length > 0) await this.persist(batch);
      if (this.stopping) return;
    }
  }

  private async run(): Promise<void> {
    const backoff = new Backoff(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
    /** A `held` source's batch that an outage stopped: retried before anything else is read. */
    let held: readonly D[] | undefined;
    /** A `pending` source after an outage: re-read what it delivered to us first. */
    let recover = false;
    for (;;) {
      let batch = held;
      try {
        if (recover && !this.stopping) await this.recover();
        recover = false;
        batch ??= await this.source.read();
        if (batch.length > 0) await this.persist(batch);
        else if (this.stopping) return;
        held = undefined;
        backoff.reset();
      } catch (err) {
        if (this.source.redelivery === 'held') held = batch;
        else recover = true;
        if (this.stopping) {
          // A held batch given up: nothing after it is acknowledged either, so nothing is skipped.
          this.log.warn({ err }, 'worker: stopping with a batch not written; it will be delivered again');
          return;
        }
        const retryInMs = backoff.next();
        this.log.error({ err, retryInMs }, 'worker: a store is away; nothing is dead-lettered or acknowledged, the batch is retried');
        await this.pause.for(retryInMs);
      }
    }
  }

  /** Validate, write the valid ones in one transaction, dead-letter the rest, then acknowledge. */
  private async persist(batch: readonly D[]): Promise<void> {
    const startedAt = Date.now();
    const valid: Valid<D>[] = [];
    const outcome: Outcome<D> = { written: [], commits: [], doomed: [] };
    for (const delivery of batch) {
      const v = await this.source.validate(delivery);
      if (v.ok) valid.push({ delivery, issue: v.issue, traceparent: v.traceparent });
      else outcome.doomed.push({ delivery, kind: 'invalid', reason: boundedReason(`invalid ${this.source.noun}: ${v.reason}`), deliveries: await this.source.deliveries(delivery, 1) });
    }
    // The batch's span: recorded when it persists a traced issuance, or as a new trace is sampled.
    const span = this.tracing === undefined ? undefined : this.batchSpan(this.tracing, batch.length, valid, startedAt);
    try {
      await this.write(valid, outcome, span);
      const letters = outcome.doomed.length === 0 ? [] : await this.source.deadLetter(outcome.doomed);
      await this.source.acknowledge([...outcome.written, ...letters.map((l) => l.doomed.delivery)]);
      this.written += outcome.written.length;
      for (const c of outcome.commits) this.observer?.batchWritten(c.issuances, (performance.now() - c.started) / 1000);
      this.logPersisted(outcome.written);
      const traced = span === undefined ? {} : { trace_id: span.spanContext().traceId };
      for (const { doomed, letter } of letters) {
        this.deadLettered++;
        this.observer?.deadLettered?.(doomed.kind);
        this.log.error({ ...this.source.describe(doomed.delivery), deadLetter: letter, reason: doomed.reason, ...traced }, `worker: ${this.source.noun} dead-lettered`);
      }
      if (span !== undefined) this.traceIssuances(this.tracing!, span, valid, new Set(outcome.written), startedAt);
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
    endSpan(span);
  }

  /** The batch's span, sampled when any issuance in it was traced, and linked to each of those. */
  private batchSpan(tracing: Tracing, size: number, valid: ReadonlyArray<Valid<D>>, startedAt: number): Span | undefined {
    const links: SpanContext[] = [];
    for (const v of valid) {
      const context = v.traceparent === undefined ? undefined : tracing.contextOf(v.traceparent);
      if (context !== undefined && (context.traceFlags & 1) === 1) links.push(context);
    }
    return tracing.batch('worker.persist', links, { kind: KIND.consumer, startTime: startedAt, attributes: { [ATTR.queue]: this.source.queue, [ATTR.batchSize]: size } });
  }

  /** Each traced issuance now a row: `coupon.persist` in its own trace, from the batch's start to now. */
  private traceIssuances(tracing: Tracing, batch: Span, valid: ReadonlyArray<Valid<D>>, written: ReadonlySet<D>, startedAt: number): void {
    const links = [batch.spanContext()];
    for (const v of valid) {
      if (v.traceparent === undefined || !written.has(v.delivery)) continue;
      const attributes = { [ATTR.queue]: this.source.queue, [ATTR.couponId]: v.issue.couponId, [ATTR.userId]: v.issue.userId, [ATTR.queuedMs]: startedAt - v.issue.issuedAt.getTime() };
      tracing.follow('coupon.persist', v.traceparent, { kind: KIND.consumer, startTime: startedAt, links, attributes })?.end();
    }
  }

  /** The valid ones in one transaction; a batch the database refuses (not an outage), one by one. */
  private async write(valid: ReadonlyArray<Valid<D>>, outcome: Outcome<D>, batch: Span | undefined): Promise<void> {
    if (valid.length === 0) return;
    const insert = batch === undefined ? undefined : this.tracing?.child(batch, 'db.insert', { kind: KIND.client, attributes: { [ATTR.batchSize]: valid.length } });
    try {
      await this.writeAll(valid, outcome);
    } catch (err) {
      endSpan(insert, err);
      throw err;
    }
    endSpan(insert);
  }

  private async writeAll(valid: ReadonlyArray<Valid<D>>, outcome: Outcome<D>): Promise<void> {
    const started = performance.now();
    try {
      await this.db.transaction((tx) => insertIssues(tx, valid.map((v) => v.issue)));
      outcome.written.push(...valid.map((v) => v.delivery));
      outcome.commits.push({ issuances: valid.length, started });
      return;
    } catch (err) {
      if (isDependencyUnavailable(err)) throw err;
      this.log.warn({ err, issuances: valid.length }, `worker: batch refused by the database; writing its ${this.source.noun}s one by one`);
    }
    for (const v of valid) await this.writeOne(v.delivery, v.issue, outcome);
  }

  /**
   * One issuance in its own transaction. The database refusing it WORKER_MAX_DELIVERIES times
   * dooms it; before that a `held` source's is tried again here, a `pending` source's is left
   * unacknowledged for the source to deliver again.
   */
  private async writeOne(delivery: D, issue: NewIssue, outcome: Outcome<D>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      try {
        await this.db.transaction((tx) => insertIssues(tx, [issue]));
        outcome.written.push(delivery);
        outcome.commits.push({ issuances: 1, started });
        return;
      } catch (err) {
        if (isDependencyUnavailable(err)) throw err;
        const deliveries = await this.source.deliveries(delivery, attempt);
        if (deliveries >= this.config.maxDeliveries) {
          const reason = boundedReason(`database refused it on ${deliveries} deliveries: ${(err as Error).message}`);
          outcome.doomed.push({ delivery, kind: 'refused', reason, deliveries, issue });
          return;
        }
        if (this.source.redelivery === 'pending') {
          this.log.warn({ err, ...this.source.describe(delivery), deliveries }, `worker: ${this.source.noun} refused by the database; it will be delivered again`);
          return;
        }
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
  }

  /** One debug line per persisted issuance, carrying the API's request id (off at the default level). */
  private logPersisted(deliveries: readonly D[]): void {
    if (this.log.level !== 'debug' && this.log.level !== 'trace') return;
    for (const d of deliveries) this.log.debug(this.source.describe(d), 'worker: issuance persisted');
  }
}

/** A delivery that validated: its issuance, and the trace of its admission when it was traced. */
interface Valid<D> {
  readonly delivery: D;
  readonly issue: NewIssue;
  readonly traceparent: string | undefined;
}

/** What a batch came to: the deliveries written (and the transactions that wrote them), the doomed ones. */
interface Outcome<D> {
  readonly written: D[];
  readonly commits: Array<{ readonly issuances: number; readonly started: number }>;
  readonly doomed: Array<Doomed<D>>;
}
