// Test harness: real servers, real HTTP. Every test gets its own PostgreSQL database (or
// in-memory PGlite) and cleans it up. A missing server skips loudly — except under CI=true.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import { buildApp, type AppOptions } from '../src/app.js';
import { createScratchDatabase } from '../src/db/scratch.js';
import { loadConfig, type Config } from '../src/config.js';
import { createMysqlDb, createPgliteDb, createPostgresDb, type Db, type Dialect } from '../src/db/index.js';
import { lockIssuedCount } from '../src/coupons/repository.js';
import { signUserToken } from '../src/http/auth.js';
import { createRuntime, type Runtime } from '../src/runtime.js';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';
export const JWT_SECRET = 'test-jwt-secret-0123456789abcdef0123456789';
export const PG_ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
/** MariaDB (or MySQL) the suites create their databases on; the user needs CREATE/DROP DATABASE. */
export const MYSQL_ADMIN_URL = process.env.TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/';

const reachable = new Map<string, Promise<boolean>>();

/** True when host:port accepts TCP within a second. */
export function canConnect(host: string, port: number): Promise<boolean> {
  const key = `${host}:${port}`;
  let p = reachable.get(key);
  if (p === undefined) {
    p = new Promise<boolean>((resolve) => {
      const socket = net.connect({ host, port, timeout: 1000 });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('timeout', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', () => resolve(false));
    });
    reachable.set(key, p);
  }
  return p;
}

/** Whether a server a test needs answers; if not, `missing` (skip loudly, or fail under CI=true). */
export async function needServer(t: TestContext, name: string, url: string): Promise<boolean> {
  const u = new URL(url);
  const port = Number(u.port || (u.protocol.startsWith('redis') ? 6379 : u.protocol.startsWith('mysql') ? 3306 : 5432));
  if (await canConnect(u.hostname, port)) return true;
  missing(t, `${name} is not reachable at ${u.hostname}:${port} — start it to run this test`);
  return false;
}

/**
 * Something a test needs is not on this machine: skip loudly, or under CI=true fail, because CI
 * installs everything the suite needs (.ci/run) and a skipped test proves nothing there.
 */
export function missing(t: TestContext, message: string): void {
  if (process.env.CI === 'true') throw new Error(`${message} (CI=true: what a test needs must be there)`);
  process.stderr.write(`\n*** SKIPPING: ${message} ***\n`);
  t.skip(message);
}

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** Creates a fresh, uniquely named database on the PostgreSQL or the MariaDB/MySQL server (as the bench makes its scratch database). */
export function createTestDatabase(dialect: Dialect = 'postgres'): Promise<TestDatabase> {
  const name = `couponrush_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  return createScratchDatabase(dialect === 'mysql' ? MYSQL_ADMIN_URL : PG_ADMIN_URL, name);
}

/** The database servers, by test kind: what `needDatabase` checks and where test databases go. */
export const SERVER_KINDS = {
  postgres: { name: 'PostgreSQL', url: PG_ADMIN_URL, dialect: 'postgres' },
  mysql: { name: 'MariaDB', url: MYSQL_ADMIN_URL, dialect: 'mysql' },
} as const;

/** The kinds of database every stampede/invariant suite runs on. */
export const DB_KINDS = ['postgres', 'pglite', 'mysql'] as const;
/** The database servers (PGlite is in-process). */
export const SERVER_DB_KINDS = ['postgres', 'mysql'] as const;

/** Whether the server a kind of database needs answers (PGlite needs none); else `missing`. */
export async function needDatabase(t: TestContext, kind: DbKind): Promise<boolean> {
  if (kind === 'pglite') return true;
  return needServer(t, SERVER_KINDS[kind].name, SERVER_KINDS[kind].url);
}

/** Opens a pool on a test database of a server kind. */
export function openTestDb(kind: ServerDbKind, url: string, poolSize = 4): Db {
  return kind === 'mysql' ? createMysqlDb(url, { poolSize }) : createPostgresDb(url, { poolSize });
}

export type DbKind = (typeof DB_KINDS)[number];
export type ServerDbKind = (typeof SERVER_DB_KINDS)[number];

export interface TestServerOptions {
  db: DbKind;
  env?: Record<string, string>;
  /** Another instance on this server's database (not created, not dropped by this one). */
  sharing?: TestServer;
  /** Rewrites the database URL the app connects to (e.g. through a TcpProxy); the test's own stays direct. */
  dbVia?: (url: string) => string;
  /** buildApp's options (e.g. `issueFront: false`). */
  app?: AppOptions;
}

export interface TestServer {
  url: string;
  app: FastifyInstance;
  runtime: Runtime;
  config: Config;
  db: Db;
  tokenFor(userId: string): string;
  createCoupon(body?: Partial<CouponBody>): Promise<{ id: number }>;
  close(): Promise<void>;
}

export interface CouponBody {
  name: string;
  totalQuantity: number;
  issueStartsAt: string;
  issueEndsAt: string;
  strategy: string;
}

/**
 * Starts the real app on an ephemeral port over a fresh database: a new PostgreSQL or MariaDB
 * database (needs the server; check with `needDatabase` first) or an in-memory PGlite.
 */
export async function startTestServer(options: TestServerOptions): Promise<TestServer> {
  const shared = options.sharing?.config.databaseUrl;
  const testDb =
    options.db === 'pglite'
      ? undefined
      : shared !== undefined
        ? { url: shared, name: new URL(shared).pathname.slice(1), drop: async () => {} }
        : await createTestDatabase(SERVER_KINDS[options.db].dialect);
  const env: Record<string, string> = {
    ADMIN_TOKEN,
    JWT_SECRET,
    LOG_LEVEL: 'silent',
    PORT: '0',
    // The app runs in the test runner's own process, whose event loop other tests' set-up blocks
    // (a PGlite start): shedding would answer for the runner, not the app. The tests of shedding
    // set it themselves.
    SHED_EVENT_LOOP_DELAY_MS: '0',
    ...(testDb === undefined ? {} : { DATABASE_URL: testDb.url }),
    ...options.env,
  };
  const config = loadConfig(env);
  const db =
    testDb === undefined || options.db === 'pglite'
      ? await createPgliteDb(undefined)
      : openTestDb(options.db, options.dbVia?.(testDb.url) ?? testDb.url, config.dbPoolSize);
  const runtime = await createRuntime(config, pino({ level: 'silent' }), { migrate: true, db });
  const app = await buildApp(runtime, options.app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    app,
    runtime,
    config,
    db,
    tokenFor: (userId) => signUserToken(JWT_SECRET, userId),
    async createCoupon(body = {}) {
      const now = Date.now();
      const res = await request(url, 'POST', '/admin/coupons', {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        json: {
          name: 'test coupon',
          totalQuantity: 500,
          issueStartsAt: new Date(now - 60_000).toISOString(),
          issueEndsAt: new Date(now + 3600_000).toISOString(),
          ...body,
        },
      });
      if (res.status !== 201) throw new Error(`create coupon failed: ${res.status} ${res.text}`);
      return res.json as { id: number };
    },
    async close() {
      await app.close();
      await runtime.close();
      await db.close();
      await testDb?.drop();
    },
  };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

export interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: unknown;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  json?: unknown;
  /** Sent as is (for malformed bodies). */
  body?: string;
}

/** One real HTTP request over a shared keep-alive agent. */
export function request(base: string, method: string, path: string, options: RequestOptions = {}): Promise<Response> {
  const body = options.body ?? (options.json === undefined ? undefined : JSON.stringify(options.json));
  const headers: Record<string, string> = { ...options.headers };
  if (body !== undefined) {
    headers['content-type'] ??= 'application/json';
    headers['content-length'] = String(Buffer.byteLength(body));
  }
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, base), { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export interface StampedeResult {
  /** HTTP status → count. */
  statuses: Map<number, number>;
  /** Users that got a 201/202. */
  winners: string[];
  total: number;
}

/**
 * Fires `requests` real concurrent POST /coupons/:id/issues from `users` distinct users (the
 * first requests cover every user once, the rest are repeats by the same users), shuffled.
 */
export async function stampede(
  server: Pick<TestServer, 'url' | 'tokenFor'>,
  couponId: number,
  users: number,
  requests: number,
  concurrency = 256,
): Promise<StampedeResult> {
  const tokens = Array.from({ length: users }, (_, i) => ({ user: `user-${i}`, token: server.tokenFor(`user-${i}`) }));
  const plan = Array.from({ length: requests }, (_, i) => tokens[i % users]!);
  for (let i = plan.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [plan[i], plan[j]] = [plan[j]!, plan[i]!];
  }
  const statuses = new Map<number, number>();
  const winners: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < plan.length) {
      const { user, token } = plan[next++]!;
      const res = await request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${token}` } });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 201 || res.status === 202) winners.push(user);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { statuses, winners, total: plan.length };
}

