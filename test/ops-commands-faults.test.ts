// The commands (migrate, reconcile, worker, events, serve, bench) facing a store that refuses
// connections or accepts them and never answers: each exits 1 within a bound, with one line on
// stderr that names the variable to look at and what failed — never a stack trace, a JSON log
// line or a client library's advice, never a hang. The commands that use no secret run without
// ADMIN_TOKEN and JWT_SECRET. A closed port and a silent proxy stand in for the broken stores; the
// missing-database case needs the shared PostgreSQL.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADMIN_TOKEN, JWT_SECRET, needServer, PG_ADMIN_URL } from './helpers.js';
import { freePort, runCli, TcpProxy } from './ops-helpers.js';

/** Longest a command may take to give up (the connect/answer timeouts are 5 s). */
const GIVE_UP_MS = 15_000;

/** `secrets: false`: as an operator runs a command that needs none (no ADMIN_TOKEN, no JWT_SECRET). */
async function runOnce(args: string[], env: Record<string, string>, secrets = true): Promise<{ code: number | string; stderr: string; ms: number }> {
  const started = performance.now();
  const child = runCli(args, { LOG_LEVEL: 'warn', ...(secrets ? { ADMIN_TOKEN, JWT_SECRET } : {}), ...env });
  const killer = setTimeout(() => child.proc.kill('SIGKILL'), GIVE_UP_MS + 5_000);
  const code = await child.exited;
  clearTimeout(killer);
  return { code, stderr: child.output(), ms: performance.now() - started };
}

function assertOneLine(result: { code: number | string; stderr: string; ms: number }, command: string, mentions: RegExp): void {
  assert.equal(result.code, 1, `${command} exit code; output:\n${result.stderr}`);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `${command} printed more than one line:\n${result.stderr}`);
  assert.match(lines[0]!, new RegExp(`^couponrush ${command}: `));
  assert.match(lines[0]!, mentions);
  assert.doesNotMatch(result.stderr, /\n\s+at /, 'no stack trace');
  assert.doesNotMatch(result.stderr, /maxRetriesPerRequest|"level":/, 'no client advice, no JSON log line');
  assert.ok(result.ms < GIVE_UP_MS, `${command} took ${Math.round(result.ms)} ms to give up`);
}

describe('one-shot commands against a broken store', () => {
  let closedPort = 0;
  const silent = new TcpProxy('127.0.0.1', 9); // never forwards: black-holed below
  before(async () => {
    closedPort = await freePort();
    await silent.up();
    silent.blackhole();
  });
  after(() => silent.down());

  it('migrate, without any secret: a refused database connection is one line naming DATABASE_URL, and exit 1', async () => {
    const r = await runOnce(['migrate'], { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/x` }, false);
    assertOneLine(r, 'migrate', new RegExp(`^couponrush migrate: DATABASE_URL: connection refused at 127\\.0\\.0\\.1:${closedPort} \\(PostgreSQL\\)$`));
  });

  it('migrate: a database that accepts and never answers is one line and exit 1, within the connect timeout', async () => {
    const r = await runOnce(['migrate'], { DATABASE_URL: `postgres://postgres@${silent.url}/x` });
    assertOneLine(r, 'migrate', /DATABASE_URL: .*timeout/i);
  });

  it('migrate: a database that does not exist is one line naming it, and exit 1', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const url = new URL(PG_ADMIN_URL);
    url.pathname = '/couponrush_no_such_database';
    const r = await runOnce(['migrate'], { DATABASE_URL: url.toString() }, false);
    assertOneLine(r, 'migrate', /DATABASE_URL: database "couponrush_no_such_database" does not exist/);
  });

  it('serve: a refused database is one line naming DATABASE_URL, and exit 1', async () => {
    const r = await runOnce(['serve'], { DATABASE_URL: `mysql://root@127.0.0.1:${closedPort}/x`, PORT: String(await freePort()) });
    assertOneLine(r, 'serve', new RegExp(`DATABASE_URL: connection refused at 127\\.0\\.0\\.1:${closedPort} \\(MySQL/MariaDB\\)$`));
  });

  it('serve, embedded, at the default log level: a refused Redis is one line naming REDIS_URL, and exit 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-faults-'));
    try {
      const r = await runOnce(['serve'], { DATA_DIR: dir, REDIS_URL: `redis://127.0.0.1:${closedPort}`, PORT: String(await freePort()), LOG_LEVEL: 'info' }, false);
      assertOneLine(r, 'serve', new RegExp(`REDIS_URL: connection refused at 127\\.0\\.0\\.1:${closedPort} \\(Redis\\)$`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reconcile, without any secret: a silent Redis is one line naming REDIS_URL, and exit 1', async () => {
    const r = await runOnce(['reconcile'], { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/x`, REDIS_URL: `redis://${silent.url}` }, false);
    assertOneLine(r, 'reconcile', new RegExp(`REDIS_URL: no answer from ${silent.url.replace(/\./g, '\\.')} within \\d+ ms \\(Redis\\)$`));
  });

  it('worker and events, without any secret: a refused store is one line naming its variable, and exit 1', async () => {
    const databaseUrl = `postgres://postgres@127.0.0.1:${closedPort}/x`;
    const worker = await runOnce(['worker', '--consumer', 'w1'], { DATABASE_URL: databaseUrl, REDIS_URL: `redis://127.0.0.1:${closedPort}` }, false);
    assertOneLine(worker, 'worker', new RegExp(`REDIS_URL: connection refused at 127\\.0\\.0\\.1:${closedPort} \\(Redis\\)$`));
    const events = await runOnce(['events', 'status'], { DATABASE_URL: databaseUrl }, false);
    assertOneLine(events, 'events', new RegExp(`DATABASE_URL: connection refused at 127\\.0\\.0\\.1:${closedPort} \\(PostgreSQL\\)$`));
  });

  it('bench: a refused database connection is one line and exit 1', async () => {
    const r = await runOnce(['bench', '--no-progress', '--strategies', 'db-atomic'], { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/x` });
    assertOneLine(r, 'bench', /ECONNREFUSED|connection refused/);
  });

  it('bench: a database that accepts and never answers is one line and exit 1', async () => {
    const r = await runOnce(['bench', '--no-progress', '--strategies', 'db-atomic'], { DATABASE_URL: `postgres://postgres@${silent.url}/x` });
    assertOneLine(r, 'bench', /timeout/i);
  });
});
