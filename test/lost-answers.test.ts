// Lost answers, one at a time: a proxy in front of PostgreSQL or Redis lets the decisive command
// through (or not) and cuts the connection before its reply comes back. The service must find out
// what happened before it answers — or say OUTCOME_UNKNOWN — and never call a committed issuance
// "nothing issued". Needs PostgreSQL and MariaDB (and Redis for the Redis half).
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import pg from 'pg';
import { COMMITTED_UNSEEN, createMysqlDb, createPostgresDb, OutcomeUnknownError, type Db, type Queryable, type Transaction } from '../src/db/index.js';
import { PrivatePostgres, postgresBinDir } from './fault-helpers.js';
import { createTestDatabase, missing, needDatabase, needServer, openTestDb, PG_ADMIN_URL, request, SERVER_DB_KINDS, SERVER_KINDS, type TestDatabase } from './helpers.js';
import { TcpProxy, waitFor } from './ops-helpers.js';
import { REDIS_URL, startRedisTestServer, waitForDrain, type RedisTestServer } from './redis-helpers.js';

function viaProxy(url: string, proxy: TcpProxy): string {
  const u = new URL(url);
  u.host = proxy.url;
  return u.toString();
}

for (const kind of SERVER_DB_KINDS) {
  describe(`db.transaction when the COMMIT answer is lost (${kind})`, () => {
    let testDb: TestDatabase | undefined;
    let proxy: TcpProxy | undefined;
    let db: Db | undefined;
    let direct: Db | undefined;
    const p = (n: number) => (kind === 'mysql' ? '?' : `$${n}`);
    // The COMMIT statement on the wire. On MySQL the bare word would also match each new
    // connection's `SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED`: match the query
    // packet's command byte (COM_QUERY, 0x03) in front of it.
    const COMMIT = kind === 'mysql' ? '\x03COMMIT' : 'COMMIT';

    before(async () => {
      const u = new URL(SERVER_KINDS[kind].url);
      proxy = await new TcpProxy(u.hostname, Number(u.port || (kind === 'mysql' ? 3306 : 5432))).up();
      try {
        testDb = await createTestDatabase(SERVER_KINDS[kind].dialect);
      } catch {
        return; // each test reports the missing server
      }
      direct = openTestDb(kind, testDb.url, 1);
      await direct.query('CREATE TABLE t (x int PRIMARY KEY)');
      db = kind === 'mysql' ? createMysqlDb(viaProxy(testDb.url, proxy), { poolSize: 2, connectionTimeoutMs: 500 }) : createPostgresDb(viaProxy(testDb.url, proxy), { poolSize: 2, connectionTimeoutMs: 500 });
    });
    after(async () => {
      await proxy?.up();
      await db?.close();
      await direct?.close();
      await testDb?.drop();
      await proxy?.down();
    });
    const ready = async (t: TestContext) => (await needDatabase(t, kind)) && db !== undefined;
    const has = async (x: number) => (await direct!.query(`SELECT 1 FROM t WHERE x = ${p(1)}`, [x])).rows.length === 1;
    /** How the caller tells a committed transaction (MySQL asks it; PostgreSQL asks the server by id). */
    const wrote = (x: number) => ({ committed: async (q: Queryable) => (await q.query(`SELECT 1 FROM t WHERE x = ${p(1)}`, [x])).rows.length === 1 });
    const insert = (x: number) => async (tx: Transaction) => tx.query(`INSERT INTO t VALUES (${p(1)})`, [x]);

    it('resolves with the result when the COMMIT reached the server and committed', async (t) => {
      if (!(await ready(t))) return;
      proxy!.loseAnswerTo(COMMIT, true);
      const result = await db!.transaction(async (tx) => {
        await insert(1)(tx);
        return 'inserted';
      }, wrote(1));
      assert.equal(result, 'inserted');
      assert.ok(await has(1));
    });

    it('rejects with the connection error (not OutcomeUnknownError) when the COMMIT never reached the server', async (t) => {
      if (!(await ready(t))) return;
      proxy!.loseAnswerTo(COMMIT, false);
      await assert.rejects(db!.transaction(insert(2), wrote(2)), (err: Error) => !(err instanceof OutcomeUnknownError));
      assert.equal(await has(2), false);
    });

    it('rejects with OutcomeUnknownError when the server cannot be asked within the bound', async (t) => {
      if (!(await ready(t))) return;
      proxy!.loseAnswerTo(COMMIT, true, () => proxy!.blackhole());
      const started = performance.now();
      await assert.rejects(db!.transaction(insert(3), wrote(3)), OutcomeUnknownError);
      const ms = performance.now() - started;
      assert.ok(ms >= 2_900 && ms < 5_000, `gave up after ${Math.round(ms)} ms`);
      await proxy!.up();
      assert.ok(await has(3), 'it had committed: "unknown" was the truth, not "failed"');
    });

    // db.statement: one statement, its own transaction. On PostgreSQL there is no COMMIT on the
    // wire: the statement itself is what gets lost.
    const stmt = (x: number) => `INSERT INTO t VALUES (${kind === 'mysql' ? x : `${x} + 0`})`;
    const STATEMENT = (x: number) => (kind === 'mysql' ? COMMIT : `VALUES (${x} + 0)`);

    it('statement: committed and its answer lost — the check finds the row after the session is gone', async (t) => {
      if (!(await ready(t))) return;
      proxy!.loseAnswerTo(STATEMENT(11), true);
      const result = await db!.statement(stmt(11), [], wrote(11));
      // PostgreSQL never saw the result; MySQL's COMMIT answer was lost after the INSERT's came back.
      if (kind === 'mysql') assert.notEqual(result, COMMITTED_UNSEEN);
      else assert.equal(result, COMMITTED_UNSEEN);
      assert.ok(await has(11));
    });

    it('statement: it never reached the server — rejects with the connection error, nothing written', async (t) => {
      if (!(await ready(t))) return;
      proxy!.loseAnswerTo(STATEMENT(12), false);
      await assert.rejects(db!.statement(stmt(12), [], wrote(12)), (err: Error) => !(err instanceof OutcomeUnknownError));
      assert.equal(await has(12), false);
    });

    it('statement: the server refused it — rejects with its error at once, no lookup', async (t) => {
      if (!(await ready(t))) return;
      await db!.statement(stmt(13), [], wrote(13));
      const started = performance.now();
      await assert.rejects(db!.statement(stmt(13), [], wrote(13)), (err: Error) => !(err instanceof OutcomeUnknownError) && /duplicate/i.test(err.message));
      assert.ok(performance.now() - started < 1_000, 'a refusal needs no lookup');
    });

    it('statement: the server cannot be asked within the bound — OutcomeUnknownError, and it had committed', async (t) => {
      if (!(await ready(t))) return;
      proxy!.loseAnswerTo(STATEMENT(14), true, () => proxy!.blackhole());
      await assert.rejects(db!.statement(stmt(14), [], wrote(14)), OutcomeUnknownError);
      await proxy!.up();
      assert.ok(await has(14), 'it had committed: "unknown" was the truth');
    });

    if (kind === 'mysql') {
      it('rejects with OutcomeUnknownError when the caller gave no way to tell (MySQL has no transaction ids to ask)', async (t) => {
        if (!(await ready(t))) return;
        proxy!.loseAnswerTo(COMMIT, true);
        await assert.rejects(db!.transaction(insert(4)), OutcomeUnknownError);
        assert.ok(await has(4), 'it had committed: "unknown" was the truth');
      });
    }
  });
}

