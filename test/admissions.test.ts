// AdmissionBatcher (src/redis/admissions.ts) against a real Redis: concurrent attempts on one
// campaign share script calls, each still gets the outcome it would get alone, batches are
// capped, and a failed call fails every attempt in it.
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { ACCEPTED, ALREADY_ISSUED, SOLD_OUT } from '../src/coupons/domain.js';
import { AdmissionBatcher, MAX_BATCH } from '../src/redis/admissions.js';
import type { CampaignKeys } from '../src/redis/keys.js';
import { MISSING, Scripts, type AdmissionAttempt, type AdmitEnqueueResult } from '../src/redis/scripts.js';
import { parseEntries } from '../src/redis/streams.js';
import { needServer } from './helpers.js';
import { openTestRedis, REDIS_URL } from './redis-helpers.js';

type TestRedis = Awaited<ReturnType<typeof openTestRedis>>;

const NOW = Date.UTC(2030, 0, 1, 12, 0, 0);

/** The real scripts, with every admit-enqueue call's batch size recorded. */
class CountingScripts extends Scripts {
  readonly batches: number[] = [];

  override admitEnqueue(keys: CampaignKeys, couponId: string, attempts: readonly AdmissionAttempt[]): Promise<AdmitEnqueueResult[]> {
    this.batches.push(attempts.length);
    return super.admitEnqueue(keys, couponId, attempts);
  }
}

describe('AdmissionBatcher', () => {
  let redis: TestRedis | undefined;
  let nextCoupon = 1;
  const ready = async (t: TestContext): Promise<boolean> => {
    if (redis !== undefined) return true;
    if (await needServer(t, 'Redis', REDIS_URL)) throw new Error('Redis answers but opening it failed');
    return false;
  };
  const campaign = async (total: number): Promise<{ keys: CampaignKeys; id: string }> => {
    const id = nextCoupon++;
    const keys = redis!.keys.campaign(id);
    const window = { totalQuantity: total, startsAtMs: NOW - 60_000, endsAtMs: NOW + 60_000, expireAtMs: NOW + 3600_000 };
    assert.equal(await redis!.scripts.restore(keys, `${keys.users}:none`, window), 0);
    return { keys, id: String(id) };
  };

  before(async () => {
    try {
      redis = await openTestRedis();
    } catch {
      redis = undefined;
    }
  });
  after(async () => {
    await redis?.close();
  });

  it('decides the attempts of one turn in one call, in arrival order, with each its own outcome', async (t) => {
    if (!(await ready(t))) return;
    const scripts = new CountingScripts(redis!.client);
    const batcher = new AdmissionBatcher((k, c, a) => scripts.admitEnqueue(k, c, a));
    const { keys, id } = await campaign(3);
    const users = ['u1', 'u2', 'u1', 'u3', 'u4', 'u2', 'u5'];
    const outcomes = await Promise.all(users.map((u, i) => batcher.admit(keys, id, u, NOW + i, `req-${i}`)));
    assert.deepEqual(outcomes, [ACCEPTED, ACCEPTED, ALREADY_ISSUED, ACCEPTED, SOLD_OUT, ALREADY_ISSUED, SOLD_OUT]);
    assert.deepEqual(scripts.batches, [users.length], 'one script call for the whole turn');
    const queued = parseEntries(await redis!.client.xrange(keys.stream, '-', '+')).map((e) => Object.fromEntries(e.fields));
    assert.deepEqual(
      queued.map((f) => [f.u, f.r]),
      [
        ['u1', 'req-0'],
        ['u2', 'req-1'],
        ['u3', 'req-3'],
      ],
    );
  });

  it('sends attempts that arrive while a call is in flight together in the next call, and caps a call at MAX_BATCH', async (t) => {
    if (!(await ready(t))) return;
    const scripts = new CountingScripts(redis!.client);
    const batcher = new AdmissionBatcher((k, c, a) => scripts.admitEnqueue(k, c, a));
    const { keys, id } = await campaign(10_000);
    const first = batcher.admit(keys, id, 'first', NOW, '');
    // Let the first call leave, then pile up more than one batch behind it.
    await new Promise((resolve) => setImmediate(resolve));
    const rest = Array.from({ length: MAX_BATCH + 10 }, (_, i) => batcher.admit(keys, id, `user-${i}`, NOW, ''));
    const outcomes = await Promise.all([first, ...rest]);
    assert.ok(outcomes.every((o) => o === ACCEPTED));
    assert.deepEqual(scripts.batches, [1, MAX_BATCH, 10]);
    assert.equal(await redis!.client.hget(keys.state, 'issued'), String(MAX_BATCH + 11));
  });

  it('keeps campaigns apart and reports a missing state to every attempt of the call', async (t) => {
    if (!(await ready(t))) return;
    const scripts = new CountingScripts(redis!.client);
    const batcher = new AdmissionBatcher((k, c, a) => scripts.admitEnqueue(k, c, a));
    const a = await campaign(1);
    const gone = redis!.keys.campaign(987_654);
    const outcomes = await Promise.all([
      batcher.admit(a.keys, a.id, 'x', NOW, ''),
      batcher.admit(gone, '987654', 'x', NOW, ''),
      batcher.admit(a.keys, a.id, 'y', NOW, ''),
      batcher.admit(gone, '987654', 'y', NOW, ''),
    ]);
    assert.deepEqual(outcomes, [ACCEPTED, MISSING, SOLD_OUT, MISSING]);
    assert.deepEqual(scripts.batches, [2, 2], 'one call per campaign');
  });

  it('fails every attempt of a failed call with its error, and serves the next ones', async (t) => {
    if (!(await ready(t))) return;
    let failNext = true;
    class FailingOnce extends CountingScripts {
      override admitEnqueue(keys: CampaignKeys, couponId: string, attempts: readonly AdmissionAttempt[]): Promise<AdmitEnqueueResult[]> {
        if (failNext) {
          failNext = false;
          return Promise.reject(new Error('connection lost'));
        }
        return super.admitEnqueue(keys, couponId, attempts);
      }
    }
    const failing = new FailingOnce(redis!.client);
    const batcher = new AdmissionBatcher((k, c, a) => failing.admitEnqueue(k, c, a));
    const { keys, id } = await campaign(5);
    const failed = await Promise.allSettled([batcher.admit(keys, id, 'a', NOW, ''), batcher.admit(keys, id, 'b', NOW, '')]);
    assert.deepEqual(
      failed.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : r.status)),
      ['connection lost', 'connection lost'],
    );
    assert.equal(await redis!.client.hget(keys.state, 'issued'), '0', 'nothing was admitted');
    assert.equal(await batcher.admit(keys, id, 'a', NOW, ''), ACCEPTED);
  });
});
