// The stampede's tail without the framework. Once a campaign's answer is the same for every caller
// (CouponService.refusalForAnyone: a sell-out redis-lua-async-cached already knows of, a closed
// window), the rest of a stampede is thousands of identical `POST /coupons/:id/issues` that all get
// the same prebuilt problem body. This request listener answers those before Fastify builds its
// request, reply, hooks and response listeners for them: same status, body, content type and
// x-request-id as the Fastify route, counted in the same metrics, for about a third of the CPU
// (measured: docs/performance.md). Everything else — another path or method, a body, a query
// string, a campaign still open, a server that is closing — goes to Fastify untouched.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CouponService } from '../coupons/service.js';
import { fixedRefusal, PROBLEM_CONTENT_TYPE } from './problem.js';
import { REQUEST_ID_HEADER, requestId } from './protection.js';

/** As Fastify's reply.type() sends it for a string body. */
const CONTENT_TYPE = `${PROBLEM_CONTENT_TYPE}; charset=utf-8`;
/** The issue route's canonical form only (the Fastify route validates ids the same way). */
const ISSUE_PATH = /^\/coupons\/([1-9][0-9]{0,9})\/issues$/;

export interface RefusalShortcutOptions {
  service: CouponService;
  /** The issue route's metrics (status and latency), the cells the Fastify route counts in too. */
  record: (statusCode: number, seconds: number) => void;
  /** True once the server drains: Fastify then answers 503 with `connection: close`. */
  closing: () => boolean;
}

/** Returns true when it answered the request. */
export type RequestShortcut = (req: IncomingMessage, res: ServerResponse) => boolean;

export function refusalShortcut({ service, record, closing }: RefusalShortcutOptions): RequestShortcut {
  return (req, res) => {
    if (req.method !== 'POST' || req.headers['transfer-encoding'] !== undefined) return false;
    const length = req.headers['content-length'];
    if (length !== undefined && length !== '0') return false;
    const match = ISSUE_PATH.exec(req.url ?? '');
    if (match === null || closing()) return false;
    const startedAt = performance.now();
    const outcome = service.refusalForAnyone(Number(match[1]));
    if (outcome === undefined || outcome.kind === 'UNAVAILABLE') return false;
    const { status, json } = fixedRefusal(outcome.kind);
    res.writeHead(status, {
      'content-type': CONTENT_TYPE,
      'content-length': Buffer.byteLength(json),
      [REQUEST_ID_HEADER]: requestId(req),
    });
    res.end(json);
    record(status, (performance.now() - startedAt) / 1000);
    return true;
  };
}
