// The HTTP contract: campaign reads, the issue rules (window, unknown, duplicate, sold out), and
// bad input — every refusal is a 4xx problem+json with a stable code and changes nothing.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { createSigner } from 'fast-jwt';
import { CONSOLE_ASSETS } from '../src/routes/console.js';
import { insertCoupon } from '../src/coupons/repository.js';
import { ADMIN_TOKEN, JWT_SECRET, missing, request, startTestServer, type Response, type TestServer } from './helpers.js';

let server: TestServer;
before(async () => {
  server = await startTestServer({ db: 'pglite' });
});
after(async () => {
  await server.close();
});

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
const asUser = (userId: string) => ({ authorization: `Bearer ${server.tokenFor(userId)}` });
const iso = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString();
const HOUR = 3600_000;

/**
 * A campaign whose window is over. The API refuses to create one (400), so it is written through
 * the repository, as a campaign that ended since its creation would be.
 */
async function createEndedCoupon(totalQuantity = 500, name = 'ended coupon'): Promise<{ id: number }> {
  const now = Date.now();
  const c = await insertCoupon(server.db, {
    name,
    totalQuantity,
    issueStartsAt: new Date(now - 2 * HOUR),
    issueEndsAt: new Date(now - HOUR),
    strategy: server.config.defaultStrategy,
    discountType: null,
    discountValue: null,
    minOrderAmount: null,
  });
  return { id: c.id };
}

