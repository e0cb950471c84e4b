// The README's Kafka quickstart, run as printed: its broker block (`couponrush-kafka run`, the
// package's bin, on a free port instead of 9092), then its services block (migrate, serve, a
// worker with events on) in a shell with the environment the README says to export. A campaign
// created without a strategy must be redis-lua-kafka, a user's 202 must become ISSUED through
// the worker. Needs the built dist/ (`npm run build`), a JDK and Maven, PostgreSQL and Redis.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { signUserToken } from '../src/http/auth.js';
import { freePort } from './ops-helpers.js';
import { ADMIN_TOKEN, createTestDatabase, JWT_SECRET, missing, request, type TestDatabase } from './helpers.js';
import { needKafka } from './kafka-helpers.js';
import { deleteKeys, REDIS_URL, REPO_ROOT, uniquePrefix, waitFor } from './redis-helpers.js';

/** The shell block that follows `<!-- kafka-quickstart: name -->` in the README. */
function readmeBlock(name: string): string {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const m = new RegExp(`<!-- kafka-quickstart: ${name} -->\\s*\`\`\`sh\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (m?.[1] === undefined) throw new Error(`README.md has no "kafka-quickstart: ${name}" block`);
  return m[1];
}

/** A shell running `script` in its own process group (so the whole group can be stopped). */
function shell(script: string, env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = spawn('bash', ['-c', script], { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  return { child, output: () => out };
}

async function stopGroup(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  try {
    process.kill(-child.pid, signal);
  } catch {
    return;
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone
    }
  }, 20_000);
  await exited;
  clearTimeout(timer);
}

describe("the README's Kafka quickstart", () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  it('starts a broker, the API and a worker as printed; a campaign defaults to redis-lua-kafka and a 202 becomes ISSUED', async (t) => {
    if (!(await needKafka(t))) return;
    if (!existsSync(join(REPO_ROOT, 'dist', 'tools', 'kafka-broker.js'))) {
      missing(t, 'dist/ is not built: run `npm run build` (the couponrush-kafka bin runs dist/tools/kafka-broker.js)');
      return;
    }
    const kafkaPort = await freePort();
    const broker = shell(readmeBlock('broker').replaceAll('9092', String(kafkaPort)), {});
    cleanups.push(() => stopGroup(broker.child, 'SIGINT'));
    await waitFor('the broker printed KAFKA_BROKERS', async () => broker.output().includes(`KAFKA_BROKERS=127.0.0.1:${kafkaPort}`), 120_000).catch((err: Error) =>
      assert.fail(`${err.message}; it said:\n${broker.output()}`),
    );

    const db: TestDatabase = await createTestDatabase('postgres');
    cleanups.push(() => db.drop());
    const prefix = uniquePrefix();
    cleanups.push(async () => void (await deleteKeys(prefix)));
    const port = await freePort();
    const services = shell(readmeBlock('services').replaceAll('9092', String(kafkaPort)), {
      DATABASE_URL: db.url,
      REDIS_URL,
      ADMIN_TOKEN,
      JWT_SECRET,
      // Not in the block: a port and a key prefix of the test's own, and quiet logs.
      PORT: String(port),
      REDIS_PREFIX: prefix,
      LOG_LEVEL: 'warn',
    });
    cleanups.push(() => stopGroup(services.child, 'SIGTERM'));
    const url = `http://127.0.0.1:${port}`;
    await waitFor('the API is ready', async () => (await request(url, 'GET', '/readyz').catch(() => ({ status: 0 }))).status === 200, 90_000).catch((err: Error) =>
      assert.fail(`${err.message}; the shell said:\n${services.output()}`),
    );

    const now = Date.now();
    const created = await request(url, 'POST', '/admin/coupons', {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      json: { name: 'quickstart', totalQuantity: 10, issueStartsAt: new Date(now - 60_000).toISOString(), issueEndsAt: new Date(now + 3_600_000).toISOString() },
    });
    assert.equal(created.status, 201, created.text);
    const coupon = created.json as { id: number; strategy: string };
    assert.equal(coupon.strategy, 'redis-lua-kafka', 'DEFAULT_STRATEGY from the block');
    const auth = { authorization: `Bearer ${signUserToken(JWT_SECRET, 'quickstart-user')}` };
    const issued = await request(url, 'POST', `/coupons/${coupon.id}/issues`, { headers: auth });
    assert.equal(issued.status, 202, issued.text);
    let status = '';
    await waitFor('the worker persisted the 202', async () => {
      const me = await request(url, 'GET', `/coupons/${coupon.id}/issues/me`, { headers: auth });
      status = (me.json as { status?: string } | undefined)?.status ?? String(me.status);
      return status === 'ISSUED';
    }, 60_000).catch((err: Error) => assert.fail(`${err.message} (last status ${status}); the shell said:\n${services.output()}`));
  });
});