/** Rows actually in the database for a coupon. */
export async function issuedRows(db: Db, couponId: number): Promise<{ rows: number; distinctUsers: number; counter: number; users: string[] }> {
  // Portable SQL (no placeholders, the id is an integer): read independently of the repository.
  const id = Math.trunc(couponId);
  const { rows } = await db.query<{ user_id: string }>(`SELECT user_id FROM coupon_issues WHERE coupon_id = ${id}`);
  const c = await db.query<{ issued_quantity: number }>(`SELECT issued_quantity FROM coupons WHERE id = ${id}`);
  const users = rows.map((r) => r.user_id);
  return { rows: users.length, distinctUsers: new Set(users).size, counter: c.rows[0]?.issued_quantity ?? -1, users };
}

/**
 * Makes the database refuse every insert of `userId` into coupon_issues with `message` (a trigger,
 * in the database's dialect), until the returned function drops it.
 */
export async function refuseInsertsOf(db: Db, userId: string, message: string): Promise<() => Promise<void>> {
  if (!/^[\w-]+$/.test(userId) || !/^[\w ]+$/.test(message)) throw new Error('refuseInsertsOf: plain ids and messages only');
  const name = `test_refuse_${userId.replace(/-/g, '_')}`;
  if (db.dialect === 'mysql') {
    await db.query(`CREATE TRIGGER ${name} BEFORE INSERT ON coupon_issues FOR EACH ROW
      BEGIN IF NEW.user_id = '${userId}' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '${message}'; END IF; END`);
    return async () => {
      await db.query(`DROP TRIGGER ${name}`);
    };
  }
  await db.exec(`
    CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '${message}'; END $$;
    CREATE TRIGGER ${name} BEFORE INSERT ON coupon_issues FOR EACH ROW WHEN (NEW.user_id = '${userId}') EXECUTE FUNCTION ${name}();`);
  return async () => {
    await db.exec(`DROP TRIGGER ${name} ON coupon_issues; DROP FUNCTION ${name}();`);
  };
}

/** Holds the coupon's row lock (SELECT … FOR UPDATE in an open transaction) until the returned function is called. */
export async function holdCouponRow(db: Db, couponId: number): Promise<() => Promise<void>> {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const done = db
    .transaction(async (tx) => {
      await lockIssuedCount(tx, couponId);
      locked();
      await released;
    })
    .catch(() => undefined);
  await isLocked;
  return async () => {
    release();
    await done;
  };
}
