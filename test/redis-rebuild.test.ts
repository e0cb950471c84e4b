// Redis losing a campaign's keys: the service rebuilds them from the database (rows + entries still
// queued + dead letters) and stays exact — nobody who holds a coupon or a queued admission gets a
// second one, and the stock is never exceeded. And `reconcile` reporting and repairing drift.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { reconciledStrategies } from '../src/coupons/strategies/index.js';
import { reconcile } from '../src/coupons/reconcile.js';
import { issuedRows, needServer, PG_ADMIN_URL, request } from './helpers.js';
import { runCli, sample } from './ops-helpers.js';
import { deleteKeys, issueAll, REDIS_URL, startRedisTestServer, usersRange, waitForDrain, withStatus } from './redis-helpers.js';

async function servers(t: TestContext): Promise<boolean> {
  return (await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) && (await needServer(t, 'Redis', REDIS_URL));
}

describe('Redis without the campaign keys', () => {
  for (const strategy of ['redis-lua-async-cached', 'redis-lua-sync'] as const) {
    it(`${strategy}: after a flush, rebuilds from the database and never re-issues to holders`, async (t) => {
      if (!(await servers(t))) return;
      const server = await startRedisTestServer();
      const success = strategy === 'redis-lua-sync' ? 201 : 202;
      try {
        await server.startWorker('w1');
        const { id } = await server.createCoupon({ totalQuantity: 300, strategy });
        const holders = withStatus(await issueAll(server, id, usersRange(0, 200)), success);
        assert.equal(holders.length, 200);
        await waitForDrain(server, id, 200);

        assert.ok((await deleteKeys(server.prefix)) > 0, 'every key under the prefix is gone (state, users, stream, registry)');

        // 100 holders come back, then 200 new users: 100 units are left. Holders go first: with the
        // cached strategy a holder who asks after the sell-out hears 410 from the local flag (its
        // documented trade-off), so holders mixed in with the new users would race the sell-out.
        const second = new Map([...(await issueAll(server, id, usersRange(100, 200))), ...(await issueAll(server, id, usersRange(200, 400)))]);
        assert.deepEqual(usersRange(100, 200).filter((u) => second.get(u) !== 409).map((u) => `${u}:${second.get(u)}`), [], 'every holder hears 409 ALREADY_ISSUED');
        const winners = withStatus(second, success);
        assert.equal(winners.length, 100, 'exactly the remaining stock is admitted');
        assert.equal(withStatus(second, 410).length, 100);
        await waitForDrain(server, id, 300);

        const db = await issuedRows(server.db, id);
        assert.equal(db.rows, 300);
        assert.equal(db.distinctUsers, 300);
        assert.equal(db.counter, 300);
        assert.deepEqual(new Set(db.users), new Set([...holders, ...winners]));
        assert.equal(await server.redis.client.hget(server.redis.keys.campaign(id).state, 'issued'), '300');
      } finally {
        await server.close();
      }
    });
  }

  it('redis-lua-async: state lost while entries are still queued — the rebuild counts the queue', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 100, strategy: 'redis-lua-async' });
      const keys = server.redis.keys.campaign(id);
      // No worker yet: 60 admissions wait in the stream, none in the database.
      const queued = withStatus(await issueAll(server, id, usersRange(0, 60)), 202);
      assert.equal(queued.length, 60);
      await server.redis.client.del(keys.state, keys.users);

      const second = await issueAll(server, id, usersRange(30, 130));
      assert.deepEqual(usersRange(30, 60).filter((u) => second.get(u) !== 409), [], 'queued users hear 409');
      const winners = withStatus(second, 202);
      assert.equal(winners.length, 40, 'only the stock not already queued is admitted');

      await server.startWorker('w1');
      await waitForDrain(server, id, 100);
      const db = await issuedRows(server.db, id);
      assert.equal(db.distinctUsers, 100);
      assert.equal(db.counter, 100);
      assert.deepEqual(new Set(db.users), new Set([...queued, ...winners]));
    } finally {
      await server.close();
    }
  });
});

