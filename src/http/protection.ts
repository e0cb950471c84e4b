// Guards in front of the domain: request ids, load shedding, and the issue route's rate limits
// (counters in rate-limit.ts).
// Each refusal is a problem+json with Retry-After; what is shed is reported through `onShed`
// (metrics), never logged per request.
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler, onResponseHookHandler } from 'fastify';
import type { Cluster, Redis } from 'ioredis';
import type { RateLimit } from '../config.js';
import { ISSUE_ROUTE_URL } from '../coupons/paths.js';
import type { ShedReason } from '../metrics/index.js';
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

/**
 * Generated ids: a random per-process prefix and a counter ("9f3a61c2e0-1a"), unique across
 * instances and restarts for tracing purposes, and cheaper than a UUID per request (no entropy,
 * and a shorter string for every log line's bindings).
 */
const ID_PREFIX = `${randomBytes(5).toString('hex')}-`;
let idCounter = 0;

/** Fastify's genReqId: the caller's x-request-id when it is sane, else a generated id. */
export function requestId(req: IncomingMessage): string {
  const incoming = req.headers[REQUEST_ID_HEADER];
  if (typeof incoming === 'string' && REQUEST_ID_PATTERN.test(incoming)) return incoming;
  return generatedRequestId();
}

/** A new id, for an answer to a request that could not be parsed (no caller's id to keep). */
export function generatedRequestId(): string {
  idCounter = (idCounter + 1) % Number.MAX_SAFE_INTEGER;
  return ID_PREFIX + idCounter.toString(36);
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
/** Routes that must answer while the process sheds load: probes and scrapes. */
const NEVER_SHED = new Set(['/healthz', '/readyz', '/metrics']);
/** How often the event loop's delay is judged; a shed client should wait about two of these. */
const LOAD_SAMPLE_MS = 1_000;
const OVERLOAD_RETRY_AFTER_S = 2;
/** Resolution of the event-loop delay histogram; its mean is taken net of it. */
const LOOP_RESOLUTION_MS = 10;

export interface RequestGuardOptions {
  /** REQUEST_TIMEOUT_MS: 504 TIMEOUT past it; 0 = off. */
  timeoutMs: number;
  /** SHED_EVENT_LOOP_DELAY_MS: 503 OVERLOADED while the loop's mean delay is above it; 0 = off. */
  maxEventLoopDelayMs: number;
  onShed: (reason: ShedReason) => void;
}

/** A request deadline a handler arms itself (the issue route); undefined when timeouts are off. */
export interface Deadline {
  /** From now, the request gets 504 TIMEOUT unless answered within the timeout. */
  arm(reply: FastifyReply): void;
  /** Answered (or about to be): stop tracking. Safe to call when not armed. */
  disarm(reply: FastifyReply): void;
}

/**
 * One app-level onRequest hook for every request, plus deadline hooks on every route but the
 * issue route (whose handler arms its deadline itself, see `Deadline`):
 *
 * - echoes the request id, so a client or nginx can quote it;
 * - load shedding: while the event loop's mean delay over the last second is above
 *   `maxEventLoopDelayMs`, answers 503 OVERLOADED with Retry-After at once instead of queueing more
 *   work behind it (probes and scrapes excepted);
 * - while the app closes, answers 503 SERVICE_UNAVAILABLE (nothing done) to every request;
 * - request timeout: a request still unanswered after `timeoutMs` gets 504 TIMEOUT — not 503,
 *   because its work may still complete (an issue may still be recorded). The requests in flight
 *   form a list in the order they were armed, linked through the replies themselves; one sweep
 *   every few hundred ms answers the expired ones from the head. The answer comes between
 *   timeoutMs and timeoutMs + one sweep interval. A handler that arms its own deadline must not
 *   send once `reply.sent` (the 504 went out while it waited).
 *
 * Why not @fastify/under-pressure and Fastify's handlerTimeout: measured on the issue route under
 * the bench's stampede, the first builds a route-options object per request and the second arms a
 * timer, an AbortController and a listener per request (~2.5%); here a request costs a boolean
 * check and a few pointer writes, and an issue refused at once (the stampede's tail) not even those.
 */
export function requestGuards(app: FastifyInstance, { timeoutMs, maxEventLoopDelayMs, onShed }: RequestGuardOptions): Deadline | undefined {
  const timers: NodeJS.Timeout[] = [];

  /** Why every request is refused at once, if it is: overloaded (judged each second) or closing. */
  let refusing: 'overloaded' | 'closing' | undefined;
  if (maxEventLoopDelayMs > 0) {
    const delay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
    delay.enable();
    timers.push(
      setInterval(() => {
        // No sample at all means the loop was blocked for the whole interval.
        const meanMs = delay.count === 0 ? Infinity : delay.mean / 1e6 - LOOP_RESOLUTION_MS;
        if (refusing !== 'closing') refusing = meanMs > maxEventLoopDelayMs ? 'overloaded' : undefined;
        delay.reset();
      }, LOAD_SAMPLE_MS),
    );
    app.addHook('onClose', (_app, done) => {
      delay.disable();
      done();
    });
  }
  // A request that reaches a closing app (a keep-alive connection during the drain) is refused
  // here rather than by Fastify (app.ts turns return503OnClosing off), so that it is a problem too.
  app.addHook('preClose', (done) => {
    refusing = 'closing';
    done();
  });
  const refuse = (request: FastifyRequest, reply: FastifyReply): boolean => {
    if (refusing === 'closing') {
      void reply.header('retry-after', '1');
      void sendProblem(reply, 'SERVICE_UNAVAILABLE', 'this instance is shutting down; nothing was done');
      return true;
    }
    if (NEVER_SHED.has(request.routeOptions.url ?? '')) return false;
    onShed('overloaded');
    void reply.header('retry-after', String(OVERLOAD_RETRY_AFTER_S));
    void sendProblem(reply, 'OVERLOADED', `event loop delay above ${maxEventLoopDelayMs} ms`);
    return true;
  };

  // Request id echo, load shedding and the drain's refusal, for every request.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    if (refusing !== undefined && refuse(request, reply)) return; // answered: the rest of the lifecycle is skipped
    done();
  });

  let deadline: Deadline | undefined;
  if (timeoutMs > 0) {
    app.decorateReply('couponrushDeadline', 0);
    app.decorateReply('couponrushPrev', null);
    app.decorateReply('couponrushNext', null);
    let head: FastifyReply | null = null;
    let tail: FastifyReply | null = null;
    const arm = (reply: FastifyReply) => {
      reply.couponrushDeadline = performance.now() + timeoutMs;
      reply.couponrushPrev = tail;
      if (tail === null) head = reply;
      else tail.couponrushNext = reply;
      tail = reply;
    };
    const disarm = (r: FastifyReply) => {
      if (r.couponrushDeadline === 0) return;
      r.couponrushDeadline = 0;
      if (r.couponrushPrev === null) head = r.couponrushNext;
      else r.couponrushPrev.couponrushNext = r.couponrushNext;
      if (r.couponrushNext === null) tail = r.couponrushPrev;
      else r.couponrushNext.couponrushPrev = r.couponrushPrev;
      r.couponrushPrev = r.couponrushNext = null;
    };
    deadline = { arm, disarm };
    timers.push(
      setInterval(
        () => {
          const now = performance.now();
          while (head !== null && head.couponrushDeadline <= now) {
            const r: FastifyReply = head;
            disarm(r);
            if (r.sent) continue;
            onShed('timeout');
            void sendProblem(r, 'TIMEOUT', TIMEOUT_DETAIL);
          }
        },
        Math.min(250, Math.max(10, Math.floor(timeoutMs / 4))),
      ),
    );
    // Every route but the issue route is tracked from arrival to answer; the issue route's handler
    // arms the deadline itself once it has work to wait for (an answer it gives at once — sold
    // out, window closed — needs no deadline, and the stampede's tail is made of those).
    const armHook: onRequestHookHandler = (_request, reply, done) => {
      arm(reply);
      done();
    };
    const disarmHook: onResponseHookHandler = (_request, reply, done) => {
      disarm(reply);
      done();
    };
    app.addHook('onRoute', (route) => {
      if (route.url === ISSUE_ROUTE_URL && route.method === 'POST') return;
      route.onRequest = appendHook(route.onRequest, armHook);
      route.onResponse = appendHook(route.onResponse, disarmHook);
    });
  }
  for (const t of timers) t.unref();
  app.addHook('onClose', (_app, done) => {
    for (const t of timers) clearInterval(t);
    done();
  });
  return deadline;
}

