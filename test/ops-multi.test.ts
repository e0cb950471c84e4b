// Scale-out with Redis, as real processes: two API instances and two workers under one stampede
// stay exact (every 202 becomes exactly one row, never more than the stock), the workers serve
// their own /metrics, and every process drains and exits 0 on SIGTERM.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signUserToken } from '../src/http/auth.js';
import { openRedis } from '../src/redis/client.js';
import { ADMIN_TOKEN, createTestDatabase, issuedRows, JWT_SECRET, needDatabase, needServer, openTestDb, request, SERVER_DB_KINDS, SERVER_KINDS } from './helpers.js';
import { freePort, runCli, sample, waitFor, type Child } from './ops-helpers.js';
import { backlog, deleteKeys, REDIS_URL, silent, uniquePrefix } from './redis-helpers.js';

const STOCK = 200;
const USERS = 400;
const REQUESTS = 800;

for (const kind of SERVER_DB_KINDS) describe(`two API instances and two workers on Redis (${kind})`, () => {
  it('stay exact under one stampede and expose their metrics', async (t) => {
    if (!(await needDatabase(t, kind)) || !(await needServer(t, 'Redis', REDIS_URL))) return;
    const testDb = await createTestDatabase(SERVER_KINDS[kind].dialect);
    const prefix = uniquePrefix();
    const db = openTestDb(kind, testDb.url, 2);
    const redis = await openRedis(REDIS_URL, prefix, silent);
    const children: Child[] = [];
    try {
      const env = (port: number, adminPort: number) => ({
        DATABASE_URL: testDb.url,
        REDIS_URL,
        REDIS_PREFIX: prefix,
        ADMIN_TOKEN,
        JWT_SECRET,
        HOST: '127.0.0.1',
        PORT: String(port),
        ADMIN_PORT: String(adminPort),
        LOG_LEVEL: 'warn',
        WORKER_BATCH_SIZE: '50',
      });
      const ports = await Promise.all(Array.from({ length: 8 }, () => freePort()));
      const [apiA, apiB, adminA, adminB, , , workerA, workerB] = ports as [number, number, number, number, number, number, number, number];
      const start = async (args: string[], e: Record<string, string>, health: string) => {
        const child = runCli(args, e);
        children.push(child);
        await waitFor(`${args.join(' ')} healthy`, async () => (await request(health, 'GET', '/healthz')).status === 200, 30_000).catch((err: Error) => {
          throw new Error(`${err.message}\n${child.output()}`);
        });
        return child;
      };
      await start(['serve', '--migrate'], env(apiA, adminA), `http://127.0.0.1:${apiA}`);
      await Promise.all([
        start(['serve'], env(apiB, adminB), `http://127.0.0.1:${apiB}`),
        start(['worker', '--consumer', 'w1'], env(ports[4]!, workerA), `http://127.0.0.1:${workerA}`),
        start(['worker', '--consumer', 'w2'], env(ports[5]!, workerB), `http://127.0.0.1:${workerB}`),
      ]);
      const apis = [`http://127.0.0.1:${apiA}`, `http://127.0.0.1:${apiB}`];

      const created = await request(`http://127.0.0.1:${adminA}`, 'POST', '/admin/coupons', {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        json: { name: 'scale-out', totalQuantity: STOCK, issueStartsAt: new Date(Date.now() - 1000).toISOString(), issueEndsAt: new Date(Date.now() + 3600_000).toISOString() },
      });
      assert.equal(created.status, 201, created.text);
      const { id, strategy } = created.json as { id: number; strategy: string };
      assert.equal(strategy, 'redis-lua-async-cached', 'REDIS_URL makes the async cached strategy the default');

      // One stampede over both instances: every user twice, shuffled, 32 at a time.
      const plan = Array.from({ length: REQUESTS }, (_, i) => `scale-${i % USERS}`).sort(() => Math.random() - 0.5);
      const statuses = new Map<number, number>();
      const winners: string[] = [];
      let next = 0;
      await Promise.all(
        Array.from({ length: 32 }, async () => {
          while (next < plan.length) {
            const i = next++;
            const user = plan[i]!;
            const res = await request(apis[i % 2]!, 'POST', `/coupons/${id}/issues`, { headers: { authorization: `Bearer ${signUserToken(JWT_SECRET, user)}` } });
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
            if (res.status === 201 || res.status === 202) winners.push(user);
          }
        }),
      );
      assert.equal(statuses.get(202), STOCK, `statuses ${JSON.stringify([...statuses])}`);
      assert.equal((statuses.get(409) ?? 0) + (statuses.get(410) ?? 0), REQUESTS - STOCK);

      await waitFor('the workers to persist every admission', async () => {
        const b = await backlog(redis, id);
        return (await issuedRows(db, id)).rows === STOCK && b.pending === 0 && b.undelivered === 0;
      });
      const rows = await issuedRows(db, id);
      assert.equal(rows.rows, STOCK);
      assert.equal(rows.distinctUsers, STOCK);
      assert.equal(rows.counter, STOCK);
      assert.deepEqual(new Set(rows.users), new Set(winners), 'every 202 is a row and every row had a 202');

      const scrape = async (port: number) => (await request(`http://127.0.0.1:${port}`, 'GET', '/metrics')).text;
      const [wa, wb, aa, ab] = await Promise.all([scrape(workerA), scrape(workerB), scrape(adminA), scrape(adminB)]);
      const written = (sample(wa, 'couponrush_worker_rows_written_total') ?? 0) + (sample(wb, 'couponrush_worker_rows_written_total') ?? 0);
      assert.equal(written, STOCK, 'the two workers together wrote the stock');
      assert.equal(sample(wa, 'couponrush_stream_lag', { coupon: String(id) }), 0);
      const accepted = (text: string) => sample(text, 'couponrush_issue_outcomes_total', { strategy: 'redis-lua-async-cached', outcome: 'ACCEPTED' }) ?? 0;
      assert.equal(accepted(aa) + accepted(ab), STOCK, 'the two API instances together admitted the stock');
      assert.ok(accepted(aa) > 0 && accepted(ab) > 0, 'both instances admitted');

      for (const c of children) c.proc.kill('SIGTERM');
      const codes = await Promise.all(children.map((c) => c.exited));
      assert.deepEqual(codes, children.map(() => 0), children.map((c) => c.output()).join('\n'));
    } finally {
      for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
      await redis.close();
      await db.close();
      await deleteKeys(prefix);
      await testDb.drop();
    }
  });
});
