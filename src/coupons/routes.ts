// HTTP routes of the coupon domain: campaign admin, campaign reads, and the issue hot path.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import Type, { type Static } from 'typebox';
import { HttpProblem, sendOutcomeUnknown, sendRefusal } from '../http/problem.js';
import type { Deadline, IssuerCheck } from '../http/protection.js';
import { CAMPAIGN_STATUSES, campaignStatus, MAX_COUPON_ID, MAX_TOTAL_QUANTITY, remainingStock, USER_ID_PATTERN, type CouponWithStock } from './domain.js';
import { ISSUE_ROUTE_URL } from './paths.js';
import type { CouponService } from './service.js';
import { STRATEGY_NAMES, strategyModules } from './strategies/index.js';


export interface CouponRouteOptions {
  service: CouponService;
  requireUser: (request: FastifyRequest) => string;
  /** The issue route's caller: authenticated (401) and within the per-user rate limit (429). */
  requireIssuer: IssuerCheck;
  /** The issue route's request deadline (504 TIMEOUT), armed once there is something to wait for. */
  deadline?: Deadline | undefined;
  requireAdmin: (request: FastifyRequest) => void;
}

const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String(),
    detail: Type.Optional(Type.String()),
    errors: Type.Optional(
      Type.Array(Type.Object({ pointer: Type.String({ description: 'JSON pointer into the request body, e.g. #/totalQuantity' }), detail: Type.String() }), {
        description: 'VALIDATION_FAILED and STRATEGY_UNAVAILABLE: the field at fault',
      }),
    ),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details (application/problem+json)' },
);
const problemRef = Type.Ref('Problem');

const CreateCouponBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200 }),
    totalQuantity: Type.Integer({ minimum: 1, maximum: MAX_TOTAL_QUANTITY }),
    issueStartsAt: Type.String({ format: 'date-time' }),
    issueEndsAt: Type.String({ format: 'date-time', description: 'exclusive; must be after issueStartsAt' }),
    strategy: Type.Optional(
      Type.Enum(STRATEGY_NAMES, {
        description: `defaults to the server's DEFAULT_STRATEGY. ${STRATEGY_NAMES.map((n) => `${n}: ${strategyModules[n].summary}.`).join(' ')}`,
      }),
    ),
    discountType: Type.Optional(Type.Enum(['AMOUNT', 'PERCENT'])),
    discountValue: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000_000 })),
    minOrderAmount: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000_000 })),
  },
  { additionalProperties: false },
);

const CouponView = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  totalQuantity: Type.Integer(),
  issuedCount: Type.Integer({ description: 'rows committed to the database' }),
  remaining: Type.Integer({
    description: 'stock not yet admitted: with the Redis strategies admissions run ahead of the rows (issuedCount catches up as the worker persists)',
  }),
  issueStartsAt: Type.String({ format: 'date-time' }),
  issueEndsAt: Type.String({ format: 'date-time' }),
  status: Type.Enum(CAMPAIGN_STATUSES, {
    description: 'UPCOMING before the window; OPEN while stock is left; SOLD_OUT once admissions reached the stock; ENDED after the window',
  }),
  strategy: Type.String(),
  discountType: Type.Union([Type.Enum(['AMOUNT', 'PERCENT']), Type.Null()]),
  discountValue: Type.Union([Type.Integer(), Type.Null()]),
  minOrderAmount: Type.Union([Type.Integer(), Type.Null()]),
});

const IdParams = Type.Object({ id: Type.String({ pattern: '^[1-9][0-9]{0,9}$', description: 'coupon id' }) });

const IssueResult = Type.Object({
  couponId: Type.Integer(),
  userId: Type.String({ pattern: USER_ID_PATTERN.source }),
  status: Type.Enum(['ISSUED', 'PENDING']),
});

const userSecurity: Array<Record<string, string[]>> = [{ bearerAuth: [] }, { userIdHeader: [] }];
const adminSecurity: Array<Record<string, string[]>> = [{ bearerAuth: [] }];

function couponId(params: Static<typeof IdParams>): number {
  const id = Number(params.id);
  if (id > MAX_COUPON_ID) throw new HttpProblem(404, 'COUPON_NOT_FOUND');
  return id;
}

function view(c: CouponWithStock, nowMs = Date.now()): Static<typeof CouponView> {
  return {
    id: c.id,
    name: c.name,
    totalQuantity: c.totalQuantity,
    issuedCount: c.issuedCount,
    remaining: remainingStock(c),
    issueStartsAt: c.issueStartsAt.toISOString(),
    issueEndsAt: c.issueEndsAt.toISOString(),
    status: campaignStatus(c, nowMs),
    strategy: c.strategy,
    discountType: c.discountType,
    discountValue: c.discountValue,
    minOrderAmount: c.minOrderAmount,
  };
}

