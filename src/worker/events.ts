// The issued-coupon event publisher (KAFKA_EVENTS=on): produces the outbox coupon_issue_events —
// one row per persisted issuance, written by a trigger in the issuing transaction, whatever the
// strategy — to the events topic, and deletes what Kafka acknowledged. Runs in `couponrush worker`
// (and `serve --with-worker`); several may run: each claims rows the others do not hold.
//
//   record   key "couponId:userId"; value {"couponId", "userId", "issuedAt", "requestId"} (JSON,
//            requestId null when the writer did not know it).
//   order    a round locks up to BATCH outbox rows (SKIP LOCKED), produces those whose issuance
//            still exists (an insert undone in its own transaction — db-batch's excess — leaves
//            none), deletes them all, and commits. Nothing is skipped: rows that commit late
//            are simply there next round.
//   at least once  a crash (or a failed commit) after Kafka acknowledged a round publishes it
//            again: consumers drop duplicates by key. Nothing is ever on the request path.
//   traces   with tracing on, each round's send has a span (`events.publish`), sampled as a new
//            trace is (the outbox does not keep the issuance's trace).
import type { Producer } from '@platformatic/kafka';
import type { Logger } from '../util/logger.js';
import { claimIssueEvents, deleteIssueEvents, setEventCapture } from '../coupons/repository.js';
import type { Db } from '../db/index.js';
import type { KafkaHandle } from '../kafka/client.js';
import { idempotentProducer } from '../kafka/producer.js';
import { Backoff } from '../util/backoff.js';
import { isDependencyUnavailable } from '../util/dependency-errors.js';
import { started } from '../util/lifecycle.js';
import { Pause } from '../util/pause.js';
import { ATTR, endSpan, KIND, type Tracing } from '../tracing/tracing.js';

const BATCH = 1_000;
const IDLE_POLL_MS = 100;
const MIN_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 5_000;

export interface EventPublisherDeps {
  readonly db: Db;
  readonly kafka: KafkaHandle;
  readonly topic: string;
  readonly log: Logger;
  /** Present when tracing is on. */
  readonly tracing?: Tracing | undefined;
}

export interface IssuedEvent {
  readonly couponId: number;
  readonly userId: string;
  readonly issuedAt: string;
  readonly requestId: string | null;
}

export class EventPublisher {
  private producer: Producer<string, string, string, string>;
  private stopping = false;
  private loop: Promise<void> | undefined;
  private readonly pause = new Pause();
  /** Events acknowledged by Kafka since start (for logs and tests). */
  published = 0;

  constructor(private readonly deps: EventPublisherDeps) {
    this.producer = this.newProducer();
  }

  private newProducer(): Producer<string, string, string, string> {
    return idempotentProducer(this.deps.kafka.settings.brokers, 'couponrush-events', this.deps.kafka.settings.produceTimeoutMs);
  }

  /**
   * Sends within a deadline: the idempotent client retries forever, and the round holds its
   * outbox rows locked meanwhile. Past the deadline the client is closed (its retries stop), the
   * round rolls back, and its rows are published again later (at least once).
   */
  private async send(messages: Array<{ topic: string; key: string; value: string }>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const deadlineMs = 2 * this.deps.kafka.settings.produceTimeoutMs;
    const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), deadlineMs)));
    try {
      if ((await Promise.race([this.producer.send({ messages }), deadline])) === 'deadline') {
        this.producer.close().catch(() => undefined);
        this.producer = this.newProducer();
        throw new Error(`kafka: ${messages.length} events not acknowledged within ${deadlineMs} ms`);
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** `send`, under a span when tracing is on. */
  private async traced(messages: Array<{ topic: string; key: string; value: string }>): Promise<void> {
    const span = this.deps.tracing?.start('events.publish', undefined, {
      kind: KIND.producer,
      attributes: { 'messaging.system': 'kafka', 'messaging.destination.name': this.deps.topic, [ATTR.batchSize]: messages.length },
    });
    try {
      await this.send(messages);
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
    endSpan(span);
  }

  /** Turns the outbox capture on (from now on every issuance is recorded), then publishes. */
  async start(): Promise<void> {
    await setEventCapture(this.deps.db, true);
    this.loop = this.run();
    this.deps.log.info({ topic: this.deps.topic }, 'event publisher started; issuance capture is on');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.pause.wake();
    await this.loop;
    await this.producer.close().catch(() => undefined);
    this.deps.log.info({ published: this.published }, 'event publisher stopped');
  }

  private async run(): Promise<void> {
    const backoff = new Backoff(MIN_BACKOFF_MS, MAX_BACKOFF_MS);
    while (!this.stopping) {
      try {
        const n = await this.round();
        backoff.reset();
        if (n < BATCH) await this.pause.for(IDLE_POLL_MS);
      } catch (err) {
        if (this.stopping) break;
        const retryInMs = backoff.next();
        const level = isDependencyUnavailable(err) ? 'warn' : 'error';
        this.deps.log[level]({ err, retryInMs }, 'event publisher: round failed; its rows stay in the outbox');
        await this.pause.for(retryInMs);
      }
    }
  }

  /** One round: claim, produce, delete, commit. Returns how many outbox rows it took. */
  private async round(): Promise<number> {
    return this.deps.db.transaction(async (tx) => {
      const rows = await claimIssueEvents(tx, BATCH);
      if (rows.length === 0) return 0;
      const messages = rows.flatMap((r) => {
        if (r.issuedAt === undefined) return [];
        const event: IssuedEvent = { couponId: r.couponId, userId: r.userId, issuedAt: r.issuedAt.toISOString(), requestId: r.requestId ?? null };
        return [{ topic: this.deps.topic, key: `${r.couponId}:${r.userId}`, value: JSON.stringify(event) }];
      });
      if (messages.length > 0) await this.traced(messages);
      await deleteIssueEvents(tx, rows.map((r) => r.id));
      this.published += messages.length;
      return rows.length;
    });
  }
}

export function startEventPublisher(deps: EventPublisherDeps): Promise<EventPublisher> {
  return started(new EventPublisher(deps));
}
