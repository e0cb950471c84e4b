// The rate limiter's counters (src/http/rate-limit.ts): fixed clock-aligned windows, refusal with
// the seconds left, and with Redis a shared total that a few instances can overshoot only by
// their local allowances — without touching Redis for keys that stay within the allowance.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { LOCAL_ALLOWANCE, WindowLimiter } from '../src/http/rate-limit.js';
import { needServer } from './helpers.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './redis-helpers.js';

const WINDOW = 10_000;
const T0 = 1_700_000_000_000; // a window boundary (divisible by WINDOW)

describe('WindowLimiter', () => {
  it('allows max requests per key and window, then refuses with the seconds left', () => {
    const l = new WindowLimiter({ max: 3, windowMs: WINDOW });
    assert.deepEqual([1, 2, 3].map(() => l.hit('u', T0 + 2_500)), [undefined, undefined, undefined]);
    assert.equal(l.hit('u', T0 + 2_500), 8, '7.5 s left, rounded up');
    assert.equal(l.hit('other', T0 + 2_500), undefined, 'keys are independent');
    assert.equal(l.hit('u', T0 + WINDOW), undefined, 'a new window starts from zero');
  });

  it('shares the count through Redis past the local allowance, overshooting by at most the others\' allowances', async (t) => {
    if (!(await needServer(t, 'Redis', REDIS_URL))) return;
    const prefix = uniquePrefix();
    const redis = new Redis(REDIS_URL);
    try {
      const limit = { max: 10, windowMs: 3600_000 };
      const shared = { redis, prefix: `${prefix}rl:` };
      const a = new WindowLimiter(limit, shared);
      const b = new WindowLimiter(limit, shared);
      // A key within the allowance on every instance never reaches Redis.
      for (let i = 0; i < LOCAL_ALLOWANCE; i++) {
        assert.equal(await a.hit('calm'), undefined);
        assert.equal(await b.hit('calm'), undefined);
      }
      assert.deepEqual(await redis.keys(`${prefix}*`), []);
      // A hammering key, alternating between the instances.
      let allowed = 0;
      for (let i = 0; i < 40; i++) if ((await (i % 2 === 0 ? a : b).hit('hammer')) === undefined) allowed++;
      assert.ok(allowed >= limit.max && allowed <= limit.max + LOCAL_ALLOWANCE, `allowed ${allowed}`);
    } finally {
      redis.disconnect();
      await deleteKeys(prefix);
    }
  });

  it('falls back to its own count when Redis does not answer', async () => {
    const redis = new Redis('redis://127.0.0.1:1', { maxRetriesPerRequest: 0, retryStrategy: () => null, lazyConnect: true });
    redis.on('error', () => {});
    const l = new WindowLimiter({ max: 5, windowMs: 3600_000 }, { redis, prefix: 'x:' });
    const verdicts = [];
    for (let i = 0; i < 7; i++) verdicts.push(await l.hit('k'));
    assert.deepEqual(verdicts.slice(0, 5), [undefined, undefined, undefined, undefined, undefined]);
    assert.ok(typeof verdicts[5] === 'number' && typeof verdicts[6] === 'number');
    redis.disconnect();
  });
});
