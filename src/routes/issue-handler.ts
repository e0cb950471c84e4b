// The issue route, POST /coupons/:id/issues — the one route that takes the stampede — decided in
// one place and served close to the bare server.
//
// `decide` is what the route answers a caller: authenticate, count the caller against the per-user
// limit, issue, and turn the outcome (or an error) into a whole `Answer`. Both ways into the route
// call it: Fastify's route (routes/issues.ts, which also describes the route in OpenAPI) and the
// node:http front below, so both send the same bytes.
//
// The front (`serve`) answers the plain request — a POST on exactly /coupons/<id>/issues (a query
// string allowed), no body, no Content-Type — straight from node:http, without Fastify's routing,
// request and reply objects and hooks: an admission went from 49 to 43 µs of API CPU
// (docs/performance.md, "The issue route in front of Fastify"). It keeps the route's whole contract:
// the request id, the drain's 503 and load shedding (LoadGuard), RATE_LIMIT_IP (by the address
// TRUST_PROXY makes of the request, as Fastify does), the answers that are the same for every caller
// before the token is read (a closed window, a known sell-out: counted in
// couponrush_issue_answered_early_total), the request deadline (504 TIMEOUT), and the route's
// metrics. Anything else — a body (400/413/415 are the body parser's), an encoded path, an id
// the params schema refuses, another method — is left to Fastify, which answers it through the same
// `decide`. Order, as in Fastify's lifecycle: closing, per-IP limit, foregone refusal, shedding (a
// 410 costs less than the 503 would, so a foregone refusal is never shed), deadline, `decide`.
//
// With tracing on (src/tracing/tracing.ts), a request that reaches `decide` gets a span, ended with
// the status the caller got; its `traceparent` header is honoured only from a TRUST_PROXY address
// (anyone else could force the sampling of their requests). The answers given before `decide` —
// the drain's 503, the per-address 429, a foregone refusal, load shedding — get no span: they cost
// less than a span would, and they are counted by the route's metrics all the same.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import proxyAddr from '@fastify/proxy-addr';
import type { FastifyServerFactory } from 'fastify';
import type { TrustProxy } from '../config.js';
import { COUPON_ID_DIGITS, couponIdOf } from '../coupons/ids.js';
import type { CouponService } from '../coupons/service.js';
import { answerForError, answerForProblem, jsonAnswer, OUTCOME_UNKNOWN_ANSWER, refusalAnswer, type Answer, type ErrorLog } from '../http/problem.js';
import { Deadlines, REQUEST_ID_HEADER, requestId, TIMEOUT_ANSWER, type DeadlineNode, type IssueLimits, type LoadGuard } from '../http/protection.js';
import type { Cell } from '../metrics/cells.js';
import type { RouteRecorder, ShedReason } from '../metrics/index.js';
import { ATTR, endSpan, KIND, STATUS_ERROR, type Span, type Tracing } from '../tracing/tracing.js';

/** ISSUE_ROUTE_URL as a path: /coupons/<id>/issues, the id as the route's params schema allows it. */
const ISSUE_PATH = new RegExp(`^/coupons/(${COUPON_ID_DIGITS})/issues(?:\\?|$)`);

/** The route as the request span names it (OpenTelemetry's `http.route`). */
const SPAN_ROUTE = '/coupons/{id}/issues';
const SPAN_NAME = `POST ${SPAN_ROUTE}`;
const SERVER_SPAN = { kind: KIND.server } as const;

/** An id past any coupon's: answered like an unknown coupon. */
const NO_SUCH_COUPON = refusalAnswer({ kind: 'COUPON_NOT_FOUND' });

export interface IssueHandlerOptions {
  readonly service: Pick<CouponService, 'refusalForAnyone' | 'issue'>;
  readonly limits: IssueLimits;
  readonly load: LoadGuard;
  /** REQUEST_TIMEOUT_MS; 0 = off. */
  readonly timeoutMs: number;
  readonly onShed: (reason: ShedReason) => void;
  /** The route's recorder (status and latency), as Fastify's onResponse hook uses it. */
  readonly record: RouteRecorder;
  /** Counts the answers given before the token is read (foregone refusals). */
  readonly answeredEarly: Cell;
  readonly trustProxy: TrustProxy | undefined;
  /** Errors the front answers (500s, stores away) are logged here, with the request id. */
  readonly log: ErrorLog & { child(bindings: { reqId: string; trace_id?: string }): ErrorLog };
  /** Present when tracing is on. */
  readonly tracing?: Tracing | undefined;
}

