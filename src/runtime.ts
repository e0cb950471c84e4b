// Everything a process opens from its configuration (database, strategies, service), and the
// one place that closes it again. serve, worker and the tests all start here.
import { join } from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import type { Config } from './config.js';
import { CouponService } from './coupons/service.js';
import { StrategySet } from './coupons/strategies/index.js';
import { createPgliteDb, createPostgresDb, type Db } from './db/index.js';
import { migrate, pendingMigrations } from './db/migrate.js';
import { Metrics } from './metrics/index.js';

export interface Runtime {
  readonly config: Config;
  readonly db: Db;
  readonly strategies: StrategySet;
  readonly service: CouponService;
  /** This process's Prometheus series (GET /metrics). */
  readonly metrics: Metrics;
  close(): Promise<void>;
}

export interface RuntimeOptions {
  /** Apply pending migrations (always done in embedded mode). */
  migrate?: boolean;
  /** Use this database instead of opening one from the config (tests). */
  db?: Db;
}

export function openDb(config: Config): Promise<Db> {
  return config.databaseUrl === undefined
    ? createPgliteDb(join(config.dataDir, 'pgdata'))
    : Promise.resolve(createPostgresDb(config.databaseUrl, { poolSize: config.dbPoolSize }));
}

export async function createRuntime(config: Config, log: FastifyBaseLogger, options: RuntimeOptions = {}): Promise<Runtime> {
  const db = options.db ?? (await openDb(config));
  try {
    if (options.migrate === true || config.embedded) {
      const { applied } = await migrate(db);
      if (applied.length > 0) log.info({ applied }, 'migrations applied');
    } else {
      const pending = await pendingMigrations(db);
      if (pending.length > 0) {
        throw new Error(`database schema is behind (${pending.join(', ')} not applied): run \`couponrush migrate\` or \`couponrush serve --migrate\``);
      }
    }
  } catch (err) {
    if (options.db === undefined) await db.close();
    throw err;
  }
  const strategies = new StrategySet({ db, log }, { redis: false });
  const metrics = new Metrics({ db, processMetrics: true });
  const service = new CouponService(db, strategies, config.defaultStrategy, metrics);
  return {
    config,
    db,
    strategies,
    service,
    metrics,
    async close() {
      await strategies.close();
      if (options.db === undefined) await db.close();
    },
  };
}