/** Route-level hooks are undefined, one function or a list. */
function appendHook<H>(existing: H | H[] | undefined, hook: H): H[] {
  return existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook];
}

export interface IssueRateLimitOptions {
  user: RateLimit | undefined;
  ip: RateLimit | undefined;
  /** Shares the counters across instances (beyond a small local allowance, see rate-limit.ts). */
  redis?: Redis | Cluster | undefined;
  redisPrefix?: string;
  /** Authenticates the caller (throws 401). */
  authenticate: (request: FastifyRequest) => string;
  onShed: (reason: ShedReason) => void;
}

/** The issue route's caller check: the user id, or a thrown 401/429 problem. */
export type IssuerCheck = (request: FastifyRequest) => string | Promise<string>;

/**
 * Per-user and per-IP fixed-window limits on POST /coupons/:id/issues (rate-limit.ts).
 *
 * - The per-IP limit (needs only the address) is an onRequest hook on that route, when configured.
 * - The per-user limit runs inside the returned check, which the handler calls once it needs the
 *   caller: after authentication (a request without valid credentials is a 401 and counts for
 *   nobody) and after the refusals that are the same for everyone (a sold-out campaign answers
 *   410 without reading the token, so the tail of a stampede never fills the limiter). No hook
 *   and no promise per request on the hot path: the check is synchronous unless Redis has to be
 *   asked (a key past the local allowance).
 */
