// The contract every issuance strategy implements. The service has already resolved the coupon
// and checked its window at `now`; a strategy decides duplicate and stock, and records the issue.
import type { Logger } from '../../util/logger.js';
import type { Db } from '../../db/index.js';
import type { KafkaHandle } from '../../kafka/client.js';
import type { RedisHandle } from '../../redis/client.js';
import type { Coupon, IssueOutcome } from '../domain.js';
import type { Span, Tracing } from '../../tracing/tracing.js';

export interface StrategyContext {
  readonly db: Db;
  readonly log: Logger;
  /** Present when Redis is configured (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES); strategies that `require` redis get it. */
  readonly redis?: RedisHandle | undefined;
  /** Present when KAFKA_BROKERS is set; strategies that `require` kafka get it. */
  readonly kafka?: KafkaHandle | undefined;
  /** Present when tracing is on: strategies that batch admissions give each batch a span. */
  readonly tracing?: Tracing | undefined;
}

export interface IssueStrategy {
  /**
   * Decide and record one issue attempt. Precedence of refusals: duplicate before sold out
   * (a user who holds the coupon hears ALREADY_ISSUED even after the stock is gone).
   * `requestId` travels with queued issuances (async strategies), for logs. `span` is the
   * admission's (tracing on): a batch span links to it, and a queued issuance carries its
   * `traceparent` when it is sampled.
   */
  issue(coupon: Coupon, userId: string, now: Date, requestId?: string, span?: Span): Promise<IssueOutcome>;
  /** Set up per-campaign state right after the campaign is created (e.g. Redis keys). */
  prepare?(coupon: Coupon): Promise<void>;
  /**
   * True when this instance already knows the campaign has no stock left AND answers SOLD_OUT to
   * every caller from then on, holder or not (redis-lua-async-cached's local flag). The issue
   * route then refuses before verifying the caller's token. Strategies that answer a holder 409
   * after sold-out must not implement it.
   */
  knownSoldOut?(couponId: number): boolean;
  /**
   * How many each campaign has admitted, where admission runs ahead of the rows (Redis
   * strategies); campaigns it cannot tell are left out. Read for GET /coupons, never on the hot path.
   */
  admitted?(couponIds: readonly number[]): Promise<ReadonlyMap<number, number>>;
  /**
   * True when the user was admitted but the row is not in the database yet (async strategies);
   * 'held' when the admission is admitted and its issuance sits in the dead letters (the held
   * index) until an operator replays or discards it; 'unknown' when the admission's queueing is
   * itself unconfirmed (redis-lua-kafka: a record Kafka has not acknowledged). The service asks
   * only when no row exists.
   */
  isPending?(coupon: Coupon, userId: string): Promise<boolean | 'held' | 'unknown'>;
  /** Finish in-flight work and release resources. */
  close?(): Promise<void>;
}

/** The services a strategy may need beyond the database, and the variable that configures each. */
export const SERVICES = { redis: 'REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES', kafka: 'KAFKA_BROKERS' } as const;
export type Service = keyof typeof SERVICES;

export interface StrategyModule {
  /** One line: what it is (the OpenAPI description of a campaign's `strategy` lists them). */
  readonly summary: string;
  /** Services that must be configured for this strategy; campaigns cannot pick it without them. */
  readonly requires: readonly Service[];
  /**
   * Where the state that decides admission lives: `database` (exact with any number of API
   * processes), `process` (this process's memory: exact with one API process only, so
   * `serve --workers N` refuses it as the default), `redis` (Redis holds admitted users and counts,
   * so `reconcile` checks it against the database and the stock gauges read it there).
   */
  readonly admission: 'database' | 'process' | 'redis';
  /** Admitted issuances are queued and persisted later by the worker (202, not 201). */
  readonly queued: boolean;
  /** Where the queue is: a Redis Stream per campaign, or the Kafka topic (queued strategies only). */
  readonly queue?: 'redis-stream' | 'kafka';
  /**
   * Over-issues by design (db-naive, kept to show the race): the bench reports its over-issue
   * instead of failing, and the schema's over-issue CHECK exempts exactly these by name (a test
   * holds the two together).
   */
  readonly mayOverIssue: boolean;
  create(ctx: StrategyContext): IssueStrategy;
}
