// The console's event stream (GET /admin/console/stream): admin only, and what it says after a
// stampede's drain is what the database and the clients saw — rows, admissions, status, the
// sell-out moment, every answer by status — for the embedded default (no server), a queued Redis
// strategy with its worker (PostgreSQL, Redis), two instances sharing Redis, and
// `serve --workers 2` without Redis: the answers of every process must be summed.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, it } from 'node:test';
import { watchConsole, type ConsoleWatch } from '../bench/src/console-watch.js';
import type { ConsoleSample } from '../src/console/feed.js';
import { startApi, createCampaign, type ApiProcess } from './fault-helpers.js';
import { ADMIN_TOKEN, createTestDatabase, issuedRows, JWT_SECRET, needDatabase, needServer, openTestDb, request, SERVER_KINDS, stampede, startTestServer, type StampedeResult } from './helpers.js';
import { TcpProxy } from './ops-helpers.js';
import { signUserToken } from '../src/http/auth.js';
import { FAST_WORKER_ENV, REDIS_URL, startRedisTestServer, waitForDrain } from './redis-helpers.js';

const tokenFor = (user: string) => signUserToken(JWT_SECRET, user);

/** The request-id prefixes (one per process) seen over fresh connections, which node:cluster deals round-robin. */
async function processesAnswering(url: string): Promise<Set<string>> {
  const prefixes = new Set<string>();
  for (let i = 0; i < 12; i++) {
    const id = await new Promise<string>((resolve, reject) => {
      http.get(new URL('/healthz', url), { agent: false }, (res) => {
        res.resume();
        resolve(String(res.headers['x-request-id']));
      }).on('error', reject);
    });
    prefixes.add(id.split('-')[0]!);
  }
  return prefixes;
}

/** The stream's cumulative answers equal the clients' record, status by status. */
function sameAnswers(sample: ConsoleSample, result: StampedeResult): boolean {
  const told = Object.entries(sample.answers).filter(([, n]) => n > 0);
  return told.length === result.statuses.size && told.every(([status, n]) => result.statuses.get(Number(status)) === n);
}

/**
 * Opens a console on the campaign before the stampede, runs it, waits for the drain, and checks
 * the stream against the database and the recorded answers.
 */
async function stampedeWatched(
  consoleUrl: string,
  couponId: number,
  stock: number,
  fire: () => Promise<StampedeResult>,
  drained: () => Promise<void>,
  rows: () => Promise<{ rows: number; users: string[] }>,
): Promise<{ watch: ConsoleWatch; result: StampedeResult; settled: ConsoleSample }> {
  const watch = await watchConsole(consoleUrl, ADMIN_TOKEN, couponId);
  try {
    const first = await watch.until((s) => s.campaign !== undefined, 10_000);
    assert.equal(first.campaign!.status, 'OPEN');
    assert.equal(first.campaign!.remaining, stock);
    const started = Date.now();
    const result = await fire();
    const ended = Date.now();
    await drained();
    const db = await rows();
    assert.equal(db.rows, stock, 'exactly the stock was issued');
    assert.deepEqual(new Set(result.winners), new Set(db.users), 'every 201/202 has its row, and no row lacks one');

    // The next samples, once the drain is over, say what the database says.
    const settled = await watch.until((s) => s.campaign?.persisted === db.rows && sameAnswers(s, result), 10_000);
    const c = settled.campaign!;
    assert.equal(c.total, stock);
    assert.equal(c.admitted, stock);
    assert.equal(c.remaining, 0);
    assert.equal(c.status, 'SOLD_OUT');
    assert.ok(c.soldOutAt !== null, 'the console was open before the sell-out: it saw the moment');
    assert.ok(c.soldOutAt >= started && c.soldOutAt <= ended + 2_000, `sold out at ${c.soldOutAt}, stampede ${started}..${ended}`);
    const during = watch.samples.filter((s) => s.at >= started && s.at <= ended + 1_000);
    assert.ok(
      during.some((s) => s.latencyMs.p99 !== null && Object.values(s.answersPerSecond).some((n) => n > 0)),
      'a sample taken during the stampede shows answers per second and a p99',
    );
    // One sample a second, not one per request.
    const spacing = watch.samples.slice(1).map((s, i) => s.at - watch.samples[i]!.at);
    assert.ok(spacing.every((ms) => ms >= 900), `samples at least ~1 s apart: ${spacing.join(', ')}`);
    return { watch, result, settled };
  } finally {
    watch.close();
  }
}

