// The series the alerts read that are not traffic: `couponrush_ready` (each store answering this
// process) and `couponrush_reconcile_drift` (the periodic reconcile's verdict per campaign, kept in
// Redis), on the real app with real PostgreSQL and Redis. deploy/alerts.yml fires on them.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { ReconcileLoop } from '../src/worker/reconcile-loop.js';
import { needDatabase, needServer, request } from './helpers.js';
import { REDIS_URL, silent, startRedisTestServer, type RedisTestServer } from './redis-helpers.js';

async function servers(t: TestContext): Promise<boolean> {
  return (await needDatabase(t, 'postgres')) && (await needServer(t, 'Redis', REDIS_URL));
}

/** One series' samples from the app's /metrics: label set → value. */
async function series(server: RedisTestServer, name: string): Promise<Map<string, number>> {
  const text = (await request(server.url, 'GET', '/metrics')).text;
  const out = new Map<string, number>();
  for (const m of text.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))) out.set(m[1]!, Number(m[2]));
  return out;
}

function loop(server: RedisTestServer): ReconcileLoop {
  return new ReconcileLoop({ db: server.db, redis: server.redis, kafka: undefined, config: { reconcileIntervalMs: 60_000 }, log: silent });
}

describe('the series behind the alerts (real PostgreSQL and Redis)', () => {
  it('says each store answers (couponrush_ready)', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      assert.deepEqual(await series(server, 'couponrush_ready'), new Map([['store="database"', 1], ['store="redis"', 1]]));
    } finally {
      await server.close();
    }
  });

  it("records one worker's periodic reconcile per interval, and exports drift per campaign until it is repaired", async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      const healthy = await server.createCoupon({ totalQuantity: 10, strategy: 'redis-lua-async' });
      const drifted = await server.createCoupon({ totalQuantity: 10, strategy: 'redis-lua-async' });
      assert.equal((await series(server, 'couponrush_reconcile_drift')).size, 0, 'no verdict before a reconcile ran');
      // A user admitted in Redis with no row, no queued entry, no dead letter: drift.
      await server.redis.client.sadd(server.redis.keys.campaign(drifted.id).users, 'ghost');
      const first = loop(server);
      assert.equal(await first.once(), true, 'the first worker takes the interval');
      assert.equal(await loop(server).once(), false, 'a second worker skips it');
      assert.deepEqual(
        await series(server, 'couponrush_reconcile_drift'),
        new Map([[`coupon="${healthy.id}"`, 0], [`coupon="${drifted.id}"`, 1]]),
      );
      await server.redis.client.srem(server.redis.keys.campaign(drifted.id).users, 'ghost');
      await server.redis.client.del(server.redis.keys.reconcileLock);
      assert.equal(await first.once(), true);
      assert.equal((await series(server, 'couponrush_reconcile_drift')).get(`coupon="${drifted.id}"`), 0, 'the verdict follows the state');
    } finally {
      await server.close();
    }
  });
});
