// The bench's own parts: flags, the request plan, and the verifier — shown to catch broken
// promises (lost, invented, over-issued rows) against a real PostgreSQL, not only to pass.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { CommanderError } from 'commander';
import pg from 'pg';
import { benchCommand } from '../bench/src/command.js';
import { splitAtSellOut, type LoadResult } from '../bench/src/load.js';
import { chunkedLength, parseHead, startSocketLoad } from '../bench/src/socket-client.js';
import { writeReport } from '../bench/src/index.js';
import { BenchOptionsError, PUBLISHED_DIR, resolveBenchOptions, samplingRatio, type BenchFlags } from '../bench/src/options.js';
import { relateToCeiling, renderMarkdown, renderOpenLoopTable, renderSellOutTable, renderTerminal, type BenchReport, type StrategyResult } from '../bench/src/report.js';
import type { OpenLoopSummary } from '../bench/src/open-loop.js';
import { benchUserId, buildOrder, type BenchUser } from '../bench/src/plan.js';
import { verify } from '../bench/src/verify.js';
import { createPostgresDb } from '../src/db/index.js';
import { migrate } from '../src/db/migrate.js';
import { createTestDatabase, needServer, PG_ADMIN_URL } from './helpers.js';

const ENV = { DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/test' };
const EXTRA = { commandLine: 'test', color: false, interactive: false };
const resolve = (flags: BenchFlags, env: Record<string, string> = ENV) => resolveBenchOptions(flags, env, EXTRA);

async function parseFlags(args: string[]): Promise<unknown> {
  const cmd = benchCommand()
    .exitOverride()
    .configureOutput({ writeErr: () => {}, writeOut: () => {} })
    .action(() => {});
  return cmd.parseAsync(args, { from: 'user' });
}

describe('couponrush bench flags', () => {
  it('defaults to every strategy, 40,000 users, 50,000 requests, 64 connections, stock 10,000', () => {
    const o = resolve({});
    assert.equal(o.users, 40_000);
    assert.equal(o.requests, 50_000);
    assert.equal(o.connections, 64);
    assert.equal(o.stock, 10_000);
    assert.ok(o.strategies.includes('db-atomic') && o.strategies.includes('local'));
  });

  it('rejects unknown strategies, non-numbers and conflicting flags with a clear message', async () => {
    await assert.rejects(parseFlags(['--strategies', 'db-atomic,nope']), (err: CommanderError) => err.code === 'commander.invalidArgument' && /unknown strategy nope/.test(err.message));
    await assert.rejects(parseFlags(['--stock', 'ten']), (err: CommanderError) => err.code === 'commander.invalidArgument');
    await assert.rejects(parseFlags(['--users', '0']), (err: CommanderError) => err.code === 'commander.invalidArgument');
    await assert.rejects(parseFlags(['--requests', '10', '--duration', '5']), (err: CommanderError) => err.code === 'commander.conflictingOption');
  });

  it('needs DATABASE_URL, and with --url the target\'s admin token and JWT secret', () => {
    assert.throws(() => resolve({}, {}), (err: Error) => err instanceof BenchOptionsError && /DATABASE_URL is required/.test(err.message));
    assert.throws(() => resolve({ url: 'http://127.0.0.1:3000' }), /admin token/);
    assert.throws(() => resolve({ url: 'http://127.0.0.1:3000', adminToken: 'x'.repeat(20) }), /JWT secret/);
    const o = resolve({ url: 'http://127.0.0.1:3000' }, { ...ENV, ADMIN_TOKEN: 'a'.repeat(20), JWT_SECRET: 's'.repeat(40) });
    assert.equal(o.adminToken, 'a'.repeat(20));
  });

  it('--worker-apart needs Redis and a target the bench starts itself', () => {
    assert.throws(() => resolve({ workerApart: true }), (err: Error) => err instanceof BenchOptionsError && /--worker-apart needs Redis/.test(err.message));
    assert.throws(
      () => resolve({ workerApart: true, url: 'http://127.0.0.1:3000' }, { ...ENV, REDIS_URL: 'redis://127.0.0.1:6379', ADMIN_TOKEN: 'a'.repeat(20), JWT_SECRET: 's'.repeat(40) }),
      /cannot with --url/,
    );
    assert.equal(resolve({ workerApart: true }, { ...ENV, REDIS_URL: 'redis://127.0.0.1:6379' }).workerApart, true);
    assert.equal(resolve({}, { ...ENV, REDIS_URL: 'redis://127.0.0.1:6379' }).workerApart, false);
  });

  it('--trace-sampling: a ratio in (0, 1], for the processes the bench starts itself', () => {
    assert.equal(samplingRatio('0.01'), 0.01);
    assert.equal(samplingRatio('1'), 1);
    for (const bad of ['0', '1.5', '-0.1', 'half', '', '1e-2']) assert.throws(() => samplingRatio(bad), BenchOptionsError, bad);
    assert.equal(resolve({ traceSampling: 0.01 }).traceSampling, 0.01);
    assert.equal(resolve({}).traceSampling, undefined);
    assert.throws(() => resolve({ traceSampling: 0.01, url: 'http://127.0.0.1:3000' }, { ...ENV, ADMIN_TOKEN: 'a'.repeat(20), JWT_SECRET: 's'.repeat(40) }), /set OTEL_\* on your server/);
  });

  it('refuses fewer requests than users, and more connections than requests', () => {
    assert.throws(() => resolve({ users: 100, requests: 50 }), /at least --users/);
    assert.throws(() => resolve({ users: 10, requests: 20, connections: 64 }), /cannot exceed/);
  });

  it('stays closed-loop by default; --arrivals N@S is a drop of N requests from N users, Poisson unless told', async () => {
    assert.equal(resolve({}).arrivals, undefined, 'the closed loop is the default');
    const drop = resolve({ arrivals: { users: 40_000, seconds: 1 } });
    assert.deepEqual(drop.arrivals, { kind: 'drop', count: 40_000, windowSeconds: 1, shape: 'poisson', maxConnections: 1_000 });
    assert.equal(drop.users, 40_000);
    assert.equal(drop.requests, 40_000);
    const presses = resolve({ arrivals: { users: 500, seconds: 2 }, users: 400, arrivalShape: 'uniform', maxConnections: 50 });
    assert.deepEqual([presses.requests, presses.users, presses.arrivals?.shape, presses.arrivals?.maxConnections], [500, 400, 'uniform', 50]);
    assert.throws(() => resolve({ arrivals: { users: 100, seconds: 1 }, users: 200 }), /every user arrives at least once/);
    assert.throws(() => resolve({ arrivals: { users: 100, seconds: 1 }, requests: 200 }), /not with --requests/);
    assert.deepEqual(await parseFlags(['--arrivals', '40000@0.5']).then(() => 'ok'), 'ok');
    await assert.rejects(parseFlags(['--arrivals', '40000']), (err: CommanderError) => err.code === 'commander.invalidArgument' && /<users>@<seconds>/.test(err.message));
    await assert.rejects(parseFlags(['--arrivals', '10@1', '--rate', '5']), (err: CommanderError) => err.code === 'commander.conflictingOption');
  });

  it('--rate sends --requests (or --duration\'s worth of) arrivals evenly; open-loop flags need the open loop', () => {
    const r = resolve({ rate: 500, users: 100, requests: 1_000 });
    assert.deepEqual(r.arrivals, { kind: 'rate', count: 1_000, windowSeconds: 2, shape: 'uniform', maxConnections: 1_000 });
    assert.equal(resolve({ rate: 500, users: 100, duration: 3 }).arrivals?.count, 1_500);
    assert.throws(() => resolve({ maxConnections: 10 }), /goes with --rate or --arrivals/);
    assert.throws(() => resolve({ rate: 10, arrivalShape: 'poisson' }), /goes with --arrivals/);
    assert.throws(() => resolve({ rate: 10, generator: 'autocannon' }), /raw-socket/);
  });
});

describe('where the bench writes', () => {
  it('by default into bench-results/local/, which git ignores: a run never changes the committed results', () => {
    const o = resolve({});
    assert.equal(o.out, 'bench-results/local');
    assert.equal(o.publish, undefined);
    const root = new URL('..', import.meta.url).pathname;
    for (const file of ['bench-results/local/latest.md', 'bench-results/local/bench-20261206-120000-abcd.json']) {
      assert.equal(spawnSync('git', ['check-ignore', '-q', file], { cwd: root }).status, 0, `git ignores ${file}`);
    }
    const tracked = spawnSync('git', ['check-ignore', '-q', 'bench-results/latest.md'], { cwd: root });
    assert.equal(tracked.status, 1, 'the README\'s results file is not');
  });

  it('--publish also writes latest.{md,json,svg} where the README links them; without it nothing is written there', async () => {
    assert.equal(resolve({ publish: true }).publish, PUBLISHED_DIR);
    assert.equal(((await parseFlags(['--publish'])) as { opts(): BenchFlags }).opts().publish, true);
    const report = JSON.parse(readFileSync(new URL('../bench-results/latest.json', import.meta.url), 'utf8')) as BenchReport;
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-bench-out-'));
    try {
      const out = join(dir, 'local');
      const published = join(dir, 'published');
      mkdirSync(out);
      await writeReport(report, out, 'bench-one');
      assert.deepEqual(readdirSync(out).sort(), ['bench-one.json', 'bench-one.md', 'bench-one.svg', 'latest.json', 'latest.md', 'latest.svg']);
      assert.equal(existsSync(published), false, 'no --publish: the committed results are left alone');
      await writeReport(report, out, 'bench-two', published);
      assert.deepEqual(readdirSync(published).sort(), ['latest.json', 'latest.md', 'latest.svg']);
      assert.match(readFileSync(join(published, 'latest.md'), 'utf8'), /\(latest\.svg\)/, 'its chart link is beside it');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the request plan', () => {
  it('sends every user at least once and fills the rest with retries', () => {
    const order = buildOrder(1_000, 1_300);
    assert.equal(order.length, 1_300);
    const seen = new Uint32Array(1_000);
    for (const u of order) seen[u]!++;
    assert.ok(seen.every((n) => n >= 1), 'every user appears');
    assert.equal(
      seen.reduce((a, n) => a + n, 0),
      1_300,
    );
  });

  it('gives every user an id of the same length (same-size response bodies)', () => {
    assert.equal(benchUserId(0, 40_000).length, benchUserId(39_999, 40_000).length);
  });
});

describe('the verifier', () => {
  const USERS = 6;
  const users: BenchUser[] = Array.from({ length: USERS }, (_, i) => ({ index: i, id: benchUserId(i, USERS), authorization: '' }));

  function fakeLoad(acked: number[], statuses: Record<number, number>): LoadResult {
    const ackedByUser = new Uint32Array(USERS);
    for (const u of acked) ackedByUser[u]!++;
    const all = new Uint32Array(USERS).fill(1);
    return {
      generator: 'sockets',
      sent: USERS,
      completed: USERS,
      durationMs: 1,
      requestsPerSecond: 1,
      statuses: new Map(Object.entries(statuses).map(([s, n]) => [Number(s), n])),
      errors: 0,
      timeouts: 0,
      latencyMs: { p50: 1, p95: 1, p99: 1, max: 1, mean: 1 },
      sentByUser: all,
      answeredByUser: all,
      ackedByUser,
      uncertainByUser: new Uint32Array(USERS),
      endedAt: 0,
      sellOut: undefined,
      generatorCpuMs: 0,
    };
  }

  it('passes an exact run and reports lost, invented and over-issued rows as violations', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const testDb = await createTestDatabase();
    const db = createPostgresDb(testDb.url, { poolSize: 2 });
    const pool = new pg.Pool({ connectionString: testDb.url, max: 2 });
    try {
      await migrate(db);
      const coupon = async (stock: number, strategy: string, rowUsers: number[]): Promise<number> => {
        const { rows } = await pool.query<{ id: number }>(
          `INSERT INTO coupons (name, total_quantity, issued_quantity, issue_starts_at, issue_ends_at, strategy)
           VALUES ('t', $1, $2, now() - interval '1 hour', now() + interval '1 hour', $3) RETURNING id`,
          [stock, rowUsers.length, strategy],
        );
        const id = rows[0]!.id;
        for (const u of rowUsers) await pool.query('INSERT INTO coupon_issues (coupon_id, user_id) VALUES ($1, $2)', [id, users[u]!.id]);
        return id;
      };
      const check = (couponId: number, stock: number, acked: number[], statuses: Record<number, number>, overIssueExpected = false) =>
        verify({
          db,
          couponId,
          stock,
          overIssueExpected,
          users,
          load: fakeLoad(acked, statuses),
          drain: { drainMs: 0, rowsAtEnd: 0 },
          drainTimeoutMs: 1000,
        });

      const exact = await check(await coupon(2, 'db-atomic', [0, 1]), 2, [0, 1], { 201: 2, 410: 4 });
      assert.deepEqual(exact.violations, []);

      const lost = await check(await coupon(2, 'redis-lua-async', [0]), 2, [0, 1], { 202: 2, 410: 4 });
      assert.ok(lost.violations.some((v) => /1 acknowledged user\(s\) have no row/.test(v)), lost.violations.join('; '));

      const invented = await check(await coupon(3, 'db-atomic', [0, 1, 2]), 3, [0, 1], { 201: 2, 410: 4 });
      assert.ok(invented.violations.some((v) => /never acknowledged \(invented\)/.test(v)), invented.violations.join('; '));

      const over = await check(await coupon(2, 'db-naive', [0, 1, 2]), 2, [0, 1, 2], { 201: 3, 410: 3 });
      assert.ok(over.violations.some((v) => /over-issued/.test(v)), 'over-issue is a violation for an exact strategy');
      const naive = await check(await coupon(2, 'db-naive', [0, 1, 2]), 2, [0, 1, 2], { 201: 3, 410: 3 }, true);
      assert.deepEqual(naive.violations, [], 'db-naive over-issue is expected');
      assert.ok(naive.notes.some((n) => /expected/.test(n)));

      const early = await check(await coupon(3, 'db-atomic', [0]), 3, [0], { 201: 1, 410: 5 });
      assert.ok(early.violations.some((v) => /410 SOLD_OUT/.test(v)), 'sold out with stock left is a violation');

      const broken = await check(await coupon(2, 'db-atomic', [0, 1]), 2, [0, 1], { 201: 2, 500: 4 });
      assert.ok(broken.violations.some((v) => /unexpected responses: 4× 500/.test(v)));
    } finally {
      await pool.end();
      await db.close();
      await testDb.drop();
    }
  });
});

describe('bench ratios to the ceiling', () => {
  const run = (name: string, requestsPerSecond: number | undefined): StrategyResult => ({
    name,
    verdict: requestsPerSecond === undefined ? 'skipped' : 'ok',
    ...(requestsPerSecond === undefined ? {} : { requestsPerSecond }),
    violations: [],
    notes: [],
  });

  const around = (result: StrategyResult, ceilingBefore?: number, ceilingAfter?: number) => ({ result, ceilingBefore, ceilingAfter });

  it('divides each strategy by the mean of the ceiling runs just before and after it', () => {
    // ceiling 10,000 → local → 12,000 → db-atomic (skipped: no run after it) … → redis-lua-async → 14,000
    const r = relateToCeiling(run('ceiling', 10_000), run('ceiling-after', 14_000), [10_000, 12_000, 14_000], [
      around(run('local', 8_800), 10_000, 12_000),
      around(run('db-atomic', undefined)),
      around(run('redis-lua-async', 9_100), 12_000, 14_000),
    ]);
    assert.equal(r.strategies[0]!.ratioToCeiling, 0.8);
    assert.equal(r.strategies[0]!.ceilingRequestsPerSecond, 11_000);
    assert.equal(r.strategies[1]!.ratioToCeiling, undefined, 'a skipped strategy has no ratio');
    assert.equal(r.strategies[2]!.ratioToCeiling, 0.7);
    assert.equal(r.strategies[2]!.ceilingRequestsPerSecond, 13_000);
  });

  it('gives the first and last ceiling rows a ratio to the mean of all runs', () => {
    const r = relateToCeiling(run('ceiling', 10_000), run('ceiling-after', 14_000), [10_000, 12_000, 14_000], []);
    assert.equal(r.requestsPerSecond, 12_000);
    assert.equal(r.before!.ratioToCeiling!.toFixed(3), '0.833');
    assert.equal(r.after!.ratioToCeiling!.toFixed(3), '1.167');
  });

  it('notes a strategy whose two ceilings differ by more than the threshold', () => {
    const r = relateToCeiling(run('ceiling', 10_000), run('ceiling-after', 10_000), [11_000, 10_000, 15_000, 10_000], [
      around(run('local', 8_000), 11_000, 10_000),
      around(run('db-atomic', 900), 15_000, 10_000),
    ]);
    assert.deepEqual(r.strategies[0]!.notes, [], '10% apart: no note');
    assert.equal(r.strategies[1]!.notes.length, 1);
    assert.match(r.strategies[1]!.notes[0]!, /moved 40% .*15000 → 10000 req\/s.*uncertain/);
  });

  it('gives each strategy the ceiling\'s CPU per response over its own, from the same two runs', () => {
    const withCpu = (r: StrategyResult, cpuUsPerResponse: number): StrategyResult => ({ ...r, cpuUsPerResponse });
    const r = relateToCeiling(withCpu(run('ceiling', 10_000), 20), withCpu(run('ceiling-after', 10_000), 30), [10_000, 10_000], [
      { result: withCpu(run('local', 8_000), 50), ceilingBefore: 10_000, ceilingAfter: 10_000, ceilingCpuBefore: 20, ceilingCpuAfter: 30 },
      { result: run('db-atomic', 900), ceilingBefore: 10_000, ceilingAfter: 10_000, ceilingCpuBefore: 20, ceilingCpuAfter: 30 },
    ]);
    assert.equal(r.strategies[0]!.ceilingCpuUsPerResponse, 25);
    assert.equal(r.strategies[0]!.cpuRatioToCeiling, 0.5);
    assert.equal(r.strategies[1]!.cpuRatioToCeiling, undefined, 'no CPU reading, no CPU ratio');
  });

  it('uses the one ceiling run there is, and leaves ratios out without a ceiling', () => {
    const interrupted = relateToCeiling(run('ceiling', 10_000), null, [10_000], [around(run('local', 5_000), 10_000, undefined)]);
    assert.equal(interrupted.strategies[0]!.ratioToCeiling, 0.5);
    const none = relateToCeiling(null, null, [], [around(run('local', 5_000))]);
    assert.equal(none.requestsPerSecond, null);
    assert.equal(none.strategies[0]!.ratioToCeiling, undefined);
  });
});

describe('bench open-loop report', () => {
  const summary = (over: Partial<OpenLoopSummary> = {}): OpenLoopSummary => ({
    arrivals: 40_000, windowMs: 1_000, maxConnections: 1_000, offeredPerSecond: 40_000, achievedPerSecond: 39_000,
    sendLagMs: { p50: 0.1, p99: 3, p999: 5, max: 8 }, waitedForConnection: 0, neverSent: 0, peakConnections: 600,
    attempts: 41_000, retries: 1_000, gaveUp: 2, unanswered: 0,
    timeToFinalAnswerMs: { p50: 40, p99: 2_500, p999: 3_100, max: 3_300 }, soldOutAtMs: 420, lastLearnedSoldOutAfterMs: 2_900, ...over,
  });
  const report = (openLoop: OpenLoopSummary) =>
    ({
      schema: 'couponrush-bench/2', startedAt: '2026-12-06T12:00:00.000Z', command: 'couponrush bench --arrivals 40000@1',
      machine: { cpuModel: 'x', cpus: 2, memoryBytes: 2 ** 30, os: 'Linux', node: 'v20' }, services: { database: 'PostgreSQL 15', redis: null },
      config: { target: 't', stock: 10_000, users: 40_000, requests: 40_000, durationSeconds: null, connections: 64, warmupRequests: 0, generator: 'sockets',
        arrivals: { kind: 'drop', count: 40_000, windowSeconds: 1, shape: 'poisson', maxConnections: 1_000 } },
      ceiling: null, ceilingAfter: null, ceilingRuns: [], ceilingRequestsPerSecond: null, ok: true, interrupted: false,
      strategies: [{ name: 'db-batch', verdict: 'ok', requestsPerSecond: 30_000, latencyMs: { p50: 30, p95: 900, p99: 1_200, p999: 1_500, max: 1_600, mean: 100 }, openLoop, violations: [], notes: [] }],
    }) as unknown as BenchReport;

  it('shows offered vs achieved, latency from the intended send time, and the time to a final answer per arrival', () => {
    const lines = renderOpenLoopTable(report(summary()));
    assert.ok(lines.includes('| db-batch | 40,000 | 39,000 | 3.00 | 0 | 600 | 30.0 | 1,200 | 1,500 | 1,600 | 40.0 | 2,500 | 3,100 | 3,300 | 1,000 | 2 | 0 | 420 ms | 2.90 s | kept up |'), lines.join('\n'));
    const md = renderMarkdown(report(summary()), undefined);
    assert.match(md, /open loop: 40,000 arrivals within 1 s \(a Poisson process\)/);
    assert.match(renderTerminal(report(summary()), false), /open loop — latencies from the intended send time/);
  });

  it('flags a generator that fell behind: under 95 % of the offered rate, a p99 send lag over 10 ms, or the connection cap', () => {
    assert.match(renderOpenLoopTable(report(summary({ achievedPerSecond: 30_000 }))).join('\n'), /\| BEHIND \|/);
    assert.match(renderOpenLoopTable(report(summary({ sendLagMs: { p50: 1, p99: 25, p999: 30, max: 40 } }))).join('\n'), /\| BEHIND \|/);
    assert.match(renderOpenLoopTable(report(summary({ waitedForConnection: 1 }))).join('\n'), /\| BEHIND \|/);
    assert.deepEqual(renderOpenLoopTable({ ...report(summary()), strategies: [{ name: 'local', verdict: 'ok', violations: [], notes: [] }] } as BenchReport), [], 'nothing for a closed-loop run');
  });
});

describe('bench split at the sell-out', () => {
  it('rates each phase from its own responses and time, and gives no split without both phases', () => {
    // 100 ms start, first 410 at 600 ms after 2,000 responses, last response at 1,100 ms, 5,000 in all.
    const split = splitAtSellOut(100, 1_100, 600, 2_000, 5_000)!;
    assert.deepEqual(split.before, { responses: 2_000, ms: 500, requestsPerSecond: 4_000 });
    assert.deepEqual(split.after, { responses: 3_000, ms: 500, requestsPerSecond: 6_000 });
    assert.equal(splitAtSellOut(100, 1_100, 0, 0, 5_000), undefined, 'never sold out');
    assert.equal(splitAtSellOut(100, 1_100, 150, 0, 5_000), undefined, 'sold out from the first response (nothing before)');
    assert.equal(splitAtSellOut(100, 1_100, 1_100, 5_000, 5_000), undefined, 'the 410 was the last response (nothing after)');
  });

  it('renders both phases against the ceiling, and nothing when no strategy sold out', () => {
    const split = splitAtSellOut(0, 3_000, 1_000, 5_000, 35_000)!;
    // The server's CPU per response in each phase, against the ceiling's 30 µs.
    const sellOut = { before: { ...split.before, cpuUsPerResponse: 100 }, after: { ...split.after, cpuUsPerResponse: 40 } };
    const report = {
      ceilingRequestsPerSecond: 99_999, // the ceiling rows' mean: not what a strategy's phases divide by
      strategies: [{ name: 'redis-lua-async-cached', verdict: 'ok', sellOut, ceilingRequestsPerSecond: 10_000, ceilingCpuUsPerResponse: 30, violations: [], notes: [] }],
    } as unknown as BenchReport;
    const lines = renderSellOutTable(report);
    assert.ok(lines.includes('| redis-lua-async-cached | 5,000 | 5,000 | 0.50 | 100 | 0.30 | 30,000 | 15,000 | 1.50 | 40 | 0.75 |'), lines.join('\n'));
    const none = { ceilingRequestsPerSecond: 10_000, strategies: [{ name: 'local', verdict: 'ok', violations: [], notes: [] }] } as unknown as BenchReport;
    assert.deepEqual(renderSellOutTable(none), []);
  });
});

describe('the bench\'s raw-socket load generator', () => {
  it('parses a response head, and a chunked body only once it is whole', () => {
    const head = parseHead(Buffer.from('HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\ncontent-length: 12\r\n\r\n{"a":1}'));
    assert.deepEqual(head, { status: 410, headBytes: 73, contentLength: 12, close: false, retryAfterMs: undefined });
    assert.equal(parseHead(Buffer.from('HTTP/1.1 201 Created\r\ncontent-le')), undefined, 'head not complete yet');
    assert.equal(parseHead(Buffer.from('HTTP/1.1 503 x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'))!.close, true);
    assert.throws(() => parseHead(Buffer.from('HTTP/1.1 200 OK\r\nX: y\r\n\r\n')), /neither Content-Length nor chunked/);
    const chunked = Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n');
    const h = parseHead(chunked)!;
    assert.equal(h.contentLength, -1);
    assert.equal(chunkedLength(chunked, h.headBytes), chunked.length - h.headBytes);
    assert.equal(chunkedLength(chunked.subarray(0, chunked.length - 3), h.headBytes), -1, 'the last chunk not in yet');
  });

  it('gets every answer over keep-alive connections from a server that chunks, splits and closes', async () => {
    let served = 0;
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        const n = ++served;
        if (n % 7 === 0) res.setHeader('connection', 'close');
        if (n % 2 === 0) {
          res.writeHead(201, { 'content-type': 'application/json' }); // no length: chunked
          res.write('{"n":');
          setImmediate(() => res.end(`${n}}`));
        } else {
          res.writeHead(n % 3 === 0 ? 410 : 409, { 'content-length': '2' });
          res.end('{}');
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const statuses = new Map<number, number>();
    const users: number[] = [];
    let i = 0;
    const load = startSocketLoad({
      host: '127.0.0.1',
      port,
      connections: 4,
      total: 300,
      sendUntil: Number.POSITIVE_INFINITY,
      timeoutMs: 5_000,
      next: () => ({ user: i, bytes: Buffer.from(`POST /x/${i++} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`, 'latin1') }),
      onResponse: (user, status) => {
        users.push(user);
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
      },
    });
    const result = await load.done;
    server.close();
    assert.deepEqual(result, { sent: 300, errors: 0, timeouts: 0 });
    assert.equal(users.length, 300);
    assert.deepEqual([...new Set(users)].length, 300, 'each answer went to its own request');
    assert.equal(statuses.get(201), 150);
    assert.equal((statuses.get(409) ?? 0) + (statuses.get(410) ?? 0), 150);
  });
});
