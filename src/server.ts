// Runs the HTTP API: picks the logger, listens, prints how to use it, closes gracefully on
// SIGTERM/SIGINT (in-flight requests finish, queued group commits flush).
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { buildApp } from './app.js';
import type { Config } from './config.js';
import { campaignStatus } from './coupons/domain.js';
import { countCoupons } from './coupons/repository.js';
import { dialectOf } from './db/index.js';
import { signUserToken } from './http/auth.js';
import { startAdminListener, type AdminListener } from './http/admin-listener.js';
import { reapIdleConnections } from './util/drain.js';
import { createRuntime, type Runtime } from './runtime.js';
import { targetVariable } from './redis/target.js';

export interface ServeOptions {
  migrate?: boolean;
  /** Run the stream worker in this process (embedded/dev use; needs REDIS_URL). */
  withWorker?: boolean;
}

/** The embedded database with REDIS_URL: a one-machine mode whose worker can only be this process. */
export function workerMustRunHere(config: Config): boolean {
  return config.embedded && config.redis !== undefined;
}

export interface RunningServer {
  app: FastifyInstance;
  runtime: Runtime;
  url: string;
  /** Set when ADMIN_PORT moves /admin/* and /metrics to their own listener. */
  adminUrl: string | undefined;
  close(): Promise<void>;
}

export async function startServer(config: Config, options: ServeOptions = {}): Promise<RunningServer> {
  const log = pino({ level: config.logLevel });
  // Queued issuances need a worker, and no other process can open the embedded database: with
  // REDIS_URL on it, the worker always runs here.
  const withWorker = options.withWorker === true || workerMustRunHere(config);
  const runtime = await createRuntime(config, log, { migrate: options.migrate === true, withWorker });
  if (withWorker && options.withWorker !== true) {
    log.info('embedded database with REDIS_URL: the stream worker runs in this process (no other process can open the embedded database)');
  }
  const app = await buildApp(runtime, { logger: log });
  let url: string;
  try {
    url = await app.listen({ port: config.port, host: config.host });
  } catch (err) {
    await app.close();
    await runtime.close();
    throw err;
  }
  let admin: AdminListener | undefined;
  if (config.adminPort !== undefined) {
    try {
      admin = await startAdminListener(app, config.adminHost, config.adminPort);
    } catch (err) {
      await app.close();
      await runtime.close();
      throw err;
    }
  }
  if (config.authMode === 'header') {
    log.warn('AUTH_MODE=header: X-User-Id is trusted as the user id; run this only behind a gateway that authenticates users and strips the header from clients');
  }
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      // Both listeners stop accepting and drain their in-flight requests before anything closes.
      const stopReaping = reapIdleConnections(app.server);
      await Promise.all([admin?.close(), app.close()]);
      stopReaping();
      await runtime.close();
    })());
  return { app, runtime, url, adminUrl: admin?.url, close };
}

/**
 * A campaign a pasted issue curl gets its 201 from: OPEN (in its window, stock left). In embedded
 * mode a first start creates one (a demo) so that the curl works as is; a database the user
 * brought is never written to. Undefined: none is open, and the banner prints create-then-issue.
 */
async function openCouponId(runtime: Runtime): Promise<number | undefined> {
  const now = new Date();
  const open = (await runtime.service.listCurrent(now)).find((c) => campaignStatus(c, now.getTime()) === 'OPEN');
  if (open !== undefined) return open.id;
  if (!runtime.config.embedded) return undefined;
  if ((await countCoupons(runtime.db)) > 0) return undefined;
  // Through the service, as the admin route would: the strategy prepares its state (Redis) at once.
  const demo = await runtime.service.create({
    name: 'Demo: 100 chicken coupons',
    totalQuantity: 100,
    issueStartsAt: now,
    issueEndsAt: new Date(now.getTime() + 7 * 24 * 3600 * 1000),
    discountType: 'AMOUNT',
    discountValue: 3000,
    minOrderAmount: 15000,
  });
  return demo.ok ? demo.coupon.id : undefined;
}

/** Lifetime of the development token the banner prints (capped by JWT_MAX_TTL_S). */
const BANNER_TOKEN_TTL_S = 24 * 3600;