export async function couponRoutes(app: FastifyInstance, { service, requireUser, requireIssuer, deadline, requireAdmin }: CouponRouteOptions): Promise<void> {
  app.addSchema(Problem);

  const adminOnly = async (request: FastifyRequest) => requireAdmin(request);

  app.post<{ Body: Static<typeof CreateCouponBody> }>(
    '/admin/coupons',
    {
      onRequest: adminOnly,
      schema: {
        tags: ['admin'],
        summary: 'Create a campaign',
        security: adminSecurity,
        body: CreateCouponBody,
        response: { 201: CouponView, 400: problemRef, 401: problemRef, 403: problemRef },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const result = await service.create({
        name: b.name,
        totalQuantity: b.totalQuantity,
        issueStartsAt: new Date(b.issueStartsAt),
        issueEndsAt: new Date(b.issueEndsAt),
        strategy: b.strategy,
        discountType: b.discountType ?? null,
        discountValue: b.discountValue ?? null,
        minOrderAmount: b.minOrderAmount ?? null,
      });
      if (!result.ok) throw new HttpProblem(400, result.code, result.detail, undefined, [{ pointer: `#/${result.field}`, detail: result.detail }]);
      return reply.code(201).header('location', `/coupons/${result.coupon.id}`).send(view(result.coupon));
    },
  );

  app.get(
    '/coupons',
    {
      schema: {
        tags: ['coupons'],
        summary: 'Campaigns that are open now or upcoming',
        response: { 200: Type.Object({ items: Type.Array(CouponView) }) },
      },
    },
    async () => {
      const nowMs = Date.now();
      return { items: (await service.listCurrent(new Date(nowMs))).map((c) => view(c, nowMs)) };
    },
  );

  app.get<{ Params: Static<typeof IdParams> }>(
    '/coupons/:id',
    {
      schema: { tags: ['coupons'], summary: 'One campaign with its stock', params: IdParams, response: { 200: CouponView, 404: problemRef } },
    },
    async (request) => {
      const coupon = await service.get(couponId(request.params));
      if (coupon === undefined) throw new HttpProblem(404, 'COUPON_NOT_FOUND');
      return view(coupon);
    },
  );

  // The hot path: authenticate, decide, answer. No per-request logging here.
  app.post<{ Params: Static<typeof IdParams> }>(
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
          'A closed window and, with redis-lua-async-cached, a known sell-out are answered before the token is checked: ' +
          'that answer is the same for every caller.',
        security: userSecurity,
        params: IdParams,
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
      // Sold out (cached strategy) or outside the window: the same answer for every caller, so it
      // comes before the token is verified — the tail of a stampede costs almost nothing.
      const foregone = service.refusalForAnyone(id);
      if (foregone !== undefined) return sendRefusal(reply, foregone);
      deadline?.arm(reply);
      try {
        const caller = requireIssuer(request);
        const userId = typeof caller === 'string' ? caller : await caller;
        // The request id travels into the queued issuance (async strategies): logs can follow one claim.
        const outcome = await service.issue(id, userId, request.id);
        if (reply.sent) return reply; // the deadline answered 504 TIMEOUT while we waited
        switch (outcome.kind) {
          case 'ISSUED':
            return reply.code(201).send({ couponId: id, userId, status: 'ISSUED' });
          case 'ACCEPTED':
            return reply.code(202).send({ couponId: id, userId, status: 'PENDING' });
          case 'OUTCOME_UNKNOWN':
            return sendOutcomeUnknown(reply);
          default:
            return sendRefusal(reply, outcome);
        }
      } finally {
        deadline?.disarm(reply);
      }
    },
  );

  app.get<{ Params: Static<typeof IdParams> }>(
    '/coupons/:id/issues/me',
    {
      schema: {
        tags: ['coupons'],
        summary: "The calling user's issue status for this coupon",
        security: userSecurity,
        params: IdParams,
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
      const userId = requireUser(request);
      const status = await service.status(couponId(request.params), userId);
      if (status === 'COUPON_NOT_FOUND') throw new HttpProblem(404, 'COUPON_NOT_FOUND');
      if (status === 'NOT_ISSUED') throw new HttpProblem(404, 'NOT_ISSUED');
      if (status === 'UNKNOWN') {
        throw new HttpProblem(503, 'OUTCOME_UNKNOWN', 'the admission is held, but the queue has not confirmed the issuance yet; ask again shortly', { 'retry-after': '1' });
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
      const userId = requireUser(request);
      const nowMs = Date.now();
      const items = await service.userCoupons(userId);
      return { items: items.map((i) => ({ coupon: view(i.coupon, nowMs), issuedAt: i.issuedAt.toISOString() })) };
    },
  );
}
