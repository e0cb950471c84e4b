// The issue route's node:http front (src/routes/issue-handler.ts): the plain request (no body) is
// answered without Fastify, with exactly what Fastify's route answers — status, body, headers —
// and everything else still goes through Fastify. A known sell-out or a closed window is answered
// before the token is read (couponrush_issue_answered_early_total).
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SOLD_OUT, WINDOW_NOT_OPEN, type ForegoneRefusal } from '../src/coupons/domain.js';
import { IssueHandler } from '../src/routes/issue-handler.js';
import { LoadGuard } from '../src/http/protection.js';
import { signUserToken } from '../src/http/auth.js';
import { JWT_SECRET, request, startTestServer, needServer, PG_ADMIN_URL, type Response, type TestServer } from './helpers.js';
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

describe('the issue front: a window that is not open yet (PGlite)', () => {
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

describe('the issue front with a per-IP limit (PGlite)', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ db: 'pglite', env: { RATE_LIMIT_IP: '2/60s', TRUST_PROXY: 'false' } });
  });
  after(() => server.close());

  it('counts every request against the address first, the foregone refusals too', async () => {
    const now = Date.now();
    const { id } = await server.createCoupon({
      strategy: 'db-atomic',
      issueStartsAt: new Date(now + 3600_000).toISOString(),
      issueEndsAt: new Date(now + 7200_000).toISOString(),
    });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await request(server.url, 'POST', `/coupons/${id}/issues`)).status);
    assert.deepEqual(statuses, [422, 422, 429]);
    assert.equal(await early(server), 2, 'the two 422s were answered before the token was read');
  });
});

