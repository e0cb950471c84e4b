// Guards in front of the domain: request ids, load shedding, and the issue route's rate limits
// (counters in rate-limit.ts).
// Each refusal is a problem+json with Retry-After; what is shed is reported through `onShed`
// (metrics), never logged per request.
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, onRequestHookHandler, onResponseHookHandler } from 'fastify';
import type { Cluster, Redis } from 'ioredis';
import type { RateLimit } from '../config.js';
import { ISSUE_ROUTE_URL } from '../coupons/paths.js';
import type { ShedReason } from '../metrics/index.js';
import { HttpProblem, problemAnswer, sendAnswer, type Answer } from './problem.js';
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
  interface FastifyReply extends DeadlineNode<FastifyReply> {}
}

const TIMEOUT_DETAIL = 'the outcome is unknown; GET /coupons/{id}/issues/me tells whether the coupon was issued';
/** 504 TIMEOUT: the request's work may still complete (an issue may still be recorded). */
export const TIMEOUT_ANSWER = problemAnswer('TIMEOUT', TIMEOUT_DETAIL);
/** Routes that must answer while the process sheds load: probes and scrapes. */
const NEVER_SHED = new Set(['/healthz', '/readyz', '/metrics']);
/** How often the event loop's delay is judged; a shed client should wait about two of these. */
const LOAD_SAMPLE_MS = 1_000;
const OVERLOAD_RETRY_AFTER_S = 2;
/** Resolution of the event-loop delay histogram; its mean is taken net of it. */
const LOOP_RESOLUTION_MS = 10;
const CLOSING_ANSWER = problemAnswer('SERVICE_UNAVAILABLE', 'this instance is shutting down; nothing was done', { 'retry-after': '1' });

/**
 * Whether every request is refused at once, and why, shared by Fastify's hooks and the issue
 * route's node:http front:
 *
 * - load shedding: while the event loop's mean delay over the last second is above
 *   `maxEventLoopDelayMs` (0 = off), 503 OVERLOADED with Retry-After at once instead of queueing
 *   more work behind it;
 * - while the app closes, 503 SERVICE_UNAVAILABLE (nothing done).
 *
 * `refusal` is undefined, or the answer every request gets now: one read per request.
 */
export class LoadGuard {
  refusal: Answer | undefined;
  /** The app is closing: `refusal` is the drain's 503 from now on. */
  closed = false;
  private readonly overloaded: Answer;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly delay: IntervalHistogram | undefined;

  constructor(
    readonly maxEventLoopDelayMs: number,
    private readonly onShed: (reason: ShedReason) => void,
  ) {
    this.overloaded = problemAnswer('OVERLOADED', `event loop delay above ${maxEventLoopDelayMs} ms`, { 'retry-after': String(OVERLOAD_RETRY_AFTER_S) });
    if (maxEventLoopDelayMs <= 0) return;
    const delay = (this.delay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS }));
    delay.enable();
    this.timer = setInterval(() => {
      // No sample at all means the loop was blocked for the whole interval.
      const meanMs = delay.count === 0 ? Infinity : delay.mean / 1e6 - LOOP_RESOLUTION_MS;
      if (!this.closed) this.refusal = meanMs > maxEventLoopDelayMs ? this.overloaded : undefined;
      delay.reset();
    }, LOAD_SAMPLE_MS);
    this.timer.unref();
  }

  /**
   * The refusal to send now, counted when it sheds load; undefined: go on. `exempt`: a probe or
   * a scrape, never shed (but refused while closing). Callers read `refusal` first: when it is
   * undefined, as nearly always, this is not called.
   */
  refuse(exempt = false): Answer | undefined {
    const refusal = this.refusal;
    if (refusal !== this.overloaded) return refusal;
    if (exempt) return undefined;
    this.onShed('overloaded');
    return refusal;
  }

  /** From now on every request is refused as the instance closes. */
  closing(): void {
    this.closed = true;
    this.refusal = CLOSING_ANSWER;
  }

  stop(): void {
    clearInterval(this.timer);
    this.delay?.disable();
  }
}

/** The links a request's deadline keeps in the list of requests in flight (on the object itself). */
export interface DeadlineNode<T> {
  /** performance.now() by which the request must be answered; 0 = not tracked. */
  couponrushDeadline: number;
  couponrushPrev: T | null;
  couponrushNext: T | null;
}