/** A request the front is waiting on: the node of its deadline. */
class Pending implements DeadlineNode<Pending> {
  couponrushDeadline = 0;
  couponrushPrev: Pending | null = null;
  couponrushNext: Pending | null = null;

  constructor(
    readonly res: ServerResponse,
    readonly requestId: string,
    readonly startedAt: number,
  ) {}
}

export class IssueHandler {
  private readonly deadlines: Deadlines<Pending> | undefined;
  private readonly addressOf: (req: IncomingMessage) => string;
  /** Whether the TCP peer is one of TRUST_PROXY's proxies (whose `traceparent` is honoured). */
  private readonly trustedPeer: (socket: Socket | null) => boolean;

  constructor(private readonly options: IssueHandlerOptions) {
    const { timeoutMs, trustProxy } = options;
    this.deadlines =
      timeoutMs > 0
        ? new Deadlines<Pending>(timeoutMs, (p) => {
            if (p.res.headersSent) return;
            options.onShed('timeout');
            this.send(p.res, p.requestId, TIMEOUT_ANSWER, p.startedAt);
          })
        : undefined;
    // Fastify's request.ip, for the same TRUST_PROXY (a comma-separated list of proxies).
    const trust = typeof trustProxy === 'string' ? proxyAddr.compile(trustProxy.split(',').map((p) => p.trim())) : undefined;
    this.addressOf = trust === undefined ? (req) => req.socket.remoteAddress ?? '' : (req) => proxyAddr(req, trust);
    this.trustedPeer = trust === undefined ? () => false : (socket) => socket !== null && trust(socket.remoteAddress ?? '', 0);
  }

  /**
   * The request's span when tracing is on: a child of the caller's `traceparent` when the TCP
   * peer is a TRUST_PROXY proxy, else the root of a new trace. The peer's address is read only
   * when there is a traceparent to judge (most requests carry none).
   */
  traceRequest(id: number, headers: IncomingHttpHeaders, socket: Socket | null, reqId: string): Span | undefined {
    const tracing = this.options.tracing;
    if (tracing === undefined) return undefined;
    const header = headers.traceparent;
    const traceparent = typeof header === 'string' && this.trustedPeer(socket) ? header : undefined;
    // Attributes only for a sampled request: the others cost one sampling decision.
    const span = tracing.start(SPAN_NAME, traceparent, SERVER_SPAN);
    span?.setAttributes({ 'http.request.method': 'POST', 'http.route': SPAN_ROUTE, [ATTR.requestId]: reqId, [ATTR.couponId]: id });
    return span;
  }

  /** Ends a request's span with the status the caller got. */
  static endRequestSpan(span: Span | undefined, status: number): void {
    if (span === undefined) return;
    span.setAttribute('http.response.status_code', status);
    if (status >= 500) span.setStatus({ code: STATUS_ERROR });
    endSpan(span);
  }

  /**
   * What the route answers a caller of coupon `id`, once the refusals that are the same for
   * everyone are behind: authenticate (401), the per-user limit (429), the issue itself.
   */
  async decide(id: number, headers: IncomingHttpHeaders, reqId: string, log?: ErrorLog, span?: Span): Promise<Answer> {
    try {
      const caller = this.options.limits.issuer(headers);
      const userId = typeof caller === 'string' ? caller : await caller;
      span?.setAttribute(ATTR.userId, userId);
      // The request id (and the trace) travel into the queued issuance (async strategies): logs
      // and traces can follow one claim.
      const outcome = await this.options.service.issue(id, userId, reqId, span);
      switch (outcome.kind) {
        // A user id is [A-Za-z0-9._:-] (USER_ID_PATTERN): nothing in it needs escaping.
        case 'ISSUED':
          return jsonAnswer(201, `{"couponId":${id},"userId":"${userId}","status":"ISSUED"}`);
        case 'ACCEPTED':
          return jsonAnswer(202, `{"couponId":${id},"userId":"${userId}","status":"PENDING"}`);
        case 'OUTCOME_UNKNOWN':
          return OUTCOME_UNKNOWN_ANSWER;
        default:
          return refusalAnswer(outcome);
      }
    } catch (err) {
      return answerForError(err, log ?? this.options.log.child(span === undefined ? { reqId } : { reqId, trace_id: span.spanContext().traceId }));
    }
  }

