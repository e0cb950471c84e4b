// The issuance record on the Kafka topic: key = the coupon id (a campaign's records share one
// partition, in admission order), value = JSON with the fields a stream entry has ({c, u, t, r}:
// coupon, user, admitted at in ms, request id; and p, the W3C traceparent of a traced admission,
// only when there is one), so the worker validates both queues alike. The authenticator covers the
// whole value, p included; a record without p (and any record of a version before it) persists the
// same.
//
// Anyone who can write to the topic could otherwise issue coupons, so each record carries an
// authenticator in the AUTH_HEADER header: an HMAC-SHA256 over its key and value with
// KAFKA_RECORD_SECRET, which the API and the worker share. A record is an admission only when the
// authenticator verifies (with the current secret or, during a rotation, the previous one).
import { createHmac, timingSafeEqual } from 'node:crypto';

/** One admitted issuance, as the API produces it. */
export interface IssuanceRecord {
  readonly couponId: number;
  readonly userId: string;
  /** The admission instant chosen by the API (ms since epoch); becomes issued_at. */
  readonly atMs: number;
  /** '' when none. */
  readonly requestId: string;
  /** The W3C traceparent of a traced admission; none when absent or ''. */
  readonly traceparent?: string;
}

/** The record header carrying the authenticator. */
export const AUTH_HEADER = 'couponrush-auth';
/** The authenticator's version tag: a later change of what it covers gets a new one. */
const AUTH_VERSION = 'v1';

/** The secrets a process signs with (`current`) and accepts (both). */
export interface RecordSecrets {
  readonly current: string;
  readonly previous?: string | undefined;
}

/**
 * The largest record value an issuance can have (a user id and a request id are short); a larger
 * value is refused before it is even parsed, and its dead letter keeps only this much of it.
 */
export const MAX_RECORD_VALUE_BYTES = 64 * 1024;

export function recordKey(couponId: number): string {
  return String(couponId);
}

export function encodeRecord(r: IssuanceRecord): string {
  const fields = { c: String(r.couponId), u: r.userId, t: String(r.atMs), r: r.requestId };
  return JSON.stringify(r.traceparent === undefined || r.traceparent === '' ? fields : { ...fields, p: r.traceparent });
}

function mac(secret: string, key: string, value: string): Buffer {
  // The key's length first: no split of one string into key and value reads as another's.
  return createHmac('sha256', secret).update(`${AUTH_VERSION}:${key.length}:${key}`).update(value).digest();
}

/** The authenticator of a record with this key and value. */
export function signRecord(secret: string, key: string, value: string): string {
  return `${AUTH_VERSION}.${mac(secret, key, value).toString('base64url')}`;
}

/** True when `auth` is the authenticator of this key and value under one of the secrets. */
export function verifyRecord(secrets: RecordSecrets, key: string, value: string, auth: string | undefined): boolean {
  if (auth === undefined || !auth.startsWith(`${AUTH_VERSION}.`) || auth.length > 100) return false;
  const given = Buffer.from(auth.slice(AUTH_VERSION.length + 1), 'base64url');
  for (const secret of [secrets.current, secrets.previous]) {
    if (secret === undefined) continue;
    const expected = mac(secret, key, value);
    if (given.length === expected.length && timingSafeEqual(given, expected)) return true;
  }
  return false;
}

/**
 * The record's fields as strings, or undefined when the value is not a JSON object of strings
 * (a poison record: the worker dead-letters it with the reason).
 */
export function decodeFields(value: string | undefined): ReadonlyMap<string, string> | undefined {
  if (value === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return undefined;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return undefined;
  const fields = new Map<string, string>();
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v !== 'string') return undefined;
    fields.set(k, v);
  }
  return fields;
}
