// Issue requests answered before routing (src/http/early-answers.ts): a known sell-out or a closed
// window gets the route's own refusal straight from node:http — same status, body, content type
// and request id — and everything that depends on the request still goes through Fastify.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SOLD_OUT, WINDOW_NOT_OPEN, type ForegoneRefusal } from '../src/coupons/domain.js';
import { earlyAnswers } from '../src/http/early-answers.js';
import { request, startTestServer, needServer, PG_ADMIN_URL, type Response, type TestServer } from './helpers.js';
import { sample } from './ops-helpers.js';
import { REDIS_URL, startRedisTestServer } from './redis-helpers.js';

const GENERATED_ID = /^[0-9a-f]{10}-[0-9a-z]+$/;

async function metric(server: TestServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await request(server.url, 'GET', '/metrics');
  return sample(res.text, name, labels) ?? Number.NaN;
}

const early = (server: TestServer) => metric(server, 'couponrush_issue_answered_early_total');

/** The headers a client can see, minus the ones that differ per response. */
function stableHeaders(res: Response): Record<string, unknown> {
  const { date: _date, 'x-request-id': _id, ...rest } = res.headers;
  return rest;
}

describe('early answers: a window that is not open yet (PGlite)', () => {
  let server: TestServer;
  let couponId: number;
  const path = () => `/coupons/${couponId}/issues`;
  before(async () => {
    server = await startTestServer({ db: 'pglite' });
    const now = Date.now();
    ({ id: couponId } = await server.createCoupon({
      strategy: 'db-atomic',
      issueStartsAt: new Date(now + 3600_000).toISOString(),
      issueEndsAt: new Date(now + 7200_000).toISOString(),
    }));
  });
  after(() => server.close());

  it('answers a bodiless POST before routing with exactly what the route answers', async () => {
    const before = await early(server);
    const fast = await request(server.url, 'POST', path());
    assert.equal(await early(server), before + 1, 'answered before routing');
    // With a JSON body the request goes through Fastify and the route.
    const routed = await request(server.url, 'POST', path(), { json: {} });
    assert.equal(await early(server), before + 1, 'a request with a body is routed');
    assert.equal(fast.status, 422);
    assert.equal((fast.json as { code: string }).code, 'ISSUE_WINDOW_NOT_OPEN');
    assert.equal(fast.status, routed.status);
    assert.equal(fast.text, routed.text);
    assert.deepEqual(stableHeaders(fast), stableHeaders(routed));
    assert.match(String(fast.headers['x-request-id']), GENERATED_ID);
  });

  it('echoes a well-formed x-request-id and replaces a malformed one, as the route does', async () => {
    const echoed = await request(server.url, 'POST', path(), { headers: { 'x-request-id': 'edge-7.a:1' } });
    assert.equal(echoed.headers['x-request-id'], 'edge-7.a:1');
    const replaced = await request(server.url, 'POST', path(), { headers: { 'x-request-id': 'no spaces allowed' } });
    assert.match(String(replaced.headers['x-request-id']), GENERATED_ID);
  });

  it('counts its answers in the route metrics and the issue outcomes', async () => {
    const responses = { route: '/coupons/:id/issues', method: 'POST', status: '422' };
    const outcome = { strategy: 'db-atomic', outcome: 'WINDOW_NOT_OPEN' };
    const [r0, o0, e0, l0] = [
      await metric(server, 'couponrush_http_responses_total', responses),
      await metric(server, 'couponrush_issue_outcomes_total', outcome),
      await early(server),
      await metric(server, 'couponrush_issue_request_duration_seconds_count'),
    ];
    await request(server.url, 'POST', `${path()}?from=test`); // a query string is fine
    assert.equal(await early(server), e0 + 1);
    assert.equal(await metric(server, 'couponrush_http_responses_total', responses), r0 + 1);
    assert.equal(await metric(server, 'couponrush_issue_outcomes_total', outcome), o0 + 1);
    assert.equal(await metric(server, 'couponrush_issue_request_duration_seconds_count'), l0 + 1);
  });

  it('leaves to the route every answer that depends on the request', async () => {
    const e0 = await early(server);
    const malformed = await request(server.url, 'POST', path(), { body: '{"oops', headers: { 'content-type': 'application/json' } });
    assert.equal(malformed.status, 400);
    const emptyJson = await request(server.url, 'POST', path(), { body: '', headers: { 'content-type': 'application/json' } });
    assert.equal(emptyJson.status, 400);
    const encodedId = [...String(couponId)].map((digit) => `%3${digit}`).join('');
    const encoded = await request(server.url, 'POST', `/coupons/${encodedId}/issues`);
    assert.equal(encoded.status, 422, 'Fastify decodes the path; the route answers');
    const unknown = await request(server.url, 'POST', '/coupons/999999/issues');
    assert.equal(unknown.status, 401, 'an unknown coupon is the route\'s business: it authenticates first');
    const wrongMethod = await request(server.url, 'PUT', path());
    assert.equal(wrongMethod.status, 404);
    assert.equal(await early(server), e0, 'none of these was answered early');
  });

  it('routes a bodiless POST on an open campaign: the caller must authenticate', async () => {
    const now = Date.now();
    const open = await server.createCoupon({ strategy: 'db-atomic', issueStartsAt: new Date(now - 60_000).toISOString() });
    const e0 = await early(server);
    const res = await request(server.url, 'POST', `/coupons/${open.id}/issues`);
    assert.equal(res.status, 401);
    assert.equal(await early(server), e0);
  });
});

