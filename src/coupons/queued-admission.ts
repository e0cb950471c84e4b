// What a queued admission must be before it becomes a row: the ONE validation that the workers
// (stream entries and Kafka records), a rebuilt campaign state, `reconcile` and the console share,
// so that a record counts as holding a seat exactly when the worker would persist it
// (docs/architecture.md, invariant 9).
//
// A stream entry: fields {c, u, t, r} as admit-enqueue.lua writes them, for the stream's own
// coupon, a valid user id, an admission instant inside the coupon's window. A Kafka record, first:
// a value of at most MAX_RECORD_VALUE_BYTES, a key that is a coupon id, and the API's
// authenticator (docs/async-flow.md); then the same fields, with c equal to the key. Anything
// else is poison: dead-lettered with the reason, never retried, holding no seat. Reasons are
// bounded: they quote at most the start of a field, never a whole one.
//
// The field p, a traced admission's W3C traceparent, only tells the worker which trace to join:
// an entry without it (or of a version before it) is as valid, and a p that is not a traceparent
// is ignored, not poison (the admission it rides on is still one the API made).
import type { Db } from '../db/index.js';
import { findCoupon, type NewIssue } from './repository.js';
import type { Coupon } from './domain.js';
import { COUPON_ID_PATTERN, isValidUserId } from './ids.js';
import type { KafkaHandle } from '../kafka/client.js';
import { liveDeadLetters } from '../kafka/dead-letters.js';
import { AUTH_HEADER, decodeFields, MAX_RECORD_VALUE_BYTES, verifyRecord, type RecordSecrets } from '../kafka/records.js';

export type Validation =
  | { readonly ok: true; readonly issue: NewIssue; /** The admission's trace, when it was traced. */ readonly traceparent?: string | undefined }
  | { readonly ok: false; readonly reason: string };

/** One entry of an issuance stream: its id and fields. */
export interface QueuedEntry {
  readonly id: string;
  readonly fields: ReadonlyMap<string, string>;
}

/** One record of the issuance topic, as read. */
export interface QueuedRecord {
  readonly key: string | undefined;
  readonly value: string | undefined;
  readonly headers: ReadonlyMap<string, string>;
}

const MAX_REQUEST_ID = 200;
/** A W3C traceparent (version 00, or a later version's first four fields), lower-case hex. */
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const QUOTED_CHARS = 64;
/** A reason is at most this long (it travels in a dead letter's header and in logs). */
export const MAX_REASON_CHARS = 1024;

/** At most the first QUOTED_CHARS of a value, and its length when it is longer. */
export function quote(value: string | undefined): string {
  if (value === undefined) return 'absent';
  if (value.length <= QUOTED_CHARS) return JSON.stringify(value);
  return `${JSON.stringify(value.slice(0, QUOTED_CHARS))}… (${value.length} characters)`;
}

export function boundedReason(reason: string): string {
  return reason.length <= MAX_REASON_CHARS ? reason : `${reason.slice(0, MAX_REASON_CHARS - 1)}…`;
}

export function validateEntry(entry: QueuedEntry, streamCouponId: number, coupon: Coupon | undefined): Validation {
  const f = entry.fields;
  const c = f.get('c');
  if (c !== String(streamCouponId)) return { ok: false, reason: `field c is ${quote(c)}, expected the coupon ${streamCouponId}` };
  if (coupon === undefined) return { ok: false, reason: `coupon ${streamCouponId} does not exist in the database` };
  const u = f.get('u');
  if (!isValidUserId(u)) return { ok: false, reason: `field u is not a valid user id: ${quote(u)}` };
  const t = f.get('t');
  const ms = t !== undefined && /^\d{1,15}$/.test(t) ? Number(t) : NaN;
  if (Number.isNaN(ms)) return { ok: false, reason: `field t is not a timestamp in ms: ${quote(t)}` };
  if (ms < coupon.issueStartsAt.getTime() || ms >= coupon.issueEndsAt.getTime()) {
    return { ok: false, reason: `admitted at ${new Date(ms).toISOString()}, outside the issue window of coupon ${coupon.id}` };
  }
  const r = f.get('r');
  if (r !== undefined && r.length > MAX_REQUEST_ID) return { ok: false, reason: `field r is longer than ${MAX_REQUEST_ID} characters (${r.length})` };
  const p = f.get('p');
  const issue = { couponId: streamCouponId, userId: u, issuedAt: new Date(ms), requestId: r === '' ? undefined : r };
  return p !== undefined && TRACEPARENT.test(p) ? { ok: true, issue, traceparent: p } : { ok: true, issue };
}

