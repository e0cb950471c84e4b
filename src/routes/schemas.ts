// What the route modules share: the problem document every refusal is, one schema per id (the
// coupon id as text in a path or a query string, or as a JSON integer; the user id), a campaign as
// the API shows it, and the security requirements. The id patterns are coupons/ids.ts', which the
// queues' validation and the console use too.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import Type, { type Static } from 'typebox';
import { CAMPAIGN_STATUSES, campaignStatus, remainingStock, type CouponWithStock } from '../coupons/domain.js';
import { COUPON_ID_PATTERN, MAX_COUPON_ID, USER_ID_PATTERN } from '../coupons/ids.js';

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

/** Response schemas refer to the problem document by this reference (addSharedSchemas adds it). */
export const problemRef = Type.Ref('Problem');

/** Call once, before the routes are registered. */
export function addSharedSchemas(app: FastifyInstance): void {
  app.addSchema(Problem);
}

/**
 * A coupon id in a path or a query string: text, since the app does not coerce types. Digits that
 * pass may still be past MAX_COUPON_ID (`couponIdOf`): each route answers that as it answers an
 * unknown coupon.
 */
export function couponIdText(description?: string) {
  return Type.String({ pattern: COUPON_ID_PATTERN.source, ...(description === undefined ? {} : { description }) });
}

/** A coupon id in a JSON body. */
export const CouponIdInteger = Type.Integer({ minimum: 1, maximum: MAX_COUPON_ID });

export const UserId = Type.String({ pattern: USER_ID_PATTERN.source });

export const CouponIdParams = Type.Object({ id: couponIdText('coupon id') });

export const CouponView = Type.Object({
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

/** A campaign as the API shows it, at `nowMs`. */
export function couponView(c: CouponWithStock, nowMs = Date.now()): Static<typeof CouponView> {
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

export const userSecurity: Array<Record<string, string[]>> = [{ bearerAuth: [] }, { userIdHeader: [] }];
export const adminSecurity: Array<Record<string, string[]>> = [{ bearerAuth: [] }];

/** Throws 401/403 unless the request carries the admin token (http/auth.ts). */
export type AdminCheck = (request: FastifyRequest) => void;

/** The admin check as a route's onRequest hook. */
export function adminOnly(requireAdmin: AdminCheck) {
  return async (request: FastifyRequest) => requireAdmin(request);
}
