// Operability of one API process: request ids, GET /metrics, per-user and per-IP rate limits,
// load shedding, header limits and the separate admin listener. Embedded PGlite: no server needed.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startAdminListener } from '../src/http/admin-listener.js';
import { ADMIN_TOKEN, request, startTestServer, type Response, type TestServer } from './helpers.js';
import { sample, waitFor } from './ops-helpers.js';

function assertProblem(res: Response, status: number, code: string): void {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${res.text}`);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  assert.equal((res.json as { code?: string }).code, code);
}

const GENERATED = /^[0-9a-f]{10}-[0-9a-z]+$/;

const issue = (server: TestServer, couponId: number, userId: string, headers: Record<string, string> = {}) =>
  request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(userId)}`, ...headers } });

describe('request ids', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ db: 'pglite' });
  });
  after(() => server.close());

  it('echoes a well-formed incoming x-request-id', async () => {
    const res = await request(server.url, 'GET', '/healthz', { headers: { 'x-request-id': 'edge-42.abc:1' } });
    assert.equal(res.headers['x-request-id'], 'edge-42.abc:1');
  });

  it('replaces a malformed x-request-id with a generated one', async () => {
    const res = await request(server.url, 'GET', '/healthz', { headers: { 'x-request-id': 'bad id with spaces' } });
    assert.match(String(res.headers['x-request-id']), GENERATED);
    const long = await request(server.url, 'GET', '/healthz', { headers: { 'x-request-id': 'x'.repeat(200) } });
    assert.match(String(long.headers['x-request-id']), GENERATED);
  });

  it('generates a different id for every request without one, errors included', async () => {
    const a = await request(server.url, 'GET', '/healthz');
    const b = await request(server.url, 'GET', '/no-such-route');
    assert.equal(b.status, 404);
    assert.match(String(a.headers['x-request-id']), GENERATED);
    assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id']);
  });
});

describe('GET /metrics', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ db: 'pglite' });
  });
  after(() => server.close());

  it('exposes issue outcomes by strategy, per-campaign admitted/persisted counts, latency, pool, stock and process series', async () => {
    const { id } = await server.createCoupon({ totalQuantity: 2, strategy: 'local' });
    for (const user of ['m1', 'm2', 'm3', 'm1']) await issue(server, id, user);
    const res = await request(server.url, 'GET', '/metrics');
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const text = res.text;
    const outcome = (o: string) => sample(text, 'couponrush_issue_outcomes_total', { strategy: 'local', outcome: o });
    assert.equal(outcome('ISSUED'), 2);
    assert.equal(outcome('SOLD_OUT'), 1);
    assert.equal(outcome('ALREADY_ISSUED'), 1);
    assert.equal(sample(text, 'couponrush_issue_outcomes_total', { strategy: 'db-atomic', outcome: 'ISSUED' }), 0, 'series exist before use');
    assert.equal(sample(text, 'couponrush_campaign_admitted_total', { coupon: String(id) }), 2);
    assert.equal(sample(text, 'couponrush_campaign_persisted', { coupon: String(id) }), 2);
    assert.equal(sample(text, 'couponrush_issue_request_duration_seconds_count'), 4);
    assert.equal(sample(text, 'couponrush_http_responses_total', { route: '/coupons/:id/issues', method: 'POST', status: '201' }), 2);
    assert.equal(sample(text, 'couponrush_http_responses_total', { route: '/coupons/:id/issues', method: 'POST', status: '410' }), 1);
    assert.equal(sample(text, 'couponrush_campaign_stock_total', { coupon: String(id) }), 2);
    assert.equal(sample(text, 'couponrush_campaign_remaining', { coupon: String(id) }), 0);
    assert.notEqual(sample(text, 'couponrush_db_pool_connections', { state: 'idle' }), undefined);
    assert.notEqual(sample(text, 'couponrush_db_pool_waiting'), undefined);
    assert.notEqual(sample(text, 'process_cpu_user_seconds_total'), undefined);
    assert.notEqual(sample(text, 'nodejs_eventloop_lag_seconds'), undefined);
  });
});

