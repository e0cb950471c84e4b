// Test harness for the Redis strategies and the worker: a unique key prefix per test (deleted
// afterwards with SCAN + DEL), the real app over a fresh PostgreSQL database (startTestServer),
// in-process or child-process workers, and waiting for a drained queue.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { openRedis, type RedisHandle } from '../src/redis/client.js';
import { WORKER_GROUP } from '../src/redis/keys.js';
import { parseGroups, parsePendingSummary } from '../src/redis/streams.js';
import { startWorker, type IssueWorker } from '../src/worker/worker.js';
import { ADMIN_TOKEN, issuedRows, JWT_SECRET, request, startTestServer, type ServerDbKind, type TestServer, type TestServerOptions } from './helpers.js';

export const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const silent = pino({ level: 'silent' });

/** Worker settings that make redelivery and dead-lettering happen within a test's time. */
export const FAST_WORKER_ENV = { WORKER_CLAIM_IDLE_MS: '300', WORKER_MAX_DELIVERIES: '3', WORKER_BATCH_SIZE: '100' };

export function uniquePrefix(): string {
  return `crtest:${Date.now().toString(36)}${randomBytes(3).toString('hex')}:`;
}

/** Deletes every key under the prefix (SCAN + DEL; never FLUSHALL on a shared Redis). */
export async function deleteKeys(prefix: string): Promise<number> {
  const r = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await r.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length > 0) deleted += await r.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    r.disconnect();
  }
  return deleted;
}

/** A Redis handle on its own prefix, for tests that need no HTTP server. */
export async function openTestRedis(): Promise<RedisHandle & { prefix: string }> {
  const prefix = uniquePrefix();
  const handle = await openRedis(REDIS_URL, prefix, silent);
  const closeHandle = handle.close;
  return Object.assign(handle, {
    prefix,
    async close() {
      await closeHandle();
      await deleteKeys(prefix);
    },
  });
}

export interface RedisTestServer extends TestServer {
  readonly redis: RedisHandle;
  readonly prefix: string;
  /** Environment for a `couponrush worker` child process against this server's database and prefix. */
  readonly workerEnv: Record<string, string>;
  /** An in-process worker (stopped by close()). */
  startWorker(consumer: string): Promise<IssueWorker>;
  adminHeaders: Record<string, string>;
}

/** The real app over a fresh PostgreSQL (or, with `db`, MariaDB) database and a fresh Redis key prefix. */
export async function startRedisTestServer(
  env: Record<string, string> = {},
  options: Pick<TestServerOptions, 'dbVia'> & { db?: ServerDbKind } = {},
): Promise<RedisTestServer> {
  const prefix = uniquePrefix();
  const server = await startTestServer({ db: options.db ?? 'postgres', env: { REDIS_URL, REDIS_PREFIX: prefix, ...FAST_WORKER_ENV, ...env }, dbVia: options.dbVia });
  const redis = server.runtime.redis;
  if (redis === undefined) throw new Error('REDIS_URL did not open Redis');
  const workers: IssueWorker[] = [];
  const closeServer = server.close;
  return Object.assign(server, {
    redis,
    prefix,
    workerEnv: {
      DATABASE_URL: server.config.databaseUrl ?? '',
      REDIS_URL,
      REDIS_PREFIX: prefix,
      ADMIN_TOKEN,
      JWT_SECRET,
      LOG_LEVEL: 'warn',
      ...FAST_WORKER_ENV,
      ...env,
    },
    adminHeaders: { authorization: `Bearer ${ADMIN_TOKEN}` },
    async startWorker(consumer: string) {
      const w = await startWorker({ db: server.db, redis, config: server.config.worker, log: silent, consumer });
      workers.push(w);
      return w;
    },
    async close() {
      for (const w of workers) await w.stop();
      await closeServer();
      await deleteKeys(prefix);
    },
  });
}

/** Polls `check` until it returns true; fails with `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Entries of the coupon's stream not yet acknowledged: pending (delivered) + never delivered. */
export async function backlog(redis: RedisHandle, couponId: number): Promise<{ pending: number; undelivered: number }> {
  const stream = redis.keys.campaign(couponId).stream;
  if ((await redis.client.exists(stream)) === 0) return { pending: 0, undelivered: 0 };
  const groups = parseGroups(await redis.client.call('XINFO', 'GROUPS', stream));
  const group = groups.find((g) => g.name === WORKER_GROUP);
  if (group === undefined) return { pending: 0, undelivered: await redis.client.xlen(stream) };
  const { count } = parsePendingSummary(await redis.client.xpending(stream, WORKER_GROUP));
  const after = await redis.client.xrange(stream, `(${group.lastDeliveredId}`, '+', 'COUNT', 1);
  return { pending: count, undelivered: after.length };
}

/** Waits until the database holds `rows` rows for the coupon and its stream is fully acknowledged. */
export async function waitForDrain(server: Pick<RedisTestServer, 'db' | 'redis'>, couponId: number, rows: number, timeoutMs = 30_000): Promise<void> {
  await waitFor(
    `${rows} rows for coupon ${couponId} and an empty backlog`,
    async () => {
      if ((await issuedRows(server.db, couponId)).rows !== rows) return false;
      const b = await backlog(server.redis, couponId);
      return b.pending === 0 && b.undelivered === 0;
    },
    timeoutMs,
  );
}

/** POSTs an issue request for each user (concurrently); returns user → HTTP status. */
export async function issueAll(server: Pick<TestServer, 'url' | 'tokenFor'>, couponId: number, users: readonly string[], concurrency = 64): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let next = 0;
  const one = async () => {
    while (next < users.length) {
      const user = users[next++]!;
      const res = await request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
      out.set(user, res.status);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, one));
  return out;
}

export function usersRange(from: number, to: number, prefix = 'user'): string[] {
  return Array.from({ length: to - from }, (_, i) => `${prefix}-${from + i}`);
}

export function withStatus(statuses: ReadonlyMap<string, number>, status: number): string[] {
  return [...statuses].filter(([, s]) => s === status).map(([u]) => u);
}

/** `couponrush worker` as a child process (kill -9 tests). */
export function spawnWorker(env: Record<string, string>, consumer: string): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'worker', '--consumer', consumer], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout?.resume();
  child.once('exit', (code, signal) => {
    if (code !== 0 && signal === null) process.stderr.write(`worker ${consumer} exited with ${code}: ${stderr}\n`);
  });
  return child;
}

export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