export function issueRateLimits(app: FastifyInstance, options: IssueRateLimitOptions): IssuerCheck {
  const { authenticate, onShed } = options;
  const shared = (kind: string) => (options.redis === undefined ? undefined : { redis: options.redis, prefix: `${options.redisPrefix ?? ''}ratelimit:${kind}:` });
  const refusal = (limiter: WindowLimiter, what: string, retryAfter: number) =>
    new HttpProblem('RATE_LIMITED', `at most ${limiter.limit.max} issue requests per ${what} per ${limiter.limit.windowMs / 1000} s`, {
      'retry-after': String(retryAfter),
    });

  if (options.ip !== undefined) {
    const byIp = new WindowLimiter(options.ip, shared('ip'));
    const settle = (v: Verdict, done: (err?: Error) => void) => {
      if (v === undefined) return done();
      onShed('rate_limited_ip');
      done(refusal(byIp, 'client address', v));
    };
    const hook: onRequestHookHandler = (request, _reply, done) => {
      const verdict = byIp.hit(request.ip);
      if (verdict instanceof Promise) verdict.then((v) => settle(v, done), () => done());
      else settle(verdict, done);
    };
    app.addHook('onRoute', (route) => {
      if (route.url !== ISSUE_ROUTE_URL || route.method !== 'POST') return;
      route.onRequest = appendHook(route.onRequest, hook);
    });
  }

  if (options.user === undefined) return authenticate;
  const byUser = new WindowLimiter(options.user, shared('user'));
  const limited = (retryAfter: number) => {
    onShed('rate_limited_user');
    return refusal(byUser, 'user', retryAfter);
  };
  return (request) => {
    const userId = authenticate(request);
    const verdict = byUser.hit(userId);
    if (verdict === undefined) return userId; // the hot path: no allocation
    if (typeof verdict === 'number') throw limited(verdict);
    return verdict.then((v) => {
      if (v === undefined) return userId;
      throw limited(v);
    });
  };
}
