// Builds the HTTP application from a runtime without listening: server.ts listens, tests inject.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { ISSUE_ROUTE_URL } from './coupons/paths.js';
import { consoleRoutes } from './console/routes.js';
import { couponRoutes } from './coupons/routes.js';
import { guardAdminRoutes } from './http/admin-listener.js';
import { createAdminAuthenticator, createUserAuthenticator, USER_ID_HEADER } from './http/auth.js';
import { earlyAnswers } from './http/early-answers.js';
import { answerClientError, answerFrameworkError } from './http/framework-errors.js';
import { setPageHeaders } from './http/page-headers.js';
import { registerProblemHandlers, sendProblem } from './http/problem.js';
import { storeHealth } from './http/readiness.js';
import { lazyChildLogger } from './http/request-logger.js';
import { issueRateLimits, MAX_HEADER_BYTES, MAX_HEADERS_COUNT, RECEIVE_TIMEOUT_MS, requestGuards, requestId } from './http/protection.js';
import { instrumentRoutes, metricsRoute } from './metrics/http.js';
import type { Runtime } from './runtime.js';
import { deadLetterRoutes } from './worker/admin-routes.js';

export const BODY_LIMIT_BYTES = 16 * 1024;

export interface AppOptions {
  /** The process logger; tests leave it out and get a silent app. */
  logger?: FastifyBaseLogger;
}

export async function buildApp(runtime: Runtime, options: AppOptions = {}): Promise<FastifyInstance> {
  const { config, service, metrics } = runtime;
  // Known sell-outs and closed windows answered before routing; off with a per-IP limit, which
  // must count every request.
  const early =
    config.rateLimitIp === undefined
      ? earlyAnswers({ service, record: metrics.routeRecorder('POST', ISSUE_ROUTE_URL, true), answered: metrics.answeredEarly })
      : undefined;
  const app = Fastify({
    ...(early === undefined ? {} : { serverFactory: early.serverFactory }),
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
  if (early !== undefined) {
    app.addHook('preClose', (done) => {
      early.stop();
      done();
    });
  }
  app.server.maxHeadersCount = MAX_HEADERS_COUNT;
  // Hooks that attach to routes by pattern come first: they see every route added below.
  instrumentRoutes(app, metrics);
  if (config.adminPort !== undefined) guardAdminRoutes(app);
  const onShed = metrics.requestShed.bind(metrics);
  // Request id echo, load shedding (503 OVERLOADED) and request timeouts (504 TIMEOUT).
  const deadline = requestGuards(app, { timeoutMs: config.requestTimeoutMs, maxEventLoopDelayMs: config.shedEventLoopDelayMs, onShed });
  const requireUser = createUserAuthenticator(config.authMode, config.jwtSecret, config.jwtMaxTtlS);
  const requireIssuer = issueRateLimits(app, {
    user: config.rateLimitUser,
    ip: config.rateLimitIp,
    authenticate: requireUser,
    onShed,
    // With Redis the counters are shared by every instance: N instances do not mean N× the limit.
    redis: runtime.redis?.client,
    redisPrefix: config.redisPrefix,
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'couponrush',
        version: '0.1.0',
        description: 'First-come-first-served coupon issuance. Every error is RFC 9457 application/problem+json with a stable `code`.',
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT (users) or the admin token (admin routes)' },
          userIdHeader: { type: 'apiKey', in: 'header', name: USER_ID_HEADER, description: 'only with AUTH_MODE=header' },
        },
      },
    },
  });
  // Swagger UI is a page of this origin like the console: the same headers, on every file of it.
  await app.register(async (docs) => {
    docs.addHook('onRequest', async (_request, reply) => setPageHeaders(reply));
    await docs.register(swaggerUi, { routePrefix: '/docs' });
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/healthz', { schema: { tags: ['ops'], summary: 'The process is alive' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { tags: ['ops'], summary: 'The database (and Redis, when configured) answer' } }, async (_request, reply) => {
    const health = await storeHealth(runtime, ['database', 'redis']);
    const failed = Object.entries(health).filter(([, v]) => v !== 'ok');
    if (failed.length > 0) return sendProblem(reply, 503, 'SERVICE_UNAVAILABLE', failed.map(([k, v]) => `${k}: ${v}`).join('; '));
    return { status: 'ready', ...health };
  });

  metricsRoute(app, metrics);

  const requireAdmin = createAdminAuthenticator(config.adminToken);
  await app.register(couponRoutes, {
    service,
    requireUser,
    requireIssuer,
    deadline,
    requireAdmin,
  });
  if (runtime.redis !== undefined) {
    await app.register(deadLetterRoutes, { redis: runtime.redis, kafka: runtime.kafka, db: runtime.db, requireAdmin });
  }
  await app.register(consoleRoutes, { runtime, requireAdmin });

  return app;
}
