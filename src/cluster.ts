// `couponrush serve --workers N`: N API processes on one machine sharing one port (node:cluster).
// The primary only supervises: it migrates once, forks, re-forks a worker that dies, restarts
// the workers one by one on SIGHUP, and on SIGTERM/SIGINT lets every worker drain and exit.
// /metrics answered by any worker covers all of them (metrics/cluster.ts).
import cluster, { type Worker } from 'node:cluster';
import { pino, type Logger } from 'pino';
import type { Config } from './config.js';
import { campaignsOf } from './coupons/repository.js';
import { strategiesWhere } from './coupons/strategies/index.js';
import { installPrimaryAggregator } from './metrics/cluster.js';
import { openStores } from './runtime.js';
import { closeOnSignals, printBanner, startServer, type ServeOptions } from './server.js';

/** Strategies whose admission state lives in one process's memory: exact only with one process. */
export const SINGLE_PROCESS_STRATEGIES: readonly string[] = strategiesWhere((m) => m.admission === 'process');

/** A worker that dies this soon after starting counts toward a crash loop. */
const EARLY_EXIT_MS = 10_000;
const MAX_EARLY_EXITS = 5;
const REFORK_DELAY_MS = 1_000;
/** Workers still running this long after SIGTERM are killed. */
const DRAIN_DEADLINE_MS = 30_000;

/** Why this configuration cannot run several API processes, or undefined when it can. */
export function clusterRefusal(config: Config, workers: number): string | undefined {
  if (workers <= 1) return undefined;
  if (config.embedded) return '--workers > 1 needs DATABASE_URL: the embedded PGlite database belongs to one process';
  if (SINGLE_PROCESS_STRATEGIES.includes(config.defaultStrategy)) {
    return `--workers > 1 with DEFAULT_STRATEGY=${config.defaultStrategy}: that strategy is exact only inside one process; use db-batch (the default with DATABASE_URL) or a redis-* strategy`;
  }
  return undefined;
}

export async function serveCluster(config: Config, workers: number, options: ServeOptions): Promise<void> {
  if (cluster.isWorker) {
    // The primary migrated already; N workers migrating at once would race.
    const server = await startServer(config, { ...options, migrate: false });
    if (cluster.worker?.id === 1) await printBanner(server);
    closeOnSignals(server.close, server.app.log);
    // An orphaned worker (primary killed hard) drains and leaves instead of serving on alone.
    process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
    return;
  }
  const log = pino({ level: config.logLevel }).child({ role: 'cluster-primary' });
  await prepare(config, options, log);
  supervise(workers, log);
}

async function prepare(config: Config, options: ServeOptions, log: Logger): Promise<void> {
  try {
    const stores = await openStores(config, log, { migrations: options.migrate === true ? 'apply' : 'check', databaseOnly: true });
    try {
      const rows = await campaignsOf(stores.db, SINGLE_PROCESS_STRATEGIES, new Date());
      if (rows.length > 0) {
        log.warn(
          { campaigns: rows },
          `campaigns with single-process strategies (${SINGLE_PROCESS_STRATEGIES.join(', ')}) are not exact under --workers > 1: they may over-issue`,
        );
      }
    } finally {
      await stores.close();
    }
  } catch (err) {
    // A schema that is behind, or a store that is away, is reported by the workers with its
    // remedy; do not mask it here.
    log.debug({ err }, 'pre-fork check skipped');
  }
}

function supervise(workers: number, log: Logger): void {
  installPrimaryAggregator();
  const startedAt = new Map<Worker, number>();
  let stopping = false;
  let earlyExits = 0;
  let restarting = false;

  const fork = (): Worker => {
    const w = cluster.fork();
    startedAt.set(w, Date.now());
    w.once('listening', () => {
      earlyExits = 0;
    });
    return w;
  };

  cluster.on('exit', (w, code, signal) => {
    const started = startedAt.get(w) ?? 0;
    startedAt.delete(w);
    if (stopping || w.exitedAfterDisconnect || (restarting && code === 0)) return;
    log.error({ pid: w.process.pid, code, signal }, 'API worker died; starting another');
    if (Date.now() - started < EARLY_EXIT_MS && ++earlyExits >= MAX_EARLY_EXITS) {
      log.fatal('API workers keep dying at start-up; giving up (see the errors above)');
      stop('SIGTERM', 1);
      return;
    }
    setTimeout(() => stopping || fork(), REFORK_DELAY_MS).unref();
  });

  let exitCode = 0;
  const stop = (signal: NodeJS.Signals, code = 0) => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    log.info(`${signal}: API workers drain in-flight requests, then exit`);
    const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
    if (alive.length === 0) process.exit(exitCode);
    let left = alive.length;
    for (const w of alive) {
      w.once('exit', (c) => {
        if (c !== 0 && c !== null) exitCode = exitCode || 1;
        if (--left === 0) process.exit(exitCode);
      });
      w.process.kill('SIGTERM');
    }
    setTimeout(() => {
      log.error('API workers did not drain in time; killing them');
      for (const w of alive) if (!w.isDead()) w.process.kill('SIGKILL');
    }, DRAIN_DEADLINE_MS).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  // SIGHUP: replace the workers one at a time; a new one listens before an old one drains.
  process.on('SIGHUP', () => {
    if (restarting || stopping) return;
    restarting = true;
    void (async () => {
      for (const old of Object.values(cluster.workers ?? {})) {
        if (old === undefined || stopping) continue;
        const fresh = fork();
        await new Promise<void>((resolve) => fresh.once('listening', () => resolve()));
        await new Promise<void>((resolve) => {
          old.once('exit', () => resolve());
          old.process.kill('SIGTERM');
        });
      }
      restarting = false;
      log.info('rolling restart done');
    })();
  });

  for (let i = 0; i < workers; i++) fork();
  log.info({ workers }, 'API workers started');
}