describe('couponrush reconcile', () => {
  it('reports drift between Redis and the database, and --repair rebuilds Redis from the database', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      await server.startWorker('w1');
      const { id } = await server.createCoupon({ totalQuantity: 50, strategy: 'redis-lua-async-cached' });
      const holders = withStatus(await issueAll(server, id, usersRange(0, 10)), 202);
      await waitForDrain(server, id, 10);
      const { db, redis } = server;
      const [clean] = await reconcile(db, redis, { repair: false, couponId: id, strategies: reconciledStrategies() });
      assert.equal(clean?.status, 'OK', JSON.stringify(clean?.problems));

      const keys = redis.keys.campaign(id);
      await redis.client.srem(keys.users, 'user-3'); // a holder Redis forgot
      await redis.client.sadd(keys.users, 'ghost'); // an admission that never reached the queue
      await redis.client.hset(keys.state, 'issued', '20');
      const [drift] = await reconcile(db, redis, { repair: false, couponId: id, strategies: reconciledStrategies() });
      assert.equal(drift?.status, 'DRIFT');
      assert.equal(drift?.repaired, false);
      assert.equal(drift?.problems.length, 3, JSON.stringify(drift?.problems));
      assert.equal(await redis.client.hget(keys.state, 'issued'), '20', 'reporting changes nothing');

      const [repaired] = await reconcile(db, redis, { repair: true, couponId: id, strategies: reconciledStrategies() });
      assert.equal(repaired?.repaired, true);
      const [after] = await reconcile(db, redis, { repair: false, couponId: id, strategies: reconciledStrategies() });
      assert.equal(after?.status, 'OK', JSON.stringify(after?.problems));
      assert.equal(await redis.client.hget(keys.state, 'issued'), '10');
      assert.deepEqual((await redis.client.smembers(keys.users)).sort(), [...holders].sort());
      assert.equal((await issueAll(server, id, ['user-3'])).get('user-3'), 409, 'the forgotten holder is known again');
    } finally {
      await server.close();
    }
  });

  it('checks only campaigns whose strategy keeps admission state in Redis: --coupon on db-atomic says so, writes nothing, and its gauges come from the database', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 3, strategy: 'db-atomic' });
      const { db, redis } = server;
      const keys = redis.keys.campaign(id);
      assert.deepEqual(await reconcile(db, redis, { repair: true, couponId: id, strategies: reconciledStrategies() }), []);
      assert.equal(await redis.client.exists(keys.state), 0, '--repair made no Redis state for it');

      const cli = runCli(['reconcile', '--coupon', String(id), '--repair'], server.workerEnv);
      assert.equal(await cli.exited, 0, cli.output());
      assert.match(cli.output(), new RegExp(`coupon ${id}: nothing to check .* keeps no admission state in Redis`));
      assert.equal(await redis.client.exists(keys.state), 0);

      // Even with stray keys in Redis (an older --repair wrote some), the gauges are the database's.
      await redis.scripts.restore(keys, `${keys.users}:none`, { totalQuantity: 3, startsAtMs: 0, endsAtMs: Date.now() + 3600_000, expireAtMs: Date.now() + 7200_000 });
      assert.equal((await issueAll(server, id, ['only-one'])).get('only-one'), 201);
      const metrics = (await request(server.url, 'GET', '/metrics')).text;
      assert.equal(sample(metrics, 'couponrush_campaign_remaining', { coupon: String(id) }), 2, 'one of three issued');
      assert.equal(sample(metrics, 'couponrush_campaign_persisted', { coupon: String(id) }), 1);
    } finally {
      await server.close();
    }
  });

  it('reconcile says what waits: "0 queued" once the worker persisted everything, not the stream\'s length', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async-cached' });
      assert.equal(withStatus(await issueAll(server, id, usersRange(0, 2)), 202).length, 2);
      const waiting = await reconcile(server.db, server.redis, { repair: false, couponId: id, strategies: reconciledStrategies() });
      assert.equal(waiting[0]?.queued, 2, 'no worker yet: both wait');
      await server.startWorker('w1');
      await waitForDrain(server, id, 2);
      const { ADMIN_TOKEN: _a, JWT_SECRET: _j, ...noSecrets } = server.workerEnv;
      const cli = runCli(['reconcile', '--coupon', String(id)], noSecrets);
      assert.equal(await cli.exited, 0, cli.output());
      assert.match(cli.output(), new RegExp(`coupon ${id} \\(redis-lua-async-cached\\): OK — redis admitted 2/5, db rows 2, 0 queued \\(admitted, no row yet\\), 0 dead letters`));
    } finally {
      await server.close();
    }
  });
});

describe('a campaign state from another Redis server (a failover, a restart) that lacks acknowledged admissions', () => {
  it('redis-lua-async-cached: the admission script sees another server\'s run id, the campaign is settled from the rows first, and its stock is never handed out twice', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      await server.startWorker('w1');
      const { id } = await server.createCoupon({ totalQuantity: 100, strategy: 'redis-lua-async-cached' });
      assert.equal(withStatus(await issueAll(server, id, usersRange(0, 60)), 202).length, 60);
      await waitForDrain(server, id, 60);

      // What a promoted replica looks like when the old primary acknowledged 10 admissions it never
      // passed on (and a worker persisted them from the old one): the users and the count without
      // them, and the state names the server it was settled on, which is not this one.
      const { keys, client } = server.redis;
      const lostOnFailover = usersRange(50, 60);
      const campaign = keys.campaign(id);
      const here = await client.hget(campaign.state, 'primary');
      assert.match(here ?? '', /^[0-9a-f]{40}$/, 'the state records the run id of the server that created it');
      await client.srem(campaign.users, ...lostOnFailover);
      await client.hincrby(campaign.state, 'issued', -lostOnFailover.length);
      await client.hset(campaign.state, 'primary', 'f'.repeat(40));

      // Unsettled, Redis would admit 50 of these (the rows say 40 are left) and the 10 would get a second seat.
      const after = await issueAll(server, id, [...lostOnFailover, ...usersRange(100, 150)]);
      assert.deepEqual(lostOnFailover.filter((u) => after.get(u) !== 409), [], 'the users the new primary lacked hold their seat again (409)');
      assert.equal(withStatus(after, 202).length, 40, 'only the stock the rows left is admitted');
      assert.equal(withStatus(after, 410).length, 10);
      await waitForDrain(server, id, 100);
      const rows = await issuedRows(server.db, id);
      assert.equal(rows.rows, 100);
      assert.equal(rows.counter, 100);
      assert.equal(await client.hget(campaign.state, 'primary'), here, 'settled: the state is this server\'s again');
      const metrics = (await request(server.url, 'GET', '/metrics')).text;
      assert.equal(sample(metrics, 'couponrush_redis_settles_total'), 1, 'one campaign settled, once, however many requests found it unsettled');
    } finally {
      await server.close();
    }
  });
});