describe('rate limits on POST /coupons/:id/issues', () => {
  it('lets a user retry a handful of times under the default limit', async () => {
    const server = await startTestServer({ db: 'pglite' });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 1 });
      const statuses = [];
      for (let i = 0; i < 10; i++) statuses.push((await issue(server, id, 'eager')).status);
      assert.deepEqual(new Set(statuses), new Set([201, 409]));
    } finally {
      await server.close();
    }
  });

  // Limits in these tests use an hour-long window: windows are aligned to the clock, and one
  // turning mid-test would reset the counts.
  it('answers 429 RATE_LIMITED with Retry-After once a user exceeds the limit, without touching other users', async () => {
    const server = await startTestServer({ db: 'pglite', env: { RATE_LIMIT_USER: '3/60m' } });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 10 });
      for (let i = 0; i < 3; i++) assert.notEqual((await issue(server, id, 'hammer')).status, 429);
      const limited = await issue(server, id, 'hammer');
      assertProblem(limited, 429, 'RATE_LIMITED');
      const retryAfter = Number(limited.headers['retry-after']);
      assert.ok(retryAfter >= 1 && retryAfter <= 3600, `Retry-After ${retryAfter}`);
      assert.equal((await issue(server, id, 'calm')).status, 201, 'another user is not limited');
      const metrics = await request(server.url, 'GET', '/metrics');
      assert.equal(sample(metrics.text, 'couponrush_requests_shed_total', { reason: 'rate_limited_user' }), 1);
      // The limited request changed nothing: the user's one coupon came from an earlier attempt.
      const rows = await server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM coupon_issues WHERE coupon_id = $1', [id]);
      assert.equal(rows.rows[0]?.n, 2);
    } finally {
      await server.close();
    }
  });

  it('still authenticates first: a request without a token is 401, not counted against anyone', async () => {
    const server = await startTestServer({ db: 'pglite', env: { RATE_LIMIT_USER: '1/60m' } });
    try {
      const { id } = await server.createCoupon();
      const res = await request(server.url, 'POST', `/coupons/${id}/issues`);
      assertProblem(res, 401, 'UNAUTHENTICATED');
      assert.equal((await issue(server, id, 'u1')).status, 201);
    } finally {
      await server.close();
    }
  });

  it('limits per client address only with TRUST_PROXY, reading X-Forwarded-For from the trusted proxy', async () => {
    const server = await startTestServer({ db: 'pglite', env: { RATE_LIMIT_USER: 'off', RATE_LIMIT_IP: '2/60m', TRUST_PROXY: '127.0.0.1' } });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 100 });
      const from = (ip: string, user: string) => issue(server, id, user, { 'x-forwarded-for': ip });
      assert.equal((await from('203.0.113.7', 'a1')).status, 201);
      assert.equal((await from('203.0.113.7', 'a2')).status, 201);
      assertProblem(await from('203.0.113.7', 'a3'), 429, 'RATE_LIMITED');
      assert.equal((await from('198.51.100.9', 'b1')).status, 201, 'another client address has its own budget');
    } finally {
      await server.close();
    }
  });
});

describe('load shedding', () => {
  it('answers 503 OVERLOADED with Retry-After while the event loop is saturated, keeps probes up, and recovers', async () => {
    const server = await startTestServer({ db: 'pglite', env: { SHED_EVENT_LOOP_DELAY_MS: '50' } });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 10 });
      // Saturate this process's loop (the app runs in it) for 2.2 s in 100 ms slices.
      const until = Date.now() + 2_200;
      while (Date.now() < until) {
        const sliceEnd = Date.now() + 100;
        while (Date.now() < sliceEnd) {
          // busy
        }
        await new Promise((r) => setImmediate(r));
      }
      const [shed, health, metrics] = await Promise.all([
        issue(server, id, 'shed-1'),
        request(server.url, 'GET', '/healthz'),
        request(server.url, 'GET', '/metrics'),
      ]);
      assertProblem(shed, 503, 'OVERLOADED');
      assert.ok(Number(shed.headers['retry-after']) >= 1);
      assert.equal(health.status, 200, 'liveness still answers');
      assert.equal(metrics.status, 200, 'scrapes still answer');
      // The monitor samples once a second: two calm samples later the gate is open again.
      await new Promise((r) => setTimeout(r, 2_200));
      assert.equal((await issue(server, id, 'shed-1')).status, 201);
      const after = await request(server.url, 'GET', '/metrics');
      assert.equal(sample(after.text, 'couponrush_requests_shed_total', { reason: 'overloaded' }), 1);
    } finally {
      await server.close();
    }
  });
});

/** What a server says on one raw TCP connection to what is written, in order, until it closes. */
function rawExchange(base: string, ...chunks: Array<string | (() => Promise<unknown>)>): Promise<string> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      void (async () => {
        for (const chunk of chunks) {
          if (typeof chunk === 'string') socket.write(chunk);
          else await chunk();
        }
      })().catch(reject);
    });
    let out = '';
    socket.on('data', (d: Buffer) => (out += d.toString('latin1')));
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
  });
}

