// The issuance record on the Kafka topic: key = the coupon id (a campaign's records share one
// partition, in admission order), value = JSON with the fields a stream entry has ({c, u, t, r}:
// coupon, user, admitted at in ms, request id), so the worker validates both queues alike.

/** One admitted issuance, as the API produces it. */
export interface IssuanceRecord {
  readonly couponId: number;
  readonly userId: string;
  /** The admission instant chosen by the API (ms since epoch); becomes issued_at. */
  readonly atMs: number;
  /** '' when none. */
  readonly requestId: string;
}

export function recordKey(couponId: number): string {
  return String(couponId);
}

export function encodeRecord(r: IssuanceRecord): string {
  return JSON.stringify({ c: String(r.couponId), u: r.userId, t: String(r.atMs), r: r.requestId });
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
