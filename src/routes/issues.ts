// Issues: the hot path (POST /coupons/:id/issues) and what a user asks about their own coupons.
import type { FastifyInstance, FastifyReply } from 'fastify';
import Type, { type Static } from 'typebox';
import { couponIdOf } from '../coupons/ids.js';
import { ISSUE_ROUTE_URL } from '../coupons/paths.js';
import type { CouponService } from '../coupons/service.js';
import type { UserAuthenticator } from '../http/auth.js';
import { HttpProblem, refusalAnswer, sendAnswer } from '../http/problem.js';
import type { Deadline } from '../http/protection.js';
import { IssueHandler } from './issue-handler.js';
import { CouponIdParams, couponView, CouponView, problemRef, UserId, userSecurity } from './schemas.js';

export interface IssueRouteOptions {
  readonly service: CouponService;
  readonly requireUser: UserAuthenticator;
  /** What the issue route answers a caller (issue-handler.ts), shared with the node:http front. */
  readonly issues: IssueHandler;
  /** The issue route's request deadline (504 TIMEOUT), armed once there is something to wait for. */
  readonly deadline?: Deadline | undefined;
}

const IssueResult = Type.Object({
  couponId: Type.Integer(),
  userId: UserId,
  status: Type.Enum(['ISSUED', 'PENDING']),
});

/** The coupon a path names; an id past any coupon's is 404 like an unknown one. */
function couponId(params: Static<typeof CouponIdParams>): number {
  const id = couponIdOf(params.id);
  if (id === undefined) throw new HttpProblem('COUPON_NOT_FOUND');
  return id;
}

export async function issueRoutes(app: FastifyInstance, { service, requireUser, issues, deadline }: IssueRouteOptions): Promise<void> {
  // The hot path. Its plain requests are answered by the node:http front (issue-handler.ts); this
  // route answers the rest (a body, an encoded path) and describes the route in OpenAPI, through
  // the same `decide`. No per-request logging here.
  app.post<{ Params: Static<typeof CouponIdParams> }>(
    ISSUE_ROUTE_URL,
    {
      schema: {
        tags: ['coupons'],
        summary: 'Claim the coupon for the calling user (first come, first served)',
        description:
          '201: issued and committed. 202: admitted and durably queued, the row follows (async strategies). ' +
          'Refusals (nothing was issued; do not retry): 409 ALREADY_ISSUED (the user holds it), 410 SOLD_OUT, ' +
          '422 ISSUE_WINDOW_NOT_OPEN / ISSUE_WINDOW_CLOSED, 404 COUPON_NOT_FOUND. ' +
          'Retry after Retry-After, nothing was issued: 503 SERVICE_UNAVAILABLE (a store is away), 503 OVERLOADED, 429 RATE_LIMITED. ' +
          'Outcome unknown (the user may hold the coupon; GET /coupons/{id}/issues/me tells, and a retry never issues a second): ' +
          '503 OUTCOME_UNKNOWN (a store failed after the decisive command went out), 504 TIMEOUT. ' +
          "A closed window, and a sell-out the campaign's strategy already knows holds for every caller, are answered before the token is checked: " +
          'that answer is the same for every caller. Strategies that answer 409 to a holder after the sell-out check the token first.',
        security: userSecurity,
        params: CouponIdParams,
        response: {
          201: IssueResult,
          202: IssueResult,
          400: problemRef,
          401: problemRef,
          404: problemRef,
          409: problemRef,
          410: problemRef,
          422: problemRef,
          429: problemRef,
          503: problemRef,
          504: problemRef,
        },
      },
    },
    async (request, reply: FastifyReply) => {
      const id = couponId(request.params);
      // Sold out (known to the strategy for every caller) or outside the window: the same answer
      // for everyone, before the token is verified.
      const foregone = service.refusalForAnyone(id);
      if (foregone !== undefined) return sendAnswer(reply, refusalAnswer(foregone));
      deadline?.arm(reply);
      const span = issues.traceRequest(id, request.headers, request.socket, request.id);
      const answer = await issues.decide(id, request.headers, request.id, span === undefined ? request.log : request.log.child({ trace_id: span.spanContext().traceId }), span);
      deadline?.disarm(reply);
      // The deadline may have answered 504 TIMEOUT while we waited.
      IssueHandler.endRequestSpan(span, reply.sent ? reply.statusCode : answer.status);
      if (reply.sent) return reply;
      return sendAnswer(reply, answer);
    },
  );

  app.get<{ Params: Static<typeof CouponIdParams> }>(
    '/coupons/:id/issues/me',
    {
      schema: {
        tags: ['coupons'],
        summary: "The calling user's issue status for this coupon",
        security: userSecurity,
        params: CouponIdParams,
        description:
          'ISSUED: the row is in the database. PENDING: admitted and queued; the row follows (queued strategies). ' +
          'HELD: admitted, but the worker could not persist the issuance and set it aside for review (a dead letter); ' +
          'ask again later: an operator replays it (PENDING, then ISSUED) or discards it (404 NOT_ISSUED, and the user may issue again). ' +
          '404 NOT_ISSUED: not issued. 503 OUTCOME_UNKNOWN: admitted, but the queue has not confirmed the issuance yet; ask again after Retry-After.',
        response: {
          200: Type.Object({ status: Type.Enum(['ISSUED', 'PENDING', 'HELD'], { description: 'HELD: your coupon is held for review; ask again later' }) }),
          401: problemRef,
          404: problemRef,
          503: problemRef,
        },
      },
    },
    async (request) => {
      const userId = requireUser(request.headers);
      const status = await service.status(couponId(request.params), userId);
      if (status === 'COUPON_NOT_FOUND') throw new HttpProblem('COUPON_NOT_FOUND');
      if (status === 'NOT_ISSUED') throw new HttpProblem('NOT_ISSUED');
      if (status === 'UNKNOWN') {
        throw new HttpProblem('OUTCOME_UNKNOWN', 'the admission is held, but the queue has not confirmed the issuance yet; ask again shortly', { 'retry-after': '1' });
      }
      return { status };
    },
  );

  app.get(
    '/me/coupons',
    {
      schema: {
        tags: ['coupons'],
        summary: "The calling user's coupons",
        security: userSecurity,
        response: {
          200: Type.Object({ items: Type.Array(Type.Object({ coupon: CouponView, issuedAt: Type.String({ format: 'date-time' }) })) }),
          401: problemRef,
        },
      },
    },
    async (request) => {
      const userId = requireUser(request.headers);
      const nowMs = Date.now();
      const items = await service.userCoupons(userId);
      return { items: items.map((i) => ({ coupon: couponView(i.coupon, nowMs), issuedAt: i.issuedAt.toISOString() })) };
    },
  );
}
