// Everything a process opens from its configuration (database, strategies, service, the
// long-running workers), and the one place that closes it again. serve, worker, migrate, the
// other commands and the tests all start here.
import { ReconcileLoop } from './worker/reconcile-loop.js';
import { join } from 'node:path';
import type { Logger } from './util/logger.js';
import type { Config, StoresConfig } from './config.js';
import { CouponService } from './coupons/service.js';
import { StrategySet, strategiesWhere } from './coupons/strategies/index.js';
import { createPgliteDb, dialectOf, openServerDb, type Db } from './db/index.js';
import { StoreOpenError } from './util/dependency-errors.js';
import { migrate, pendingMigrations, type MigrationResult } from './db/migrate.js';
import { Metrics } from './metrics/index.js';
import { registerReadiness, SCRAPE_PROBE_TIMEOUT_MS } from './metrics/operations.js';
import { storeHealth } from './routes/operations.js';
import { countRedisErrors, registerStreamMetrics } from './metrics/redis.js';
import { registerWorkerMetrics, type KafkaMetricsSources, type WorkerObservers } from './metrics/worker.js';
import { eventCapture } from './coupons/repository.js';
import { remainingStock } from './redis/campaign-state.js';
import { openKafka, type KafkaHandle } from './kafka/client.js';
import { targetVariable } from './redis/target.js';
import { openRedis, type RedisHandle } from './redis/client.js';
import { Parts } from './util/lifecycle.js';
import { EventPublisher } from './worker/events.js';
import { KafkaIssueWorker } from './worker/kafka-worker.js';
import { defaultConsumerName, IssueWorker } from './worker/worker.js';
import { openTracing, type Tracing } from './tracing/tracing.js';

/**
 * The most links a span may carry: the largest batch couponrush makes (a Lua call takes 256
 * attempts, a Kafka send or a db-batch transaction 1,000, a worker batch WORKER_BATCH_SIZE), so a
 * batch span links to every traced request in it.
 */
const LARGEST_FIXED_BATCH = 1_000;

export interface Runtime {
  readonly config: Config;
  readonly db: Db;
  readonly strategies: StrategySet;
  readonly service: CouponService;
  /** This process's Prometheus series (GET /metrics). */
  readonly metrics: Metrics;
  /** Open when Redis is configured (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES). */
  readonly redis: RedisHandle | undefined;
  /** Open when KAFKA_BROKERS is set. */
  readonly kafka: KafkaHandle | undefined;
  /** The workers running in this process (`serve --with-worker`). */
  readonly workers: Workers | undefined;
  /** Present when tracing is on (OTEL_* variables). */
  readonly tracing: Tracing | undefined;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  /** Apply pending migrations (always done in embedded mode). */
  migrate?: boolean;
  /** Use this database instead of opening one from the config (tests). */
  db?: Db;
  /** Run the stream worker in this process (needs REDIS_URL). */
  withWorker?: boolean;
}

function openDb(config: StoresConfig): Promise<Db> {
  return config.databaseUrl === undefined
    ? createPgliteDb(join(config.dataDir, 'pgdata'))
    : Promise.resolve(openServerDb(config.databaseUrl, { poolSize: config.dbPoolSize }));
}

/** The stores a process works on: the database, Redis when REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES is set, Kafka when KAFKA_BROKERS is. */
export interface Stores {
  readonly db: Db;
  readonly redis: RedisHandle | undefined;
  readonly kafka: KafkaHandle | undefined;
  /** Present when tracing is on (OTEL_* variables): the SDK is loaded only then. */
  readonly tracing: Tracing | undefined;
  /** With `migrations: 'apply'`: what was applied, and the schema's version. */
  readonly migrations: MigrationResult | undefined;
  /** Closes what openStores opened (a database passed in stays open). */
  close(): Promise<void>;
}

export interface OpenStoresOptions {
  /** 'apply' runs pending migrations; 'check' (the default) refuses a schema that is behind. */
  migrations?: 'apply' | 'check';
  /** Use this database instead of opening one from the config (tests); it is not closed. */
  db?: Db;
  /** Bound on each Redis command (the one-shot commands); none for long-running processes. */
  redisCommandTimeoutMs?: number;
  /** Open the database alone (`migrate`, `events`, the cluster's primary), whatever else the config names. */
  databaseOnly?: boolean;
}

