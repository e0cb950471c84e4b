// What the ids are, as text and as numbers: a coupon id and a user id. One definition each, used
// by the routes' schemas, the issue route's front, the queues' validation and the console's URLs. No
// imports and nothing done at load but two patterns, so the console's bundle can take it whole.

/** Coupon ids are 32-bit `integer` identities (PostgreSQL identity, MySQL AUTO_INCREMENT INT). */
export const MAX_COUPON_ID = 2_147_483_647;

/**
 * A coupon id written as text (a path, a query string, a queue's key, the console's URL): 1-10
 * digits without a leading zero. Text that fits may still be past MAX_COUPON_ID: `couponIdOf`.
 */
export const COUPON_ID_DIGITS = '[1-9][0-9]{0,9}';
export const COUPON_ID_PATTERN = new RegExp(`^${COUPON_ID_DIGITS}$`);

/** The coupon a text matching COUPON_ID_PATTERN names; undefined past MAX_COUPON_ID (no coupon has that id). */
export function couponIdOf(text: string): number | undefined {
  const id = Number(text);
  return id > MAX_COUPON_ID ? undefined : id;
}

/** User ids are opaque strings chosen by the caller's identity provider. */
export const USER_ID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;
/** USER_ID_PATTERN in words, for the messages that refuse a user id. */
export const USER_ID_RULE = '1-64 characters of [A-Za-z0-9._:-]';

export function isValidUserId(value: unknown): value is string {
  return typeof value === 'string' && USER_ID_PATTERN.test(value);
}
