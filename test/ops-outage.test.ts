// Dependency outages: the database behind a TCP proxy that the test closes or black-holes. The
// issue route must answer 503 problem+json (or 504 TIMEOUT) within a bounded time, never hang or
// 500, /readyz must say so, and everything must recover by itself once the database is back.
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { createPostgresDb } from '../src/db/index.js';
import { createRuntime } from '../src/runtime.js';
import { ADMIN_TOKEN, canConnect, createTestDatabase, JWT_SECRET, needServer, PG_ADMIN_URL, request, type TestDatabase } from './helpers.js';
import { TcpProxy } from './ops-helpers.js';
import { signUserToken } from '../src/http/auth.js';

const REQUEST_TIMEOUT_MS = 1_500;

interface Setup {
  url: string;
  proxy: TcpProxy;
  couponId: number;
  close(): Promise<void>;
}

async function startBehindProxy(testDb: TestDatabase): Promise<Setup> {
  const real = new URL(testDb.url);
  const proxy = await new TcpProxy(real.hostname, Number(real.port || 5432)).up();
  const viaProxy = new URL(testDb.url);
  viaProxy.host = proxy.url;
  const config = loadConfig({
    DATABASE_URL: viaProxy.toString(),
    ADMIN_TOKEN,
    JWT_SECRET,
    LOG_LEVEL: 'silent',
    DB_POOL_SIZE: '4',
    REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
  });
  // Migrate over the direct connection; the app only ever sees the proxy.
  const direct = createPostgresDb(testDb.url, { poolSize: 1 });
  await createRuntime(config, pino({ level: 'silent' }), { migrate: true, db: direct }).then((r) => r.close());
  await direct.close();
  const db = createPostgresDb(config.databaseUrl!, { poolSize: config.dbPoolSize, connectionTimeoutMs: 1_000 });
  const runtime = await createRuntime(config, pino({ level: 'silent' }), { db });
  const app = await buildApp(runtime);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
  const created = await request(url, 'POST', '/admin/coupons', {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    json: {
      name: 'outage',
      totalQuantity: 100,
      issueStartsAt: new Date(Date.now() - 1000).toISOString(),
      issueEndsAt: new Date(Date.now() + 3600_000).toISOString(),
      strategy: 'db-atomic',
    },
  });
  assert.equal(created.status, 201, created.text);
  return {
    url,
    proxy,
    couponId: (created.json as { id: number }).id,
    async close() {
      await proxy.up(); // let the pool close cleanly
      await app.close();
      await runtime.close();
      await db.close();
      await proxy.down();
    },
  };
}

const issueAs = (s: Setup, user: string) =>
  request(s.url, 'POST', `/coupons/${s.couponId}/issues`, { headers: { authorization: `Bearer ${signUserToken(JWT_SECRET, user)}` } });

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - t0 };
}

describe('POST /coupons/:id/issues when the database is unreachable', () => {
  let testDb: TestDatabase | undefined;
  let setup: Setup | undefined;
  before(async () => {
    // Each test reports a missing server itself (needServer: skip loudly, or fail under CI).
    if (!(await canConnect(new URL(PG_ADMIN_URL).hostname, Number(new URL(PG_ADMIN_URL).port || 5432)))) return;
    testDb = await createTestDatabase();
    setup = await startBehindProxy(testDb);
  });
  after(async () => {
    await setup?.close();
    await testDb?.drop();
  });

  it('answers 503 SERVICE_UNAVAILABLE with Retry-After at once when the port is closed, and recovers', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) || setup === undefined) return;
    const s = setup;
    assert.equal((await issueAs(s, 'before')).status, 201);
    await s.proxy.down();
    const { value: res, ms } = await timed(() => issueAs(s, 'during-down'));
    assert.equal(res.status, 503, res.text);
    assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
    assert.equal((res.json as { code: string }).code, 'SERVICE_UNAVAILABLE');
    assert.equal(res.headers['retry-after'], '1');
    assert.ok(ms < 2_000, `answered in ${Math.round(ms)} ms`);
    const ready = await request(s.url, 'GET', '/readyz');
    assert.equal(ready.status, 503);
    assert.equal((await request(s.url, 'GET', '/healthz')).status, 200, 'the process itself is alive');

    await s.proxy.up();
    assert.equal((await issueAs(s, 'during-down')).status, 201, 'the refused user can retry and get it');
    assert.equal((await request(s.url, 'GET', '/readyz')).status, 200);
  });

  it('answers within REQUEST_TIMEOUT_MS when the database accepts connections but never answers, and recovers', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) || setup === undefined) return;
    const s = setup;
    s.proxy.blackhole();
    const results = await Promise.all(['bh-1', 'bh-2', 'bh-3'].map((u) => timed(() => issueAs(s, u))));
    for (const { value: res, ms } of results) {
      assert.ok([503, 504].includes(res.status), `got ${res.status}: ${res.text}`);
      assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
      assert.ok(ms < REQUEST_TIMEOUT_MS + 1_000, `answered in ${Math.round(ms)} ms`);
    }
    const ready = await timed(() => request(s.url, 'GET', '/readyz'));
    assert.equal(ready.value.status, 503);
    assert.ok(ready.ms < 3_000, `/readyz answered in ${Math.round(ready.ms)} ms`);

    await s.proxy.up();
    // A request that timed out may still have completed: whatever happened, the user holds at most one.
    for (const u of ['bh-1', 'bh-2', 'bh-3', 'bh-4']) {
      const res = await issueAs(s, u);
      assert.ok([201, 409].includes(res.status), `after recovery ${u} got ${res.status}: ${res.text}`);
    }
    assert.equal((await request(s.url, 'GET', '/readyz')).status, 200);
  });
});