describe('the issue front: a sell-out redis-lua-async-cached knows of (PostgreSQL + Redis)', () => {
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

describe('IssueHandler: the front and its server factory', () => {
  const refusal: { now: ForegoneRefusal | undefined } = { now: SOLD_OUT };
  const recorded: Array<[number, number]> = [];
  const answered = { n: 0 };
  const routed: string[] = [];
  const shed: string[] = [];
  /** What `issue` does: answer at once, or never (a store that hangs). */
  const issueMode = { hang: false };
  const load = new LoadGuard(0, () => {});
  const handler = new IssueHandler({
    service: {
      refusalForAnyone: () => refusal.now,
      issue: (couponId) => (issueMode.hang ? new Promise(() => {}) : Promise.resolve(couponId === 13 ? { kind: 'ACCEPTED' } : { kind: 'ISSUED' })),
    },
    limits: { byAddress: undefined, issuer: (headers) => String(headers['x-user-id'] ?? 'nobody') },
    load,
    timeoutMs: 100,
    onShed: (reason) => shed.push(reason),
    record: (s, sec) => recorded.push([s, sec]),
    answeredEarly: answered,
    trustProxy: undefined,
    log: { warn() {}, error() {}, child() { return this; } },
  });
  const options = { http: { maxHeaderSize: 4096 }, keepAliveTimeout: 1234, requestTimeout: 5678, connectionTimeout: 0, maxRequestsPerSocket: 7 };
  const server = handler.serverFactory((req, res) => {
    routed.push(`${req.method} ${req.url}`);
    res.writeHead(299).end();
  }, options) as http.Server;
  let base = '';
  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    handler.stop();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('is the server Fastify would build, with the same timeouts', () => {
    assert.equal(server.keepAliveTimeout, 1234);
    assert.equal(server.requestTimeout, 5678);
    assert.equal(server.maxRequestsPerSocket, 7);
  });

  it("passes Fastify's http options to node:http (a 5 KB header is over the 4 KB limit)", async () => {
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
    const before = routed.length;
    refusal.now = SOLD_OUT;
    for (const path of ['/coupons/0/issues', '/coupons/12/issues/me', '/coupons/12345678901/issues', '/coupons/12/issuesx', '/coupons/%31/issues']) {
      assert.equal((await request(base, 'POST', path)).status, 299, path);
    }
    assert.equal((await request(base, 'POST', '/coupons/12/issues', { body: 'x', headers: { 'content-type': 'text/plain' } })).status, 299);
    assert.equal((await request(base, 'GET', '/coupons/12/issues')).status, 299);
    assert.equal(routed.length, before + 7, 'each of them reached Fastify');
    assert.equal(answered.n, 2);
  });

  it('decides an open campaign itself: the caller, the issue, the answer', async () => {
    refusal.now = undefined;
    const before = routed.length;
    const issued = await request(base, 'POST', '/coupons/12/issues', { headers: { 'x-user-id': 'u-1' } });
    assert.equal(issued.status, 201);
    assert.deepEqual(issued.json, { couponId: 12, userId: 'u-1', status: 'ISSUED' });
    assert.equal(issued.headers['content-type'], 'application/json; charset=utf-8');
    assert.equal(issued.headers['content-length'], String(Buffer.byteLength(issued.text)));
    const queued = await request(base, 'POST', '/coupons/13/issues', { headers: { 'x-user-id': 'u-1' } });
    assert.equal(queued.status, 202);
    assert.deepEqual(queued.json, { couponId: 13, userId: 'u-1', status: 'PENDING' });
    const past = await request(base, 'POST', '/coupons/2147483648/issues');
    assert.equal(past.status, 404, 'an id past any coupon is an unknown coupon');
    assert.equal((past.json as { code: string }).code, 'COUPON_NOT_FOUND');
    assert.equal(routed.length, before, 'none reached Fastify');
  });

  it('answers 504 TIMEOUT once the deadline passes, and only that', async () => {
    refusal.now = undefined;
    issueMode.hang = true;
    try {
      const started = performance.now();
      const res = await request(base, 'POST', '/coupons/12/issues', { headers: { 'x-user-id': 'u-2' } });
      assert.equal(res.status, 504);
      assert.equal((res.json as { code: string }).code, 'TIMEOUT');
      assert.ok(performance.now() - started >= 100, 'not before the timeout');
      assert.ok(shed.includes('timeout'));
    } finally {
      issueMode.hang = false;
    }
  });

  it('refuses every request while the app closes, before anything else', async () => {
    load.closing();
    refusal.now = SOLD_OUT;
    const res = await request(base, 'POST', '/coupons/12/issues');
    assert.equal(res.status, 503);
    assert.equal((res.json as { code: string }).code, 'SERVICE_UNAVAILABLE');
    assert.equal(res.headers['retry-after'], '1');
  });
});

/**
 * One request of the comparison: sent alike to the twin with the front and the twin without it.
 * `body`: sent as is, with its own content type; such a request reaches Fastify on both twins.
 */
interface Probe {
  readonly label: string;
  readonly method?: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

/** The twins' answers, less what differs between any two responses: the date and a generated id. */
function comparable(res: Response): { status: number; text: string; headers: Record<string, unknown> } {
  const { date: _date, ...headers } = res.headers;
  const id = String(headers['x-request-id']);
  if (GENERATED_ID.test(id)) headers['x-request-id'] = '<generated>';
  return { status: res.status, text: res.text, headers };
}

/**
 * Twin servers — the same configuration and database history, one with the node:http front (as
 * the service runs) and one without it (Fastify's route answers everything) — get the same
 * requests in the same order; every answer must be identical. Both auth modes, both rate limits,
 * every answer of the route's table that a request can provoke without a store failing (those are
 * the fault suites'), bad bodies and bad URLs.
 */
function compareTwins(name: string, env: Record<string, string>, probes: (ids: { open: number; small: number; notYet: number }, token: (user: string, ttlS?: number) => string) => Probe[]) {
  describe(`Fastify's route and the front answer alike: ${name} (PGlite)`, () => {
    let front: TestServer;
    let routed: TestServer;
    const ids = { open: 0, small: 0, notYet: 0 };
    before(async () => {
      [front, routed] = await Promise.all([startTestServer({ db: 'pglite', env }), startTestServer({ db: 'pglite', env, app: { issueFront: false } })]);
      for (const twin of [front, routed]) {
        const now = Date.now();
        ids.open = (await twin.createCoupon({ strategy: 'db-atomic', totalQuantity: 100 })).id;
        ids.small = (await twin.createCoupon({ strategy: 'db-atomic', totalQuantity: 1 })).id;
        ids.notYet = (
          await twin.createCoupon({ strategy: 'db-atomic', issueStartsAt: new Date(now + 3600_000).toISOString(), issueEndsAt: new Date(now + 7200_000).toISOString() })
        ).id;
      }
    });
    after(async () => {
      await Promise.all([front?.close(), routed?.close()]);
    });

    it('gives every request the same status, body and headers', async () => {
      const list = probes(ids, (user, ttlS) => signUserToken(JWT_SECRET, user, ttlS));
      const statuses = new Set<number>();
      for (const probe of list) {
        const send = (twin: TestServer) => request(twin.url, probe.method ?? 'POST', probe.path, { headers: probe.headers ?? {}, ...(probe.body === undefined ? {} : { body: probe.body }) });
        const viaFront = await send(front);
        const viaRoute = await send(routed);
        assert.deepEqual(comparable(viaFront), comparable(viaRoute), probe.label);
        statuses.add(viaFront.status);
      }
      // The comparison covered the route's table, not one answer many times.
      for (const status of [201, 400, 401, 404, 409, 410, 413, 415, 422, 429]) assert.ok(statuses.has(status), `no probe was answered ${status}`);
      const plain = list.filter((p) => p.body === undefined && (p.method ?? 'POST') === 'POST').length;
      assert.ok(plain >= 10, 'most probes are plain requests, which the front answers itself');
      assert.equal(await early(routed), 0, 'without the front nothing is answered early');
      assert.ok((await early(front)) >= 1, 'the front answered the foregone refusals (a window not open)');
    });
  });
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

compareTwins('JWT, per-user and per-address limits', { RATE_LIMIT_USER: '3/60s', RATE_LIMIT_IP: '6/60s', TRUST_PROXY: 'loopback' }, (ids, token) => {
  const issue = (id: number) => `/coupons/${id}/issues`;
  // Each address may send 6 issue requests a minute: the probes spread over addresses, bar one.
  let n = 0;
  const from = () => ({ 'x-forwarded-for': `198.51.100.${1 + Math.floor(n++ / 5)}` });
  return [
    { label: 'no credentials', path: issue(ids.open), headers: from() },
    { label: 'not a bearer token', path: issue(ids.open), headers: { ...from(), authorization: 'Basic dTpw' } },
    { label: 'a token signed with another secret', path: issue(ids.open), headers: { ...from(), ...bearer(signUserToken('another secret', 'u1')) } },
    { label: 'a token that lives past JWT_MAX_TTL_S', path: issue(ids.open), headers: { ...from(), ...bearer(token('u1', 30 * 24 * 3600)) } },
    { label: 'issued', path: issue(ids.open), headers: { ...from(), ...bearer(token('u1')) } },
    { label: 'already issued', path: issue(ids.open), headers: { ...from(), ...bearer(token('u1')) } },
    { label: 'a query string', path: `${issue(ids.open)}?from=app`, headers: { ...from(), ...bearer(token('u2')) } },
    { label: "the caller's request id", path: issue(ids.open), headers: { ...from(), ...bearer(token('u3')), 'x-request-id': 'edge-1.a:2' } },
    { label: 'a malformed request id', path: issue(ids.open), headers: { ...from(), ...bearer(token('u4')), 'x-request-id': 'not allowed' } },
    { label: 'the last coupon', path: issue(ids.small), headers: { ...from(), ...bearer(token('u5')) } },
    { label: 'sold out', path: issue(ids.small), headers: { ...from(), ...bearer(token('u6')) } },
    { label: 'sold out, no token', path: issue(ids.small), headers: from() },
    { label: 'window not open', path: issue(ids.notYet), headers: { ...from(), ...bearer(token('u7')) } },
    { label: 'unknown coupon', path: issue(999_999), headers: { ...from(), ...bearer(token('u7')) } },
    { label: 'an id past any coupon', path: issue(2_147_483_648), headers: { ...from(), ...bearer(token('u7')) } },
    { label: 'per-user limit: 1', path: issue(ids.notYet), headers: { ...from(), ...bearer(token('hammer')) } },
    { label: 'per-user limit: 2', path: issue(ids.open), headers: { ...from(), ...bearer(token('hammer')) } },
    { label: 'per-user limit: 3', path: issue(ids.open), headers: { ...from(), ...bearer(token('hammer')) } },
    { label: 'per-user limit: 4', path: issue(ids.open), headers: { ...from(), ...bearer(token('hammer')) } },
    { label: 'per-user limit: 5', path: issue(ids.open), headers: { ...from(), ...bearer(token('hammer')) } },
    ...Array.from({ length: 7 }, (_, i) => ({ label: `per-address limit: ${i + 1}`, path: issue(ids.notYet), headers: { 'x-forwarded-for': '203.0.113.7' } })),
    { label: 'a JSON body', path: issue(ids.open), headers: { ...from(), ...bearer(token('u8')), 'content-type': 'application/json' }, body: '{}' },
    { label: 'malformed JSON', path: issue(ids.open), headers: { ...from(), ...bearer(token('u9')), 'content-type': 'application/json' }, body: '{"oops' },
    { label: 'an empty JSON body', path: issue(ids.open), headers: { ...from(), ...bearer(token('u9')), 'content-type': 'application/json' }, body: '' },
    { label: 'a body over the limit', path: issue(ids.open), headers: { ...from(), ...bearer(token('u9')), 'content-type': 'application/json' }, body: `"${'x'.repeat(17_000)}"` },
    { label: 'an unsupported media type', path: issue(ids.open), headers: { ...from(), ...bearer(token('u9')), 'content-type': 'application/xml' }, body: '<a/>' },
    { label: 'an id that is not digits', path: '/coupons/abc/issues', headers: { ...from(), ...bearer(token('u9')) } },
    { label: 'an id with a leading zero', path: `/coupons/0${ids.open}/issues`, headers: { ...from(), ...bearer(token('u9')) } },
    { label: 'a percent-encoded id', path: `/coupons/${[...String(ids.open)].map((d) => `%3${d}`).join('')}/issues`, headers: { ...from(), ...bearer(token('u10')) } },
    { label: 'not UTF-8 when decoded', path: '/coupons/%E0%A4%A/issues', headers: from() },
    { label: 'another method', method: 'PUT', path: issue(ids.open), headers: { ...from(), ...bearer(token('u11')) } },
  ];
});

compareTwins('trusted X-User-Id header (AUTH_MODE=header)', { AUTH_MODE: 'header', RATE_LIMIT_USER: '2/60s' }, (ids) => {
  const issue = (id: number) => `/coupons/${id}/issues`;
  const as = (user: string) => ({ 'x-user-id': user });
  return [
    { label: 'no header', path: issue(ids.open) },
    { label: 'a user id that breaks the rule', path: issue(ids.open), headers: as('not allowed!') },
    { label: 'issued', path: issue(ids.open), headers: as('h1') },
    { label: 'already issued', path: issue(ids.open), headers: as('h1') },
    { label: 'per-user limit', path: issue(ids.open), headers: as('h1') },
    { label: 'the last coupon', path: issue(ids.small), headers: as('h2') },
    { label: 'sold out', path: issue(ids.small), headers: as('h3') },
    { label: 'window not open', path: issue(ids.notYet), headers: as('h4') },
    { label: 'unknown coupon', path: issue(999_999), headers: as('h4') },
    { label: 'an id past any coupon', path: issue(2_147_483_648), headers: as('h4') },
    { label: 'a text body', path: issue(ids.open), headers: { ...as('h5'), 'content-type': 'text/plain' }, body: 'hello' },
    { label: 'a body over the limit', path: issue(ids.open), headers: { ...as('h5'), 'content-type': 'text/plain' }, body: 'x'.repeat(17_000) },
    { label: 'an unsupported media type', path: issue(ids.open), headers: { ...as('h5'), 'content-type': 'image/png' }, body: 'png' },
    { label: 'malformed JSON', path: issue(ids.open), headers: { ...as('h5'), 'content-type': 'application/json' }, body: '[' },
  ];
});
