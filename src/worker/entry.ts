// What a stream entry must be before the worker writes it: fields {c, u, t, r} as admit-enqueue.lua
// writes them, for the stream's own coupon, a valid user id, and an admission instant inside the
// coupon's window. Anything else is a poison entry: dead-lettered with the reason, never retried.
import { isValidUserId, type Coupon } from '../coupons/domain.js';
import type { NewIssue } from '../coupons/repository.js';
import type { StreamEntry } from '../redis/streams.js';

export type Validation = { readonly ok: true; readonly issue: NewIssue } | { readonly ok: false; readonly reason: string };

const MAX_REQUEST_ID = 200;

export function validateEntry(entry: StreamEntry, streamCouponId: number, coupon: Coupon | undefined): Validation {
  const f = entry.fields;
  const c = f.get('c');
  if (c !== String(streamCouponId)) return { ok: false, reason: `field c is ${JSON.stringify(c)}, expected the stream's coupon ${streamCouponId}` };
  if (coupon === undefined) return { ok: false, reason: `coupon ${streamCouponId} does not exist in the database` };
  const u = f.get('u');
  if (!isValidUserId(u)) return { ok: false, reason: `field u is not a valid user id: ${JSON.stringify(u)}` };
  const t = f.get('t');
  const ms = t !== undefined && /^\d{1,15}$/.test(t) ? Number(t) : NaN;
  if (Number.isNaN(ms)) return { ok: false, reason: `field t is not a timestamp in ms: ${JSON.stringify(t)}` };
  if (ms < coupon.issueStartsAt.getTime() || ms >= coupon.issueEndsAt.getTime()) {
    return { ok: false, reason: `admitted at ${new Date(ms).toISOString()}, outside the issue window of coupon ${coupon.id}` };
  }
  const r = f.get('r');
  if (r !== undefined && r.length > MAX_REQUEST_ID) return { ok: false, reason: `field r is longer than ${MAX_REQUEST_ID} characters` };
  return { ok: true, issue: { couponId: streamCouponId, userId: u, issuedAt: new Date(ms), requestId: r === '' ? undefined : r } };
}
