// Campaigns: created by an operator, read by anyone.
import type { FastifyInstance } from 'fastify';
import Type, { type Static } from 'typebox';
import { MAX_TOTAL_QUANTITY } from '../coupons/domain.js';
import { couponIdOf } from '../coupons/ids.js';
import type { CouponService } from '../coupons/service.js';
import { STRATEGY_NAMES, strategyModules } from '../coupons/strategies/index.js';
import { HttpProblem } from '../http/problem.js';
import { adminOnly, adminSecurity, CouponIdParams, couponView, CouponView, problemRef, type AdminCheck } from './schemas.js';

export interface CampaignRouteOptions {
  readonly service: CouponService;
  readonly requireAdmin: AdminCheck;
}

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

export async function campaignRoutes(app: FastifyInstance, { service, requireAdmin }: CampaignRouteOptions): Promise<void> {
  app.post<{ Body: Static<typeof CreateCouponBody> }>(
    '/admin/coupons',
    {
      onRequest: adminOnly(requireAdmin),
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
      if (!result.ok) throw new HttpProblem(result.code, result.detail, undefined, [{ pointer: `#/${result.field}`, detail: result.detail }]);
      return reply.code(201).header('location', `/coupons/${result.coupon.id}`).send(couponView(result.coupon));
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
      return { items: (await service.listCurrent(new Date(nowMs))).map((c) => couponView(c, nowMs)) };
    },
  );

  app.get<{ Params: Static<typeof CouponIdParams> }>(
    '/coupons/:id',
    {
      schema: { tags: ['coupons'], summary: 'One campaign with its stock', params: CouponIdParams, response: { 200: CouponView, 404: problemRef } },
    },
    async (request) => {
      const id = couponIdOf(request.params.id);
      const coupon = id === undefined ? undefined : await service.get(id);
      if (coupon === undefined) throw new HttpProblem('COUPON_NOT_FOUND');
      return couponView(coupon);
    },
  );
}
