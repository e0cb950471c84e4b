// Real `couponrush serve` processes: SIGTERM drains in-flight requests (also when a supervisor
// starts it the way the README says, `exec node bin/couponrush.js serve`, which needs the built
// dist/), a rolling restart of one of two API processes under load loses no acknowledged issuance,
// and `--workers 2` (node:cluster) stays exact with one /metrics covering both workers. Needs
// PostgreSQL.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { signUserToken } from '../src/http/auth.js';
import { createPostgresDb, type Db } from '../src/db/index.js';
import {
  ADMIN_TOKEN,
  canConnect,
  createTestDatabase,
  issuedRows,
  JWT_SECRET,
  needServer,
  PG_ADMIN_URL,
  request,
  stampede,
  type TestDatabase,
} from './helpers.js';
import { freePort, runCli, sample, TcpProxy, waitFor, type Child } from './ops-helpers.js';

const baseEnv = (databaseUrl: string, port: number): Record<string, string> => ({
  DATABASE_URL: databaseUrl,
  ADMIN_TOKEN,
  JWT_SECRET,
  HOST: '127.0.0.1',
  PORT: String(port),
  LOG_LEVEL: 'warn',
});

async function startServe(args: string[], env: Record<string, string>): Promise<Child> {
  const child = runCli(['serve', ...args], env);
  const url = `http://127.0.0.1:${env.PORT}`;
  let exited = false;
  void child.exited.then(() => (exited = true));
  await waitFor(
    `couponrush serve on ${url}`,
    async () => {
      if (exited) throw new Error(`serve exited early:\n${child.output()}`);
      return (await request(url, 'GET', '/healthz')).status === 200;
    },
    30_000,
  ).catch((err: Error) => {
    child.proc.kill('SIGKILL');
    throw new Error(`${err.message}\n${child.output()}`);
  });
  return child;
}

async function createCoupon(url: string, totalQuantity: number): Promise<number> {
  const res = await request(url, 'POST', '/admin/coupons', {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    json: {
      name: 'processes',
      totalQuantity,
      issueStartsAt: new Date(Date.now() - 1000).toISOString(),
      issueEndsAt: new Date(Date.now() + 3600_000).toISOString(),
      strategy: 'db-atomic',
    },
  });
  assert.equal(res.status, 201, res.text);
  return (res.json as { id: number }).id;
}

