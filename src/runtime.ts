// Everything a process opens from its configuration (database, strategies, service), and the
// one place that closes it again. serve, worker and the tests all start here.
import { join } from 'node:path';
import type { Logger } from './util/logger.js';
import type { Config, StoresConfig } from './config.js';
import { CouponService } from './coupons/service.js';
import { StrategySet, strategiesWhere } from './coupons/strategies/index.js';
import { createPgliteDb, dialectOf, openServerDb, type Db } from './db/index.js';
import { StoreOpenError } from './util/dependency-errors.js';
import { migrate, pendingMigrations } from './db/migrate.js';
import { Metrics } from './metrics/index.js';
import { registerReadiness } from './metrics/operations.js';
import { storeHealth } from './routes/operations.js';
import { countRedisErrors, registerStreamMetrics } from './metrics/redis.js';
import { registerWorkerMetrics, type KafkaMetricsSources } from './metrics/worker.js';
import { eventCapture } from './coupons/repository.js';
import { remainingStock } from './redis/campaign-state.js';
import { openKafka, type KafkaHandle } from './kafka/client.js';
import { openRedis, type RedisHandle } from './redis/client.js';
import { startEventPublisher, type EventPublisher } from './worker/events.js';
import { startKafkaWorker, type KafkaIssueWorker } from './worker/kafka-worker.js';
import { defaultConsumerName, startWorker, type IssueWorker } from './worker/worker.js';

export interface Runtime {
  readonly config: Config;
  readonly db: Db;
  readonly strategies: StrategySet;
  readonly service: CouponService;
  /** This process's Prometheus series (GET /metrics). */
  readonly metrics: Metrics;
  /** Open when REDIS_URL is set. */
  readonly redis: RedisHandle | undefined;
  /** The in-process stream worker (`serve --with-worker`). */
  readonly worker: IssueWorker | undefined;
  /** Open when KAFKA_BROKERS is set. */
  readonly kafka: KafkaHandle | undefined;
  /** The in-process Kafka worker (`serve --with-worker` with KAFKA_BROKERS). */
  readonly kafkaWorker: KafkaIssueWorker | undefined;
  /** The in-process event publisher (`serve --with-worker` with KAFKA_EVENTS=on). */
  readonly events: EventPublisher | undefined;
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

export function openDb(config: StoresConfig): Promise<Db> {
  return config.databaseUrl === undefined
    ? createPgliteDb(join(config.dataDir, 'pgdata'))
    : Promise.resolve(openServerDb(config.databaseUrl, { poolSize: config.dbPoolSize }));
}

/** The stores a process works on: the database, Redis when REDIS_URL is set, Kafka when KAFKA_BROKERS is. */
export interface Stores {
  readonly db: Db;
  readonly redis: RedisHandle | undefined;
  readonly kafka: KafkaHandle | undefined;
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
}

/**
 * The one start-up of every process (serve, worker, reconcile, the tests): open the database,
 * apply or check the migrations, open Redis; whatever fails, what was opened is closed again.
 */
export async function openStores(config: StoresConfig, log: Logger, options: OpenStoresOptions = {}): Promise<Stores> {
  const db = options.db ?? (await onDatabase(config, () => openDb(config)));
  const closeDb = async () => {
    if (options.db === undefined) await db.close();
  };
  let redis: RedisHandle | undefined;
  let kafka: KafkaHandle | undefined;
  try {
    if (config.redisUrl !== undefined) {
      const { redisUrl } = config;
      const timeout = options.redisCommandTimeoutMs;
      redis = await openRedis(redisUrl, config.redisPrefix, log, timeout === undefined ? {} : { commandTimeoutMs: timeout }).catch((err: unknown) => {
        throw new StoreOpenError('REDIS_URL', 'Redis', err);
      });
    }
    const kafkaConfig = config.kafka;
    if (kafkaConfig !== undefined) {
      kafka = await openKafka(kafkaConfig, log).catch((err: unknown) => {
        throw new StoreOpenError('KAFKA_BROKERS', 'Kafka', err);
      });
    }
    if (options.migrations === 'apply') {
      const { applied } = await onDatabase(config, () => migrate(db));
      if (applied.length > 0) log.info({ applied }, 'migrations applied');
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
    throw err;
  }
  return {
    db,
    redis,
    kafka,
    async close() {
      await kafka?.close();
      await redis?.close();
      await closeDb();
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
  if (options.withWorker === true && config.redisUrl === undefined) throw new Error('--with-worker needs REDIS_URL');
  const stores = await openStores(config, log, {
    migrations: options.migrate === true || config.embedded ? 'apply' : 'check',
    ...(options.db === undefined ? {} : { db: options.db }),
  });
  const { db, redis, kafka } = stores;
  const strategies = new StrategySet({ db, log, redis, kafka }, { redis: redis !== undefined, kafka: kafka !== undefined });
  const metrics = new Metrics({ db, processMetrics: true });
  registerReadiness(metrics.registry, () => storeHealth(stores, ['database', 'redis', 'kafka']));
  const service = new CouponService(db, strategies, config.defaultStrategy, metrics);
  if (redis !== undefined) {
    const r = redis;
    // Another instance rebuilt or repaired a campaign: drop what this one cached about it.
    r.onInvalidate((couponId) => service.forget(couponId));
    // For Redis-admitted campaigns the stock left is decided in Redis, not by committed rows; any
    // other campaign's is the database's, whatever keys Redis may hold for it.
    const inRedis = new Set<string>(strategiesWhere((m) => m.admission === 'redis'));
    metrics.addStockReader((campaigns) => remainingStock(r, campaigns.filter((c) => inRedis.has(c.strategy)).map((c) => c.id)));
  }
  let worker: IssueWorker | undefined;
  let kafkaWorker: KafkaIssueWorker | undefined;
  let events: EventPublisher | undefined;
  if (options.withWorker === true && redis !== undefined) {
    try {
      worker = await startWorker({ db, redis, config: config.worker, log });
      if (kafka !== undefined) kafkaWorker = await startKafkaWorker({ db, kafka, redis, config: config.worker, log, consumer: defaultConsumerName() });
      const topic = config.kafka?.eventsTopic;
      if (kafka !== undefined && topic !== undefined) events = await startEventPublisher({ db, kafka, topic, log });
    } catch (err) {
      await kafkaWorker?.stop();
      await worker?.stop();
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
    if (worker !== undefined) {
      const observers = registerWorkerMetrics(metrics.registry, redis, kafkaMetricsSources(db, kafka, events));
      worker.observe(observers.stream);
      kafkaWorker?.observe(observers.kafka);
    }
    else registerStreamMetrics(metrics.registry, redis);
  }
  return {
    config,
    db,
    strategies,
    service,
    metrics,
    redis,
    worker,
    kafka,
    kafkaWorker,
    events,
    async close() {
      await events?.stop();
      await kafkaWorker?.stop();
      await worker?.stop();
      await strategies.close();
      await stores.close();
    },
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
