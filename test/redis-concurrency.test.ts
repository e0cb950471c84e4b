// The stampede test of the core issue for each Redis strategy, on real PostgreSQL, real MariaDB and real Redis:
// 2,000 concurrent HTTP requests from 1,000 users against stock 500 — exactly the stock in the
// database once the queue is drained, no user twice, success responses == stock. Plus the
// PENDING → ISSUED status of the async path and the sync path's rollback of a failed insert.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { issuedRows, needDatabase, needServer, refuseInsertsOf, request, SERVER_DB_KINDS, stampede, type ServerDbKind } from './helpers.js';
import { backlog, issueAll, REDIS_URL, startRedisTestServer, waitFor, waitForDrain } from './redis-helpers.js';

const STOCK = 500;
const USERS = 1_000;
const REQUESTS = 2_000;

const STRATEGIES = [
  { name: 'redis-lock', success: 201, queued: false },
  { name: 'redis-lua-sync', success: 201, queued: false },
  { name: 'redis-lua-async', success: 202, queued: true },
  { name: 'redis-lua-async-cached', success: 202, queued: true },
] as const;

async function servers(t: TestContext, db: ServerDbKind = 'postgres'): Promise<boolean> {
  return (await needDatabase(t, db)) && (await needServer(t, 'Redis', REDIS_URL));
}

for (const dbKind of SERVER_DB_KINDS) describe(`POST /coupons/:id/issues under a stampede (Redis strategies, ${dbKind})`, () => {
  for (const { name, success, queued } of STRATEGIES) {
    it(`${name}: issues exactly the stock, never twice to one user, queue drained`, async (t) => {
      if (!(await servers(t, dbKind))) return;
      const server = await startRedisTestServer({}, { db: dbKind });
      try {
        if (queued) await server.startWorker('w1');
        const { id } = await server.createCoupon({ totalQuantity: STOCK, strategy: name });
        const result = await stampede(server, id, USERS, REQUESTS);
        if (queued) await waitForDrain(server, id, STOCK);
        const db = await issuedRows(server.db, id);

        assert.equal(db.rows, STOCK, 'rows in the database == stock');
        assert.equal(db.distinctUsers, db.rows, 'no user has two rows');
        assert.equal(db.counter, STOCK, 'issued_quantity matches the rows');
        assert.equal(result.statuses.get(success), STOCK, `exactly the stock answered ${success}`);
        assert.deepEqual(new Set(result.winners), new Set(db.users), 'every success has a row, every row had a success');
        const refused = (result.statuses.get(409) ?? 0) + (result.statuses.get(410) ?? 0);
        assert.equal(refused, REQUESTS - STOCK, `all others are 409/410, got ${JSON.stringify([...result.statuses])}`);
        if (queued) assert.deepEqual(await backlog(server.redis, id), { pending: 0, undelivered: 0 }, 'nothing left in the stream');
        if (name !== 'redis-lock') {
          const keys = server.redis.keys.campaign(id);
          assert.equal(await server.redis.client.hget(keys.state, 'issued'), String(STOCK), 'Redis agrees with the database');
          assert.equal(await server.redis.client.scard(keys.users), STOCK);
        }
      } finally {
        await server.close();
      }
    });
  }
});

const asUser = (server: { tokenFor(userId: string): string }, userId: string) => ({ authorization: `Bearer ${server.tokenFor(userId)}` });
function assertStatus(res: { status: number; text: string }, status: number): void {
  assert.equal(res.status, status, res.text);
}

describe('redis-lua-async-cached: after sold-out', () => {
  it('answers 410 to anyone without reading the token, and counts nobody against the rate limit', async (t) => {
    if (!(await servers(t))) return;
    // A limit of 2 per user: were sold-out answers counted, the third request below would be a 429.
    const server = await startRedisTestServer({ RATE_LIMIT_USER: '2/60s' });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 1, strategy: 'redis-lua-async-cached' });
      assertStatus(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser(server, 'winner') }), 202);
      // Before Redis has said SOLD_OUT to this instance, a forged token is still a 401.
      assertStatus(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: 'Bearer not.a.jwt' } }), 401);
      assertStatus(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser(server, 'loser') }), 410);
      for (const headers of [{ authorization: 'Bearer not.a.jwt' }, {}, asUser(server, 'loser'), asUser(server, 'loser'), asUser(server, 'winner')]) {
        assertStatus(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers }), 410);
      }
      // Another campaign on the same server still authenticates.
      const open = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async-cached' });
      assertStatus(await request(server.url, 'POST', `/coupons/${open.id}/issues`, { headers: { authorization: 'Bearer not.a.jwt' } }), 401);
    } finally {
      await server.close();
    }
  });
});

