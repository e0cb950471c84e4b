// The stream worker under failure, on real PostgreSQL and MariaDB, real Redis and real HTTP: a worker killed
// with SIGKILL in the middle of a drain, two workers at once, and poison entries that go to the
// dead-letter stream and are replayed once their cause is fixed.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { holdCouponRow, issuedRows, needDatabase, needServer, refuseInsertsOf, request, SERVER_DB_KINDS, type ServerDbKind } from './helpers.js';
import {
  backlog,
  exited,
  issueAll,
  REDIS_URL,
  spawnWorker,
  startRedisTestServer,
  usersRange,
  waitFor,
  waitForDrain,
  withStatus,
} from './redis-helpers.js';
import { WORKER_GROUP } from '../src/redis/keys.js';
import { parsePendingSummary, parseRead } from '../src/redis/streams.js';

async function servers(t: TestContext, db: ServerDbKind = 'postgres'): Promise<boolean> {
  return (await needDatabase(t, db)) && (await needServer(t, 'Redis', REDIS_URL));
}

for (const dbKind of SERVER_DB_KINDS) describe(`couponrush worker (${dbKind})`, () => {
  it('killed with SIGKILL mid-drain: a new worker persists every admitted issuance exactly once', async (t) => {
    if (!(await servers(t, dbKind))) return;
    const server = await startRedisTestServer({ WORKER_BATCH_SIZE: '50' }, { db: dbKind });
    const children: ReturnType<typeof spawnWorker>[] = [];
    let unlock: (() => Promise<void>) | undefined;
    try {
      const { id } = await server.createCoupon({ totalQuantity: 450, strategy: 'redis-lua-async' });
      const stream = server.redis.keys.campaign(id).stream;
      const admitted: string[] = [];

      // Wave 1 is persisted by worker A.
      admitted.push(...withStatus(await issueAll(server, id, usersRange(0, 200)), 202));
      const a = spawnWorker(server.workerEnv, 'worker-a');
      children.push(a);
      await waitForDrain(server, id, 200);

      // Hold the coupon row so A's next batch write blocks inside the database, then admit wave 2.
      unlock = await holdCouponRow(server.db, id);
      admitted.push(...withStatus(await issueAll(server, id, usersRange(200, 400)), 202));
      await waitFor('worker A holds a batch it has not acknowledged', async () => {
        const reply = (await server.redis.client.xpending(stream, WORKER_GROUP, '-', '+', 1000, 'worker-a')) as unknown[];
        return reply.length > 0;
      });
      a.kill('SIGKILL');
      assert.equal((await exited(a)).signal, 'SIGKILL');
      await unlock();

      // Admissions go on while no worker runs; then worker B claims A's entries and drains.
      admitted.push(...withStatus(await issueAll(server, id, usersRange(400, 500)), 202));
      assert.equal(admitted.length, 450, 'the whole stock was admitted');
      const b = spawnWorker(server.workerEnv, 'worker-b');
      children.push(b);
      await waitForDrain(server, id, 450);

      const db = await issuedRows(server.db, id);
      assert.equal(db.rows, 450);
      assert.equal(db.distinctUsers, 450, 'no issuance twice');
      assert.equal(db.counter, 450, 'the counter counts rows inserted, not deliveries');
      assert.deepEqual(new Set(db.users), new Set(admitted), 'every 202 became a row');
      const pending = parsePendingSummary(await server.redis.client.xpending(stream, WORKER_GROUP));
      assert.equal(pending.count, 0, "A's pending entries were claimed and acknowledged");

      b.kill('SIGTERM');
      assert.equal((await exited(b)).code, 0, 'SIGTERM drains and exits cleanly');
    } finally {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
      await Promise.all(children.map(exited));
      await unlock?.();
      await server.close();
    }
  });

  it('two workers at once: no duplicates, no loss', async (t) => {
    if (!(await servers(t, dbKind))) return;
    const server = await startRedisTestServer({ WORKER_BATCH_SIZE: '20' }, { db: dbKind });
    try {
      const w1 = await server.startWorker('w1');
      const w2 = await server.startWorker('w2');
      const { id } = await server.createCoupon({ totalQuantity: 600, strategy: 'redis-lua-async-cached' });
      const statuses = await issueAll(server, id, usersRange(0, 800), 128);
      const winners = withStatus(statuses, 202);
      assert.equal(winners.length, 600);
      assert.equal(withStatus(statuses, 410).length, 200);
      await waitForDrain(server, id, 600);
      const db = await issuedRows(server.db, id);
      assert.equal(db.distinctUsers, 600, 'no duplicates');
      assert.equal(db.counter, 600);
      assert.deepEqual(new Set(db.users), new Set(winners), 'no loss');
      // More than 600 only if a slow batch was claimed by the other worker too: harmless, as above.
      assert.ok(w1.written + w2.written >= 600, 'every entry was written by a worker');
      t.diagnostic(`w1 wrote ${w1.written}, w2 wrote ${w2.written}`);
    } finally {
      await server.close();
    }
  });

  it('dead-letters a poison entry with its reason, lets the rest flow, and replays it once fixed', async (t) => {
    if (!(await servers(t, dbKind))) return;
    const server = await startRedisTestServer({}, { db: dbKind });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 50, strategy: 'redis-lua-async' });
      const keys = server.redis.keys.campaign(id);
      // The database refuses one user's row: the entry fails on every delivery.
      const fix = await refuseInsertsOf(server.db, 'poison-1', 'poisoned by the test');
      await server.startWorker('w1');
      const first = await issueAll(server, id, [...usersRange(0, 10), 'poison-1', ...usersRange(10, 20)]);
      assert.equal(withStatus(first, 202).length, 21);
      // And an entry that can never be valid, straight into the stream.
      await server.redis.client.xadd(keys.stream, '*', 'c', String(id), 'u', 'not a user!', 't', String(Date.now()), 'r', '');

      const admin = server.adminHeaders;
      type Letter = { id: string; reason: string; deliveries: number; entry: Record<string, string> };
      const letters = async () => ((await request(server.url, 'GET', `/admin/dead-letters?couponId=${id}`, { headers: admin })).json as { items: Letter[] }).items;
      await waitFor('two dead letters', async () => (await letters()).length === 2);
      await waitForDrain(server, id, 20);
      const dead = await letters();
      const poison = dead.find((l) => l.entry.u === 'poison-1');
      const invalid = dead.find((l) => l.entry.u === 'not a user!');
      assert.ok(poison !== undefined && invalid !== undefined, JSON.stringify(dead));
      assert.match(poison.reason, /poisoned by the test/, 'the reason is the database error');
      assert.equal(poison.deliveries, 3, 'dead-lettered on its WORKER_MAX_DELIVERIES-th failed delivery');
      assert.match(invalid.reason, /invalid entry: field u/, 'an invalid entry is dead-lettered at once');
      assert.equal((await request(server.url, 'GET', '/admin/dead-letters')).status, 401, 'admin only');
      const status = await request(server.url, 'GET', `/coupons/${id}/issues/me`, { headers: { authorization: `Bearer ${server.tokenFor('poison-1')}` } });
      assert.deepEqual(status.json, { status: 'HELD' }, 'a dead letter still holds its admission, and its user is told it is held');

      // The rest of the stream keeps flowing.
      assert.equal(withStatus(await issueAll(server, id, usersRange(20, 25)), 202).length, 5);
      await waitForDrain(server, id, 25);

      // Fix the cause, replay.
      await fix();
      const replay = await request(server.url, 'POST', '/admin/dead-letters/replay', { headers: admin, json: { couponId: id, ids: [poison.id, '1-1'] } });
      assert.equal(replay.status, 200, replay.text);
      const body = replay.json as { replayed: Array<{ id: string }>; notFound: string[] };
      assert.deepEqual(body.replayed.map((r) => r.id), [poison.id]);
      assert.deepEqual(body.notFound, ['1-1']);
      await waitForDrain(server, id, 26);
      const db = await issuedRows(server.db, id);
      assert.ok(db.users.includes('poison-1'));
      assert.equal(db.counter, 26);
      assert.deepEqual((await letters()).map((l) => l.id), [invalid.id], 'only the invalid entry is left');
      assert.deepEqual(await backlog(server.redis, id), { pending: 0, undelivered: 0 });
    } finally {
      await server.close();
    }
  });
});

