// The one validation of a queued admission (src/coupons/queued-admission.ts), without a broker:
// the record's authenticator across a secret rotation and against tampering, the size bound before
// parsing, and reasons that never repeat a field whole.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkRecord, MAX_REASON_CHARS, validateEntry, validateRecord, type QueuedRecord } from '../src/coupons/queued-admission.js';
import type { Coupon } from '../src/coupons/domain.js';
import { AUTH_HEADER, encodeRecord, MAX_RECORD_VALUE_BYTES, signRecord } from '../src/kafka/records.js';

const CURRENT = 'c'.repeat(32);
const PREVIOUS = 'p'.repeat(32);
const NOW = Date.now();
const coupon: Coupon = {
  id: 7,
  name: 'test',
  totalQuantity: 10,
  issueStartsAt: new Date(NOW - 60_000),
  issueEndsAt: new Date(NOW + 60_000),
  strategy: 'redis-lua-kafka',
  discountType: null,
  discountValue: null,
  minOrderAmount: null,
};
const lookup = async (id: number) => (id === coupon.id ? coupon : undefined);

function record(key: string, fields: Record<string, string>, secret: string | null = CURRENT): QueuedRecord {
  const value = JSON.stringify(fields);
  return { key, value, headers: new Map(secret === null ? [] : [[AUTH_HEADER, signRecord(secret, key, value)]]) };
}

const fields = { c: '7', u: 'alice', t: String(NOW), r: 'req-1' };

describe('a Kafka record is an admission only when the API signed it', () => {
  it('accepts a record signed with the current secret, or with the previous one during a rotation', async () => {
    const v = await validateRecord(record('7', fields), { current: CURRENT }, lookup);
    assert.ok(v.ok && v.issue.userId === 'alice' && v.issue.couponId === 7);
    assert.equal((await validateRecord(record('7', fields, PREVIOUS), { current: CURRENT, previous: PREVIOUS }, lookup)).ok, true);
    assert.equal((await validateRecord(record('7', fields, PREVIOUS), { current: CURRENT }, lookup)).ok, false, 'a retired secret no longer verifies');
  });

  it('refuses unsigned, forged and tampered records, and a key that is not the record\'s coupon', () => {
    const secrets = { current: CURRENT };
    const unsigned = checkRecord(record('7', fields, null), secrets);
    assert.ok(!unsigned.ok && unsigned.reason.startsWith('unsigned'));
    const forged = checkRecord(record('7', fields, 'f'.repeat(32)), secrets);
    assert.ok(!forged.ok && forged.reason.startsWith('forged'));
    const good = record('7', fields);
    const tampered = checkRecord({ ...good, value: good.value!.replace('alice', 'mallory') }, secrets);
    assert.ok(!tampered.ok && tampered.reason.startsWith('forged'), 'the value is covered');
    const rekeyed = checkRecord({ ...good, key: '8' }, secrets);
    assert.ok(!rekeyed.ok && rekeyed.reason.startsWith('forged'), 'the key is covered');
    // Moving characters between key and value keeps their concatenation but not the authenticator.
    const split = { key: '7', value: '{"c":"7"}', headers: new Map([[AUTH_HEADER, signRecord(CURRENT, '7{', '"c":"7"}')]]) };
    assert.equal(checkRecord(split, secrets).ok, false);
  });

  it('checks fields after the authenticator: c must equal the key, the instant must be in the window', async () => {
    const secrets = { current: CURRENT };
    const other = await validateRecord(record('7', { ...fields, c: '8' }), secrets, lookup);
    assert.ok(!other.ok && other.reason.includes('field c is "8"'));
    const early = await validateRecord(record('7', { ...fields, t: String(NOW - 3_600_000) }), secrets, lookup);
    assert.ok(!early.ok && early.reason.includes('outside the issue window'));
    const unknown = await validateRecord(record('9', { ...fields, c: '9' }), secrets, lookup);
    assert.ok(!unknown.ok && unknown.reason.includes('does not exist'));
  });

  it('refuses a value over 64 KiB before parsing it, and never quotes a field whole', async () => {
    const secrets = { current: CURRENT };
    const big = record('7', { ...fields, u: 'x'.repeat(MAX_RECORD_VALUE_BYTES) });
    const sized = checkRecord(big, secrets);
    assert.ok(!sized.ok && sized.reason.includes('bytes'));
    const longUser = await validateRecord(record('7', { ...fields, u: 'y'.repeat(20_000) }), secrets, lookup);
    assert.ok(!longUser.ok);
    assert.ok(longUser.reason.length <= MAX_REASON_CHARS && !longUser.reason.includes('y'.repeat(100)), longUser.reason);
    assert.match(longUser.reason, /20000 characters/);
    const longKey = checkRecord({ key: 'k'.repeat(5_000), value: '{}', headers: new Map() }, secrets);
    assert.ok(!longKey.ok && !longKey.reason.includes('k'.repeat(100)));
  });
});

describe("the admission's traceparent (field p): followed when it is one, never a reason to refuse", () => {
  const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  const entry = (extra: Record<string, string>) => ({ id: '1-0', fields: new Map(Object.entries({ ...fields, ...extra })) });

  it('a stream entry with p gives the worker its trace; one of the old shape (no p) persists the same, without', () => {
    const traced = validateEntry(entry({ p: traceparent }), 7, coupon);
    assert.ok(traced.ok);
    assert.equal(traced.traceparent, traceparent);
    const old = validateEntry(entry({}), 7, coupon);
    assert.ok(old.ok);
    assert.equal(old.traceparent, undefined);
    assert.deepEqual(old.issue, traced.issue);
  });

  it('a p that is not a traceparent (upper case, too long, garbage) is ignored, the admission still valid', () => {
    for (const p of [traceparent.toUpperCase(), `${traceparent}-extra`, 'x'.repeat(10_000), '']) {
      const v = validateEntry(entry({ p }), 7, coupon);
      assert.ok(v.ok, p.slice(0, 20));
      assert.equal(v.traceparent, undefined);
    }
  });

  it("a Kafka record's p is under its authenticator: the API's record is followed, one whose p was changed is forged", async () => {
    const value = encodeRecord({ couponId: 7, userId: 'alice', atMs: NOW, requestId: 'req-1', traceparent });
    assert.equal(JSON.parse(value).p, traceparent);
    assert.equal(JSON.parse(encodeRecord({ couponId: 7, userId: 'alice', atMs: NOW, requestId: 'req-1', traceparent: '' })).p, undefined, 'no p when untraced');
    const signed = { key: '7', value, headers: new Map([[AUTH_HEADER, signRecord(CURRENT, '7', value)]]) };
    const v = await validateRecord(signed, { current: CURRENT }, lookup);
    assert.ok(v.ok);
    assert.equal(v.traceparent, traceparent);
    const retraced = checkRecord({ ...signed, value: value.replace('4bf92f', '000000') }, { current: CURRENT });
    assert.ok(!retraced.ok && retraced.reason.startsWith('forged'));
  });
});