/**
 * What `serve` prints: where it listens, and shell commands that work when pasted in order (a
 * test runs each of them as printed).
 */
export async function printBanner(server: RunningServer): Promise<void> {
  const { config } = server.runtime;
  const url = server.url.replace('[::1]', 'localhost');
  const adminBase = server.adminUrl?.replace('[::1]', 'localhost') ?? url;
  const where = config.embedded ? `embedded PostgreSQL in ${config.dataDir}` : `${config.databaseUrl !== undefined && dialectOf(config.databaseUrl) === 'mysql' ? 'MySQL/MariaDB' : 'PostgreSQL'} at DATABASE_URL`;
  const lines = [
    '',
    `couponrush is listening on ${url} (${where}, default strategy ${config.defaultStrategy})`,
    `  API docs     ${url}/docs   (OpenAPI: ${url}/openapi.json)`,
    `  Console      ${adminBase}/console   (live campaigns; sign in with the admin token)`,
    `  Metrics      ${adminBase}/metrics   (Prometheus)${server.adminUrl === undefined ? '' : `; /admin/* on ${adminBase} only`}`,
  ];
  if (config.generatedAdminToken) lines.push(`  Admin token  ${config.adminToken}   (generated; kept in ${config.dataDir}/secrets.json)`);
  if (server.runtime.workers !== undefined) {
    lines.push(
      `  Worker       in this process: it persists the queued (202) issuances${workerMustRunHere(config) ? ' (always, with the embedded database: no other process can open it)' : ''}`,
    );
  } else if (config.redis !== undefined) {
    lines.push(`  Worker       none here: run \`couponrush worker\` (with the same DATABASE_URL and ${targetVariable(config.redis)}) to persist the queued (202) issuances`);
  }
  const couponId = await openCouponId(server.runtime);
  const issue: string[] = [];
  if (config.authMode === 'jwt' && config.jwtSecret !== '') {
    // A token signed with a secret someone configured is a credential: it must not land in the
    // logs. The printed command mints one from the shell's own JWT_SECRET instead.
    const token = config.generatedJwtSecret
      ? signUserToken(config.jwtSecret, 'demo-user', Math.min(BANNER_TOKEN_TTL_S, config.jwtMaxTtlS))
      : '$(npx couponrush token demo-user)';
    issue.push(
      '',
      config.generatedJwtSecret
        ? `  Issue a coupon as user "demo-user" (mint tokens for others with \`npx couponrush token <userId>\`):`
        : '  Issue a coupon as user "demo-user" (the token is minted from $JWT_SECRET by `npx couponrush token`):',
      `    curl -i -X POST ${url}/coupons/${couponId ?? '$COUPON_ID'}/issues -H "authorization: Bearer ${token}"`,
    );
  }
  // Double quotes: pasted into a shell, "$ADMIN_TOKEN" and "$(…)" expand (single quotes would send them literally).
  const adminAuth = `-H "authorization: Bearer ${config.generatedAdminToken ? config.adminToken : '$ADMIN_TOKEN'}"`;
  const body = `-d '{"name":"Chicken","totalQuantity":10000,"issueStartsAt":"${new Date().toISOString()}","issueEndsAt":"${new Date(Date.now() + 3600_000).toISOString()}"}'`;
  if (couponId !== undefined) {
    lines.push(...issue, '', '  Create a campaign:', `    curl -i -X POST ${adminBase}/admin/coupons ${adminAuth} \\`, `      -H 'content-type: application/json' \\`, `      ${body}`);
  } else {
    // No open campaign to issue from: create one first and keep its id for the issue command.
    lines.push(
      '',
      '  Create a campaign (its id is kept in COUPON_ID for the next command):',
      `    COUPON_ID=$(curl -s -X POST ${adminBase}/admin/coupons ${adminAuth} \\`,
      `      -H 'content-type: application/json' \\`,
      `      ${body} | node -pe "JSON.parse(require('fs').readFileSync(0, 'utf8')).id")`,
      ...issue,
    );
  }
  lines.push('');
  process.stdout.write(lines.join('\n') + '\n');
}

export function closeOnSignals(close: () => Promise<void>, log: { info(msg: string): void; error(obj: unknown, msg: string): void }): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) return;
    signalled = true;
    log.info(`${signal}: draining in-flight work, then exiting`);
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}