function assertProblem(res: Response, status: number, code: string): void {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${res.text}`);
  assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
  const body = res.json as { code?: string; status?: number; title?: string; type?: string };
  assert.equal(body.code, code);
  assert.equal(body.status, status);
  assert.equal(typeof body.title, 'string');
  assert.equal(typeof body.type, 'string');
}

async function counts(): Promise<{ coupons: number; issues: number }> {
  const c = await server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM coupons');
  const i = await server.db.query<{ n: number }>('SELECT count(*)::int AS n FROM coupon_issues');
  return { coupons: c.rows[0]!.n, issues: i.rows[0]!.n };
}

const validCoupon = () => ({ name: 'Chicken', totalQuantity: 10, issueStartsAt: iso(-HOUR), issueEndsAt: iso(HOUR) });

describe('POST /admin/coupons', () => {
  it('returns 201 with the campaign, its stock and a Location header', async () => {
    const res = await request(server.url, 'POST', '/admin/coupons', {
      headers: admin,
      json: { ...validCoupon(), strategy: 'db-atomic', discountType: 'PERCENT', discountValue: 15, minOrderAmount: 10000 },
    });
    assert.equal(res.status, 201, res.text);
    const body = res.json as Record<string, unknown>;
    assert.equal(res.headers.location, `/coupons/${String(body.id)}`);
    assert.equal(body.name, 'Chicken');
    assert.equal(body.totalQuantity, 10);
    assert.equal(body.issuedCount, 0);
    assert.equal(body.remaining, 10);
    assert.equal(body.strategy, 'db-atomic');
    assert.equal(body.status, 'OPEN');
    assert.equal(body.discountType, 'PERCENT');
    assert.equal(body.discountValue, 15);
    assert.equal(body.minOrderAmount, 10000);
  });

  it('uses the server default strategy when none is given', async () => {
    const res = await request(server.url, 'POST', '/admin/coupons', { headers: admin, json: validCoupon() });
    assert.equal(res.status, 201);
    assert.equal((res.json as { strategy: string }).strategy, server.config.defaultStrategy);
  });
});

describe('bad input to POST /admin/coupons: 4xx problem+json, nothing created', () => {
  // pointer: the field the problem's `errors` names (the console shows the reason beside it).
  const cases: Array<{ name: string; status: number; code: string; pointer?: string; body?: string; json?: unknown; headers?: Record<string, string> }> = [
    { name: 'malformed JSON', status: 400, code: 'MALFORMED_JSON', body: '{"name": "x", ' },
    { name: 'empty JSON body', status: 400, code: 'MALFORMED_JSON', body: '' },
    { name: 'a JSON array instead of an object', status: 400, code: 'VALIDATION_FAILED', json: [validCoupon()] },
    { name: 'totalQuantity as a string', status: 400, code: 'VALIDATION_FAILED', pointer: '#/totalQuantity', json: { ...validCoupon(), totalQuantity: '10' } },
    { name: 'totalQuantity as a fraction', status: 400, code: 'VALIDATION_FAILED', json: { ...validCoupon(), totalQuantity: 1.5 } },
    { name: 'name as a number', status: 400, code: 'VALIDATION_FAILED', pointer: '#/name', json: { ...validCoupon(), name: 42 } },
    { name: 'an unknown field', status: 400, code: 'VALIDATION_FAILED', pointer: '#/isFree', json: { ...validCoupon(), isFree: true } },
    { name: 'a missing field', status: 400, code: 'VALIDATION_FAILED', pointer: '#/issueEndsAt', json: { name: 'x', totalQuantity: 1, issueStartsAt: iso(0) } },
    { name: 'zero quantity', status: 400, code: 'VALIDATION_FAILED', pointer: '#/totalQuantity', json: { ...validCoupon(), totalQuantity: 0 } },
    { name: 'negative quantity', status: 400, code: 'VALIDATION_FAILED', json: { ...validCoupon(), totalQuantity: -5 } },
    { name: 'huge quantity', status: 400, code: 'VALIDATION_FAILED', json: { ...validCoupon(), totalQuantity: 1e12 } },
    { name: 'empty name', status: 400, code: 'VALIDATION_FAILED', json: { ...validCoupon(), name: '' } },
    { name: 'end equal to start', status: 400, code: 'VALIDATION_FAILED', pointer: '#/issueEndsAt', json: { ...validCoupon(), issueStartsAt: '2030-01-01T12:00:00Z', issueEndsAt: '2030-01-01T12:00:00Z' } },
    { name: 'end before start', status: 400, code: 'VALIDATION_FAILED', json: { ...validCoupon(), issueStartsAt: '2030-01-01T12:00:00Z', issueEndsAt: '2030-01-01T11:00:00Z' } },
    // Campaigns cannot be changed once created: one whose whole window is past would be ENDED for good.
    { name: 'a window already over', status: 400, code: 'VALIDATION_FAILED', pointer: '#/issueEndsAt', json: { ...validCoupon(), issueStartsAt: iso(-2 * HOUR), issueEndsAt: iso(-HOUR) } },
    { name: 'a window ending a second ago', status: 400, code: 'VALIDATION_FAILED', pointer: '#/issueEndsAt', json: { ...validCoupon(), issueStartsAt: iso(-HOUR), issueEndsAt: iso(-1000) } },
    { name: 'a date that is not ISO 8601', status: 400, code: 'VALIDATION_FAILED', json: { ...validCoupon(), issueStartsAt: 'tomorrow noon' } },
    { name: 'an unknown strategy', status: 400, code: 'VALIDATION_FAILED', pointer: '#/strategy', json: { ...validCoupon(), strategy: 'magic' } },
    { name: 'discountType without discountValue', status: 400, code: 'VALIDATION_FAILED', pointer: '#/discountValue', json: { ...validCoupon(), discountType: 'AMOUNT' } },
    { name: 'a PERCENT discount over 100', status: 400, code: 'VALIDATION_FAILED', pointer: '#/discountValue', json: { ...validCoupon(), discountType: 'PERCENT', discountValue: 150 } },
    { name: 'an unknown discountType', status: 400, code: 'VALIDATION_FAILED', json: { ...validCoupon(), discountType: 'FREE', discountValue: 1 } },
    { name: 'an oversize body', status: 413, code: 'PAYLOAD_TOO_LARGE', json: { ...validCoupon(), name: 'x'.repeat(20_000) } },
    { name: 'a non-JSON media type', status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', body: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } },
  ];
  for (const c of cases) {
    it(`${c.name} → ${c.status} ${c.code}`, async () => {
      const before = await counts();
      const res = await request(server.url, 'POST', '/admin/coupons', {
        headers: { ...admin, ...c.headers },
        ...(c.body !== undefined ? { body: c.body } : { json: c.json }),
      });
      assertProblem(res, c.status, c.code);
      if (c.pointer !== undefined) {
        const errors = (res.json as { errors?: Array<{ pointer: string; detail: string }> }).errors ?? [];
        assert.ok(errors.some((e) => e.pointer === c.pointer && e.detail !== ''), `errors name ${c.pointer}: ${res.text}`);
      }
      assert.deepEqual(await counts(), before, 'nothing changed');
    });
  }

  it('no token → 401 UNAUTHENTICATED', async () => {
    const before = await counts();
    assertProblem(await request(server.url, 'POST', '/admin/coupons', { json: validCoupon() }), 401, 'UNAUTHENTICATED');
    assert.deepEqual(await counts(), before);
  });

  it('a user token on an admin route → 403 FORBIDDEN', async () => {
    const before = await counts();
    assertProblem(await request(server.url, 'POST', '/admin/coupons', { headers: asUser('mallory'), json: validCoupon() }), 403, 'FORBIDDEN');
    assert.deepEqual(await counts(), before);
  });
});

describe('POST /coupons/:id/issues', () => {
  it('returns 201 ISSUED once, then 409 ALREADY_ISSUED for the same user', async () => {
    const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'local' });
    const first = await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('alice') });
    assert.equal(first.status, 201, first.text);
    assert.deepEqual(first.json, { couponId: id, userId: 'alice', status: 'ISSUED' });
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('alice') }), 409, 'ALREADY_ISSUED');
    const coupon = await request(server.url, 'GET', `/coupons/${id}`);
    assert.equal((coupon.json as { issuedCount: number }).issuedCount, 1);
  });

  it('returns 410 SOLD_OUT once stock is gone, and 409 to a holder even then', async () => {
    const { id } = await server.createCoupon({ totalQuantity: 2, strategy: 'db-atomic' });
    for (const u of ['u1', 'u2']) assert.equal((await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser(u) })).status, 201);
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('u3') }), 410, 'SOLD_OUT');
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('u1') }), 409, 'ALREADY_ISSUED');
    const coupon = (await request(server.url, 'GET', `/coupons/${id}`)).json as { remaining: number; issuedCount: number };
    assert.equal(coupon.remaining, 0);
    assert.equal(coupon.issuedCount, 2);
  });

  it('returns 422 ISSUE_WINDOW_NOT_OPEN before the window and issues nothing', async () => {
    const { id } = await server.createCoupon({ issueStartsAt: iso(HOUR), issueEndsAt: iso(2 * HOUR) });
    const before = await counts();
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('early') }), 422, 'ISSUE_WINDOW_NOT_OPEN');
    assert.deepEqual(await counts(), before);
  });

  it('returns 422 ISSUE_WINDOW_CLOSED after the window and issues nothing', async () => {
    const { id } = await createEndedCoupon();
    const before = await counts();
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('late') }), 422, 'ISSUE_WINDOW_CLOSED');
    assert.deepEqual(await counts(), before);
  });

  it('returns 404 COUPON_NOT_FOUND for an unknown coupon, also past the integer range', async () => {
    assertProblem(await request(server.url, 'POST', '/coupons/987654/issues', { headers: asUser('bob') }), 404, 'COUPON_NOT_FOUND');
    assertProblem(await request(server.url, 'POST', '/coupons/9999999999/issues', { headers: asUser('bob') }), 404, 'COUPON_NOT_FOUND');
  });

  for (const bad of ['abc', '0', '-1', '1.5', '12345678901']) {
    it(`returns 400 VALIDATION_FAILED for coupon id "${bad}"`, async () => {
      assertProblem(await request(server.url, 'POST', `/coupons/${bad}/issues`, { headers: asUser('bob') }), 400, 'VALIDATION_FAILED');
    });
  }
});

describe('authentication on POST /coupons/:id/issues: 401, nothing issued', () => {
  let couponId: number;
  before(async () => {
    couponId = (await server.createCoupon({ totalQuantity: 100 })).id;
  });
  const sign = (key: string, payload: Record<string, unknown>, algorithm: 'HS256' | 'HS512' = 'HS256') =>
    createSigner({ key, algorithm, noTimestamp: true })(payload);
  const nowS = () => Math.floor(Date.now() / 1000);
  const cases: Array<{ name: string; headers: () => Record<string, string> }> = [
    { name: 'a missing Authorization header', headers: () => ({}) },
    { name: 'a non-Bearer scheme', headers: () => ({ authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }) },
    { name: 'a malformed token', headers: () => ({ authorization: 'Bearer not.a.jwt' }) },
    { name: 'an expired token', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { sub: 'eve', exp: nowS() - 60 })}` }) },
    { name: 'a token signed with another secret', headers: () => ({ authorization: `Bearer ${sign('another-secret-that-is-long-enough-0123', { sub: 'eve', exp: nowS() + 60 })}` }) },
    { name: 'a token with the wrong algorithm (HS512)', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { sub: 'eve', exp: nowS() + 60 }, 'HS512')}` }) },
    {
      name: 'an unsigned token (alg none)',
      headers: () => {
        const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
        return { authorization: `Bearer ${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'eve', exp: nowS() + 60 })}.` };
      },
    },
    { name: 'a token without exp', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { sub: 'eve' })}` }) },
    { name: 'a token with exp 1e300 (past JWT_MAX_TTL_S)', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { sub: 'eve', exp: 1e300 })}` }) },
    { name: 'a token with exp an hour past JWT_MAX_TTL_S', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { sub: 'eve', exp: nowS() + 86_400 + 3600 })}` }) },
    { name: 'a token without sub', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { exp: nowS() + 60 })}` }) },
    { name: 'a bad user id in sub', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { sub: 'eve smith', exp: nowS() + 60 })}` }) },
    { name: 'a too-long user id in sub', headers: () => ({ authorization: `Bearer ${sign(JWT_SECRET, { sub: 'e'.repeat(65), exp: nowS() + 60 })}` }) },
    { name: 'the admin token instead of a user token', headers: () => admin },
  ];
  for (const c of cases) {
    it(`${c.name} → 401 UNAUTHENTICATED`, async () => {
      const before = await counts();
      const res = await request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: c.headers() });
      assertProblem(res, 401, 'UNAUTHENTICATED');
      assert.equal(res.headers['www-authenticate'], 'Bearer');
      assert.deepEqual(await counts(), before);
    });
  }
  it('a token that lives the whole JWT_MAX_TTL_S is accepted', async () => {
    const res = await request(server.url, 'POST', `/coupons/${couponId}/issues`, {
      headers: { authorization: `Bearer ${sign(JWT_SECRET, { sub: 'max-ttl', exp: nowS() + 86_400 })}` },
    });
    assert.equal(res.status, 201, res.text);
  });
});