// A crash rewinds PostgreSQL's transaction-id counter to the last id the WAL logged: the id of a
// transaction the crash lost is handed out again after the restart, and txid_status() then reports
// the newcomer's fate. Seen in CI: a redis-lock 201 whose row a crash had lost.
describe('db.transaction when the server crashes before its COMMIT and hands its id out again (private PostgreSQL)', () => {
  const bin = postgresBinDir();
  let server: PrivatePostgres | undefined;
  let url = '';
  let db: Db | undefined;
  before(async () => {
    if (bin === undefined) return;
    server = await PrivatePostgres.create(bin);
    url = await server.createDatabase();
    db = createPostgresDb(url, { poolSize: 2, connectionTimeoutMs: 500 });
    await db.query('CREATE TABLE t (x int PRIMARY KEY)');
  });
  after(async () => {
    await db?.close();
    await server?.destroy();
  });
  const ready = (t: TestContext): boolean => {
    if (bin === undefined) missing(t, 'PostgreSQL server binaries (initdb, pg_ctl) are not installed');
    return db !== undefined;
  };
  const wrote = (x: number) => ({ committed: async (q: Queryable) => (await q.query('SELECT 1 FROM t WHERE x = $1', [x])).rows.length === 1 });

  /**
   * The transaction reads (nothing of it reaches the WAL), the server crashes and restarts, and
   * another session commits under the same id before COMMIT goes out on the dead connection.
   */
  const crashAndReuse = async (tx: Transaction): Promise<string> => {
    const xid = (await tx.query<{ xid: string }>('SELECT txid_current()::text AS xid')).rows[0]!.xid;
    await server!.crash();
    await server!.start();
    const other = new pg.Client({ connectionString: url });
    await other.connect();
    try {
      let reused = '0';
      while (BigInt(reused) < BigInt(xid)) reused = (await other.query<{ xid: string }>('SELECT txid_current()::text AS xid')).rows[0]!.xid;
      assert.equal(reused, xid, 'the restarted server handed out the lost id again');
      assert.equal((await other.query<{ s: string }>('SELECT txid_status($1::bigint) AS s', [xid])).rows[0]!.s, 'committed', "and the id now reads as the newcomer's commit");
    } finally {
      await other.end();
    }
    return 'committed?';
  };

  it('the caller\'s check decides: nothing written, so it rejects with the connection error (not a false "committed")', async (t) => {
    if (!ready(t)) return;
    await assert.rejects(db!.transaction(crashAndReuse, wrote(1)), (err: Error) => !(err instanceof OutcomeUnknownError));
  });

  it('with no check to ask, it says OutcomeUnknownError rather than believe the reused id', async (t) => {
    if (!ready(t)) return;
    await assert.rejects(db!.transaction(crashAndReuse), OutcomeUnknownError);
  });

  it('a COMMIT that was logged and whose answer the crash lost resolves as committed, the row asked after the restart', async (t) => {
    if (!ready(t)) return;
    const proxy = await new TcpProxy('127.0.0.1', server!.port).up();
    const viaProxy = createPostgresDb(`postgres://postgres@${proxy.url}${new URL(url).pathname}`, { poolSize: 2, connectionTimeoutMs: 500 });
    try {
      proxy.loseAnswerTo('COMMIT', true, () => {
        proxy.blackhole();
        void server!.crash().then(() => server!.start()).then(() => proxy.up());
      });
      const result = await viaProxy.transaction(async (tx) => {
        await tx.query('INSERT INTO t VALUES (2)');
        return 'inserted';
      }, wrote(2));
      assert.equal(result, 'inserted');
      assert.equal((await db!.query<{ n: number }>('SELECT count(*)::int AS n FROM t WHERE x = 2')).rows[0]?.n, 1);
    } finally {
      await viaProxy.close();
      await proxy.down();
    }
  });
});