/**
 * Request timeouts: a request still unanswered after `timeoutMs` gets 504 TIMEOUT — not 503,
 * because its work may still complete (an issue may still be recorded). The requests in flight
 * form a list in the order they were armed, linked through the requests' own objects (a Fastify
 * reply, the issue front's pending request); one sweep every few hundred ms hands the expired
 * ones from the head to `expire`. The answer comes between timeoutMs and timeoutMs + one sweep
 * interval. A handler that armed a deadline must not answer once `expire` has.
 *
 * Why not @fastify/under-pressure and Fastify's handlerTimeout: measured on the issue route under
 * the bench's stampede, the first builds a route-options object per request and the second arms a
 * timer, an AbortController and a listener per request (~2.5%); here a request costs a few
 * pointer writes, and an issue refused at once (the stampede's tail) not even those.
 */
export class Deadlines<T extends DeadlineNode<T>> {
  private head: T | null = null;
  private tail: T | null = null;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly timeoutMs: number,
    expire: (request: T) => void,
  ) {
    this.timer = setInterval(
      () => {
        const now = performance.now();
        while (this.head !== null && this.head.couponrushDeadline <= now) {
          const r: T = this.head;
          this.disarm(r);
          expire(r);
        }
      },
      Math.min(250, Math.max(10, Math.floor(timeoutMs / 4))),
    );
    this.timer.unref();
  }

  /** From now, the request is expired unless disarmed within the timeout. */
  arm(r: T): void {
    r.couponrushDeadline = performance.now() + this.timeoutMs;
    r.couponrushPrev = this.tail;
    if (this.tail === null) this.head = r;
    else this.tail.couponrushNext = r;
    this.tail = r;
  }

  /** Answered (or about to be): stop tracking. Safe to call when not armed. */
  disarm(r: T): void {
    if (r.couponrushDeadline === 0) return;
    r.couponrushDeadline = 0;
    if (r.couponrushPrev === null) this.head = r.couponrushNext;
    else r.couponrushPrev.couponrushNext = r.couponrushNext;
    if (r.couponrushNext === null) this.tail = r.couponrushPrev;
    else r.couponrushNext.couponrushPrev = r.couponrushPrev;
    r.couponrushPrev = r.couponrushNext = null;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Fastify's request deadlines, which the issue route's handler arms itself; undefined when timeouts are off. */
export type Deadline = Deadlines<FastifyReply>;

export interface RequestGuardOptions {
  /** REQUEST_TIMEOUT_MS: 504 TIMEOUT past it; 0 = off. */
  timeoutMs: number;
  /** Load shedding and the drain's refusal (shared with the issue route's front). */
  load: LoadGuard;
  onShed: (reason: ShedReason) => void;
}

/**
 * One app-level onRequest hook for every request, plus deadline hooks on every route but the
 * issue route (whose handler arms its deadline itself, see `Deadline`):
 *
 * - echoes the request id, so a client or nginx can quote it;
 * - the load guard's refusals (probes and scrapes are never shed, see LoadGuard); a request that
 *   reaches a closing app (a keep-alive connection during the drain) is refused here rather than
 *   by Fastify (app.ts turns return503OnClosing off), so that it is a problem too;
 * - request timeouts (Deadlines).
 */
export function requestGuards(app: FastifyInstance, { timeoutMs, load, onShed }: RequestGuardOptions): Deadline | undefined {
  app.addHook('preClose', (done) => {
    load.closing();
    done();
  });
  app.addHook('onClose', (_app, done) => {
    load.stop();
    done();
  });

  // Request id echo, load shedding and the drain's refusal, for every request.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header(REQUEST_ID_HEADER, request.id);
    if (load.refusal !== undefined) {
      const refusal = load.refuse(NEVER_SHED.has(request.routeOptions.url ?? ''));
      if (refusal !== undefined) {
        void sendAnswer(reply, refusal);
        return; // answered: the rest of the lifecycle is skipped
      }
    }
    done();
  });

  if (timeoutMs <= 0) return undefined;
  app.decorateReply('couponrushDeadline', 0);
  app.decorateReply('couponrushPrev', null);
  app.decorateReply('couponrushNext', null);
  const deadline: Deadline = new Deadlines<FastifyReply>(timeoutMs, (r) => {
    if (r.sent) return;
    onShed('timeout');
    void sendAnswer(r, TIMEOUT_ANSWER);
  });
  app.addHook('onClose', (_app, done) => {
    deadline.stop();
    done();
  });
  // Every route but the issue route is tracked from arrival to answer; the issue route's handler
  // arms the deadline itself once it has work to wait for (an answer it gives at once — sold
  // out, window closed — needs no deadline, and the stampede's tail is made of those).
  const armHook: onRequestHookHandler = (_request, reply, done) => {
    deadline.arm(reply);
    done();
  };
  const disarmHook: onResponseHookHandler = (_request, reply, done) => {
    deadline.disarm(reply);
    done();
  };
  app.addHook('onRoute', (route) => {
    if (route.url === ISSUE_ROUTE_URL && route.method === 'POST') return;
    route.onRequest = appendHook(route.onRequest, armHook);
    route.onResponse = appendHook(route.onResponse, disarmHook);
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
  /** Authenticates the caller from the request's headers (throws 401). */
  authenticate: (headers: IncomingHttpHeaders) => string;
  onShed: (reason: ShedReason) => void;
}

/** The issue route's caller check: the user id, or a thrown 401/429 problem. */
export type IssuerCheck = (headers: IncomingHttpHeaders) => string | Promise<string>;

/** The per-address check: undefined (go on) or the 429 to answer; a promise only when Redis is asked. */
type AddressCheck = (ip: string) => HttpProblem | undefined | Promise<HttpProblem | undefined>;

export interface IssueLimits {
  /** RATE_LIMIT_IP: counts every issue request, before anything else is decided; undefined when off. */
  readonly byAddress: AddressCheck | undefined;
  /** Authentication and RATE_LIMIT_USER. */
  readonly issuer: IssuerCheck;
}

/**
 * Per-user and per-IP fixed-window limits on POST /coupons/:id/issues (rate-limit.ts), one set of
 * counters for both ways in (Fastify's route and the node:http front, routes/issue-handler.ts).
 *
 * - The per-IP limit needs only the address: it runs first, on every request to the route.
 * - The per-user limit runs inside the issuer check, which the handler calls once it needs the
 *   caller: after authentication (a request without valid credentials is a 401 and counts for
 *   nobody) and after the refusals that are the same for everyone (a sold-out campaign answers
 *   410 without reading the token, so the tail of a stampede never fills the limiter). No promise
 *   per request on the hot path: the check is synchronous unless Redis has to be asked (a key
 *   past the local allowance).
 */
export function issueLimits(options: IssueRateLimitOptions): IssueLimits {
  const { authenticate, onShed } = options;
  const shared = (kind: string) => (options.redis === undefined ? undefined : { redis: options.redis, prefix: `${options.redisPrefix ?? ''}ratelimit:${kind}:` });
  const refusal = (limiter: WindowLimiter, what: string, retryAfter: number) =>
    new HttpProblem('RATE_LIMITED', `at most ${limiter.limit.max} issue requests per ${what} per ${limiter.limit.windowMs / 1000} s`, {
      'retry-after': String(retryAfter),
    });

  let byAddress: AddressCheck | undefined;
  if (options.ip !== undefined) {
    const byIp = new WindowLimiter(options.ip, shared('ip'));
    const settle = (v: Verdict) => {
      if (v === undefined) return undefined;
      onShed('rate_limited_ip');
      return refusal(byIp, 'client address', v);
    };
    byAddress = (ip) => {
      const verdict = byIp.hit(ip);
      return verdict instanceof Promise ? verdict.then(settle, () => undefined) : settle(verdict);
    };
  }

  if (options.user === undefined) return { byAddress, issuer: authenticate };
  const byUser = new WindowLimiter(options.user, shared('user'));
  const limited = (retryAfter: number) => {
    onShed('rate_limited_user');
    return refusal(byUser, 'user', retryAfter);
  };
  const issuer: IssuerCheck = (headers) => {
    const userId = authenticate(headers);
    const verdict = byUser.hit(userId);
    if (verdict === undefined) return userId; // the hot path: no allocation
    if (typeof verdict === 'number') throw limited(verdict);
    return verdict.then((v) => {
      if (v === undefined) return userId;
      throw limited(v);
    });
  };
  return { byAddress, issuer };
}

/** The per-IP limit on Fastify's issue route: an onRequest hook (call before the route is added). */
export function limitIssueRouteByAddress(app: FastifyInstance, byAddress: AddressCheck): void {
  const hook: onRequestHookHandler = (request, _reply, done) => {
    const refused = byAddress(request.ip);
    if (refused instanceof Promise) refused.then((r) => done(r), done);
    else done(refused);
  };
  app.addHook('onRoute', (route) => {
    if (route.url !== ISSUE_ROUTE_URL || route.method !== 'POST') return;
    route.onRequest = appendHook(route.onRequest, hook);
  });
}
