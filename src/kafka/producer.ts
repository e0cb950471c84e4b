// Produces admitted issuances to the topic, batched: the records that arrive while a send is in
// flight, or within one event-loop turn, leave as ONE send (idempotent producer, acks=all), and
// each caller learns what became of its record:
//
//   acked    the brokers acknowledged it: it is in the log.
//   refused  it is certainly NOT in the log: the broker refused it with an error that appends
//            nothing, or no connection to any broker was up at any moment of the attempt (so no
//            request carrying it was ever written).
//   unknown  anything else: a send that may have been written and was not acknowledged within
//            the deadline. The record may be in the log. The producer is then closed (its
//            idempotent client retries forever; closing stops the retries) and a new one opened.
//
// An idempotent producer retries a failed request itself and the broker drops the duplicate, so
// one record never lands twice from one send.
import type { Producer } from '@platformatic/kafka';
import type { Logger } from '../util/logger.js';
import { kafkaLibrary } from './library.js';
import { AUTH_HEADER, encodeRecord, recordKey, signRecord, type IssuanceRecord } from './records.js';
import { ATTR, batchSpan, endSpan, KIND, type Span, type Tracing } from '../tracing/tracing.js';

/**
 * An idempotent `acks=all` producer of string records. Its client retries a failed send forever:
 * callers bound each send themselves (and close the client past the bound).
 */
export function idempotentProducer(brokers: readonly string[], clientId: string, timeoutMs: number): Producer<string, string, string, string> {
  const { Producer, ProduceAcks, stringSerializers } = kafkaLibrary();
  return new Producer({ clientId, bootstrapBrokers: [...brokers], serializers: stringSerializers, idempotent: true, acks: ProduceAcks.ALL, timeout: timeoutMs, retryDelay: 100 });
}

export type ProduceOutcome = 'acked' | 'refused' | 'unknown';

/** Records per send: bounds one request's size. */
export const MAX_SEND = 1_000;

/** Broker errors that append nothing (a request refused whole), by Kafka's error id. */
const APPENDS_NOTHING = new Set([
  'CORRUPT_MESSAGE',
  'UNKNOWN_TOPIC_OR_PARTITION',
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'NOT_ENOUGH_REPLICAS',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_REQUIRED_ACKS',
  'TOPIC_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'INVALID_RECORD',
  'UNSUPPORTED_VERSION',
  'UNSUPPORTED_FOR_MESSAGE_FORMAT',
  'POLICY_VIOLATION',
]);

/** Every error inside `err` (MultipleErrors/AggregateError nest the attempts' errors). */
function leaves(err: unknown): unknown[] {
  if (err instanceof AggregateError) return err.errors.flatMap(leaves);
  return [err];
}

/** Broker errors that concern the record itself (its size or form), not the broker's health. */
const REFUSED_RECORD = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE']);

/** True when the broker refused the send for what the records are, not because it is unwell. */
export function refusedForItsSize(err: unknown): boolean {
  const all = leaves(err);
  return all.length > 0 && all.every((e) => REFUSED_RECORD.has(String((e as { apiId?: unknown }).apiId)));
}

/** True when the error says the broker refused the request and appended nothing. */
export function appendedNothing(err: unknown): boolean {
  const all = leaves(err);
  return all.length > 0 && all.every((e) => APPENDS_NOTHING.has(String((e as { apiId?: unknown }).apiId)));
}

export interface ProducerOptions {
  readonly brokers: readonly string[];
  readonly topic: string;
  readonly timeoutMs: number;
  readonly clientId: string;
  /** KAFKA_RECORD_SECRET: every record carries its authenticator. */
  readonly secret: string;
}

interface Waiting {
  readonly record: IssuanceRecord;
  readonly resolve: (outcome: ProduceOutcome) => void;
  /** The admission's span (tracing on). */
  readonly span: Span | undefined;
}

/** One producer client and what it saw of its connections. */
class Connection {
  readonly client: Producer<string, string, string, string>;
  /** Broker connections up right now, and connections made since creation. */
  up = 0;
  made = 0;

