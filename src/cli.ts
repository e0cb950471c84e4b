// The `couponrush` command line: one strict CLI over the same code paths as the library.
import { Command, InvalidArgumentError } from 'commander';
import { pino } from 'pino';
import { benchCommand } from './bench/command.js';
import { clusterRefusal, serveCluster } from './cluster.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { isValidUserId } from './coupons/domain.js';
import { migrate } from './db/migrate.js';
import { signUserToken } from './http/auth.js';
import { openDb } from './runtime.js';
import { closeOnSignals, printBanner, startServer } from './server.js';

function config(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`couponrush: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

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
  .description('run the HTTP API (embedded PostgreSQL unless DATABASE_URL is set)')
  .option('--migrate', 'apply pending migrations before serving (always done in embedded mode)')
  .option('--workers <n>', 'API processes on this machine sharing the port (node:cluster; needs DATABASE_URL)', positiveInt, 1)
  .action(async (opts: { migrate?: boolean; workers: number }) => {
    const cfg = config();
    if (opts.workers > 1) {
      const refusal = clusterRefusal(cfg, opts.workers);
      if (refusal !== undefined) program.error(`couponrush serve: ${refusal}`, { exitCode: 2 });
      return serveCluster(cfg, opts.workers, { ...opts, migrate: opts.migrate === true });
    }
    const server = await startServer(cfg, { migrate: opts.migrate === true });
    await printBanner(server);
    closeOnSignals(server.close, server.app.log);
  });

program
  .command('migrate')
  .description('apply pending SQL migrations to the database')
  .action(async () => {
    const cfg = config();
    const db = await openDb(cfg);
    try {
      const { applied, current } = await migrate(db);
      process.stdout.write(applied.length === 0 ? `schema is up to date (version ${current})\n` : `applied ${applied.join(', ')}; schema version ${current}\n`);
    } finally {
      await db.close();
    }
  });

program
  .command('token')
  .description('mint a user JWT signed with JWT_SECRET (the embedded dev secret by default)')
  .argument('<userId>', 'user id: 1-64 characters of [A-Za-z0-9._:-]')
  .option('--ttl <seconds>', 'lifetime in seconds', positiveInt, 24 * 3600)
  .action((userId: string, opts: { ttl: number }) => {
    if (!isValidUserId(userId)) program.error('couponrush: user id must be 1-64 characters of [A-Za-z0-9._:-]');
    const cfg = config();
    if (cfg.jwtSecret === '') program.error('couponrush: JWT_SECRET is not set');
    process.stdout.write(signUserToken(cfg.jwtSecret, userId, opts.ttl) + '\n');
  });

program.addCommand(benchCommand());

program.parseAsync().catch((err: unknown) => {
  pino().fatal({ err }, (err as Error).message);
  process.exit(1);
});
