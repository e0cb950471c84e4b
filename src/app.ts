// Builds the HTTP application from a runtime without listening: server.ts listens, tests inject.
// The server around the routes (hooks, protections, problem handlers: http/), the issue route's
// node:http front (routes/issue-handler.ts) and every route module (routes/) are put together
// here; nothing else registers a route.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { ISSUE_ROUTE_URL } from './coupons/paths.js';
import { guardAdminRoutes } from './http/admin-listener.js';
import { createAdminAuthenticator, createUserAuthenticator } from './http/auth.js';
import { answerClientError, answerFrameworkError } from './http/framework-errors.js';
import { registerProblemHandlers } from './http/problem.js';
import { issueLimits, limitIssueRouteByAddress, LoadGuard, MAX_HEADER_BYTES, MAX_HEADERS_COUNT, RECEIVE_TIMEOUT_MS, requestGuards, requestId } from './http/protection.js';
import { lazyChildLogger } from './http/request-logger.js';
import { instrumentRoutes } from './http/route-metrics.js';
import { campaignRoutes } from './routes/campaigns.js';
import { consoleRoutes } from './routes/console.js';
import { deadLetterRoutes } from './routes/dead-letters.js';
import { docsRoutes } from './routes/docs.js';
import { IssueHandler } from './routes/issue-handler.js';
import { issueRoutes } from './routes/issues.js';
import { metricsRoutes } from './routes/metrics.js';
import { operationRoutes } from './routes/operations.js';
import { addSharedSchemas } from './routes/schemas.js';
import type { Runtime } from './runtime.js';

export const BODY_LIMIT_BYTES = 16 * 1024;

export interface AppOptions {
  /** The process logger; tests leave it out and get a silent app. */
  logger?: FastifyBaseLogger;
  /**
   * false: no node:http front, Fastify's route answers every issue request (a test compares the
   * two ways in; the service always runs with the front).
   */
  issueFront?: boolean;
}

/** The logger of an app built without one (tests). */
const SILENT = { warn() {}, error() {}, child: () => SILENT };

export async function buildApp(runtime: Runtime, options: AppOptions = {}): Promise<FastifyInstance> {
  const { config, service, metrics } = runtime;
  const onShed = metrics.requestShed.bind(metrics);
  // Load shedding (503 OVERLOADED) and the drain's 503, shared by Fastify's hook and the front.
  const load = new LoadGuard(config.shedEventLoopDelayMs, onShed);
  const requireUser = createUserAuthenticator(config.authMode, config.jwtSecret, config.jwtMaxTtlS);
  const limits = issueLimits({
    user: config.rateLimitUser,
    ip: config.rateLimitIp,
    authenticate: requireUser,
    onShed,
    // With Redis the counters are shared by every instance: N instances do not mean N× the limit.
    redis: runtime.redis?.client,
    redisPrefix: config.redisPrefix,
  });
  // The issue route's plain requests are answered by its node:http front before Fastify sees them.
  const issues = new IssueHandler({
    service,
    limits,
    load,
    timeoutMs: config.requestTimeoutMs,
    onShed,
    record: metrics.routeRecorder('POST', ISSUE_ROUTE_URL, true),
    answeredEarly: metrics.answeredEarly,
    trustProxy: config.trustProxy,
    log: options.logger ?? SILENT,
    tracing: runtime.tracing,
  });
  const app = Fastify({
    ...(options.issueFront === false ? {} : { serverFactory: issues.serverFactory }),
    ...(options.logger === undefined ? { logger: false } : { loggerInstance: options.logger }),
    bodyLimit: BODY_LIMIT_BYTES,
    // No per-request log lines: at 10k req/s they would cost more than the issue itself.
    logController: new LogController({ disableRequestLogging: true }),
    // And no per-request pino child unless the request actually logs something.
    ...(options.logger === undefined ? {} : { childLoggerFactory: lazyChildLogger }),
    // Validated incoming x-request-id or a generated prefix-counter id (protection.ts); echoed in the response.
    requestIdHeader: false,
    genReqId: requestId,
    trustProxy: config.trustProxy ?? false,
    requestTimeout: RECEIVE_TIMEOUT_MS,
    http: { maxHeaderSize: MAX_HEADER_BYTES },
    // Errors outside any route answer problem+json too (Fastify's own are plain JSON).
    frameworkErrors: answerFrameworkError,
    clientErrorHandler: answerClientError,
    // While closing, requestGuards answers the 503 itself, as a problem (Fastify's is plain JSON).
    return503OnClosing: false,
    ajv: {
      // Reject instead of silently fixing: unknown fields and wrong types are a 400.
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false },
    },
  });

  registerProblemHandlers(app);
  app.server.maxHeadersCount = MAX_HEADERS_COUNT;
  // Hooks that attach to routes by pattern come first: they see every route added below.
  instrumentRoutes(app, metrics);
  if (config.adminPort !== undefined) guardAdminRoutes(app);
  // Request id echo, the load guard and request timeouts (504 TIMEOUT).
  const deadline = requestGuards(app, { timeoutMs: config.requestTimeoutMs, load, onShed });
  if (limits.byAddress !== undefined) limitIssueRouteByAddress(app, limits.byAddress);
  app.addHook('onClose', (_app, done) => {
    issues.stop();
    done();
  });

  addSharedSchemas(app);
  await docsRoutes(app);
  const { db, redis, kafka } = runtime;
  const stores = { db, redis, kafka };
  await app.register(operationRoutes, { stores });
  await app.register(metricsRoutes, { metrics });

  const requireAdmin = createAdminAuthenticator(config.adminToken);
  await app.register(campaignRoutes, { service, requireAdmin });
  await app.register(issueRoutes, { service, requireUser, issues, deadline });
  if (redis !== undefined) await app.register(deadLetterRoutes, { redis, kafka, db, requireAdmin });
  await app.register(consoleRoutes, {
    service,
    metrics,
    stores,
    available: runtime.strategies.available,
    database: config.databaseUrl === undefined ? 'embedded' : db.dialect,
    requireAdmin,
  });

  return app;
}