/**
 * The one start-up of every process (serve, worker, reconcile, migrate, events, the cluster's
 * primary, the tests): open the database, open Redis and Kafka, apply or check the migrations;
 * whatever fails, what was opened is closed again.
 */
export async function openStores(config: StoresConfig, log: Logger, options: OpenStoresOptions = {}): Promise<Stores> {
  const db = options.db ?? (await onDatabase(config, () => openDb(config)));
  const closeDb = async () => {
    if (options.db === undefined) await db.close();
  };
  let redis: RedisHandle | undefined;
  let kafka: KafkaHandle | undefined;
  let migrations: MigrationResult | undefined;
  let tracing: Tracing | undefined;
  try {
    if (options.databaseOnly !== true) tracing = await openTracing(config.tracing, Math.max(LARGEST_FIXED_BATCH, config.worker.batchSize), log);
    const target = config.redis;
    if (target !== undefined && options.databaseOnly !== true) {
      const timeout = options.redisCommandTimeoutMs;
      const settings = { waitReplicas: config.redisWaitReplicas, waitTimeoutMs: config.redisWaitTimeoutMs, ...(timeout === undefined ? {} : { commandTimeoutMs: timeout }) };
      redis = await openRedis(target, config.redisPrefix, log, settings).catch((err: unknown) => {
        throw new StoreOpenError(targetVariable(target), 'Redis', err);
      });
    }
    const kafkaConfig = config.kafka;
    if (kafkaConfig !== undefined && options.databaseOnly !== true) {
      kafka = await openKafka(kafkaConfig, log, tracing).catch((err: unknown) => {
        throw new StoreOpenError('KAFKA_BROKERS', 'Kafka', err);
      });
    }
    if (options.migrations === 'apply') {
      migrations = await onDatabase(config, () => migrate(db));
      if (migrations.applied.length > 0) log.info({ applied: migrations.applied }, 'migrations applied');
    } else {
      const pending = await onDatabase(config, () => pendingMigrations(db));
      if (pending.length > 0) {
        throw new Error(`database schema is behind (${pending.join(', ')} not applied): run \`couponrush migrate\` or \`couponrush serve --migrate\``);
      }
    }
  } catch (err) {
    await kafka?.close();
    await redis?.close();
    await closeDb();
    await tracing?.shutdown();
    throw err;
  }
  return {
    db,
    redis,
    kafka,
    tracing,
    migrations,
    async close() {
      await kafka?.close();
      await redis?.close();
      await closeDb();
      // Last: the spans of everything above are sent before the process ends.
      await tracing?.shutdown().catch((err: unknown) => log.warn({ err }, 'tracing: the last spans could not be sent'));
    },
  };
}

/**
 * Runs `work` against the configured database; a failure to reach it names the variable and the
 * store (`DATABASE_URL: connection refused at … (PostgreSQL)`). Errors of the work itself (a
 * migration that fails) keep their own message, prefixed the same way.
 */
export async function onDatabase<T>(config: StoresConfig, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof StoreOpenError) throw err;
    const store = config.databaseUrl === undefined ? 'embedded PostgreSQL' : dialectOf(config.databaseUrl) === 'mysql' ? 'MySQL/MariaDB' : 'PostgreSQL';
    throw new StoreOpenError(config.databaseUrl === undefined ? 'DATA_DIR' : 'DATABASE_URL', store, err);
  }
}