  constructor(options: ProducerOptions) {
    this.client = idempotentProducer(options.brokers, options.clientId, options.timeoutMs);
    this.client.on('client:broker:connect', () => {
      this.up++;
      this.made++;
    });
    this.client.on('client:broker:disconnect', () => (this.up = Math.max(0, this.up - 1)));
  }
}

export class IssuanceProducer {
  private conn: Connection;
  private readonly waiting: Waiting[] = [];
  private inFlight: Promise<void> | undefined;
  private scheduled = false;
  private closed = false;

  constructor(
    private readonly options: ProducerOptions,
    private readonly log: Logger,
    /** Present when tracing is on: each send has a span, linked to the sampled admissions in it. */
    private readonly tracing?: Tracing,
  ) {
    this.conn = new Connection(options);
  }

  /** Produces one record (batched with its neighbours); never rejects. `span`: the admission's, when traced. */
  produce(record: IssuanceRecord, span?: Span): Promise<ProduceOutcome> {
    if (this.closed) return Promise.resolve('refused');
    return new Promise((resolve) => {
      this.waiting.push({ record, resolve, span });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.inFlight !== undefined || this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const batch = this.waiting.splice(0, MAX_SEND);
    if (batch.length === 0) return;
    this.inFlight = this.send(batch).finally(() => {
      this.inFlight = undefined;
      if (this.waiting.length > 0) this.schedule();
    });
  }

  private async send(batch: readonly Waiting[]): Promise<void> {
    const conn = this.conn;
    const upAtStart = conn.up > 0;
    const madeAtStart = conn.made;
    const maybeWritten = () => upAtStart || conn.made !== madeAtStart;
    const messages = batch.map(({ record }) => {
      const key = recordKey(record.couponId);
      const value = encodeRecord(record);
      return { topic: this.options.topic, key, value, headers: new Map([[AUTH_HEADER, signRecord(this.options.secret, key, value)]]) };
    });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), this.options.timeoutMs)));
    const span =
      this.tracing === undefined
        ? undefined
        : batchSpan(this.tracing, 'kafka.produce', batch.map((w) => w.span), {
            kind: KIND.producer,
            attributes: { 'messaging.system': 'kafka', 'messaging.destination.name': this.options.topic, [ATTR.batchSize]: batch.length },
          });
    let outcome: ProduceOutcome;
    try {
      const result = await Promise.race([conn.client.send({ messages }), deadline]);
      if (result === 'deadline') {
        // Decided before the close, in this turn: nothing can be written in between. The close
        // stops the client's own retries either way, so a "refused" record can never land later.
        outcome = maybeWritten() ? 'unknown' : 'refused';
        this.replace(conn);
        this.log.error({ records: batch.length, outcome, timeoutMs: this.options.timeoutMs }, 'kafka: produce not acknowledged in time; producer replaced');
      } else {
        outcome = 'acked';
      }
    } catch (err) {
      outcome = appendedNothing(err) || !maybeWritten() ? 'refused' : 'unknown';
      this.log.error({ err, records: batch.length, outcome }, 'kafka: produce failed');
      if (outcome === 'unknown') this.replace(conn);
    } finally {
      clearTimeout(timer);
    }
    span?.setAttribute(ATTR.outcome, outcome);
    endSpan(span, outcome === 'acked' ? undefined : new Error(`produce ${outcome}`));
    for (const w of batch) w.resolve(outcome);
  }

  /** Stops the old client's retries (its records' fate is already "unknown") and opens a new one. */
  private replace(old: Connection): void {
    if (this.conn !== old) return;
    old.client.close().catch(() => undefined);
    if (!this.closed) this.conn = new Connection(this.options);
  }

  /** Finishes the send in flight and what is waiting, then closes the client. */
  async close(): Promise<void> {
    while (this.inFlight !== undefined || this.waiting.length > 0) {
      if (this.inFlight === undefined) this.flush();
      await this.inFlight;
    }
    this.closed = true;
    await this.conn.client.close().catch(() => undefined);
  }
}
