// Smoke run of `couponrush bench`: a tiny stampede against real PostgreSQL (and MariaDB) through
// real API processes, asserting the invariants verdict and the report files — never a speed.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runBench } from '../bench/src/index.js';
import { resolveBenchOptions, type BenchFlags } from '../bench/src/options.js';
import type { BenchReport } from '../bench/src/report.js';
import mysql from 'mysql2/promise';
import { MYSQL_ADMIN_URL, needServer, PG_ADMIN_URL } from './helpers.js';
import { REDIS_URL } from './redis-helpers.js';

const STOCK = 50;
const STRATEGIES = ['db-atomic', 'local', 'db-naive'] as const;

/** A small stampede with Redis (stock STOCK, 300 requests from 200 users, no ceiling) into a temporary folder, removed afterwards. */
async function smokeWithRedis(flags: BenchFlags, label: string): Promise<BenchReport> {
  const out = mkdtempSync(join(tmpdir(), 'couponrush-bench-smoke-'));
  try {
    const options = resolveBenchOptions(
      { stock: STOCK, users: 200, requests: 300, connections: 16, warmup: 40, ceiling: false, out, ...flags },
      { ...process.env, DATABASE_URL: PG_ADMIN_URL, REDIS_URL },
      { commandLine: `couponrush bench (smoke test, ${label})`, color: false, interactive: false },
    );
    return (await runBench(options)).report;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

describe('couponrush bench (smoke)', () => {
  it('stampedes DB strategies, verifies every invariant against PostgreSQL and writes Markdown, JSON and SVG', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const out = mkdtempSync(join(tmpdir(), 'couponrush-bench-smoke-'));
    try {
      // Redis strategies are out of scope here: keep REDIS_URL away from the API processes.
      const { REDIS_URL: _redis, ...env } = process.env;
      const options = resolveBenchOptions(
        { strategies: [...STRATEGIES], stock: STOCK, users: 200, requests: 300, connections: 16, warmup: 40, out },
        { ...env, DATABASE_URL: PG_ADMIN_URL },
        { commandLine: 'couponrush bench (smoke test)', color: false, interactive: false },
      );
      const { report, files } = await runBench(options);

      const problems = report.strategies.flatMap((s) => s.violations.map((v) => `${s.name}: ${v}`));
      assert.deepEqual(problems, [], 'no invariant violation');
      assert.equal(report.ok, true);
      assert.deepEqual(report.strategies.map((s) => s.name).sort(), [...STRATEGIES].sort());
      for (const s of report.strategies) {
        assert.notEqual(s.verdict, 'FAIL', `${s.name}: ${s.reason ?? ''}`);
        assert.equal(s.requests, 300, `${s.name}: every request answered`);
        assert.equal(s.duplicates, 0, `${s.name}: no user twice`);
        assert.ok(s.drainMs !== null && s.drainMs !== undefined, `${s.name}: drained`);
        const acknowledged = (s.statuses?.['201'] ?? 0) + (s.statuses?.['202'] ?? 0);
        assert.equal(acknowledged, s.rows, `${s.name}: success responses == rows`);
        if (s.name !== 'db-naive') {
          assert.equal(s.rows, STOCK, `${s.name}: rows == stock`);
          assert.equal(s.verdict, 'ok');
        } else {
          assert.ok((s.rows ?? 0) >= STOCK, 'db-naive issues at least the stock');
        }
      }
      // The ceiling ran before the first strategy and after each one; each strategy is divided by
      // the mean of the two runs around it, in the order they ran.
      const runs = report.ceilingRuns;
      assert.equal(runs.length, STRATEGIES.length + 1, 'one ceiling run before the strategies and one after each');
      assert.equal(report.ceiling?.requestsPerSecond, runs[0]);
      assert.equal(report.ceilingAfter?.requestsPerSecond, runs.at(-1));
      for (const s of report.strategies) {
        const k = STRATEGIES.indexOf(s.name as (typeof STRATEGIES)[number]); // the order they ran in
        assert.equal(s.ceilingRequestsPerSecond, (runs[k]! + runs[k + 1]!) / 2, `${s.name}: divided by the mean of the runs just before and after it`);
        assert.equal(s.ratioToCeiling, (s.requestsPerSecond ?? NaN) / (s.ceilingRequestsPerSecond ?? NaN), `${s.name}: ratio`);
      }

      const json = JSON.parse(readFileSync(files.json, 'utf8')) as BenchReport;
      assert.equal(json.schema, 'couponrush-bench/2');
      assert.equal(json.strategies.length, STRATEGIES.length);
      const md = readFileSync(files.markdown, 'utf8');
      assert.match(md, /\| strategy \| req\/s \| × ceiling \|/);
      assert.match(md, /\| ceiling \(bare node:http\) \|/);
      assert.match(md, /\| ceiling, after the strategies \|/);
      for (const s of STRATEGIES) assert.match(md, new RegExp(`\\| ${s} \\|`));
      assert.ok(files.chart !== undefined && existsSync(files.chart), 'chart written');
      assert.match(readFileSync(files.chart, 'utf8'), /^<svg[^>]*>/);
      for (const f of ['latest.md', 'latest.json', 'latest.svg']) assert.ok(existsSync(join(out, f)), `${f} written`);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('with Redis: every 202 of the async strategies reaches PostgreSQL through the worker', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    if (!(await needServer(t, 'Redis', REDIS_URL))) return;
    const report = await smokeWithRedis({ strategies: ['redis-lua-async', 'redis-lua-async-cached'] }, 'Redis');
    const problems = report.strategies.flatMap((s) => [...s.violations.map((v) => `${s.name}: ${v}`), ...(s.verdict === 'skipped' ? [`${s.name} skipped: ${s.reason ?? ''}`] : [])]);
    assert.deepEqual(problems, [], 'ran, and no invariant violation');
    for (const s of report.strategies) {
      assert.equal(s.statuses?.['202'], STOCK, `${s.name}: exactly the stock admitted (202)`);
      assert.equal(s.rows, STOCK, `${s.name}: every admission persisted`);
      assert.ok(s.drainMs !== null && s.drainMs !== undefined, `${s.name}: drained`);
      // 300 requests for a stock of STOCK: the stampede sells out, so it splits in two phases.
      assert.ok(s.sellOut !== undefined, `${s.name}: split at the sell-out`);
      assert.equal(s.sellOut.before.responses + s.sellOut.after.responses, 300, `${s.name}: the two phases hold every response`);
      // A 202 answered after the first 410 was in flight when it came: at most 15 of the 16 connections.
      assert.ok(s.sellOut.before.responses >= STOCK - 15, `${s.name}: the admissions came before the first 410`);
    }
    assert.equal(report.ceiling, null, '--no-ceiling');
    assert.equal(report.ceilingAfter, null);
    assert.deepEqual(report.ceilingRuns, []);
    assert.ok(report.strategies.every((s) => s.ratioToCeiling === undefined), 'no ratio without a ceiling');
  });

  it('--worker-apart: the worker in a process of its own persists every 202, and its CPU is reported apart from the API\'s', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    if (!(await needServer(t, 'Redis', REDIS_URL))) return;
    const report = await smokeWithRedis({ strategies: ['redis-lua-async'], workerApart: true }, 'worker apart');
    const s = report.strategies[0]!;
    assert.deepEqual(s.violations, [], 'no invariant violation');
    assert.equal(s.verdict, 'ok');
    assert.equal(s.statuses?.['202'], STOCK, 'exactly the stock admitted (202)');
    assert.equal(s.rows, STOCK, 'every admission persisted, by the worker process');
    assert.equal(report.config.workerApart, true);
    assert.ok(s.cpuUsPerResponse !== undefined && s.cpuUsPerResponse > 0, 'the API\'s CPU');
    // Probed in its own process (/proc ticks are 10 ms: a few rows may read as 0).
    assert.ok(s.workerCpuUsPerResponse !== undefined && Number.isFinite(s.workerCpuUsPerResponse) && s.workerCpuUsPerResponse >= 0, 'the worker\'s CPU, apart');
    assert.ok(s.notes.some((n) => n.includes('--worker-apart')), 'the report says the worker ran apart');
  });

  it('--trace-sampling 1: the API and its worker trace every issuance to the bench\'s OTLP receiver, and the invariants hold', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    if (!(await needServer(t, 'Redis', REDIS_URL))) return;
    const report = await smokeWithRedis({ strategies: ['redis-lua-async'], traceSampling: 1 }, 'traced');
    const s = report.strategies[0]!;
    assert.deepEqual(s.violations, [], 'no invariant violation');
    assert.equal(s.rows, STOCK, 'every admission persisted');
    assert.equal(report.config.traceSampling, 1);
    // Each of the STOCK admissions has its request, admission and persist spans at least (the
    // refusals after the sell-out are answered before the token: no span).
    assert.ok(s.spansReceived !== undefined && s.spansReceived >= 3 * STOCK, `spans received: ${s.spansReceived}`);
    assert.ok(s.notes.some((n) => n.includes('--trace-sampling')), 'the report says it traced');
  });

  it('open loop (--arrivals): a drop verified like any stampede, reported with offered vs achieved and the time to a final answer', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const out = mkdtempSync(join(tmpdir(), 'couponrush-bench-smoke-'));
    try {
      const { REDIS_URL: _redis, ...env } = process.env;
      const options = resolveBenchOptions(
        { strategies: ['db-atomic'], stock: STOCK, users: 200, arrivals: { users: 300, seconds: 0.5 }, warmup: 40, out },
        { ...env, DATABASE_URL: PG_ADMIN_URL },
        { commandLine: 'couponrush bench (smoke test, open loop)', color: false, interactive: false },
      );
      const { report, files } = await runBench(options);
      const [s] = report.strategies;
      assert.deepEqual(s?.violations, [], 'no invariant violation');
      assert.equal(s?.rows, STOCK);
      const o = s?.openLoop;
      assert.ok(o !== undefined, 'the open loop reports itself');
      assert.equal(o.arrivals, 300);
      assert.equal(o.offeredPerSecond, 600);
      assert.equal(o.attempts, 300 + o.retries, 'every arrival sent, plus its retries');
      assert.equal(s?.requests, o.attempts - o.unanswered, 'every attempt answered');
      assert.ok(o.soldOutAtMs !== null && o.lastLearnedSoldOutAfterMs !== null, 'it sold out, and says when the last user learned it');
      assert.ok(report.ceiling?.openLoop !== undefined, 'the ceiling gets the same drop');
      const json = JSON.parse(readFileSync(files.json, 'utf8')) as BenchReport;
      assert.deepEqual(json.config.arrivals, { kind: 'drop', count: 300, windowSeconds: 0.5, shape: 'poisson', maxConnections: 1_000 });
      assert.match(readFileSync(files.markdown, 'utf8'), /\| strategy \| offered\/s \| achieved\/s \|/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it('on MariaDB: verifies every invariant there, names the server, and drops its scratch database', async (t) => {
    if (!(await needServer(t, 'MariaDB', MYSQL_ADMIN_URL))) return;
    const out = mkdtempSync(join(tmpdir(), 'couponrush-bench-smoke-'));
    const strategies = ['db-atomic', 'db-pessimistic', 'local'] as const;
    try {
      const { REDIS_URL: _redis, ...env } = process.env;
      const options = resolveBenchOptions(
        { strategies: [...strategies], stock: STOCK, users: 200, requests: 300, connections: 16, warmup: 40, out },
        { ...env, DATABASE_URL: `${MYSQL_ADMIN_URL.replace(/\/$/, '')}/mysql` },
        { commandLine: 'couponrush bench (smoke test, MariaDB)', color: false, interactive: false },
      );
      const scratchDatabases = async () => {
        const admin = await mysql.createConnection({ uri: MYSQL_ADMIN_URL });
        try {
          const [rows] = await admin.query("SHOW DATABASES LIKE 'couponrush\\_bench\\_%'");
          return (rows as unknown[]).length;
        } finally {
          await admin.end();
        }
      };
      const before = await scratchDatabases();
      const { report } = await runBench(options);
      assert.equal(await scratchDatabases(), before, 'the scratch database is dropped');
      assert.match(report.services.database, /^(MariaDB|MySQL) \d+\./);
      assert.equal(report.ok, true, JSON.stringify(report.strategies.map((s) => [s.name, s.verdict, s.violations])));
      for (const s of report.strategies) {
        assert.equal(s.verdict, 'ok', `${s.name}: ${s.reason ?? ''}`);
        assert.equal(s.rows, STOCK, `${s.name}: rows == stock`);
        assert.equal((s.statuses?.['201'] ?? 0), STOCK, `${s.name}: success responses == stock`);
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