const tokenFor = (userId: string) => signUserToken(JWT_SECRET, userId);
const issue = (url: string, couponId: number, user: string) =>
  request(url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${tokenFor(user)}` } });

/** A proxy of the test's own in front of the database (its delay holds requests in flight). */
async function databaseBehindProxy(url: string): Promise<{ proxy: TcpProxy; databaseUrl: string }> {
  const real = new URL(url);
  const proxy = await new TcpProxy(real.hostname, Number(real.port || 5432)).up();
  const via = new URL(url);
  via.host = proxy.url;
  return { proxy, databaseUrl: via.toString() };
}

describe('couponrush serve as real processes', () => {
  let testDb: TestDatabase | undefined;
  let db: Db | undefined;
  const children: Child[] = [];
  const skip = async (t: TestContext) => !(await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) || testDb === undefined;

  before(async () => {
    // Each test reports a missing server itself (needServer: skip loudly, or fail under CI).
    if (!(await canConnect(new URL(PG_ADMIN_URL).hostname, Number(new URL(PG_ADMIN_URL).port || 5432)))) return;
    testDb = await createTestDatabase();
    db = createPostgresDb(testDb.url, { poolSize: 2 });
  });
  after(async () => {
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL');
    await db?.close();
    await testDb?.drop();
  });

  it('drains in-flight requests on SIGTERM: every one is answered, every 201 is a row, exit code 0', async (t) => {
    if (await skip(t)) return;
    const { proxy, databaseUrl } = await databaseBehindProxy(testDb!.url);
    try {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const child = await startServe(['--migrate'], baseEnv(databaseUrl, port));
      children.push(child);
      const couponId = await createCoupon(url, 30);
      proxy.delayMs = 150; // every database round trip now takes ≥150 ms: requests stay in flight
      const users = Array.from({ length: 40 }, (_, i) => `drain-${i}`);
      const inFlight = users.map((u) => issue(url, couponId, u).catch((err: Error) => err));
      await new Promise((r) => setTimeout(r, 300));
      child.proc.kill('SIGTERM');
      const results = await Promise.all(inFlight);
      assert.equal(await child.exited, 0, child.output());

      const errors = results.filter((r) => r instanceof Error);
      assert.deepEqual(errors.map(String), [], 'no request lost its connection');
      const statuses = results.map((r) => (r as { status: number }).status);
      assert.ok(statuses.every((s) => s === 201 || s === 410), `statuses: ${statuses.join(',')}`);
      const winners = users.filter((_, i) => statuses[i] === 201);
      assert.equal(winners.length, 30);
      const rows = await issuedRows(db!, couponId);
      assert.deepEqual(new Set(rows.users), new Set(winners), 'the rows are exactly the 201s');
    } finally {
      await proxy.down();
    }
  });

  it('started as the README says for a supervisor (exec node bin/couponrush.js serve): SIGTERM to the pid it holds drains, exits 0 and frees the port', async (t) => {
    if (await skip(t)) return;
    const root = new URL('..', import.meta.url).pathname;
    assert.ok(existsSync(join(root, 'dist', 'cli.js')), 'dist/ is built (npm run build)');
    const { proxy, databaseUrl } = await databaseBehindProxy(testDb!.url);
    try {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      // A supervisor's start script: the shell replaces itself with node, so the pid is the server's.
      const proc = spawn('sh', ['-c', 'exec node bin/couponrush.js serve --migrate'], {
        cwd: root,
        env: { ...baseEnv(databaseUrl, port), LOG_LEVEL: 'info', PATH: process.env.PATH ?? '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
      proc.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
      children.push({ proc, output: () => out, exited });
      await waitFor('the server', async () => (await request(url, 'GET', '/healthz')).status === 200, 30_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${out}`);
      });
      const couponId = await createCoupon(url, 10);
      proxy.delayMs = 150;
      const users = Array.from({ length: 15 }, (_, i) => `supervised-${i}`);
      const inFlight = users.map((u) => issue(url, couponId, u).catch((err: Error) => err));
      await new Promise((r) => setTimeout(r, 300));
      proc.kill('SIGTERM'); // what systemd, docker stop or Kubernetes send: to this pid only
      const results = await Promise.all(inFlight);
      assert.equal(await exited, 0, out);
      assert.match(out, /SIGTERM: draining in-flight work, then exiting/);
      assert.deepEqual(results.filter((r) => r instanceof Error).map(String), [], 'every in-flight request was answered');
      const statuses = results.map((r) => (r as { status: number }).status);
      assert.equal(statuses.filter((s) => s === 201).length, 10, `statuses: ${statuses.join(',')}`);
      assert.equal(await canConnect('127.0.0.1', port), false, 'nothing is left listening on the port');
    } finally {
      await proxy.down();
    }
  });

  it('loses no acknowledged issuance when one of two API processes restarts under load', async (t) => {
    if (await skip(t)) return;
    const [portA, portB] = [await freePort(), await freePort()];
    const urls = [`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`] as const;
    let a = await startServe(['--migrate'], baseEnv(testDb!.url, portA));
    const b = await startServe([], baseEnv(testDb!.url, portB));
    children.push(a, b);
    const couponId = await createCoupon(urls[1], 1_000_000);

    // Clients behave like nginx: an attempt that fails to connect or is shed goes to the other instance.
    type Outcome = { user: string; statuses: Array<number | 'error'> };
    const outcomes: Outcome[] = [];
    const answeredByA = { before: 0, after: 0 };
    let restarted = false;
    let stop = false;
    let nextUser = 0;
    const client = async (lane: number) => {
      while (!stop) {
        const user = `roll-${nextUser++}`;
        const o: Outcome = { user, statuses: [] };
        outcomes.push(o);
        for (let attempt = 0; attempt < 4; attempt++) {
          const target = (lane + attempt) % 2;
          const res = await issue(urls[target]!, couponId, user).catch(() => undefined);
          o.statuses.push(res?.status ?? 'error');
          if (res !== undefined && target === 0) answeredByA[restarted ? 'after' : 'before']++;
          if (res !== undefined && res.status !== 503) break;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const load = Promise.all(Array.from({ length: 12 }, (_, i) => client(i)));
    try {
      await waitFor('load on A', () => answeredByA.before > 50);
      a.proc.kill('SIGTERM');
      assert.equal(await a.exited, 0, a.output());
      a = await startServe([], baseEnv(testDb!.url, portA));
      children.push(a);
      restarted = true;
      await waitFor('load on the restarted A', () => answeredByA.after > 50);
    } finally {
      stop = true;
      await load;
    }

    const rows = await issuedRows(db!, couponId);
    const rowUsers = new Set(rows.users);
    const acknowledged = outcomes.filter((o) => o.statuses.includes(201)).map((o) => o.user);
    const lost = acknowledged.filter((u) => !rowUsers.has(u));
    assert.deepEqual(lost, [], 'every 201 is a row');
    assert.equal(rows.distinctUsers, rows.rows, 'no user twice');
    assert.equal(rows.counter, rows.rows, 'issued_quantity follows the rows');
    // A row without a 201 is allowed only where the outcome was unknown to the client (a cut
    // connection); a user who was explicitly refused every time has no row.
    const byUser = new Map(outcomes.map((o) => [o.user, o.statuses]));
    for (const u of rowUsers) {
      const s = byUser.get(u) ?? [];
      assert.ok(s.includes(201) || s.includes('error') || s.includes(409), `row for ${u} without an acknowledgement: ${s.join(',')}`);
    }
    t.diagnostic(
      `requests: ${outcomes.length} users, ${acknowledged.length} acknowledged, A answered ${answeredByA.before} before / ${answeredByA.after} after its restart; ` +
        `retried: ${outcomes.filter((o) => o.statuses.length > 1).length}`,
    );
    b.proc.kill('SIGTERM');
    a.proc.kill('SIGTERM');
    assert.equal(await b.exited, 0);
    assert.equal(await a.exited, 0);
  });

  it('serve --workers 2 shares one port, stays exact, and one /metrics scrape covers both workers', async (t) => {
    if (await skip(t)) return;
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const child = await startServe(['--workers', '2', '--migrate'], baseEnv(testDb!.url, port));
    children.push(child);
    const couponId = await createCoupon(url, 100);
    const result = await stampede({ url, tokenFor }, couponId, 150, 300, 32);
    const rows = await issuedRows(db!, couponId);
    assert.equal(rows.rows, 100);
    assert.equal(result.statuses.get(201), 100);
    assert.deepEqual(new Set(result.winners), new Set(rows.users));

    for (let scrape = 0; scrape < 3; scrape++) {
      const metrics = await request(url, 'GET', '/metrics');
      assert.equal(metrics.status, 200);
      const outcome = (o: string) => sample(metrics.text, 'couponrush_issue_outcomes_total', { strategy: 'db-atomic', outcome: o }) ?? 0;
      assert.equal(outcome('ISSUED'), 100, `scrape ${scrape}: ISSUED summed over both workers`);
      assert.equal(outcome('ISSUED') + outcome('ALREADY_ISSUED') + outcome('SOLD_OUT'), 300);
    }
    child.proc.kill('SIGTERM');
    assert.equal(await child.exited, 0, child.output());
  });

  it('serve --workers 2 refuses the embedded database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-cluster-'));
    try {
      const child = runCli(['serve', '--workers', '2'], { DATA_DIR: dir, PORT: String(await freePort()), LOG_LEVEL: 'warn' });
      assert.equal(await child.exited, 2);
      assert.match(child.output(), /--workers > 1 needs DATABASE_URL/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