export async function createRuntime(config: Config, log: Logger, options: RuntimeOptions = {}): Promise<Runtime> {
  if (options.withWorker === true && config.redis === undefined) throw new Error('--with-worker needs Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES)');
  const stores = await openStores(config, log, {
    migrations: options.migrate === true || config.embedded ? 'apply' : 'check',
    ...(options.db === undefined ? {} : { db: options.db }),
  });
  const { db, redis, kafka, tracing } = stores;
  const strategies = new StrategySet({ db, log, redis, kafka, tracing }, { redis: redis !== undefined, kafka: kafka !== undefined });
  const metrics = new Metrics({ db, processMetrics: true });
  registerReadiness(metrics.registry, () => storeHealth(stores, ['database', 'redis', 'kafka'], SCRAPE_PROBE_TIMEOUT_MS));
  const service = new CouponService(db, strategies, config.defaultStrategy, metrics, tracing);
  if (redis !== undefined) {
    const r = redis;
    // Another instance rebuilt or repaired a campaign: drop what this one cached about it.
    r.onInvalidate((couponId) => service.forget(couponId));
    // For Redis-admitted campaigns the stock left is decided in Redis, not by committed rows; any
    // other campaign's is the database's, whatever keys Redis may hold for it.
    const inRedis = new Set<string>(strategiesWhere((m) => m.admission === 'redis'));
    metrics.addStockReader((campaigns) => remainingStock(r, campaigns.filter((c) => inRedis.has(c.strategy)).map((c) => c.id)));
  }
  let workers: Workers | undefined;
  if (options.withWorker === true) {
    try {
      workers = await startWorkers(stores, config, log);
    } catch (err) {
      await strategies.close();
      await stores.close();
      throw err;
    }
  }
  if (redis !== undefined) {
    countRedisErrors(metrics.registry, redis);
    // serve --with-worker: the worker's series (with the streams') join this process's /metrics.
    // Without it the streams' gauges are here all the same: they are read from Redis at scrape
    // time, whoever persists the entries.
    if (workers !== undefined) workers.observe(registerWorkerMetrics(metrics.registry, redis, kafkaMetricsSources(db, kafka, workers.events)));
    else registerStreamMetrics(metrics.registry, redis);
  }
  return {
    config,
    db,
    strategies,
    service,
    metrics,
    redis,
    kafka,
    workers,
    tracing,
    async close() {
      await workers?.stop();
      await strategies.close();
      await stores.close();
    },
  };
}

/**
 * The long-running parts of a worker process (`couponrush worker`, `serve --with-worker`): the
 * stream worker, with KAFKA_BROKERS the Kafka worker, with KAFKA_EVENTS=on the event publisher.
 */
export interface Workers {
  readonly stream: IssueWorker;
  readonly kafka: KafkaIssueWorker | undefined;
  readonly events: EventPublisher | undefined;
  /** Reports to the metrics from now on (they are built once the publisher is known). */
  observe(observers: WorkerObservers): void;
  /** Stops them, the last started first. */
  stop(): Promise<void>;
}

/**
 * Starts the workers on the stores (which need Redis), in order; if one fails to start, those
 * started are stopped again. The stores stay the caller's.
 */
export async function startWorkers(stores: Stores, config: StoresConfig, log: Logger, consumer = defaultConsumerName()): Promise<Workers> {
  const { db, redis, kafka, tracing } = stores;
  if (redis === undefined) throw new Error('the workers need Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES)');
  const parts = new Parts();
  const deps = { db, redis, config: config.worker, log, consumer, tracing };
  const stream = await parts.start(new IssueWorker(deps));
  // With KAFKA_BROKERS the worker also consumes the issuance topic (redis-lua-kafka).
  const kafkaWorker = kafka === undefined ? undefined : await parts.start(new KafkaIssueWorker({ ...deps, kafka }));
  // With KAFKA_EVENTS=on it also publishes every persisted issuance to the events topic.
  const topic = config.kafka?.eventsTopic;
  const events = kafka === undefined || topic === undefined ? undefined : await parts.start(new EventPublisher({ db, kafka, topic, log, tracing }));
  // Every RECONCILE_INTERVAL_S one of the workers records each campaign's drift for the alerts.
  await parts.start(new ReconcileLoop({ db, redis, kafka, config: config.worker, log }));
  return {
    stream,
    kafka: kafkaWorker,
    events,
    observe(observers) {
      stream.observe(observers.stream);
      kafkaWorker?.observe(observers.kafka);
    },
    stop: () => parts.stop(),
  };
}

/** What the worker's Kafka series read (lag, events, outbox), when this process consumes Kafka. */
export function kafkaMetricsSources(db: Db, kafka: KafkaHandle | undefined, events: EventPublisher | undefined): KafkaMetricsSources | undefined {
  if (kafka === undefined) return undefined;
  const eventsTopic = kafka.settings.eventsTopic;
  return {
    topic: kafka.topics.issuances,
    lag: () => kafka.lag(),
    ...(events === undefined || eventsTopic === undefined
      ? {}
      : { events: { topic: eventsTopic, published: () => events.published, pending: async () => (await eventCapture(db)).pending } }),
  };
}