describe('couponrush worker: stream upkeep', () => {
  it('trims a stream only below what every consumer group has acknowledged', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 10, strategy: 'redis-lua-async' });
      const { stream } = server.redis.keys.campaign(id);
      const r = server.redis.client;
      await issueAll(server, id, usersRange(0, 5), 1);
      // A second group (say, an audit consumer) that is behind: it acked 2, holds 1 pending.
      await r.xgroup('CREATE', stream, 'audit', '0');
      const read = async (count: number) => parseRead(await r.call('XREADGROUP', 'GROUP', 'audit', 'a1', 'COUNT', count, 'STREAMS', stream, '>'))[0]?.entries ?? [];
      const firstThree = await read(3);
      await r.xack(stream, 'audit', firstThree[0]!.id, firstThree[1]!.id);

      const worker = await server.startWorker('w1');
      await waitForDrain(server, id, 5);
      await worker.upkeep();
      const kept = (await r.xrange(stream, '-', '+')).map(([entryId]) => entryId);
      assert.equal(kept.length, 3, "kept: audit's pending entry and the two it never read");
      assert.equal(kept[0], firstThree[2]!.id);

      const rest = await read(10);
      await r.xack(stream, 'audit', firstThree[2]!.id, ...rest.map((e) => e.id));
      await worker.upkeep();
      assert.equal(await r.xlen(stream), 0, 'everything acknowledged by every group is trimmed');
    } finally {
      await server.close();
    }
  });
});