describe('refusals that are the same for everyone come before authentication', () => {
  it('a closed window answers 422 whatever the token, an open one still checks it (401)', async () => {
    const ended = (await createEndedCoupon()).id;
    // A campaign this instance has met (as one that ended since its creation would be): its window is known.
    assertProblem(await request(server.url, 'POST', `/coupons/${ended}/issues`, { headers: asUser('first-caller') }), 422, 'ISSUE_WINDOW_CLOSED');
    const upcoming = (await server.createCoupon({ issueStartsAt: iso(HOUR), issueEndsAt: iso(2 * HOUR) })).id;
    const open = (await server.createCoupon({ totalQuantity: 10 })).id;
    const forged = { authorization: 'Bearer not.a.jwt' };
    const before = await counts();
    assertProblem(await request(server.url, 'POST', `/coupons/${ended}/issues`, { headers: forged }), 422, 'ISSUE_WINDOW_CLOSED');
    assertProblem(await request(server.url, 'POST', `/coupons/${upcoming}/issues`), 422, 'ISSUE_WINDOW_NOT_OPEN');
    assertProblem(await request(server.url, 'POST', `/coupons/${open}/issues`, { headers: forged }), 401, 'UNAUTHENTICATED');
    assertProblem(await request(server.url, 'POST', `/coupons/${open}/issues`), 401, 'UNAUTHENTICATED');
    assert.deepEqual(await counts(), before);
  });

  it('a strategy whose holders hear 409 after sold-out still authenticates every caller', async () => {
    const { id } = await server.createCoupon({ totalQuantity: 1, strategy: 'local' });
    assert.equal((await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('first') })).status, 201);
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('second') }), 410, 'SOLD_OUT');
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: 'Bearer not.a.jwt' } }), 401, 'UNAUTHENTICATED');
    assertProblem(await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('first') }), 409, 'ALREADY_ISSUED');
  });
});