describe('redis-lua-async: GET /coupons/:id/issues/me', () => {
  it('answers PENDING until the worker wrote the row, then ISSUED; REDIS_URL makes the cached variant the default', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      const created = await server.createCoupon({ totalQuantity: 10 });
      const coupon = await request(server.url, 'GET', `/coupons/${created.id}`);
      assert.equal((coupon.json as { strategy: string }).strategy, 'redis-lua-async-cached');
      const me = (user: string) => request(server.url, 'GET', `/coupons/${created.id}/issues/me`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });

      const res = await request(server.url, 'POST', `/coupons/${created.id}/issues`, { headers: { authorization: `Bearer ${server.tokenFor('alice')}` } });
      assert.equal(res.status, 202);
      assert.deepEqual(res.json, { couponId: created.id, userId: 'alice', status: 'PENDING' });
      assert.deepEqual((await me('alice')).json, { status: 'PENDING' }, 'admitted, no row yet (no worker running)');
      assert.equal((await me('bob')).status, 404, 'never admitted');

      await server.startWorker('w1');
      await waitFor('alice ISSUED', async () => ((await me('alice')).json as { status?: string }).status === 'ISSUED');
      assert.equal((await issuedRows(server.db, created.id)).rows, 1);
    } finally {
      await server.close();
    }
  });
});

describe('redis-lua-async: GET /coupons/:id', () => {
  it('says SOLD_OUT with remaining 0 once admissions reach the stock, before the rows exist', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      // No worker: the admissions stay queued and issuedCount stays 0.
      const { id } = await server.createCoupon({ totalQuantity: 3, strategy: 'redis-lua-async' });
      const view = async () => (await request(server.url, 'GET', `/coupons/${id}`)).json as { status: string; remaining: number; issuedCount: number };
      for (const u of ['a', 'b']) assert.equal((await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(u)}` } })).status, 202);
      assert.deepEqual(await view(), { ...(await view()), status: 'OPEN', remaining: 1, issuedCount: 0 });
      assert.equal((await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: `Bearer ${server.tokenFor('c')}` } })).status, 202);
      assert.deepEqual(await view(), { ...(await view()), status: 'SOLD_OUT', remaining: 0, issuedCount: 0 });
      const listed = ((await request(server.url, 'GET', '/coupons')).json as { items: Array<{ id: number; status: string }> }).items.find((c) => c.id === id);
      assert.equal(listed?.status, 'SOLD_OUT');
    } finally {
      await server.close();
    }
  });
});

for (const dbKind of SERVER_DB_KINDS) describe(`redis-lua-sync: a failed insert (${dbKind})`, () => {
  it('is rolled back in Redis by release.lua, so Redis and the database agree', async (t) => {
    if (!(await servers(t, dbKind))) return;
    const server = await startRedisTestServer({}, { db: dbKind });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-sync' });
      const fix = await refuseInsertsOf(server.db, 'mallory', 'refused by test');
      const statuses = await issueAll(server, id, ['alice', 'mallory', 'bob']);
      assert.equal(statuses.get('alice'), 201);
      assert.equal(statuses.get('bob'), 201);
      assert.ok((statuses.get('mallory') ?? 0) >= 500, 'the failed insert is an error, not a success');
      const keys = server.redis.keys.campaign(id);
      assert.equal(await server.redis.client.sismember(keys.users, 'mallory'), 0, 'the admission was released');
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '2', 'Redis counts what the database has');
      assert.equal((await issuedRows(server.db, id)).rows, 2);
      await fix();
      assert.equal((await issueAll(server, id, ['mallory'])).get('mallory'), 201, 'and the user can try again');
    } finally {
      await server.close();
    }
  });
});