describe('early answers: off with a per-IP limit (PGlite)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ db: 'pglite', env: { RATE_LIMIT_IP: '2/60s', TRUST_PROXY: 'false' } });
  });
  after(() => server.close());

  it('routes every request, so the per-IP limit counts the refusals too', async () => {
    const now = Date.now();
    const { id } = await server.createCoupon({
      strategy: 'db-atomic',
      issueStartsAt: new Date(now + 3600_000).toISOString(),
      issueEndsAt: new Date(now + 7200_000).toISOString(),
    });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await request(server.url, 'POST', `/coupons/${id}/issues`)).status);
    assert.deepEqual(statuses, [422, 422, 429]);
    assert.equal(await early(server), 0);
  });
});

describe('early answers: a sell-out redis-lua-async-cached knows of (PostgreSQL + Redis)', () => {
  it('answers the rest of the stampede 410 before routing, token or not', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) || !(await needServer(t, 'Redis', REDIS_URL))) return;
    const server = await startRedisTestServer({ DEFAULT_STRATEGY: 'redis-lua-async-cached' });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 2, strategy: 'redis-lua-async-cached' });
      const issue = (user: string) => request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
      const admitted = [(await issue('u1')).status, (await issue('u2')).status];
      assert.deepEqual(admitted, [202, 202]);
      assert.equal(await early(server), 0, 'nothing answered early before the sell-out is known');
      assert.equal((await issue('u3')).status, 410, 'Redis says sold out, through the route');
      const afterSellOut = [(await issue('u4')).status, (await request(server.url, 'POST', `/coupons/${id}/issues`)).status];
      assert.deepEqual(afterSellOut, [410, 410]);
      assert.equal(await early(server), 2);
      assert.equal(await metric(server, 'couponrush_http_responses_total', { route: '/coupons/:id/issues', method: 'POST', status: '410' }), 3);
    } finally {
      await server.close();
    }
  });
});

describe('earlyAnswers server factory', () => {
  const refusal: { now: ForegoneRefusal | undefined } = { now: SOLD_OUT };
  const recorded: Array<[number, number]> = [];
  const answered = { n: 0 };
  const routed: string[] = [];
  const answers = earlyAnswers({ service: { refusalForAnyone: () => refusal.now }, record: (s, sec) => recorded.push([s, sec]), answered });
  const options = { http: { maxHeaderSize: 4096 }, keepAliveTimeout: 1234, requestTimeout: 5678, connectionTimeout: 0, maxRequestsPerSocket: 7 };
  const server = answers.serverFactory((req, res) => {
    routed.push(`${req.method} ${req.url}`);
    res.writeHead(299).end();
  }, options) as http.Server;
  let base = '';
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('is the server Fastify would build, with the same timeouts', () => {
    assert.equal(server.keepAliveTimeout, 1234);
    assert.equal(server.requestTimeout, 5678);
    assert.equal(server.maxRequestsPerSocket, 7);
  });

  it('passes Fastify\'s http options to node:http (a 5 KB header is over the 4 KB limit)', async () => {
    const res = await request(base, 'POST', '/coupons/12/issues', { headers: { 'x-big': 'x'.repeat(5000) } });
    assert.equal(res.status, 431);
  });

  it('answers what the service says is foregone, records it, and hands the rest on', async () => {
    const sold = await request(base, 'POST', '/coupons/12/issues');
    assert.equal(sold.status, 410);
    assert.equal((sold.json as { code: string }).code, 'SOLD_OUT');
    assert.equal(sold.headers['content-type'], 'application/problem+json; charset=utf-8');
    assert.equal(answered.n, 1);
    assert.equal(recorded.length, 1);
    assert.equal(recorded[0]![0], 410);
    assert.ok(recorded[0]![1] >= 0 && recorded[0]![1] < 1);
    refusal.now = WINDOW_NOT_OPEN;
    assert.equal((await request(base, 'POST', '/coupons/12/issues')).status, 422);
    refusal.now = undefined;
    assert.equal((await request(base, 'POST', '/coupons/12/issues')).status, 299);
    refusal.now = SOLD_OUT;
    for (const path of ['/coupons/0/issues', '/coupons/12/issues/me', '/coupons/12345678901/issues', '/coupons/12/issuesx']) {
      assert.equal((await request(base, 'POST', path)).status, 299, path);
    }
    assert.equal((await request(base, 'POST', '/coupons/12/issues', { body: 'x', headers: { 'content-type': 'text/plain' } })).status, 299);
    assert.equal(answered.n, 2);
  });

  it('hands everything on once stopped', async () => {
    answers.stop();
    const before = routed.length;
    assert.equal((await request(base, 'POST', '/coupons/12/issues')).status, 299);
    assert.equal(routed.length, before + 1);
  });
});
