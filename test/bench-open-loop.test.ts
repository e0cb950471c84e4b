// The bench's open loop measures what it claims: against a server that answers after a fixed delay
// with bounded concurrency, its percentiles include the queueing that the closed loop hides (the
// closed loop slows down with the server; the open loop keeps sending on time). Needs only Node.
// Asserts relationships with wide margins, never exact timings (two shared cores).
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startLoad, type LoadResult, type LoadSpec } from '../bench/src/load.js';
import { arrivalOffsets, generatorBehind, MAX_RETRIES } from '../bench/src/open-loop.js';
import type { BenchUser, RequestPlan } from '../bench/src/plan.js';
import { parseHead } from '../bench/src/socket-client.js';

const DELAY_MS = 20;
const CONCURRENCY = 4;
/** What the server can answer per second: CONCURRENCY every DELAY_MS. */
const CAPACITY_PER_S = (CONCURRENCY * 1000) / DELAY_MS;

interface TestServer {
  readonly baseUrl: string;
  close(): Promise<void>;
}

/** Answers `answer(userAuthorization)` after DELAY_MS, CONCURRENCY at a time; the rest wait in line. */
async function slowServer(answer: (authorization: string) => { status: number; headers?: Record<string, string> } = () => ({ status: 201 })): Promise<TestServer> {
  let busy = 0;
  const line: (() => void)[] = [];
  const serve = (req: http.IncomingMessage, res: http.ServerResponse) => {
    busy++;
    setTimeout(() => {
      const { status, headers = {} } = answer(req.headers.authorization ?? '');
      res.writeHead(status, { 'content-length': '2', ...headers }).end('{}');
      busy--;
      line.shift()?.();
    }, DELAY_MS);
  };
  const server = http.createServer((req, res) => {
    req.resume();
    if (busy < CONCURRENCY) serve(req, res);
    else line.push(() => serve(req, res));
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function plan(users: number, requests = users): RequestPlan {
  const list: BenchUser[] = Array.from({ length: users }, (_, i) => ({ index: i, id: `u${i}`, authorization: `Bearer u${i}` }));
  return { users: list, order: Uint32Array.from({ length: requests }, (_, i) => i % users) };
}

function run(baseUrl: string, p: RequestPlan, extra: Partial<LoadSpec>): Promise<LoadResult> {
  return startLoad({ baseUrl, path: '/x', plan: p, connections: 8, durationSeconds: undefined, timeoutSeconds: 30, generator: 'sockets', ...extra }).done;
}

const fmt = (l: LoadResult) => `p50 ${l.latencyMs.p50.toFixed(1)} ms, p99 ${l.latencyMs.p99.toFixed(1)} ms, p99.9 ${(l.latencyMs.p999 ?? 0).toFixed(1)} ms, max ${l.latencyMs.max.toFixed(1)} ms`;

describe('bench open loop', () => {
  let server: TestServer;
  before(async () => {
    server = await slowServer();
  });
  after(() => server.close());

  it('includes the queueing that the closed loop hides, against the same server', async (t) => {
    // Closed: 8 connections on a server that serves 4 at a time — a queue exists, but it never
    // holds more than 4, because each connection waits for its answer before sending again.
    const closed = await run(server.baseUrl, plan(200), { connections: 8 });
    // Open: twice the capacity for one second, sent on time whatever the answers: the line grows
    // by ~200 requests over the second, and the last arrivals wait about that long.
    const offered = 2 * CAPACITY_PER_S;
    const open = await run(server.baseUrl, plan(offered), { openLoop: { offsetsMs: arrivalOffsets(offered, 1000, 'uniform'), windowMs: 1000, maxConnections: 1000 } });
    const o = open.openLoop!;
    t.diagnostic(`server: ${DELAY_MS} ms per answer, ${CONCURRENCY} at a time (capacity ${CAPACITY_PER_S}/s)`);
    t.diagnostic(`closed loop, 8 connections, 200 requests: ${Math.round(closed.requestsPerSecond)} req/s; ${fmt(closed)}`);
    t.diagnostic(`open loop, ${offered} arrivals in 1 s: offered ${Math.round(o.offeredPerSecond)}/s, achieved ${Math.round(o.achievedPerSecond)}/s, send lag p99 ${o.sendLagMs.p99.toFixed(1)} ms, ${o.peakConnections} connections; ${fmt(open)}`);
    t.diagnostic(`open loop, time to a final answer per arrival: p50 ${o.timeToFinalAnswerMs.p50.toFixed(0)} ms, p99 ${o.timeToFinalAnswerMs.p99.toFixed(0)} ms, max ${o.timeToFinalAnswerMs.max.toFixed(0)} ms`);

    assert.equal(closed.completed, 200);
    assert.equal(open.completed, offered, 'every arrival answered');
    assert.equal(open.statuses.get(201), offered);
    assert.ok(closed.latencyMs.p99 < 5 * DELAY_MS, `closed-loop p99 stays near the delay (${closed.latencyMs.p99} ms)`);
    assert.ok(open.latencyMs.p99 > 10 * DELAY_MS, `open-loop p99 includes the line (${open.latencyMs.p99} ms)`);
    assert.ok(open.latencyMs.p99 > 3 * closed.latencyMs.p99, 'the open loop sees what the closed one hides');
    assert.ok(o.achievedPerSecond > 0.8 * o.offeredPerSecond, 'the generator kept sending while the server fell behind');
    assert.ok(o.timeToFinalAnswerMs.p99 >= 0.9 * open.latencyMs.p99, 'without retries, a final answer takes as long as the one request');
  });

  it('offers less when the connection cap is reached, and says so instead of dropping arrivals', async (t) => {
    const open = await run(server.baseUrl, plan(50), { openLoop: { offsetsMs: arrivalOffsets(50, 100, 'uniform'), windowMs: 100, maxConnections: 2 } });
    const o = open.openLoop!;
    t.diagnostic(`cap 2: ${o.waitedForConnection} attempts waited for a connection; flagged: ${generatorBehind(o).join('; ')}`);
    assert.equal(open.completed, 50, 'every arrival sent and answered in the end');
    assert.ok(o.peakConnections <= 2);
    assert.ok(o.waitedForConnection > 0);
    assert.ok(generatorBehind(o).some((r) => /beyond the cap of 2/.test(r)));
  });
});

describe('bench open loop: clients as the README\'s table says', () => {
  it('retries a 429/503 with Retry-After, bounded, and times each arrival to its final answer', async (t) => {
    const attempts = new Map<string, number>();
    const server = await slowServer((who) => {
      const n = (attempts.get(who) ?? 0) + 1;
      attempts.set(who, n);
      if (who === 'Bearer u0') return { status: 429, headers: { 'retry-after': '0' } }; // never lets up
      if (who === 'Bearer u1') return { status: 503 }; // no Retry-After: final
      return n <= 2 ? { status: 503, headers: { 'retry-after': '0' } } : { status: 201 };
    });
    try {
      const users = 20;
      const open = await run(server.baseUrl, plan(users), { openLoop: { offsetsMs: arrivalOffsets(users, 100, 'poisson'), windowMs: 100, maxConnections: 100 } });
      const o = open.openLoop!;
      t.diagnostic(`${o.attempts} attempts, ${o.retries} retries, ${o.gaveUp} gave up; final answer p99 ${o.timeToFinalAnswerMs.p99.toFixed(0)} ms`);
      assert.equal(attempts.get('Bearer u0'), 1 + MAX_RETRIES, 'at most MAX_RETRIES retries');
      assert.equal(attempts.get('Bearer u1'), 1, 'a 503 without Retry-After is final');
      assert.equal(open.statuses.get(201), users - 2, 'every other user got through on the third attempt');
      assert.equal(o.retries, MAX_RETRIES + 2 * (users - 2));
      assert.equal(o.gaveUp, 1);
      assert.equal(o.unanswered, 0);
      assert.ok(o.timeToFinalAnswerMs.p99 >= 3 * DELAY_MS * 0.9, 'three attempts take at least three delays');
    } finally {
      await server.close();
    }
  });

  it('reads Retry-After in seconds or as a date, on a 429 or 503 only', () => {
    const head = (status: number, h: string) => parseHead(Buffer.from(`HTTP/1.1 ${status} x\r\n${h}\r\nContent-Length: 0\r\n\r\n`));
    assert.equal(head(503, 'Retry-After: 2')!.retryAfterMs, 2000);
    assert.equal(head(429, 'retry-after:1')!.retryAfterMs, 1000);
    assert.equal(head(410, 'Retry-After: 2')!.retryAfterMs, undefined);
    const soon = head(503, `Retry-After: ${new Date(Date.now() + 5_000).toUTCString()}`)!.retryAfterMs!;
    assert.ok(soon > 3_000 && soon <= 5_000, String(soon));
  });
});

describe('bench arrivals', () => {
  it('spreads arrivals evenly (uniform) or as a Poisson process (sorted, within the window)', () => {
    const u = arrivalOffsets(4, 1000, 'uniform');
    assert.deepEqual([...u], [0, 250, 500, 750]);
    const p = arrivalOffsets(10_000, 1000, 'poisson');
    assert.equal(p.length, 10_000);
    for (let i = 1; i < p.length; i++) assert.ok(p[i]! >= p[i - 1]! && p[i]! < 1000);
    // Poisson gaps are exponential: their coefficient of variation is about 1 (uniform's is 0).
    const gaps = Array.from({ length: p.length - 1 }, (_, i) => p[i + 1]! - p[i]!);
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    const sd = Math.sqrt(gaps.reduce((a, b) => a + (b - mean) ** 2, 0) / gaps.length);
    assert.ok(sd / mean > 0.8 && sd / mean < 1.2, `cv ${sd / mean}`);
  });
});