describe('GET /admin/console/stream', () => {
  it('refuses a request without the admin token (401) and one with a wrong token (403)', async () => {
    const server = await startTestServer({ db: 'pglite' });
    try {
      await assert.rejects(watchConsole(server.url, ''), (err: Error & { status?: number }) => err.status === 401);
      await assert.rejects(watchConsole(server.url, 'not-the-admin-token'), (err: Error & { status?: number }) => err.status === 403);
      const info = await request(server.url, 'GET', '/admin/console/info', { headers: { authorization: 'Bearer wrong' } });
      assert.equal(info.status, 403);
    } finally {
      await server.close();
    }
  });

  it('matches the database and every recorded answer after a stampede on the embedded default (local, PGlite)', async () => {
    const server = await startTestServer({ db: 'pglite' });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 150 });
      await stampedeWatched(server.url, id, 150, () => stampede(server, id, 450, 750, 64), async () => {}, () => issuedRows(server.db, id));
      const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
      assert.deepEqual((await request(server.url, 'GET', '/admin/console/health', { headers: admin })).json, { database: 'ok' });
      const rec = (await request(server.url, 'GET', '/admin/reconcile', { headers: admin })).json as { applies: boolean };
      assert.equal(rec.applies, false, 'without Redis there is nothing to reconcile');
    } finally {
      await server.close();
    }
  });

  it('matches the database after the worker drained a queued strategy (redis-lua-async, PostgreSQL, Redis)', async (t) => {
    if (!(await needDatabase(t, 'postgres')) || !(await needServer(t, 'Redis', REDIS_URL))) return;
    const server = await startRedisTestServer();
    try {
      await server.startWorker('console-test');
      const { id } = await server.createCoupon({ totalQuantity: 200, strategy: 'redis-lua-async' });
      const { watch } = await stampedeWatched(server.url, id, 200, () => stampede(server, id, 600, 1000, 64), () => waitForDrain(server, id, 200), () => issuedRows(server.db, id));
      assert.ok(watch.samples.some((s) => s.campaign?.stream !== undefined), 'the campaign\'s Redis stream is reported');
      // The operations view: each store answers, and reconcile finds Redis and the rows in agreement.
      const health = await request(server.url, 'GET', '/admin/console/health', { headers: server.adminHeaders });
      assert.deepEqual(health.json, { database: 'ok', redis: 'ok' });
      const rec = await request(server.url, 'GET', `/admin/reconcile?coupon=${id}`, { headers: server.adminHeaders });
      const report = rec.json as { applies: boolean; campaigns: Array<{ couponId: number; status: string; dbRows: number }> };
      assert.equal(report.applies, true);
      assert.deepEqual(report.campaigns.map((c) => [c.couponId, c.status, c.dbRows]), [[id, 'OK', 200]]);
    } finally {
      await server.close();
    }
  });

  it('sums the answers of two API instances that share Redis, whichever one the console is on', async (t) => {
    if (!(await needDatabase(t, 'postgres')) || !(await needServer(t, 'Redis', REDIS_URL))) return;
    const a = await startRedisTestServer();
    const b = await startTestServer({ db: 'postgres', sharing: a, env: { REDIS_URL, REDIS_PREFIX: a.prefix, ...FAST_WORKER_ENV } });
    try {
      await a.startWorker('console-test');
      const { id } = await a.createCoupon({ totalQuantity: 200, strategy: 'redis-lua-async' });
      // Half the crowd on each instance; the console on B, which answers only its own half.
      const fire = async () => {
        const [viaA, viaB] = await Promise.all([stampede(a, id, 500, 600, 32), stampede(b, id, 500, 600, 32)]);
        const statuses = new Map(viaA.statuses);
        for (const [status, n] of viaB.statuses) statuses.set(status, (statuses.get(status) ?? 0) + n);
        assert.ok((viaA.statuses.get(202) ?? 0) > 0 && (viaB.statuses.get(202) ?? 0) > 0, 'both instances admitted some');
        return { statuses, winners: [...viaA.winners, ...viaB.winners], total: viaA.total + viaB.total };
      };
      const { settled } = await stampedeWatched(b.url, id, 200, fire, () => waitForDrain(a, id, 200), () => issuedRows(a.db, id));
      assert.equal(settled.processes, 2);
    } finally {
      await b.close();
      await a.close();
    }
  });
});

describe('the console stream while the database is away', () => {
  it('says the campaign could not be read instead of "not found", and carries on once the database is back', async (t) => {
    if (!(await needDatabase(t, 'postgres'))) return;
    const target = new URL(SERVER_KINDS.postgres.url);
    const proxy = await new TcpProxy(target.hostname, Number(target.port)).up();
    const viaProxy = (url: string) => {
      const u = new URL(url);
      u.host = proxy.url;
      return u.toString();
    };
    const server = await startTestServer({ db: 'postgres', dbVia: viaProxy, env: { DEFAULT_STRATEGY: 'db-atomic' } });
    const watch = await watchConsole(server.url, ADMIN_TOKEN, (await server.createCoupon({ totalQuantity: 10 })).id);
    try {
      await watch.until((s) => s.campaign !== undefined, 10_000);
      await proxy.down();
      const away = await watch.until((s) => s.campaignUnreadable !== undefined, 15_000);
      assert.equal(away.campaign, undefined);
      await proxy.up();
      const back = await watch.until((s) => s.campaign !== undefined, 15_000);
      assert.equal(back.campaign!.remaining, 10);
    } finally {
      watch.close();
      await proxy.up();
      await server.close();
      await proxy.down();
    }
  });
});

describe('the console stream under serve --workers 2', () => {
  let api: ApiProcess | undefined;
  let drop: (() => Promise<void>) | undefined;
  after(async () => {
    await api?.stop();
    await drop?.();
  });

  it('sums the answers of both API processes', async (t) => {
    if (!(await needDatabase(t, 'postgres'))) return;
    const testDb = await createTestDatabase('postgres');
    drop = testDb.drop;
    api = await startApi(['--workers', '2', '--migrate'], { DATABASE_URL: testDb.url });
    const couponId = await createCampaign(api.url, 'db-batch', 120);
    const db = openTestDb('postgres', testDb.url, 2);
    try {
      const { result } = await stampedeWatched(api.url, couponId, 120, () => stampede({ url: api!.url, tokenFor }, couponId, 360, 600, 64), async () => {}, () => issuedRows(db, couponId));
      assert.equal(result.total, 600);
      // Both processes answer (each stamps its own request-id prefix): the stream's sums matched
      // the clients' record only because it added both.
      assert.equal((await processesAnswering(api.url)).size, 2);
    } finally {
      await db.close();
    }
  });
});
