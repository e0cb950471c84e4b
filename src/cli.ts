// The `couponrush` command line: one strict CLI over the same code paths as the library.
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import { clusterRefusal, serveCluster } from './cluster.js';
import { ConfigError, loadConfig, loadStoresConfig, loadTokenConfig, type Config } from './config.js';
import { isValidUserId, USER_ID_RULE } from './coupons/ids.js';
import { reconciledStrategies } from './coupons/strategies/index.js';
import { signUserToken } from './http/auth.js';
import { reconcile } from './coupons/reconcile.js';
import { clearIssueEvents, eventCapture, setEventCapture } from './coupons/repository.js';
import { startMetricsListener, type MetricsListener } from './http/metrics-listener.js';
import { createWorkerRegistry } from './metrics/worker.js';
import { registerReadiness, SCRAPE_PROBE_TIMEOUT_MS } from './metrics/operations.js';
import { storeHealth } from './routes/operations.js';
import { kafkaMetricsSources, onDatabase, openStores, startWorkers } from './runtime.js';
import { closeOnSignals, printBanner, startServer } from './server.js';
import { defaultConsumerName } from './worker/worker.js';

function configOrExit<T>(load: () => T): T {
  try {
    return load();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`couponrush: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

/** serve: the stores and the secrets it checks requests with. */
const config = (): Config => configOrExit(() => loadConfig());
/** migrate, worker, reconcile, events: the stores only; they use no secret, so they ask for none. */
const storesConfig = () => configOrExit(() => loadStoresConfig());

/** `couponrush token` without --ttl: a day, as long as JWT_MAX_TTL_S allows. */
const DEFAULT_TOKEN_TTL_S = 24 * 3600;

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive whole number');
  return n;
}

const program = new Command('couponrush')
  .description('First-come-first-served coupon issuance that stays exact under a stampede')
  .showHelpAfterError();

program
  .command('serve')
  .description('run the HTTP API (embedded PostgreSQL unless DATABASE_URL names a PostgreSQL or MySQL/MariaDB server)')
  .option('--migrate', 'apply pending migrations before serving (always done in embedded mode)')
  .option('--workers <n>', 'API processes on this machine sharing the port (node:cluster; needs DATABASE_URL)', positiveInt, 1)
  .option('--with-worker', 'also run the stream worker in this process (needs REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES; always on with the embedded database, which no other process can open)')
  .action(async (opts: { migrate?: boolean; withWorker?: boolean; workers: number }, cmd: Command) => {
    const cfg = config();
    if (opts.workers > 1) {
      const refusal = clusterRefusal(cfg, opts.workers);
      if (refusal !== undefined) cmd.error(`couponrush serve: ${refusal}`, { exitCode: 2 });
      return serveCluster(cfg, opts.workers, { ...opts, migrate: opts.migrate === true });
    }
    const server = await startServer(cfg, { migrate: opts.migrate === true, withWorker: opts.withWorker === true });
    await printBanner(server);
    closeOnSignals(server.close, server.app.log);
  });

program
  .command('migrate')
  .description('apply pending SQL migrations to the database')
  .action(async () => {
    const cfg = storesConfig();
    // It prints what it applied itself: the start-up's own log line would say it twice.
    const stores = await openStores(cfg, pino({ level: 'silent' }), { migrations: 'apply', databaseOnly: true });
    await stores.close();
    const { applied, current } = stores.migrations ?? { applied: [], current: 0 };
    process.stdout.write(applied.length === 0 ? `schema is up to date (version ${current})\n` : `applied ${applied.join(', ')}; schema version ${current}\n`);
  });

program
  .command('worker')
  .description(
    'persist queued issuances into the database: from the Redis Streams, and with KAFKA_BROKERS from the Kafka issuance topic too (redis-lua-kafka); with KAFKA_EVENTS=on it also publishes issued-coupon events. Several may run at once; needs DATABASE_URL and Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES). /metrics and /healthz on ADMIN_PORT when set',
  )
  .option(
    '--consumer <name>',
    'consumer name; the default (<hostname>-<pid>) is new at every restart, so pass one that is stable (the pod name): a restart then finishes its own pending entries first instead of leaving them to be claimed after WORKER_CLAIM_IDLE_MS',
    defaultConsumerName(),
  )
  .action(async (opts: { consumer: string }, cmd: Command) => {
    const cfg = storesConfig();
    if (cfg.redis === undefined) return cmd.error('couponrush worker: Redis is not configured (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES)');
    if (cfg.embedded) {
      cmd.error('couponrush worker: needs DATABASE_URL — the embedded database belongs to one process, and `couponrush serve` runs the worker in it');
    }
    if (!/^[A-Za-z0-9._:-]{1,64}$/.test(opts.consumer)) cmd.error('couponrush worker: --consumer must be 1-64 characters of [A-Za-z0-9._:-]');
    const log = pino({ level: cfg.logLevel });
    const stores = await openStores(cfg, log);
    const workers = await startWorkers(stores, cfg, log, opts.consumer).catch(async (err: unknown) => {
      await stores.close();
      throw err;
    });
    // Prometheus scrapes the worker on ADMIN_HOST:ADMIN_PORT (/metrics, /healthz).
    let metrics: MetricsListener | undefined;
    if (cfg.adminPort !== undefined) {
      const { registry, observers } = createWorkerRegistry(stores.db, stores.redis!, kafkaMetricsSources(stores.db, stores.kafka, workers.events));
      workers.observe(observers);
      registerReadiness(registry, () => storeHealth(stores, ['database', 'redis', 'kafka'], SCRAPE_PROBE_TIMEOUT_MS));
      metrics = await startMetricsListener(registry, cfg.adminHost, cfg.adminPort);
      log.info(`worker metrics on ${metrics.url}/metrics`);
    }
    closeOnSignals(async () => {
      await metrics?.close();
      await workers.stop();
      await stores.close();
    }, log);
  });

program
  .command('reconcile')
  .description('report drift between the Redis admission state and the database (exit 1 on drift); --repair rebuilds Redis from the database')
  .option('--repair', 'rebuild the drifted campaigns\' Redis state from the database and the queue (open campaigns only)')
  .option('--coupon <id>', 'only this campaign', positiveInt)
  .action(async (opts: { repair?: boolean; coupon?: number }, cmd: Command) => {
    const cfg = storesConfig();
    if (cfg.redis === undefined) return cmd.error('couponrush reconcile: Redis is not configured (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES)');
    const log = pino({ level: cfg.logLevel });
    const stores = await openStores(cfg, log, { redisCommandTimeoutMs: ONE_SHOT_COMMAND_TIMEOUT_MS });
    const { db } = stores;
    const redis = stores.redis!; // Redis is configured
    try {
      const strategies = reconciledStrategies();
      const reports = await reconcile(db, redis, { repair: opts.repair === true, couponId: opts.coupon, strategies, kafka: stores.kafka });
      const out: string[] = [];
      for (const r of reports) {
        const redisCount = r.redisIssued === undefined ? 'missing' : `${r.redisIssued}/${r.total}`;
        out.push(
          `coupon ${r.couponId} (${r.strategy}): ${r.status}${r.repaired ? ' (repaired)' : ''} — redis admitted ${redisCount}, db rows ${r.dbRows}, ${r.queued} queued (admitted, no row yet), ${r.dead} dead letter${r.dead === 1 ? '' : 's'}${r.producing === undefined ? '' : `, producing ${r.producing}`}`,
        );
        for (const p of r.problems) out.push(`  - ${p}`);
      }
      if (reports.length === 0) {
        out.push(
          opts.coupon === undefined
            ? 'no campaign with Redis admission state to check'
            : `coupon ${opts.coupon}: nothing to check — it does not exist, or its strategy keeps no admission state in Redis (only ${strategies.redisAdmitted.join(', ')} do)`,
        );
      }
      process.stdout.write(out.join('\n') + '\n');
      if (reports.some((r) => r.status === 'DRIFT' && !r.repaired)) process.exitCode = 1;
    } finally {
      await stores.close();
    }
  });

program
  .command('events')
  .description('issued-coupon events (KAFKA_EVENTS=on): `status` shows whether issuances are captured and how many wait; `off` stops the capture and empties the outbox')
  .argument('<action>', 'status | off')
  .action(async (action: string, _opts: unknown, cmd: Command) => {
    if (action !== 'status' && action !== 'off') return cmd.error('couponrush events: the action is status or off');
    const cfg = storesConfig();
    const stores = await openStores(cfg, pino({ level: cfg.logLevel }), { databaseOnly: true });
    const { db } = stores;
    try {
      if (action === 'off') {
        await onDatabase(cfg, () => setEventCapture(db, false));
        const dropped = await clearIssueEvents(db);
        process.stdout.write(`issuance capture is off; ${dropped} unpublished event(s) dropped from the outbox (a publisher that starts with KAFKA_EVENTS=on turns it on again)\n`);
      } else {
        const s = await onDatabase(cfg, () => eventCapture(db));
        process.stdout.write(`issuance capture is ${s.enabled ? 'on' : 'off'}; ${s.pending} event(s) wait in the outbox\n`);
      }
    } finally {
      await stores.close();
    }
  });

program
  .command('token')
  .description('mint a user JWT signed with JWT_SECRET (the embedded dev secret by default)')
  .argument('<userId>', `user id: ${USER_ID_RULE}`)
  .option('--ttl <seconds>', `lifetime in seconds, at most JWT_MAX_TTL_S (default: ${DEFAULT_TOKEN_TTL_S}, or JWT_MAX_TTL_S when smaller)`, positiveInt)
  .action((userId: string, opts: { ttl?: number }, cmd: Command) => {
    if (!isValidUserId(userId)) cmd.error(`couponrush token: the user id must be ${USER_ID_RULE}`);
    const cfg = configOrExit(loadTokenConfig);
    // The server refuses a token that lives longer: do not mint one.
    if (opts.ttl !== undefined && opts.ttl > cfg.jwtMaxTtlS) {
      cmd.error(`couponrush token: --ttl ${opts.ttl} is more than JWT_MAX_TTL_S (${cfg.jwtMaxTtlS} s): the server would refuse the token`, { exitCode: 2 });
    }
    process.stdout.write(signUserToken(cfg.jwtSecret, userId, opts.ttl ?? Math.min(DEFAULT_TOKEN_TTL_S, cfg.jwtMaxTtlS)) + '\n');
  });

/** The bench is a package of its own (bench/, a workspace of the checkout), not part of the service. */
const BENCH_PACKAGE = 'couponrush-bench';

program
  .command('bench')
  .description('stampede the strategies, verify every issuance against the database, compare them (the couponrush-bench package; `couponrush bench --help`)')
  .helpOption(false)
  .allowUnknownOption()
  .allowExcessArguments()
  .argument('[flags...]')
  .action(async (flags: string[]) => {
    let bench: { main(argv: readonly string[]): Promise<void> };
    try {
      bench = (await import(BENCH_PACKAGE)) as typeof bench;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ERR_MODULE_NOT_FOUND') throw err;
      process.stderr.write(`couponrush bench: the bench is not installed here — it is the bench/ workspace of a checkout: run \`npm install\` (and \`npm run build\`) in the repository; a production install (--omit=dev --workspaces=false) leaves it out\n`);
      process.exit(2);
    }
    await bench.main(flags);
  });

/** A one-shot command waits this long for any Redis answer before it gives up. */
const ONE_SHOT_COMMAND_TIMEOUT_MS = 10_000;

/** One line for an error: a connection refused to several addresses is an AggregateError with no message. */
function oneLine(err: unknown): string {
  if (err instanceof AggregateError && err.message === '') return err.errors.map((e: unknown) => oneLine(e)).join('; ');
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0] ?? message;
}

// A command that fails says so in one line on stderr and exits 1: no stack trace for an operator
// to decode.
program.parseAsync().catch((err: unknown) => {
  const command = program.args[0];
  process.stderr.write(`couponrush${command === undefined ? '' : ` ${command}`}: ${oneLine(err)}\n`);
  process.exit(1);
});