describe('POST /coupons/:id/issues when the decisive answer is lost', () => {
  let server: RedisTestServer | undefined;
  let pgProxy: TcpProxy | undefined;
  let redisProxy: TcpProxy | undefined;

  before(async () => {
    const pgUrl = new URL(PG_ADMIN_URL);
    const redisUrl = new URL(REDIS_URL);
    pgProxy = await new TcpProxy(pgUrl.hostname, Number(pgUrl.port || 5432)).up();
    redisProxy = await new TcpProxy(redisUrl.hostname, Number(redisUrl.port || 6379)).up();
    try {
      // The API's database and Redis connections go through the proxies; the test's own do not.
      const pg = pgProxy;
      server = await startRedisTestServer({ REDIS_URL: `redis://${redisProxy.url}`, REQUEST_TIMEOUT_MS: '8000' }, { dbVia: (url) => viaProxy(url, pg) });
    } catch {
      // each test reports the missing server
    }
  });
  after(async () => {
    await pgProxy?.up();
    await redisProxy?.up();
    await server?.close();
    await pgProxy?.down();
    await redisProxy?.down();
  });
  const ready = async (t: TestContext) =>
    (await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) && (await needServer(t, 'Redis', REDIS_URL)) && server !== undefined;
  const issue = (s: RedisTestServer, couponId: number, user: string) =>
    request(s.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${s.tokenFor(user)}` } });
  const status = async (s: RedisTestServer, couponId: number, user: string) =>
    (await request(s.url, 'GET', `/coupons/${couponId}/issues/me`, { headers: { authorization: `Bearer ${s.tokenFor(user)}` } })).json as { status?: string; code?: string };
  const code = (res: { json: unknown }) => (res.json as { code?: string }).code;

  /** After the cut, Redis's port stays closed for `ms`: ioredis's retries run out, so it does not resend the call. */
  const closedFor = (ms: number) => () => {
    void redisProxy!.down();
    setTimeout(() => void redisProxy!.up(), ms);
  };

  it('redis-lua-async: the script ran, its reply was lost and ioredis sent it again — 409, true: the user holds it', async (t) => {
    if (!(await ready(t))) return;
    const s = server!;
    await s.startWorker('lost-1');
    const { id } = await s.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
    redisProxy!.loseAnswerTo('resent', true);
    const res = await issue(s, id, 'resent');
    assert.equal(res.status, 409, res.text);
    await waitForDrain(s, id, 1);
    assert.equal((await status(s, id, 'resent')).status, 'ISSUED');
  });

  it('redis-lua-async: the script ran and its reply was lost — asks Redis once it is back, answers 202, and the row follows', async (t) => {
    if (!(await ready(t))) return;
    const s = server!;
    const { id } = await s.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
    redisProxy!.loseAnswerTo('ran-lost', true, closedFor(800));
    const res = await issue(s, id, 'ran-lost');
    assert.equal(res.status, 202, res.text);
    await waitForDrain(s, id, 1);
    assert.equal((await status(s, id, 'ran-lost')).status, 'ISSUED');
  });

  it('redis-lua-async: the script never reached Redis — asks Redis once it is back, answers 503 SERVICE_UNAVAILABLE, nothing admitted', async (t) => {
    if (!(await ready(t))) return;
    const s = server!;
    const { id } = await s.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
    redisProxy!.loseAnswerTo('never-ran', false, closedFor(800));
    const res = await issue(s, id, 'never-ran');
    assert.equal(res.status, 503, res.text);
    assert.equal(code(res), 'SERVICE_UNAVAILABLE');
    assert.equal(await s.redis.client.sismember(s.redis.keys.campaign(id).users, 'never-ran'), 0);
    assert.equal((await issue(s, id, 'never-ran')).status, 202, 'the retry is admitted');
  });

  it('redis-lua-async: Redis cannot be asked within the bound — answers 503 OUTCOME_UNKNOWN, and /issues/me tells later', async (t) => {
    if (!(await ready(t))) return;
    const s = server!;
    const { id } = await s.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
    redisProxy!.loseAnswerTo('unknowable', true, closedFor(4_500));
    const res = await issue(s, id, 'unknowable');
    assert.equal(res.status, 503, res.text);
    assert.equal(code(res), 'OUTCOME_UNKNOWN');
    assert.equal(res.headers['retry-after'], '1');
    await waitFor('Redis answering again', async () => (await request(s.url, 'GET', '/readyz')).status === 200);
    assert.ok(['PENDING', 'ISSUED'].includes(String((await status(s, id, 'unknowable')).status)), 'it had been admitted: "unknown" was the truth');
    assert.equal((await issue(s, id, 'unknowable')).status, 409, 'a retry does not issue a second one');
  });

  it('redis-lua-sync: the admission ran and its reply was lost — 503 (no row: true), and the retry is issued, not told 409', async (t) => {
    if (!(await ready(t))) return;
    const s = server!;
    const { id } = await s.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-sync' });
    redisProxy!.loseAnswerTo('sync-lost', true, closedFor(800));
    const first = await issue(s, id, 'sync-lost');
    assert.equal(first.status, 503, first.text);
    assert.equal(code(first), 'SERVICE_UNAVAILABLE');
    await waitFor('Redis answering again', async () => (await request(s.url, 'GET', '/readyz')).status === 200);
    assert.equal(await s.redis.client.sismember(s.redis.keys.campaign(id).users, 'sync-lost'), 1, 'Redis holds the admission');
    assert.equal((await status(s, id, 'sync-lost')).code, 'NOT_ISSUED', 'and no row: nothing was issued');
    const retry = await issue(s, id, 'sync-lost');
    assert.equal(retry.status, 201, `an orphaned admission becomes the issuance: ${retry.text}`);
    assert.equal((await issue(s, id, 'sync-lost')).status, 409);
  });

  // db-atomic is one autocommit statement on PostgreSQL: its text on the wire is what gets lost.
  const DB_ATOMIC_STATEMENT = 'WITH coupon AS';

  it('db-atomic: the statement committed and its answer was lost — answers 201', async (t) => {
    if (!(await ready(t))) return;
    const s = server!;
    const { id } = await s.createCoupon({ totalQuantity: 5, strategy: 'db-atomic' });
    pgProxy!.loseAnswerTo(DB_ATOMIC_STATEMENT, true);
    const res = await issue(s, id, 'commit-lost');
    assert.equal(res.status, 201, res.text);
    assert.equal((await status(s, id, 'commit-lost')).status, 'ISSUED');
  });

  it('db-atomic: the database cannot be asked within the bound — 503 OUTCOME_UNKNOWN, and the user does hold it', async (t) => {
    if (!(await ready(t))) return;
    const s = server!;
    const { id } = await s.createCoupon({ totalQuantity: 5, strategy: 'db-atomic' });
    pgProxy!.loseAnswerTo(DB_ATOMIC_STATEMENT, true, () => pgProxy!.blackhole());
    const res = await issue(s, id, 'commit-unknowable');
    await pgProxy!.up();
    assert.equal(res.status, 503, res.text);
    assert.equal(code(res), 'OUTCOME_UNKNOWN');
    await waitFor('the database answering again', async () => (await request(s.url, 'GET', '/readyz')).status === 200);
    assert.equal((await status(s, id, 'commit-unknowable')).status, 'ISSUED');
    assert.equal((await issue(s, id, 'commit-unknowable')).status, 409, 'a retry does not issue a second one');
  });
});