  /** The node:http front: answers the request and returns true, or returns false and leaves it untouched. */
  serve(req: IncomingMessage, res: ServerResponse): boolean {
    if (req.method !== 'POST') return false;
    const headers = req.headers;
    if (headers['content-type'] !== undefined || headers['transfer-encoding'] !== undefined) return false;
    const length = headers['content-length'];
    if (length !== undefined && length !== '0') return false;
    const match = ISSUE_PATH.exec(req.url ?? '');
    if (match === null) return false;
    const startedAt = performance.now();
    const reqId = requestId(req);
    const { load, limits } = this.options;
    if (load.refusal !== undefined && load.closed) {
      this.send(res, reqId, load.refusal, startedAt);
      return true;
    }
    const digits = match[1]!;
    const refused = limits.byAddress?.(this.addressOf(req));
    if (refused instanceof Promise) {
      void refused.then((r) => (r === undefined ? this.route(digits, headers, res, reqId, startedAt) : this.send(res, reqId, answerForProblem(r), startedAt)));
    } else if (refused !== undefined) this.send(res, reqId, answerForProblem(refused), startedAt);
    else void this.route(digits, headers, res, reqId, startedAt);
    return true;
  }

  /** Fastify's `serverFactory`: the HTTP/1 server Fastify would create, with the front before `fastify`. */
  readonly serverFactory: FastifyServerFactory = (fastify, fastifyOptions) => {
    // What Fastify does for HTTP/1 without a factory (lib/server.js), with `serve` in front.
    const options = fastifyOptions as unknown as ServerOptions;
    const server = http.createServer(options.http ?? {}, (req, res) => {
      if (!this.serve(req, res)) fastify(req, res);
    });
    server.keepAliveTimeout = options.keepAliveTimeout;
    server.requestTimeout = options.requestTimeout;
    server.setTimeout(options.connectionTimeout);
    if (options.maxRequestsPerSocket > 0) server.maxRequestsPerSocket = options.maxRequestsPerSocket;
    return server;
  };

  /** The app has closed: no deadline is swept any more. */
  stop(): void {
    this.deadlines?.stop();
  }

  private async route(digits: string, headers: IncomingHttpHeaders, res: ServerResponse, reqId: string, startedAt: number): Promise<void> {
    try {
      await this.answer(digits, headers, res, reqId, startedAt);
    } catch (err) {
      // `decide` answers every error of the issue itself; this is a defect of the front's own.
      if (!res.headersSent) this.send(res, reqId, answerForError(err, this.options.log.child({ reqId })), startedAt);
    }
  }

  private async answer(digits: string, headers: IncomingHttpHeaders, res: ServerResponse, reqId: string, startedAt: number): Promise<void> {
    const id = couponIdOf(digits);
    if (id === undefined) return this.send(res, reqId, NO_SUCH_COUPON, startedAt);
    // Sold out (known to the strategy for every caller) or outside the window: the same answer
    // for everyone, so it comes before the token is verified — the tail of a stampede costs
    // almost nothing.
    const foregone = this.options.service.refusalForAnyone(id);
    if (foregone !== undefined) {
      this.options.answeredEarly.n++;
      return this.send(res, reqId, refusalAnswer(foregone), startedAt);
    }
    const { load } = this.options;
    if (load.refusal !== undefined) {
      const shed = load.refuse();
      if (shed !== undefined) return this.send(res, reqId, shed, startedAt);
    }
    const span = this.options.tracing === undefined ? undefined : this.traceRequest(id, headers, res.socket, reqId);
    const deadlines = this.deadlines;
    if (deadlines === undefined) {
      this.send(res, reqId, await this.decide(id, headers, reqId, undefined, span), startedAt);
    } else {
      const pending = new Pending(res, reqId, startedAt);
      deadlines.arm(pending);
      const answer = await this.decide(id, headers, reqId, undefined, span);
      deadlines.disarm(pending);
      if (!res.headersSent) this.send(res, reqId, answer, startedAt); // else the deadline answered 504 while we waited
    }
    IssueHandler.endRequestSpan(span, res.statusCode);
  }

  /** One writeHead and one end: node:http sends the head and the body in one write. */
  private send(res: ServerResponse, reqId: string, answer: Answer, startedAt: number): void {
    res.writeHead(
      answer.status,
      answer.headers === undefined
        ? { [REQUEST_ID_HEADER]: reqId, 'content-type': answer.contentType, 'content-length': answer.length }
        : { [REQUEST_ID_HEADER]: reqId, ...answer.headers, 'content-type': answer.contentType, 'content-length': answer.length },
    );
    res.end(answer.body);
    this.options.record(answer.status, (performance.now() - startedAt) / 1000);
  }
}

/** The part of Fastify's options (defaults applied) that shapes its HTTP/1 server. */
interface ServerOptions {
  readonly http?: http.ServerOptions;
  readonly keepAliveTimeout: number;
  readonly requestTimeout: number;
  readonly connectionTimeout: number;
  readonly maxRequestsPerSocket: number;
}
