// The stampede's tail, answered before the framework. Once this instance knows the answer to
// POST /coupons/:id/issues for every caller — a closed window, or a sell-out the campaign's
// strategy knows holds for everyone (`knownSoldOut`; a strategy that tells a holder 409 after the
// sell-out has none, so its callers always reach the route) — the request is answered straight
// from node:http with the refusal the route itself would send, the same status, body, content
// type and x-request-id. In a stampede of 40,000 users for 10,000 coupons that is three requests in four, and Fastify's routing, request and
// reply objects and hooks were a quarter of what such a request cost (docs/performance.md).
//
// Only the plainest request takes this path: a POST on exactly /coupons/<id>/issues (a query
// string allowed) with no body and no Content-Type, while the app is not closing. Anything else —
// a body, an encoded path, an unknown or open campaign — goes to Fastify as before, so every
// answer that depends on the request (400, 413, 415, 401, 404, 429) still comes from the route.
// The route's own metrics see these responses (couponrush_http_responses_total and the issue
// latency histogram), and couponrush_issue_answered_early_total counts them.
//
// Off when RATE_LIMIT_IP is set: the per-IP limit counts every request in Fastify's hooks. Load
// shedding does not apply to these answers: a 410 costs less than the 503 would.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { FastifyServerFactory } from 'fastify';
import { COUPON_ID_DIGITS, couponIdOf } from '../coupons/ids.js';
import type { CouponService } from '../coupons/service.js';
import type { Cell } from '../metrics/cells.js';
import type { RouteRecorder } from '../metrics/index.js';
import { refusalAnswer } from './problem.js';
import { REQUEST_ID_HEADER, requestId } from './protection.js';

/** ISSUE_ROUTE_URL as a path: /coupons/<id>/issues, the id as the route's params schema allows it. */
const ISSUE_PATH = new RegExp(`^/coupons/(${COUPON_ID_DIGITS})/issues(?:\\?|$)`);

export interface EarlyAnswerOptions {
  readonly service: Pick<CouponService, 'refusalForAnyone'>;
  /** The issue route's recorder (status and latency), as its onResponse hook uses it. */
  readonly record: RouteRecorder;
  /** Counts the requests answered here. */
  readonly answered: Cell;
}

export interface EarlyAnswers {
  /** Fastify's `serverFactory`: the HTTP/1 server Fastify would create, with this in front of it. */
  readonly serverFactory: FastifyServerFactory;
  /** From now on every request goes to Fastify (the request guard answers 503 while closing). */
  stop(): void;
}

export function earlyAnswers({ service, record, answered }: EarlyAnswerOptions): EarlyAnswers {
  let active = true;

  /** Answers the request and returns true, or returns false and leaves it untouched. */
  const answer = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (!active || req.method !== 'POST') return false;
    const headers = req.headers;
    if (headers['content-type'] !== undefined || headers['transfer-encoding'] !== undefined) return false;
    const length = headers['content-length'];
    if (length !== undefined && length !== '0') return false;
    const match = ISSUE_PATH.exec(req.url ?? '');
    if (match === null) return false;
    const id = couponIdOf(match[1]!);
    if (id === undefined) return false;
    const startedAt = performance.now();
    const refusal = service.refusalForAnyone(id);
    if (refusal === undefined) return false;
    const { status, body } = refusalAnswer(refusal);
    res.writeHead(status, {
      [REQUEST_ID_HEADER]: requestId(req),
      'content-type': PROBLEM_JSON_UTF8,
      'content-length': body.length,
    });
    res.end(body);
    answered.n++;
    record(status, (performance.now() - startedAt) / 1000);
    return true;
  };

  const serverFactory: FastifyServerFactory = (handler, fastifyOptions) => {
    // What Fastify does for HTTP/1 without a factory (lib/server.js), with `answer` in front.
    const options = fastifyOptions as unknown as ServerOptions;
    const server = http.createServer(options.http ?? {}, (req, res) => {
      if (!answer(req, res)) handler(req, res);
    });
    server.keepAliveTimeout = options.keepAliveTimeout;
    server.requestTimeout = options.requestTimeout;
    server.setTimeout(options.connectionTimeout);
    if (options.maxRequestsPerSocket > 0) server.maxRequestsPerSocket = options.maxRequestsPerSocket;
    return server;
  };

  return {
    serverFactory,
    stop: () => {
      active = false;
    },
  };
}

const PROBLEM_JSON_UTF8 = 'application/problem+json; charset=utf-8';

/** The part of Fastify's options (defaults applied) that shapes its HTTP/1 server. */
interface ServerOptions {
  readonly http?: http.ServerOptions;
  readonly keepAliveTimeout: number;
  readonly requestTimeout: number;
  readonly connectionTimeout: number;
  readonly maxRequestsPerSocket: number;
}
