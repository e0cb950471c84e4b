// The coupon domain: what a campaign is, the rules every strategy obeys, and the outcomes of an
// issue attempt. Expected outcomes (sold out, duplicate, window) are values, never exceptions.

export type DiscountType = 'AMOUNT' | 'PERCENT';

/** A campaign. Immutable once created, except for its issued count (not part of this type). */
export interface Coupon {
  readonly id: number;
  readonly name: string;
  readonly totalQuantity: number;
  readonly issueStartsAt: Date;
  readonly issueEndsAt: Date;
  readonly strategy: string;
  readonly discountType: DiscountType | null;
  readonly discountValue: number | null;
  readonly minOrderAmount: number | null;
}

export interface CouponWithStock extends Coupon {
  /** Rows committed to the database. */
  readonly issuedCount: number;
  /**
   * Admitted so far, where admission is decided ahead of the rows (Redis strategies: the queue and
   * the worker follow); undefined where it is the rows themselves.
   */
  readonly admittedCount?: number | undefined;
}

export interface NewCoupon {
  name: string;
  totalQuantity: number;
  issueStartsAt: Date;
  issueEndsAt: Date;
  strategy: string;
  discountType: DiscountType | null;
  discountValue: number | null;
  minOrderAmount: number | null;
}

/**
 * The result of one issue attempt. `ISSUED`: the row is committed (201). `ACCEPTED`: admitted
 * and durably queued, the row follows (202). `UNAVAILABLE`: a dependency failed or contention
 * could not be resolved in time; nothing was issued, the client may retry (503).
 * `OUTCOME_UNKNOWN`: the decisive command (a COMMIT, an admission script) went out and the store
 * could not be asked in time what became of it: the user may hold the coupon (503; a retry never
 * issues a second one, and GET /coupons/:id/issues/me tells).
 */
export type IssueOutcome =
  | { readonly kind: 'ISSUED' }
  | { readonly kind: 'ACCEPTED' }
  | { readonly kind: 'ALREADY_ISSUED' }
  | { readonly kind: 'SOLD_OUT' }
  | { readonly kind: 'WINDOW_NOT_OPEN' }
  | { readonly kind: 'WINDOW_CLOSED' }
  | { readonly kind: 'COUPON_NOT_FOUND' }
  | { readonly kind: 'UNAVAILABLE'; readonly reason: string }
  | { readonly kind: 'OUTCOME_UNKNOWN' };

export type IssueOutcomeKind = IssueOutcome['kind'];

/** An outcome that issues nothing. */
export type Refusal = Exclude<IssueOutcome, { kind: 'ISSUED' | 'ACCEPTED' | 'OUTCOME_UNKNOWN' }>;

// Frozen singletons: the hot path returns these instead of allocating. Each keeps its own literal
// type, so a narrower union (e.g. what a Lua script can answer) can be spelled with `typeof`.
export const ISSUED = Object.freeze({ kind: 'ISSUED' } as const);
export const ACCEPTED = Object.freeze({ kind: 'ACCEPTED' } as const);
export const ALREADY_ISSUED = Object.freeze({ kind: 'ALREADY_ISSUED' } as const);
export const SOLD_OUT = Object.freeze({ kind: 'SOLD_OUT' } as const);
export const WINDOW_NOT_OPEN = Object.freeze({ kind: 'WINDOW_NOT_OPEN' } as const);
export const WINDOW_CLOSED = Object.freeze({ kind: 'WINDOW_CLOSED' } as const);
export const COUPON_NOT_FOUND = Object.freeze({ kind: 'COUPON_NOT_FOUND' } as const);
export const OUTCOME_UNKNOWN = Object.freeze({ kind: 'OUTCOME_UNKNOWN' } as const);
export const unavailable = (reason: string): Refusal => ({ kind: 'UNAVAILABLE', reason });

/** A refusal that is the same for every caller at this instant: no need to know who asks. */
export type ForegoneRefusal = typeof SOLD_OUT | typeof WINDOW_NOT_OPEN | typeof WINDOW_CLOSED;

/** The window is half-open: [issueStartsAt, issueEndsAt) (docs/architecture.md, invariant 3). */
export function windowOutcome(coupon: Coupon, nowMs: number): typeof WINDOW_NOT_OPEN | typeof WINDOW_CLOSED | undefined {
  if (nowMs < coupon.issueStartsAt.getTime()) return WINDOW_NOT_OPEN;
  if (nowMs >= coupon.issueEndsAt.getTime()) return WINDOW_CLOSED;
  return undefined;
}

/**
 * What a client can show: UPCOMING before the window, OPEN while stock is left, SOLD_OUT once
 * admissions reached the stock (within the window), ENDED after the window.
 */
export type CampaignStatus = 'UPCOMING' | 'OPEN' | 'SOLD_OUT' | 'ENDED';
export const CAMPAIGN_STATUSES: readonly CampaignStatus[] = ['UPCOMING', 'OPEN', 'SOLD_OUT', 'ENDED'];

/** Stock not yet admitted. */
export function remainingStock(coupon: CouponWithStock): number {
  return Math.max(0, coupon.totalQuantity - Math.max(coupon.issuedCount, coupon.admittedCount ?? 0));
}

export function campaignStatus(coupon: CouponWithStock, nowMs: number): CampaignStatus {
  const w = windowOutcome(coupon, nowMs);
  if (w === WINDOW_NOT_OPEN) return 'UPCOMING';
  if (w === WINDOW_CLOSED) return 'ENDED';
  return remainingStock(coupon) === 0 ? 'SOLD_OUT' : 'OPEN';
}

/** The largest stock a campaign may have. */
export const MAX_TOTAL_QUANTITY = 10_000_000;

/** A rule a new campaign breaks: the field it concerns (a key of NewCoupon) and why. */
export interface CouponProblem {
  readonly field: keyof NewCoupon;
  readonly detail: string;
}

/**
 * Rules a new campaign must satisfy beyond its JSON shape, at `nowMs`; returns the first one
 * broken. A window already over is refused: a campaign cannot be changed once created, so it
 * would be ENDED for good.
 */
export function newCouponProblem(c: NewCoupon, nowMs: number): CouponProblem | undefined {
  if (Number.isNaN(c.issueStartsAt.getTime())) return { field: 'issueStartsAt', detail: 'issueStartsAt is not a valid date-time' };
  if (Number.isNaN(c.issueEndsAt.getTime())) return { field: 'issueEndsAt', detail: 'issueEndsAt is not a valid date-time' };
  if (c.issueEndsAt.getTime() <= c.issueStartsAt.getTime()) return { field: 'issueEndsAt', detail: 'issueEndsAt must be after issueStartsAt' };
  if (c.issueEndsAt.getTime() <= nowMs) return { field: 'issueEndsAt', detail: 'issueEndsAt is not in the future: the whole issue window would already be over' };
  if ((c.discountType === null) !== (c.discountValue === null)) {
    return { field: c.discountType === null ? 'discountType' : 'discountValue', detail: 'discountType and discountValue go together' };
  }
  if (c.discountType === 'PERCENT' && c.discountValue !== null && c.discountValue > 100) {
    return { field: 'discountValue', detail: 'a PERCENT discountValue is at most 100' };
  }
  return undefined;
}
