// Operability with Redis: the per-user limit is shared by every instance, /readyz checks Redis,
// a Redis outage answers 503/504 within a bounded time and recovers by itself, the request id
// reaches the stream entry, and the worker's series (streams, rows written) are exported.
// Needs PostgreSQL and Redis; each test has its own database and key prefix.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { buildApp } from '../src/app.js';
import { startMetricsListener } from '../src/http/metrics-listener.js';
import { createWorkerRegistry } from '../src/metrics/worker.js';
import { needServer, PG_ADMIN_URL, request, type Response } from './helpers.js';
import { sample, TcpProxy, waitFor } from './ops-helpers.js';
import { issueAll, REDIS_URL, startRedisTestServer, usersRange, waitForDrain, withStatus } from './redis-helpers.js';

async function needBoth(t: Parameters<typeof needServer>[0]): Promise<boolean> {
  return (await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) && (await needServer(t, 'Redis', REDIS_URL));
}

function assertProblem(res: Response, status: number | number[], code?: string): void {
  const ok = Array.isArray(status) ? status.includes(res.status) : res.status === status;
  assert.ok(ok, `expected ${String(status)}, got ${res.status}: ${res.text}`);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  if (code !== undefined) assert.equal((res.json as { code?: string }).code, code);
}

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
}

