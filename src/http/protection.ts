// Guards in front of the domain: request ids, load shedding, and the issue route's rate limits
// (counters in rate-limit.ts).
// Each refusal is a problem+json with Retry-After; what is shed is reported through `onShed`
// (metrics), never logged per request.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import underPressure from '@fastify/under-pressure';
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import type { Redis } from 'ioredis';
import type { RateLimit } from '../config.js';
import { ISSUE_ROUTE_URL } from '../coupons/routes.js';
import { HttpProblem, sendProblem } from './problem.js';
import { WindowLimiter, type Verdict } from './rate-limit.js';

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

declare module 'fastify' {
  interface FastifyReply {
    /** performance.now() by which the request must be answered; 0 = not tracked. */
    couponrushDeadline: number;
    couponrushPrev: FastifyReply | null;
    couponrushNext: FastifyReply | null;
  }
}

const TIMEOUT_DETAIL = 'the outcome is unknown; GET /coupons/{id}/issues/me tells whether the coupon was issued';

/**
 * Echoes the request id (so a client or nginx can quote it) and, with REQUEST_TIMEOUT_MS, answers
 * a request still unanswered after `timeoutMs` with 504 TIMEOUT — not 503, because its work may
 * still complete (an issue may still be recorded).
 *
 * The requests in flight form a list in arrival order, linked through the replies themselves, and
 * one sweep every few hundred ms answers the expired ones from the head. This replaces Fastify's
 * handlerTimeout, which arms a timer, an AbortController and a listener on every request
 * (measured: ~2.5% of the issue route); here a request costs a few pointer writes. The answer
 * comes between timeoutMs and timeoutMs + one sweep interval.
 */
export function trackRequests(app: FastifyInstance, timeoutMs: number, onTimeout: () => void): void {
  if (timeoutMs <= 0) {
    app.addHook('onRequest', (request, reply, done) => {
      reply.header(REQUEST_ID_HEADER, request.id);
      done();
    });
    return;
  }
  app.decorateReply('couponrushDeadline', 0);
  app.decorateReply('couponrushPrev', null);
  app.decorateReply('couponrushNext', null);
  let head: FastifyReply | null = null;
  let tail: FastifyReply | null = null;
  const unlink = (r: FastifyReply) => {
    if (r.couponrushDeadline === 0) return;
    r.couponrushDeadline = 0;
    if (r.couponrushPrev === null) head = r.couponrushNext;
    else r.couponrushPrev.couponrushNext = r.couponrushNext;
    if (r.couponrushNext === null) tail = r.couponrushPrev;
    else r.couponrushNext.couponrushPrev = r.couponrushPrev;
    r.couponrushPrev = r.couponrushNext = null;
  };
  const sweepMs = Math.min(250, Math.max(10, Math.floor(timeoutMs / 4)));
  const timer = setInterval(() => {
    const now = performance.now();
    while (head !== null && head.couponrushDeadline <= now) {
      const r: FastifyReply = head;
      unlink(r);
      if (r.sent) continue;
      onTimeout();
      void sendProblem(r, 504, 'TIMEOUT', TIMEOUT_DETAIL);
    }
  }, sweepMs);
  timer.unref();
  app.addHook('onClose', (_app, done) => {
    clearInterval(timer);
    done();
  });
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    reply.couponrushDeadline = performance.now() + timeoutMs;
    reply.couponrushPrev = tail;
    if (tail === null) head = reply;
    else tail.couponrushNext = reply;
    tail = reply;
    done();
  });
  app.addHook('onResponse', (_request, reply, done) => {
    unlink(reply);
    done();
  });
}

export type ShedReason = 'overloaded' | 'rate_limited_user' | 'rate_limited_ip' | 'timeout';

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
  /** Shares the counters across instances (beyond a small local allowance, see rate-limit.ts). */
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

/**
 * Per-user and per-IP fixed-window limits on POST /coupons/:id/issues (rate-limit.ts). Returns
 * the authenticator the routes must use: it reuses the user id the limiter already resolved.
 * Runs after authentication: a request without valid credentials is a 401 and counts for nobody.
 */
export function issueRateLimits(app: FastifyInstance, options: IssueRateLimitOptions): (request: FastifyRequest) => string {
  const { authenticate, onShed } = options;
  app.decorateRequest('couponrushUserId', null);
  const requireUser = (request: FastifyRequest): string => (request.couponrushUserId ??= authenticate(request));
  if (options.user === undefined && options.ip === undefined) return requireUser;

  const shared = (kind: string) => (options.redis === undefined ? undefined : { redis: options.redis, prefix: `${options.redisPrefix ?? ''}ratelimit:${kind}:` });
  const byIp = options.ip === undefined ? undefined : new WindowLimiter(options.ip, shared('ip'));
  const byUser = options.user === undefined ? undefined : new WindowLimiter(options.user, shared('user'));
  const refusal = (limiter: WindowLimiter, what: string, retryAfter: number) =>
    new HttpProblem(429, 'RATE_LIMITED', `at most ${limiter.limit.max} issue requests per ${what} per ${limiter.limit.windowMs / 1000} s`, {
      'retry-after': String(retryAfter),
    });

  const checkUser = (request: FastifyRequest, done: (err?: Error) => void) => {
    if (byUser === undefined) return done();
    let verdict: Verdict | Promise<Verdict>;
    try {
      verdict = byUser.hit(requireUser(request));
    } catch (err) {
      return done(err as Error); // 401
    }
    const settle = (v: Verdict) => {
      if (v === undefined) return done();
      onShed('rate_limited_user');
      done(refusal(byUser, 'user', v));
    };
    if (verdict instanceof Promise) verdict.then(settle, () => done());
    else settle(verdict);
  };

  // Synchronous unless Redis has to be asked: no promise per request on the hot path.
  const hook: onRequestHookHandler = (request, _reply, done) => {
    if (byIp === undefined) return checkUser(request, done);
    const settle = (v: Verdict) => {
      if (v === undefined) return checkUser(request, done);
      onShed('rate_limited_ip');
      done(refusal(byIp, 'client address', v));
    };
    const verdict = byIp.hit(request.ip);
    if (verdict instanceof Promise) verdict.then(settle, () => checkUser(request, done));
    else settle(verdict);
  };
  app.addHook('onRoute', (route) => {
    if (route.url !== ISSUE_ROUTE_URL || route.method !== 'POST') return;
    const existing = route.onRequest;
    route.onRequest = existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook];
  });
  return requireUser;
}
