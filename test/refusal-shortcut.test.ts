// The refusal shortcut answers the stampede's tail before Fastify. Two things must hold: it takes
// only the requests it should (unit test against a bare server whose fallback is recognisable),
// and what it answers is byte-for-byte the Fastify route's answer, counted in the same metrics
// (against the real app, comparing a shortcut request with one the shortcut must pass on).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SOLD_OUT, WINDOW_CLOSED, type Refusal } from '../src/coupons/domain.js';
import type { CouponService } from '../src/coupons/service.js';
import { refusalShortcut } from '../src/http/refusal-shortcut.js';
import { request, startTestServer, type TestServer } from './helpers.js';

describe('refusal shortcut: which requests it takes', () => {
  const known = new Map<number, Refusal>([
    [7, SOLD_OUT],
    [8, WINDOW_CLOSED],
  ]);
  const service = { refusalForAnyone: (id: number) => known.get(id) } as unknown as CouponService;
  let closing = false;
  const recorded: Array<[number, number]> = [];
  const shortcut = refusalShortcut({ service, record: (status, seconds) => recorded.push([status, seconds]), closing: () => closing });
  let server: Server;
  let base: string;
  before(async () => {
    server = createServer((req, res) => {
      if (shortcut(req, res)) return;
      req.resume();
      res.writeHead(599).end('fell through');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('answers a known refusal with the prebuilt problem, a request id and a metric', async () => {
    const sold = await request(base, 'POST', '/coupons/7/issues', { headers: { authorization: 'Bearer anything' } });
    assert.equal(sold.status, 410);
    assert.equal(sold.headers['content-type'], 'application/problem+json; charset=utf-8');
    assert.equal((sold.json as { code: string }).code, 'SOLD_OUT');
    assert.match(String(sold.headers['x-request-id']), /^[0-9a-f]{10}-[0-9a-z]+$/);
    const closed = await request(base, 'POST', '/coupons/8/issues', { headers: { 'x-request-id': 'trace-me.1' } });
    assert.equal(closed.status, 422);
    assert.equal((closed.json as { code: string }).code, 'ISSUE_WINDOW_CLOSED');
    assert.equal(closed.headers['x-request-id'], 'trace-me.1');
    assert.deepEqual(
      recorded.map(([status]) => status),
      [410, 422],
    );
    assert.ok(recorded.every(([, seconds]) => seconds >= 0 && seconds < 1));
  });

  const passOn: Array<[string, string, string, Record<string, unknown>?]> = [
    ['an open campaign', 'POST', '/coupons/9/issues'],
    ['another method', 'GET', '/coupons/7/issues'],
    ['a query string', 'POST', '/coupons/7/issues?x=1'],
    ['a non-canonical id', 'POST', '/coupons/07/issues'],
    ['another path', 'POST', '/coupons/7/issues/me'],
    ['a body', 'POST', '/coupons/7/issues', { json: { any: 'thing' } }],
  ];
  for (const [what, method, path, options] of passOn) {
    it(`passes on ${what}`, async () => {
      assert.equal((await request(base, method, path, options)).status, 599);
    });
  }

  it('passes everything on while the server is closing (Fastify answers 503 + connection: close)', async () => {
    closing = true;
    try {
      assert.equal((await request(base, 'POST', '/coupons/7/issues')).status, 599);
    } finally {
      closing = false;
    }
  });
});

describe('refusal shortcut: the same answer as the Fastify route', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ db: 'pglite' });
  });
  after(() => server.close());

  it('a closed window: same status, body and headers through the shortcut and through Fastify; counted once each', async () => {
    const { id } = await server.createCoupon({ issueStartsAt: new Date(Date.now() - 7_200_000).toISOString(), issueEndsAt: new Date(Date.now() - 3_600_000).toISOString() });
    const metricsBefore = await issueResponses(server.url, '422');
    // Without a query string the shortcut answers; with one it must pass the request on to Fastify.
    const fast = await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { 'x-request-id': 'same-1' } });
    const framework = await request(server.url, 'POST', `/coupons/${id}/issues?via=fastify`, { headers: { 'x-request-id': 'same-1' } });
    assert.equal(fast.status, 422);
    assert.equal(framework.status, 422);
    assert.equal(fast.text, framework.text);
    for (const header of ['content-type', 'content-length', 'x-request-id']) {
      assert.equal(fast.headers[header], framework.headers[header], header);
    }
    assert.equal(await issueResponses(server.url, '422'), metricsBefore + 2);
  });
});

/** couponrush_http_responses_total for the issue route and one status, from /metrics. */
async function issueResponses(base: string, status: string): Promise<number> {
  const text = (await request(base, 'GET', '/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith('couponrush_http_responses_total{') && l.includes('route="/coupons/:id/issues"') && l.includes(`status="${status}"`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}