describe('operability with Redis', () => {
  it('shares the per-user rate limit across instances through Redis', async (t) => {
    if (!(await needBoth(t))) return;
    const a = await startRedisTestServer({ RATE_LIMIT_USER: '6/60m' });
    // A second app instance on the same Redis prefix and database (another "machine").
    const b = await buildApp(a.runtime);
    await b.listen({ port: 0, host: '127.0.0.1' });
    const bUrl = `http://127.0.0.1:${(b.server.address() as AddressInfo).port}`;
    try {
      const { id } = await a.createCoupon({ totalQuantity: 10, strategy: 'redis-lua-async' });
      const headers = { authorization: `Bearer ${a.tokenFor('roamer')}` };
      const hit = (url: string) => request(url, 'POST', `/coupons/${id}/issues`, { headers });
      // 4 on each instance: each is within its own budget of 6, together they are 8 > 6. Past
      // the local allowance (3) an instance counts in Redis, and sees the other one's requests.
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) statuses.push((await hit(a.url)).status, (await hit(bUrl)).status);
      assert.ok(statuses.slice(0, 6).every((s) => s !== 429), `first 6: ${statuses.join(',')}`);
      assert.ok(statuses.includes(429), `a 429 once the shared total passed 6: ${statuses.join(',')}`);
      const limited = await hit(bUrl);
      assertProblem(limited, 429, 'RATE_LIMITED');
      assert.ok(Number(limited.headers['retry-after']) >= 1);
    } finally {
      await b.close();
      await a.close();
    }
  });

  it('carries the request id into the stream entry', async (t) => {
    if (!(await needBoth(t))) return;
    const server = await startRedisTestServer();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
      const res = await request(server.url, 'POST', `/coupons/${id}/issues`, {
        headers: { authorization: `Bearer ${server.tokenFor('traced')}`, 'x-request-id': 'trace-4711' },
      });
      assert.equal(res.status, 202, res.text);
      assert.equal(res.headers['x-request-id'], 'trace-4711');
      const entries = await server.redis.client.xrange(server.redis.keys.campaign(id).stream, '-', '+');
      const fields = new Map<string, string>();
      const flat = entries.at(-1)?.[1] ?? [];
      for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!, flat[i + 1]!);
      assert.equal(fields.get('u'), 'traced');
      assert.equal(fields.get('r'), 'trace-4711');
    } finally {
      await server.close();
    }
  });

  it("exports the worker's series: stream length, lag, pending, dead letters, rows written", async (t) => {
    if (!(await needBoth(t))) return;
    const server = await startRedisTestServer();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 30, strategy: 'redis-lua-async-cached' });
      const worker = await server.startWorker('metrics-worker');
      const { registry, observer } = createWorkerRegistry(server.db, server.redis);
      worker.observe(observer);
      const listener = await startMetricsListener(registry, '127.0.0.1', 0);
      try {
        const statuses = await issueAll(server, id, usersRange(0, 40, 'wm'));
        assert.equal(withStatus(statuses, 202).length, 30);
        await waitForDrain(server, id, 30);
        const text = (await request(listener.url, 'GET', '/metrics')).text;
        const coupon = { coupon: String(id) };
        assert.equal(sample(text, 'couponrush_worker_rows_written_total'), 30);
        assert.equal(sample(text, 'couponrush_worker_dead_lettered_total', { reason: 'invalid' }), 0);
        assert.ok((sample(text, 'couponrush_worker_batch_size_count') ?? 0) >= 1, 'batches observed');
        assert.ok((sample(text, 'couponrush_worker_batch_duration_seconds_count') ?? 0) >= 1);
        assert.equal(sample(text, 'couponrush_stream_lag', coupon), 0);
        assert.equal(sample(text, 'couponrush_stream_pending', coupon), 0);
        assert.equal(sample(text, 'couponrush_dead_letters', coupon), 0);
        assert.notEqual(sample(text, 'couponrush_stream_length', coupon), undefined);
        assert.equal(sample(text, 'couponrush_redis_errors_total'), 0);
        assert.notEqual(sample(text, 'couponrush_db_pool_connections', { state: 'idle' }), undefined);
        assert.equal((await request(listener.url, 'GET', '/healthz')).status, 200);
        // The API's own /metrics: Redis-decided remaining stock, admissions, outcomes.
        const api = (await request(server.url, 'GET', '/metrics')).text;
        assert.equal(sample(api, 'couponrush_campaign_remaining', coupon), 0);
        assert.equal(sample(api, 'couponrush_campaign_persisted', coupon), 30);
        assert.equal(sample(api, 'couponrush_campaign_admitted_total', coupon), 30);
        assert.equal(sample(api, 'couponrush_issue_outcomes_total', { strategy: 'redis-lua-async-cached', outcome: 'ACCEPTED' }), 30);
        // The queue's gauges are on the API's /metrics too, though it runs no worker.
        assert.equal(sample(api, 'couponrush_stream_lag', coupon), 0);
        assert.equal(sample(api, 'couponrush_stream_pending', coupon), 0);
        assert.equal(sample(api, 'couponrush_dead_letters', coupon), 0);
        assert.notEqual(sample(api, 'couponrush_stream_length', coupon), undefined);
        assert.equal(sample(api, 'couponrush_worker_rows_written_total'), undefined, "the worker's own counters are where it runs");
      } finally {
        await listener.close();
      }
    } finally {
      await server.close();
    }
  });

  it('answers 503 within a bounded time while Redis is unreachable, reports it on /readyz, and recovers', async (t) => {
    if (!(await needBoth(t))) return;
    const real = new URL(REDIS_URL);
    const proxy = await new TcpProxy(real.hostname, Number(real.port || 6379)).up();
    const server = await startRedisTestServer({ REDIS_URL: `redis://${proxy.url}`, REQUEST_TIMEOUT_MS: '1500' });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 10, strategy: 'redis-lua-async' });
      const issue = (user: string) => request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
      assert.equal((await issue('before')).status, 202);

      await proxy.down();
      const down = await timed(() => issue('while-down'));
      assertProblem(down.value, 503, 'SERVICE_UNAVAILABLE');
      assert.ok(down.value.headers['retry-after'] !== undefined, 'Retry-After');
      assert.ok(down.ms < 3_000, `answered in ${Math.round(down.ms)} ms`);
      const ready = await request(server.url, 'GET', '/readyz');
      assertProblem(ready, 503, 'SERVICE_UNAVAILABLE');
      assert.match((ready.json as { detail: string }).detail, /redis/);

      // Accepts the connection, never answers: still bounded, by REQUEST_TIMEOUT_MS.
      await proxy.up();
      proxy.blackhole();
      const hole = await timed(() => issue('in-the-hole'));
      assertProblem(hole.value, 504, 'TIMEOUT');
      assert.ok(hole.ms >= 1_500 && hole.ms < 1_500 + 1_000, `answered in ${Math.round(hole.ms)} ms`);
      const shed = (await request(server.url, 'GET', '/metrics')).text;
      assert.equal(sample(shed, 'couponrush_requests_shed_total', { reason: 'timeout' }), 1);
      assert.equal(sample(shed, 'couponrush_ready', { store: 'redis' }), 0, 'the scrape answers in time and says Redis does not (CouponrushNotReady)');
      assert.equal(sample(shed, 'couponrush_ready', { store: 'database' }), 1);

      await proxy.up();
      await waitFor('Redis back', async () => (await request(server.url, 'GET', '/readyz')).status === 200, 15_000);
      assert.equal((await issue('while-down')).status, 202, 'the refused user retries and is admitted');
      const again = await issue('in-the-hole');
      assert.ok([202, 409].includes(again.status), `a timed-out user holds at most one: ${again.status}`);
    } finally {
      await proxy.up();
      await server.close();
      await proxy.down();
    }
  });
});