/** The checks of a Kafka record that need no database: size, key, authenticator, shape. */
export function checkRecord(
  r: QueuedRecord,
  secrets: RecordSecrets,
): { readonly ok: true; readonly couponId: number; readonly fields: ReadonlyMap<string, string> } | { readonly ok: false; readonly reason: string } {
  const value = r.value;
  if (value === undefined || value === null) return { ok: false, reason: 'the record has no value' };
  const bytes = Buffer.byteLength(value);
  if (bytes > MAX_RECORD_VALUE_BYTES) return { ok: false, reason: `the value is ${bytes} bytes, over the ${MAX_RECORD_VALUE_BYTES} an issuance can have` };
  const key = r.key ?? '';
  if (!COUPON_ID_PATTERN.test(key)) return { ok: false, reason: `key ${quote(r.key ?? undefined)} is not a coupon id` };
  const auth = r.headers.get(AUTH_HEADER);
  if (auth === undefined) return { ok: false, reason: `unsigned: no ${AUTH_HEADER} header (not produced by the API, or by a version before the authenticator)` };
  if (!verifyRecord(secrets, key, value, auth)) return { ok: false, reason: `forged: the ${AUTH_HEADER} header does not verify with KAFKA_RECORD_SECRET (nor KAFKA_RECORD_SECRET_PREVIOUS)` };
  const fields = decodeFields(value);
  if (fields === undefined) return { ok: false, reason: 'the value is not a JSON object of strings' };
  return { ok: true, couponId: Number(key), fields };
}

/** Looks a coupon up. */
export type CouponLookup = (couponId: number) => Promise<Coupon | undefined>;

const MAX_CACHED_COUPONS = 10_000;

/** A lookup that remembers the coupons it found (they are immutable); a miss is asked again. */
export function cachedCoupons(db: Db): CouponLookup {
  const cache = new Map<number, Coupon>();
  return async (couponId) => {
    let c = cache.get(couponId);
    if (c === undefined) {
      c = await findCoupon(db, couponId);
      if (c !== undefined) {
        if (cache.size >= MAX_CACHED_COUPONS) cache.clear();
        cache.set(couponId, c);
      }
    }
    return c;
  };
}

/** Every check of a Kafka record: the worker persists it, and it holds a seat, exactly when ok. */
export async function validateRecord(r: QueuedRecord, secrets: RecordSecrets, coupons: CouponLookup, id = ''): Promise<Validation> {
  const checked = checkRecord(r, secrets);
  if (!checked.ok) return checked;
  return validateEntry({ id, fields: checked.fields }, checked.couponId, await coupons(checked.couponId));
}

/**
 * Coupon id → users whose seat a record on the topic holds: an unconsumed record, or a live dead
 * letter, that validates (a forged, unsigned, malformed or out-of-window one holds none, and a
 * truncated dead letter is never a valid record). A rebuilt Redis state, `reconcile` and the
 * console count exactly these.
 */
export async function heldInKafka(kafka: KafkaHandle, coupons: CouponLookup): Promise<Map<number, Set<string>>> {
  const held = new Map<number, Set<string>>();
  const secrets = kafka.settings.recordSecrets;
  const add = async (r: QueuedRecord) => {
    const v = await validateRecord(r, secrets, coupons);
    if (!v.ok) return;
    let set = held.get(v.issue.couponId);
    if (set === undefined) held.set(v.issue.couponId, (set = new Set()));
    set.add(v.issue.userId);
  };
  for (const r of await kafka.unconsumed()) await add(r);
  for (const d of await liveDeadLetters(kafka)) {
    if (d.truncated) continue;
    await add({ key: d.sourceKey, value: d.value, headers: new Map(d.auth === undefined ? [] : [[AUTH_HEADER, d.auth]]) });
  }
  return held;
}
