// The one-shot commands (migrate, reconcile, bench) facing a store that refuses connections or
// accepts them and never answers: each exits 1 within a bound, with one line on stderr that says
// what failed — never a stack trace, never a hang. A closed port and a silent proxy stand in for
// the broken stores; the missing-database case needs the shared PostgreSQL.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ADMIN_TOKEN, JWT_SECRET, needServer, PG_ADMIN_URL } from './helpers.js';
import { freePort, runCli, TcpProxy } from './ops-helpers.js';

/** Longest a command may take to give up (the connect/answer timeouts are 5 s). */
const GIVE_UP_MS = 15_000;

async function runOnce(args: string[], env: Record<string, string>): Promise<{ code: number | string; stderr: string; ms: number }> {
  const started = performance.now();
  const child = runCli(args, { LOG_LEVEL: 'warn', ADMIN_TOKEN, JWT_SECRET, ...env });
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

  it('migrate: a refused database connection is one line and exit 1', async () => {
    const r = await runOnce(['migrate'], { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/x` });
    assertOneLine(r, 'migrate', /ECONNREFUSED/);
  });

  it('migrate: a database that accepts and never answers is one line and exit 1, within the connect timeout', async () => {
    const r = await runOnce(['migrate'], { DATABASE_URL: `postgres://postgres@${silent.url}/x` });
    assertOneLine(r, 'migrate', /timeout/i);
  });

  it('migrate: a database that does not exist is one line naming it, and exit 1', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    const url = new URL(PG_ADMIN_URL);
    url.pathname = '/couponrush_no_such_database';
    const r = await runOnce(['migrate'], { DATABASE_URL: url.toString() });
    assertOneLine(r, 'migrate', /database "couponrush_no_such_database" does not exist/);
  });

  it('reconcile: a silent Redis is one line and exit 1', async () => {
    const r = await runOnce(['reconcile'], { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/x`, REDIS_URL: `redis://${silent.url}` });
    assertOneLine(r, 'reconcile', /Redis at REDIS_URL does not answer/);
  });

  it('bench: a refused database connection is one line and exit 1', async () => {
    const r = await runOnce(['bench', '--no-progress', '--strategies', 'db-atomic'], { DATABASE_URL: `postgres://postgres@127.0.0.1:${closedPort}/x` });
    assertOneLine(r, 'bench', /ECONNREFUSED/);
  });

  it('bench: a database that accepts and never answers is one line and exit 1', async () => {
    const r = await runOnce(['bench', '--no-progress', '--strategies', 'db-atomic'], { DATABASE_URL: `postgres://postgres@${silent.url}/x` });
    assertOneLine(r, 'bench', /timeout/i);
  });
});
