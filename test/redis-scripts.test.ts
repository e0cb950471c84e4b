// The Lua scripts, called through their one typed wrapper (src/redis/scripts.ts): every return
// code of every script, and the EVALSHA path with its NOSCRIPT fallback.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { ACCEPTED, ALREADY_ISSUED, SOLD_OUT, WINDOW_CLOSED, WINDOW_NOT_OPEN } from '../src/coupons/domain.js';
import { RedisKeys, WORKER_GROUP, type CampaignKeys } from '../src/redis/keys.js';
import { ADMITTED, MISSING, Scripts, type CampaignWindow } from '../src/redis/scripts.js';
import { parseEntries } from '../src/redis/streams.js';
import { missing, needServer } from './helpers.js';
import { openTestRedis, REDIS_URL } from './redis-helpers.js';

type TestRedis = Awaited<ReturnType<typeof openTestRedis>>;

const NOW = Date.UTC(2030, 0, 1, 12, 0, 0);
const window = (total: number): CampaignWindow => ({ totalQuantity: total, startsAtMs: NOW - 60_000, endsAtMs: NOW + 60_000, expireAtMs: NOW + 3600_000 });

describe('Lua scripts through their wrapper', () => {
  let redis: TestRedis | undefined;
  let nextCoupon = 1;
  /** A campaign with state created by restore.lua (no users). */
  const campaign = async (total: number): Promise<CampaignKeys> => {
    const keys = redis!.keys.campaign(nextCoupon++);
    assert.equal(await redis!.scripts.restore(keys, `${keys.users}:none`, window(total)), 0);
    return keys;
  };
  /** False (skipped, or failed under CI) without Redis. */
  const ready = async (t: TestContext): Promise<boolean> => {
    if (redis !== undefined) return true;
    if (await needServer(t, 'Redis', REDIS_URL)) throw new Error('Redis answers but opening it failed');
    return false;
  };

  before(async () => {
    try {
      redis = await openTestRedis();
    } catch {
      redis = undefined; // each test reports the missing server through needServer
    }
  });
  after(async () => {
    await redis?.close();
  });

  it('restore.lua: creates missing state counting the loaded users, and leaves existing state alone', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = r.keys.campaign(9001);
    const load = r.keys.usersLoad(9001, 'x');
    await r.client.sadd(load, 'a', 'b');
    assert.equal(await r.scripts.restore(keys, load, window(10)), 2, 'CREATED: issued = loaded users');
    assert.deepEqual((await r.client.smembers(keys.users)).sort(), ['a', 'b']);
    assert.equal(await r.client.exists(load), 0, 'the load key was renamed into place');
    assert.ok((await r.client.pttl(keys.state)) > 0, 'state expires after the retention');
    await r.client.sadd(load, 'c');
    assert.equal(await r.scripts.restore(keys, load, window(10)), undefined, 'EXISTS');
    assert.equal(await r.client.hget(keys.state, 'issued'), '2', 'existing state untouched');
    assert.equal(await r.client.exists(load), 0, 'the unused load key is dropped');
  });

  it('admit.lua: ADMITTED, ALREADY_ISSUED, SOLD_OUT, WINDOW_NOT_OPEN, WINDOW_CLOSED, MISSING', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = await campaign(1);
    assert.equal(await r.scripts.admit(keys, 'u1', NOW - 60_001), WINDOW_NOT_OPEN);
    assert.equal(await r.scripts.admit(keys, 'u1', NOW + 60_000), WINDOW_CLOSED, 'the window is half-open');
    assert.equal(await r.scripts.admit(keys, 'u1', NOW - 60_000), ADMITTED);
    assert.equal(await r.scripts.admit(keys, 'u1', NOW), ALREADY_ISSUED);
    assert.equal(await r.scripts.admit(keys, 'u2', NOW), SOLD_OUT);
    assert.equal(await r.client.hget(keys.state, 'issued'), '1');
    assert.ok((await r.client.pttl(keys.users)) > 0, 'the users set gets the retention too');
    assert.equal(await r.scripts.admit(r.keys.campaign(424242), 'u1', NOW), MISSING);
  });

  it('admit-enqueue.lua: ACCEPTED queues {c,u,t,r}; refusals and MISSING queue nothing', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = await campaign(1);
    const id = String(nextCoupon - 1);
    const one = async (userId: string, nowMs: number, requestId: string) => {
      const results = await r.scripts.admitEnqueue(keys, id, [{ userId, nowMs, requestId }]);
      assert.equal(results.length, 1);
      return results[0];
    };
    assert.equal(await one('u1', NOW - 61_000, ''), WINDOW_NOT_OPEN);
    assert.equal(await one('u1', NOW + 61_000, ''), WINDOW_CLOSED);
    assert.equal(await one('u1', NOW, 'req-1'), ACCEPTED);
    assert.equal(await one('u1', NOW, 'req-2'), ALREADY_ISSUED);
    assert.equal(await one('u2', NOW, 'req-3'), SOLD_OUT);
    const missingKeys = r.keys.campaign(424243);
    assert.deepEqual(await r.scripts.admitEnqueue(missingKeys, '424243', [{ userId: 'u1', nowMs: NOW, requestId: '' }]), [MISSING]);
    const entries = parseEntries(await r.client.xrange(keys.stream, '-', '+'));
    assert.equal(entries.length, 1, 'only the admission was queued');
    assert.deepEqual(Object.fromEntries(entries[0]!.fields), { c: id, u: 'u1', t: String(NOW), r: 'req-1' });
    assert.equal(await r.client.exists(missingKeys.stream), 0);
  });

  it('admit-enqueue.lua: a batch is decided in order, each attempt as if it ran alone', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = await campaign(2);
    const id = String(nextCoupon - 1);
    const results = await r.scripts.admitEnqueue(keys, id, [
      { userId: 'early', nowMs: NOW - 61_000, requestId: 'r0' },
      { userId: 'a', nowMs: NOW, requestId: 'r1' },
      { userId: 'a', nowMs: NOW + 1, requestId: 'r2' },
      { userId: 'late', nowMs: NOW + 60_000, requestId: 'r3' },
      { userId: 'b', nowMs: NOW + 2, requestId: 'r4' },
      { userId: 'c', nowMs: NOW + 3, requestId: 'r5' },
      { userId: 'b', nowMs: NOW + 4, requestId: 'r6' },
    ]);
    assert.deepEqual(results, [WINDOW_NOT_OPEN, ACCEPTED, ALREADY_ISSUED, WINDOW_CLOSED, ACCEPTED, SOLD_OUT, ALREADY_ISSUED]);
    assert.equal(await r.client.hget(keys.state, 'issued'), '2', 'issued counts the batch\'s admissions');
    assert.deepEqual((await r.client.smembers(keys.users)).sort(), ['a', 'b']);
    assert.ok((await r.client.pttl(keys.users)) > 0, 'the users set gets the retention');
    const entries = parseEntries(await r.client.xrange(keys.stream, '-', '+')).map((e) => Object.fromEntries(e.fields));
    assert.deepEqual(entries, [
      { c: id, u: 'a', t: String(NOW), r: 'r1' },
      { c: id, u: 'b', t: String(NOW + 2), r: 'r4' },
    ]);
    assert.deepEqual(await r.scripts.admitEnqueue(keys, id, [{ userId: 'd', nowMs: NOW, requestId: '' }]), [SOLD_OUT], 'the stock stays spent');
  });

  it('release.lua: RELEASED (and pins sold out on request), NOT_ADMITTED', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = await campaign(5);
    assert.equal(await r.scripts.admit(keys, 'u1', NOW), ADMITTED);
    assert.equal(await r.scripts.admit(keys, 'u2', NOW), ADMITTED);
    assert.equal(await r.scripts.release(keys, 'u1', false), true, 'RELEASED');
    assert.equal(await r.client.hget(keys.state, 'issued'), '1');
    assert.equal(await r.client.sismember(keys.users, 'u1'), 0);
    assert.equal(await r.scripts.release(keys, 'u1', false), false, 'NOT_ADMITTED');
    assert.equal(await r.client.hget(keys.state, 'issued'), '1', 'a second release changes nothing');
    assert.equal(await r.scripts.release(keys, 'u2', true), true);
    assert.equal(await r.client.hget(keys.state, 'issued'), '5', 'sold out in the database → sold out in Redis');
    assert.equal(await r.scripts.admit(keys, 'u3', NOW), SOLD_OUT);
  });

  it('unlock.lua and extend.lua: only the token holder releases or extends', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const lock = r.keys.campaign(nextCoupon++).lock;
    await r.client.set(lock, 'mine', 'PX', 1000, 'NX');
    assert.equal(await r.scripts.extend(lock, 'theirs', 60_000), false, 'NOT_OWNER cannot extend');
    assert.equal(await r.scripts.extend(lock, 'mine', 60_000), true, 'EXTENDED');
    assert.ok((await r.client.pttl(lock)) > 1000);
    assert.equal(await r.scripts.unlock(lock, 'theirs'), false, 'NOT_OWNER cannot release');
    assert.equal(await r.client.get(lock), 'mine');
    assert.equal(await r.scripts.unlock(lock, 'mine'), true, 'RELEASED');
    assert.equal(await r.client.exists(lock), 0);
    assert.equal(await r.scripts.unlock(lock, 'mine'), false, 'an expired lock is nobody\'s');
  });

  it('dead-letter.lua and replay.lua: DEAD_LETTERED / NOT_PENDING, REPLAYED / NOT_FOUND', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = r.keys.campaign(nextCoupon++);
    await r.client.xgroup('CREATE', keys.stream, WORKER_GROUP, '0', 'MKSTREAM');
    const fields = ['c', '7', 'u', 'u1', 't', String(NOW), 'r', 'req'];
    await r.client.sadd(keys.users, 'u1');
    const id = await r.client.xadd(keys.stream, '*', ...fields);
    const stray = ['c', '7', 'u', 'not-admitted', 't', String(NOW), 'r', ''];
    const strayId = await r.client.xadd(keys.stream, '*', ...stray);
    assert.ok(strayId !== null);
    assert.ok(id !== null);
    assert.equal(await r.scripts.deadLetter(keys, WORKER_GROUP, 'w1', id, 'why', 1, NOW, fields), undefined, 'NOT_PENDING: never delivered');
    await r.client.call('XREADGROUP', 'GROUP', WORKER_GROUP, 'w1', 'COUNT', 10, 'STREAMS', keys.stream, '>');
    assert.equal(await r.scripts.deadLetter(keys, WORKER_GROUP, 'w2', id, 'why', 1, NOW, fields), undefined, 'NOT_PENDING for another consumer');
    const deadId = await r.scripts.deadLetter(keys, WORKER_GROUP, 'w1', id, 'bad entry', 3, NOW, fields);
    assert.ok(deadId !== undefined, 'DEAD_LETTERED');
    const strayDead = await r.scripts.deadLetter(keys, WORKER_GROUP, 'w1', strayId, 'invalid', 1, NOW, stray);
    assert.ok(strayDead !== undefined);
    assert.equal(await r.client.hexists(keys.held, 'not-admitted'), 0, 'a user who is not admitted is not held');
    await r.client.xdel(keys.dead, strayDead);
    const [dead] = parseEntries(await r.client.xrange(keys.dead, '-', '+'));
    assert.deepEqual(Object.fromEntries(dead!.fields), { _source: id, _reason: 'bad entry', _deliveries: '3', _failed: String(NOW), c: '7', u: 'u1', t: String(NOW), r: 'req' });
    const pending = (await r.client.xpending(keys.stream, WORKER_GROUP)) as unknown[];
    assert.equal(pending[0], 0, 'the source entry is acknowledged');
    assert.equal(await r.client.hget(keys.held, 'u1'), `stream:${deadId}`, 'its user is in the held index');

    const streamId = await r.scripts.replay(keys, deadId);
    assert.ok(streamId !== undefined, 'REPLAYED');
    const replayed = parseEntries(await r.client.xrange(keys.stream, streamId, streamId));
    assert.deepEqual(Object.fromEntries(replayed[0]!.fields), { c: '7', u: 'u1', t: String(NOW), r: 'req' }, 'only the entry\'s own fields go back');
    assert.equal(await r.client.xlen(keys.dead), 0);
    assert.equal(await r.client.hexists(keys.held, 'u1'), 0, 'replay settles the HELD');
    assert.equal(await r.scripts.replay(keys, deadId), undefined, 'NOT_FOUND');
  });

  it('discard.lua: RELEASED / DISCARDED / NOT_FOUND, the discard recorded, the seat given back only for the user checked', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = await campaign(5);
    await r.client.xgroup('CREATE', keys.stream, WORKER_GROUP, '0', 'MKSTREAM');
    const letter = async (user: string): Promise<string> => {
      const fields = ['c', '7', 'u', user, 't', String(NOW), 'r', ''];
      assert.deepEqual(await r.scripts.admitEnqueue(keys, '7', [{ userId: user, nowMs: NOW, requestId: '' }]), [ACCEPTED]);
      const [entry] = parseEntries(((await r.client.call('XREADGROUP', 'GROUP', WORKER_GROUP, 'w1', 'COUNT', 1, 'STREAMS', keys.stream, '>')) as [string, unknown][])[0]![1]);
      const deadId = await r.scripts.deadLetter(keys, WORKER_GROUP, 'w1', entry!.id, 'refused', 3, NOW, fields);
      assert.ok(deadId !== undefined);
      return deadId;
    };
    const a = await letter('a');
    const b = await letter('b');
    assert.equal(await r.client.hget(keys.state, 'issued'), '2');

    assert.equal(await r.scripts.discard(keys, a, 'a', NOW + 1, 1000, 60_000), 'RELEASED', 'the user checked is the entry\'s and was admitted');
    assert.equal(await r.client.sismember(keys.users, 'a'), 0);
    assert.equal(await r.client.hget(keys.state, 'issued'), '1');
    assert.equal(await r.client.hexists(keys.held, 'a'), 0, 'HELD settled');
    assert.equal(await r.scripts.discard(keys, b, 'someone-else', NOW + 2, 1000, 60_000), 'DISCARDED', 'another user named: the seat stays');
    assert.equal(await r.client.sismember(keys.users, 'b'), 1);
    assert.equal(await r.client.hget(keys.state, 'issued'), '1');
    assert.equal(await r.client.hexists(keys.held, 'b'), 0);
    assert.equal(await r.scripts.discard(keys, a, 'a', NOW + 3, 1000, 60_000), 'NOT_FOUND', 'a second discard finds nothing');
    assert.equal(await r.client.hget(keys.state, 'issued'), '1', 'and releases nothing');
    assert.equal(await r.scripts.replay(keys, b), undefined, 'a discarded dead letter cannot be replayed');
    assert.equal(await r.client.xlen(keys.dead), 0);
    const records = parseEntries(await r.client.xrange(keys.discarded, '-', '+')).map((e) => Object.fromEntries(e.fields));
    assert.deepEqual(records.map((f) => [f._dead, f._discarded, f._released, f._reason, f.u]), [
      [a, String(NOW + 1), '1', 'refused', 'a'],
      [b, String(NOW + 2), '0', 'refused', 'b'],
    ]);
    assert.ok((await r.client.pttl(keys.discarded)) > 0, 'the record of discards expires');
  });

  it('release-held.lua: RELEASED / KEPT, and only the held entry of this dead letter goes', async (t) => {
    if (!(await ready(t))) return;
    const r = redis!;
    const keys = await campaign(5);
    assert.deepEqual(await r.scripts.admitProduce(keys, [{ userId: 'k1', nowMs: NOW, requestId: '' }, { userId: 'k2', nowMs: NOW, requestId: '' }]), [ACCEPTED, ACCEPTED]);
    await r.client.hset(keys.held, 'k1', 'kafka:0-5', 'k2', 'kafka:1-9');
    assert.equal(await r.scripts.releaseHeld(keys, 'k1', 'kafka:0-4', true), true, 'RELEASED');
    assert.equal(await r.client.hget(keys.held, 'k1'), 'kafka:0-5', 'another dead letter\'s entry stays');
    assert.equal(await r.client.hget(keys.state, 'issued'), '1');
    assert.equal(await r.scripts.releaseHeld(keys, 'k1', 'kafka:0-5', true), false, 'KEPT: no longer admitted');
    assert.equal(await r.client.hexists(keys.held, 'k1'), 0);
    assert.equal(await r.scripts.releaseHeld(keys, 'k2', 'kafka:1-9', false), false, 'KEPT: not asked (a replay)');
    assert.equal(await r.client.sismember(keys.users, 'k2'), 1);
    assert.equal(await r.client.hexists(keys.held, 'k2'), 0);
    assert.equal(await r.client.hget(keys.state, 'issued'), '1');
  });

  it('loads each script once and calls it by SHA, falling back to EVAL after SCRIPT FLUSH (private Redis)', async (t) => {
    if (!(await needServer(t, 'Redis', REDIS_URL))) return;
    let binary: string;
    try {
      binary = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
    } catch {
      missing(t, 'redis-server binary not found: cannot start a private Redis to flush its script cache');
      return;
    }
    const port = await freePort();
    // SCRIPT FLUSH would hit everyone on the shared Redis: flush a private one instead.
    execFileSync(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'yes']);
    const client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 2, retryStrategy: (n) => (n > 20 ? null : 50) });
    client.on('error', () => undefined); // refused until the daemon listens; commands retry
    try {
      const scripts = new Scripts(client);
      const keys = new RedisKeys('').campaign(1);
      assert.equal(await scripts.restore(keys, '{cpn:1}:load', window(3)), 0);
      assert.equal(await scripts.admit(keys, 'a', NOW), ADMITTED);
      assert.equal(await scripts.admit(keys, 'b', NOW), ADMITTED);
      await client.script('FLUSH');
      assert.equal(await scripts.admit(keys, 'c', NOW), ADMITTED, 'NOSCRIPT → EVAL fallback');
      assert.equal(await scripts.admit(keys, 'd', NOW), SOLD_OUT);
      const stats = String(await client.info('commandstats'));
      const calls = (cmd: string) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(stats)?.[1] ?? 0);
      assert.ok(calls('evalsha') >= 2, 'repeat calls go by SHA');
      assert.ok(calls('eval') <= 4, 'the source is sent only on first use per connection and after NOSCRIPT');
    } finally {
      await client.shutdown('NOSAVE').catch(() => undefined);
      client.disconnect();
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}