describe('reads', () => {
  it('GET /coupons lists open and upcoming campaigns, not ended ones', async () => {
    const open = await server.createCoupon({ name: 'open-one' });
    const upcoming = await server.createCoupon({ name: 'upcoming-one', issueStartsAt: iso(HOUR), issueEndsAt: iso(2 * HOUR) });
    const ended = await createEndedCoupon(500, 'ended-one');
    const res = await request(server.url, 'GET', '/coupons');
    assert.equal(res.status, 200);
    const items = (res.json as { items: Array<{ id: number; status: string }> }).items;
    const byId = new Map(items.map((i) => [i.id, i.status]));
    assert.equal(byId.get(open.id), 'OPEN');
    assert.equal(byId.get(upcoming.id), 'UPCOMING');
    assert.equal(byId.has(ended.id), false);
  });

  it('GET /coupons/:id says SOLD_OUT with remaining 0 once the stock is gone, and ENDED after the window', async () => {
    const { id } = await server.createCoupon({ totalQuantity: 2, strategy: 'local' });
    const view = async () => (await request(server.url, 'GET', `/coupons/${id}`)).json as { status: string; remaining: number; issuedCount: number };
    assert.equal((await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('so-1') })).status, 201);
    assert.deepEqual(await view().then((v) => [v.status, v.remaining]), ['OPEN', 1]);
    assert.equal((await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('so-2') })).status, 201);
    assert.deepEqual(await view().then((v) => [v.status, v.remaining, v.issuedCount]), ['SOLD_OUT', 0, 2]);
    const ended = await createEndedCoupon(2);
    assert.equal(((await request(server.url, 'GET', `/coupons/${ended.id}`)).json as { status: string }).status, 'ENDED');
  });

  it('GET /coupons/:id returns 404 COUPON_NOT_FOUND for an unknown id', async () => {
    assertProblem(await request(server.url, 'GET', '/coupons/424242'), 404, 'COUPON_NOT_FOUND');
  });

  it('GET /coupons/:id/issues/me answers 404 NOT_ISSUED, then ISSUED', async () => {
    const { id } = await server.createCoupon({ strategy: 'db-pessimistic' });
    assertProblem(await request(server.url, 'GET', `/coupons/${id}/issues/me`, { headers: asUser('carol') }), 404, 'NOT_ISSUED');
    assert.equal((await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('carol') })).status, 201);
    const res = await request(server.url, 'GET', `/coupons/${id}/issues/me`, { headers: asUser('carol') });
    assert.equal(res.status, 200);
    assert.deepEqual(res.json, { status: 'ISSUED' });
  });

  it("GET /me/coupons lists the caller's coupons only", async () => {
    const a = await server.createCoupon({ name: 'dave-a' });
    const b = await server.createCoupon({ name: 'dave-b' });
    for (const id of [a.id, b.id]) await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: asUser('dave') });
    await request(server.url, 'POST', `/coupons/${a.id}/issues`, { headers: asUser('erin') });
    const res = await request(server.url, 'GET', '/me/coupons', { headers: asUser('dave') });
    assert.equal(res.status, 200);
    const ids = (res.json as { items: Array<{ coupon: { id: number }; issuedAt: string }> }).items.map((i) => i.coupon.id).sort();
    assert.deepEqual(ids, [a.id, b.id].sort());
    assertProblem(await request(server.url, 'GET', '/me/coupons'), 401, 'UNAUTHENTICATED');
  });

  it('unknown routes are 404 problem+json', async () => {
    assertProblem(await request(server.url, 'GET', '/nope'), 404, 'NOT_FOUND');
  });

  it('serves health, readiness, the OpenAPI document and Swagger UI', async () => {
    assert.deepEqual((await request(server.url, 'GET', '/healthz')).json, { status: 'ok' });
    assert.equal((await request(server.url, 'GET', '/readyz')).status, 200);
    const spec = (await request(server.url, 'GET', '/openapi.json')).json as { openapi: string; paths: Record<string, unknown> };
    assert.match(spec.openapi, /^3\./);
    assert.ok(spec.paths['/coupons/{id}/issues'], 'the issue route is documented');
    assert.equal((await request(server.url, 'GET', '/docs/')).status, 200);
  });
});