/** A raw HTTP/1.1 answer as status, lower-cased headers and parsed body. */
function parseRaw(answer: string): { status: number; headers: Record<string, string>; json: unknown } {
  const [head = '', body = ''] = answer.split('\r\n\r\n', 2);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(statusLine.split(' ')[1]), headers, json: body === '' ? undefined : JSON.parse(body) };
}

function assertRawProblem(answer: string, status: number, code: string): void {
  const res = parseRaw(answer);
  assert.equal(res.status, status, answer);
  assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json/, answer);
  assert.equal((res.json as { code?: string }).code, code, answer);
  assert.match(res.headers['x-request-id'] ?? '', GENERATED, answer);
}

// With the issue route's front as the server factory (the default) and with Fastify's own server:
// node:http's parser errors are answered the same on both.
for (const [label, issueFront] of [
  ['', true],
  [" (Fastify's own server, no issue front)", false],
] as const) {
  describe(`request limits and malformed requests${label}`, () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer({ db: 'pglite', app: { issueFront } });
    });
    after(() => server.close());

    it('refuses oversized headers with 431 HEADERS_TOO_LARGE problem+json', async () => {
      const res = await request(server.url, 'GET', '/healthz', { headers: { 'x-padding': 'p'.repeat(10_000) } }).catch((err: Error) => err);
      assert.ok(!(res instanceof Error), `connection failed: ${String(res)}`);
      assertProblem(res, 431, 'HEADERS_TOO_LARGE');
      assert.match(String(res.headers['x-request-id']), GENERATED);
      assertRawProblem(await rawExchange(server.url, `GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: ${'p'.repeat(10_000)}\r\n\r\n`), 431, 'HEADERS_TOO_LARGE');
    });

    it('answers a malformed request line with 400 MALFORMED_REQUEST problem+json and closes the connection', async () => {
      for (const line of ['GARBAGE\r\n\r\n', 'GET /healthz HTTP/9.9\r\n\r\n', 'GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n', '\x00\x01\x02 nonsense\r\n\r\n']) {
        const answer = await rawExchange(server.url, line);
        assertRawProblem(answer, 400, 'MALFORMED_REQUEST');
        assert.equal(parseRaw(answer).headers.connection, 'close');
      }
    });
  });
}

describe('while the app closes', () => {
  it('a request on a connection already open is answered 503 SERVICE_UNAVAILABLE problem+json', async () => {
    const server = await startTestServer({ db: 'pglite' });
    let closing: Promise<void> | undefined;
    // The request's first line is in before the close starts, so the connection is busy (not
    // reaped as idle); the rest arrives once the listener has stopped.
    const answer = await rawExchange(server.url, 'GET /healthz HTTP/1.1\r\nhost: x\r\n', async () => {
      closing = server.close();
      await waitFor('the listener to stop', () => !server.app.server.listening);
    }, '\r\n');
    await closing;
    const res = parseRaw(answer);
    assert.equal(res.status, 503, answer);
    assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json/);
    assert.equal((res.json as { code?: string }).code, 'SERVICE_UNAVAILABLE');
    assert.match(res.headers['x-request-id'] ?? '', GENERATED);
    assert.equal(res.headers.connection, 'close');
  });
});

describe('admin listener (ADMIN_PORT)', () => {
  it('serves /admin/* and /metrics only on the admin port; the public port answers 404 for them', async () => {
    const server = await startTestServer({ db: 'pglite', env: { ADMIN_PORT: '0' } });
    const admin = await startAdminListener(server.app, '127.0.0.1', 0);
    try {
      const body = {
        name: 'admin port',
        totalQuantity: 5,
        issueStartsAt: new Date(Date.now() - 1000).toISOString(),
        issueEndsAt: new Date(Date.now() + 3600_000).toISOString(),
      };
      const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
      assertProblem(await request(server.url, 'POST', '/admin/coupons', { headers, json: body }), 404, 'NOT_FOUND');
      assertProblem(await request(server.url, 'GET', '/metrics'), 404, 'NOT_FOUND');
      const created = await request(admin.url, 'POST', '/admin/coupons', { headers, json: body });
      assert.equal(created.status, 201, created.text);
      assert.equal((await request(admin.url, 'GET', '/metrics')).status, 200);
      const { id } = created.json as { id: number };
      assert.equal((await issue(server, id, 'public-user')).status, 201, 'the public routes stay on the public port');
    } finally {
      await admin.close();
      await server.close();
    }
  });
});
