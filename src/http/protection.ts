// Guards in front of the domain: request ids, load shedding, and the issue route's rate limits.
// Each refusal is a problem+json with Retry-After; what is shed is reported through `onShed`
// (metrics), never logged per request.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import rateLimit from '@fastify/rate-limit';
import underPressure from '@fastify/under-pressure';
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { Redis } from 'ioredis';
import type { RateLimit } from '../config.js';
import { ISSUE_ROUTE_URL } from '../coupons/routes.js';
import { HttpProblem, sendProblem } from './problem.js';

/** Request headers: a JWT and the usual proxy headers fit easily; more is abuse. */
export const MAX_HEADER_BYTES = 8 * 1024;
export const MAX_HEADERS_COUNT = 100;
/** Time to receive a whole request (headers and body) from a client: slow senders are cut off. */
export const RECEIVE_TIMEOUT_MS = 30_000;

export const REQUEST_ID_HEADER = 'x-request-id';
/** Incoming ids are kept when they are short and plain (they end up in logs and stream entries). */
const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/** Fastify's genReqId: the caller's x-request-id when it is sane, else a fresh UUID. */
export function requestId(req: IncomingMessage): string {
  const incoming = req.headers[REQUEST_ID_HEADER];
  return typeof incoming === 'string' && REQUEST_ID_PATTERN.test(incoming) ? incoming : randomUUID();
}

/** Echoes the request id so a client or nginx can quote it. */
export function echoRequestId(app: FastifyInstance): void {
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    done();
  });
}

export type ShedReason = 'overloaded' | 'rate_limited_user' | 'rate_limited_ip';

/** Routes that must answer while the process sheds load: probes and scrapes. */
const NEVER_SHED = new Set(['/healthz', '/readyz', '/metrics']);
/** Seconds a shed client should wait: the load monitor samples once a second. */
const OVERLOAD_RETRY_AFTER_S = 2;

/**
 * When the event loop's mean delay over the last second exceeds `maxEventLoopDelayMs`, answer
 * 503 OVERLOADED at once instead of queueing more work behind it. 0 turns it off.
 */
export async function loadShedding(app: FastifyInstance, maxEventLoopDelayMs: number, onShed: (reason: ShedReason) => void): Promise<void> {
  if (maxEventLoopDelayMs <= 0) return;
  await app.register(underPressure, {
    maxEventLoopDelay: maxEventLoopDelayMs,
    // Fastify skips the remaining hooks and the handler of a request already answered here.
    pressureHandler: (request, reply) => {
      if (NEVER_SHED.has(request.routeOptions.url ?? '')) return;
      onShed('overloaded');
      void reply.header('retry-after', String(OVERLOAD_RETRY_AFTER_S));
      void sendProblem(reply, 503, 'OVERLOADED', `event loop delay above ${maxEventLoopDelayMs} ms`);
    },
  });
}

export interface IssueRateLimitOptions {
  user: RateLimit | undefined;
  ip: RateLimit | undefined;
  /** Shares the counters across instances; the in-process store otherwise. */
  redis?: Redis | undefined;
  redisPrefix?: string;
  /** Authenticates the caller (throws 401); called once per request even if used twice. */
  authenticate: (request: FastifyRequest) => string;
  onShed: (reason: ShedReason) => void;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated user id, once the rate limiter or the handler has asked for it. */
    couponrushUserId: string | null;
  }
}

/** Users remembered by the in-process store; beyond it the oldest are forgotten (fail open). */
const LOCAL_STORE_KEYS = 100_000;

/**
 * Per-user and per-IP fixed-window limits on POST /coupons/:id/issues. Returns the authenticator
 * the routes must use: it reuses the user id the limiter already resolved. Store errors (Redis
 * down) let the request through: a limit is a protection, not a correctness rule.
 */
export async function issueRateLimits(app: FastifyInstance, options: IssueRateLimitOptions): Promise<(request: FastifyRequest) => string> {
  const { authenticate, onShed } = options;
  app.decorateRequest('couponrushUserId', null);
  const requireUser = (request: FastifyRequest): string => (request.couponrushUserId ??= authenticate(request));
  if (options.user === undefined && options.ip === undefined) return requireUser;

  await app.register(rateLimit, {
    global: false,
    skipOnError: true,
    cache: LOCAL_STORE_KEYS,
    ...(options.redis === undefined ? {} : { redis: options.redis, nameSpace: `${options.redisPrefix ?? ''}ratelimit:` }),
  });
  const limiter = (limit: RateLimit, kind: 'user' | 'ip', key: (r: FastifyRequest) => string) =>
    app.createRateLimit({ max: limit.max, timeWindow: limit.windowMs, keyGenerator: (r) => `${kind}:${key(r)}` });
  const byIp = options.ip === undefined ? undefined : limiter(options.ip, 'ip', (r) => r.ip);
  const byUser = options.user === undefined ? undefined : limiter(options.user, 'user', requireUser);
  const ipDetail = options.ip === undefined ? '' : `at most ${options.ip.max} issue requests per client address per ${options.ip.windowMs / 1000} s`;
  const userDetail = options.user === undefined ? '' : `at most ${options.user.max} issue requests per user per ${options.user.windowMs / 1000} s`;

  const hook: onRequestHookHandler = async (request) => {
    if (byIp !== undefined) {
      const r = await byIp(request);
      if (!r.isAllowed && r.isExceeded) {
        onShed('rate_limited_ip');
        throw new HttpProblem(429, 'RATE_LIMITED', ipDetail, { 'retry-after': String(Math.max(1, r.ttlInSeconds)) });
      }
    }
    if (byUser !== undefined) {
      const r = await byUser(request);
      if (!r.isAllowed && r.isExceeded) {
        onShed('rate_limited_user');
        throw new HttpProblem(429, 'RATE_LIMITED', userDetail, { 'retry-after': String(Math.max(1, r.ttlInSeconds)) });
      }
    }
  };
  app.addHook('onRoute', (route) => {
    if (route.url !== ISSUE_ROUTE_URL || route.method !== 'POST') return;
    const existing = route.onRequest;
    route.onRequest = existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook];
  });
  return requireUser;
}