describe('AUTH_MODE=header', () => {
  let headerServer: TestServer;
  before(async () => {
    headerServer = await startTestServer({ db: 'pglite', env: { AUTH_MODE: 'header' } });
  });
  after(async () => {
    await headerServer.close();
  });

  it('trusts X-User-Id and rejects a bad one with 401', async () => {
    const { id } = await headerServer.createCoupon({ totalQuantity: 3 });
    const ok = await request(headerServer.url, 'POST', `/coupons/${id}/issues`, { headers: { 'x-user-id': 'gw-user:42' } });
    assert.equal(ok.status, 201, ok.text);
    assertProblem(await request(headerServer.url, 'POST', `/coupons/${id}/issues`, { headers: { 'x-user-id': 'bad user' } }), 401, 'UNAUTHENTICATED');
    assertProblem(await request(headerServer.url, 'POST', `/coupons/${id}/issues`), 401, 'UNAUTHENTICATED');
  });
});

describe('errors outside any route are problems too', () => {
  it('a path that is not valid percent-encoding is 400 BAD_URL with a request id, not echoed', async () => {
    const res = await request(server.url, 'POST', '/coupons/%c0/issues', { headers: asUser('bad-url') });
    assertProblem(res, 400, 'BAD_URL');
    assert.match(String(res.headers['x-request-id']), /\S/);
    assert.doesNotMatch(res.text, /%c0/i);
    const echoed = await request(server.url, 'GET', '/coupons/%ff', { headers: { 'x-request-id': 'edge-9.b:2' } });
    assertProblem(echoed, 400, 'BAD_URL');
    assert.equal(echoed.headers['x-request-id'], 'edge-9.b:2');
  });

  it('a path segment longer than any route takes is 414 BAD_URL', async () => {
    const res = await request(server.url, 'GET', `/coupons/${'9'.repeat(200)}`);
    assertProblem(res, 414, 'BAD_URL');
    assert.match(String(res.headers['x-request-id']), /\S/);
  });

  it("a path the console's file server refuses (traversal, NUL byte) is 404 NOT_FOUND, like a missing file", async (t) => {
    if (!existsSync(CONSOLE_ASSETS)) return missing(t, 'the console is not built: run `npm run build`');
    for (const path of ['/console/..%5c..%5cpackage.json', '/console/..%5c..%5c..%5c..%5cetc%5cpasswd', '/console/%00', '/console/a%00b.js', '/console/no-such-file.js']) {
      const res = await request(server.url, 'GET', path);
      assertProblem(res, 404, 'NOT_FOUND');
      assert.match(String(res.headers['x-request-id']), /\S/, path);
    }
  });

  it('/docs carries the same security headers as /console, on the page and its files', async (t) => {
    if (!existsSync(CONSOLE_ASSETS)) return missing(t, 'the console is not built: run `npm run build`');
    const page = (await request(server.url, 'GET', '/console/')).headers;
    const names = ['content-security-policy', 'x-content-type-options', 'referrer-policy'];
    for (const name of names) assert.ok(page[name] !== undefined, `/console/ sends ${name}`);
    for (const path of ['/docs/', '/docs/static/swagger-ui.css', '/docs/static/swagger-initializer.js', '/docs/json']) {
      const res = await request(server.url, 'GET', path);
      assert.equal(res.status, 200, path);
      for (const name of names) assert.equal(res.headers[name], page[name], `${path}: ${name}`);
    }
  });
});
