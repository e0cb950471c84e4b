// MySQL 8.0+ and MariaDB 10.11+ over mysql2 (a pool). Every connection is set up alike before
// its first use: READ COMMITTED (as PostgreSQL: no gap locks on the rows a statement reads, so
// concurrent claims and inserts do not block each other on ranges), UTC for every DATETIME
// (the driver converts with 'Z'), and a bound on lock waits. Affected rows count rows changed,
// not rows matched, so a no-op `ON DUPLICATE KEY UPDATE` reports 0 (a duplicate).
import type { PoolConnection as CoreConnection } from 'mysql2';
import mysql from 'mysql2/promise';
import { askUntil } from '../util/ask-until.js';
import { OutcomeUnknownError, type Db, type Queryable, type QueryResult, type ServerDbOptions, type Transaction, type TransactionOptions } from './types.js';

/** mysql2 reads `mysql://`; `mariadb://` names the same protocol. */
function driverUrl(url: string): string {
  return url.replace(/^mariadb:/, 'mysql:');
}

async function run<R>(conn: mysql.PoolConnection, sql: string, params?: readonly unknown[]): Promise<QueryResult<R>> {
  const [result] = await conn.query(sql, params as unknown[] | undefined);
  if (Array.isArray(result)) return { rows: result as R[], rowCount: result.length };
  const header = result as mysql.ResultSetHeader;
  return { rows: [], rowCount: header.affectedRows, insertId: header.insertId };
}

/**
 * Splits a migration script into statements: MySQL runs one statement per query unless the whole
 * pool allows multi-statements, which would also let an injected `;` through. Full-line `--`
 * comments are dropped first; the scripts keep `;` out of their string literals.
 */
export function splitStatements(script: string): string[] {
  return script
    .split('\n')
    .filter((line) => !/^\s*--/.test(line))
    .join('\n')
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function onConnection(conn: mysql.PoolConnection): Transaction {
  return {
    dialect: 'mysql',
    query: (sql, params) => run(conn, sql, params),
    async exec(script) {
      for (const statement of splitStatements(script)) await conn.query(statement);
    },
  };
}

const UPTIME_SQL = "SHOW GLOBAL STATUS LIKE 'Uptime'";
/** How long a lost COMMIT's server thread may linger before it is killed (see commitStatus). */
const KILL_AFTER_MS = 1_000;
/** Two readings of the server's start (now − uptime, whole seconds) within this are the same run. */
const SAME_START_TOLERANCE_S = 3;

/** The server's start time in Unix seconds, from the rows of UPTIME_SQL. */
function startedAt(rows: unknown): number {
  const value = (rows as Array<{ Value?: string | number }>)[0]?.Value;
  return Date.now() / 1000 - Number(value);
}

/** Errors after which the connection cannot be trusted to go back to the pool. */
function isFatal(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { fatal?: unknown }).fatal === true;
}

export function createMysqlDb(url: string, options: ServerDbOptions): Db {
  const lockWaitSeconds = Math.max(1, Math.round((options.statementTimeoutMs ?? 10_000) / 1000));
  const pool = mysql.createPool({
    uri: driverUrl(url),
    connectionLimit: options.poolSize,
    connectTimeout: options.connectionTimeoutMs ?? 5_000,
    waitForConnections: true,
    flags: ['-FOUND_ROWS'],
    timezone: 'Z',
    enableKeepAlive: true,
    // The session set-up below is done once per connection: a reset on release would undo it.
    resetOnRelease: false,
  });
  // Set up every new connection before it is handed out (the commands queue in order on it).
  pool.on('connection', (promised) => {
    // mysql2 emits its callback-style connection here, whatever the typings say.
    const conn = promised as unknown as CoreConnection;
    // A connection losing its server must not crash the process; the next query reports it.
    conn.on('error', () => {});
    conn.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED', () => {});
    conn.query(`SET time_zone = '+00:00', innodb_lock_wait_timeout = ${lockWaitSeconds}`, () => {});
    // When the server started, as this connection saw it: thread ids start again from 1 after a
    // restart, so a lost COMMIT's thread id means something only on the same server run.
    conn.query(UPTIME_SQL, (err: unknown, rows: unknown) => {
      if (err === null || err === undefined) serverStarts.set(conn, startedAt(rows));
    });
  });

  // mysql2's pool waits for a free connection without a bound: bound it as pg's pool is bounded, so
  // requests fail fast with a 503 instead of queueing until their deadline. A connection that comes
  // after its waiter gave up goes straight back.
  const acquireTimeoutMs = options.connectionTimeoutMs ?? 5_000;
  const acquire = (): Promise<mysql.PoolConnection> =>
    new Promise((resolve, reject) => {
      let waiting = true;
      const timer = setTimeout(() => {
        waiting = false;
        reject(Object.assign(new Error(`no pooled MySQL connection became free within ${acquireTimeoutMs} ms`), { code: 'POOL_ACQUIRE_TIMEOUT' }));
      }, acquireTimeoutMs);
      pool.getConnection().then(
        (conn) => {
          if (!waiting) return conn.release();
          waiting = false;
          clearTimeout(timer);
          resolve(conn);
        },
        (err: unknown) => {
          if (!waiting) return;
          waiting = false;
          clearTimeout(timer);
          reject(err);
        },
      );
    });

  /** Runs fn on one pooled connection; it goes back to the pool unless fn failed and `keepOnError` says no. */
  const hold = async <T>(fn: (conn: mysql.PoolConnection) => Promise<T>, keepOnError: (err: unknown) => boolean): Promise<T> => {
    const conn = await acquire();
    let broken = false;
    try {
      return await fn(conn);
    } catch (err) {
      broken = !keepOnError(err);
      throw err;
    } finally {
      if (broken) conn.destroy();
      else conn.release();
    }
  };

  const serverStarts = new WeakMap<CoreConnection, number>();
  const db: Db = {
    kind: 'mysql',
    dialect: 'mysql',
    query: (sql, params) => hold((conn) => run(conn, sql, params), (err) => !isFatal(err)),
    transaction: (fn, txOptions) => {
      let rolledBack = true;
      return hold(async (conn) => {
        const core = (conn as unknown as { connection: CoreConnection & { threadId: number | null } }).connection;
        await conn.query('START TRANSACTION');
        let result;
        try {
          result = await fn(onConnection(conn));
        } catch (err) {
          // No COMMIT was sent: whatever happened, the server rolls the transaction back.
          rolledBack = await conn.query('ROLLBACK').then(
            () => true,
            () => false,
          );
          throw err;
        }
        try {
          await conn.query('COMMIT');
        } catch (err) {
          // The server answered with an error: it did not commit. No answer (the connection
          // failed with the COMMIT in flight): see commitStatus.
          if (!isFatal(err)) throw err;
          // Read now, not at checkout: a new connection's set-up answers come before any of ours.
          const status = await commitStatus(db, { thread: core.threadId, serverStartedAt: serverStarts.get(core) }, txOptions);
          if (status === 'committed') return result;
          if (status === 'aborted') throw err;
          throw new OutcomeUnknownError('the COMMIT was sent and no answer came', { cause: err });
        }
        return result;
      }, (err) => rolledBack && !isFatal(err) && !isFatal((err as { cause?: unknown }).cause));
    },
    // A transaction block of one statement: the lost-COMMIT lookup above covers it, and the
    // result is known whenever it committed.
    statement: (sql, params, options) => db.transaction((tx) => tx.query(sql, params), options),
    // A session that failed may still hold session state (a named lock): it is not reused.
    session: (fn) => hold((conn) => fn(onConnection(conn)), () => false),
    exec: (script) => hold((conn) => onConnection(conn).exec(script), (err) => !isFatal(err)),
    poolStats() {
      // mysql2 keeps these counts on the callback pool it wraps.
      const inner = (pool as unknown as { pool: { _allConnections: { length: number }; _freeConnections: { length: number }; _connectionQueue: { length: number } } }).pool;
      return { total: inner._allConnections.length, idle: inner._freeConnections.length, waiting: inner._connectionQueue.length };
    },
    close: () => pool.end(),
  };
  return db;
}

/**
 * What became of a transaction whose COMMIT answer was lost. MySQL cannot be asked by a
 * transaction id, so: first make sure the transaction has ended — its server thread is gone (it
 * ends by itself once it reads that its client left, after any COMMIT it had received; after a
 * restart it is gone; one still there after KILL_AFTER_MS is KILLed, and a COMMIT in progress
 * completes or rolls back whole) — then ask the caller's `committed` check, which reads what the
 * transaction wrote. All on other connections, again and again for up to LOST_ANSWER_CHECK_MS.
 * Without a check, a thread id or an answer in time: unknown.
 */
async function commitStatus(
  db: Queryable,
  session: { thread: number | null; serverStartedAt: number | undefined },
  options: TransactionOptions | undefined,
): Promise<'committed' | 'aborted' | 'unknown'> {
  const committed = options?.committed;
  const { thread, serverStartedAt } = session;
  if (committed === undefined || thread === null || serverStartedAt === undefined) return 'unknown';
  let seenSince: number | undefined;
  const status = await askUntil(async () => {
    const restarted = Math.abs(startedAt((await db.query(UPTIME_SQL)).rows) - serverStartedAt) > SAME_START_TOLERANCE_S;
    // After a restart every thread of the old run is gone (and its id may be someone else's now).
    const { rows } = restarted ? { rows: [{ n: 0 }] } : await db.query<{ n: number }>('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID = ?', [thread]);
    if (Number(rows[0]?.n ?? 0) > 0) {
      // A server thread whose client went away ends by itself as soon as it reads the end of the
      // connection, after the COMMIT it had received, if any. One still there after a while has
      // not seen the end (a half-open connection): end it, so that its transaction is decided.
      seenSince ??= Date.now();
      if (Date.now() - seenSince >= KILL_AFTER_MS) await db.query(`KILL ${Math.trunc(thread)}`).catch(() => undefined); // gone meanwhile: fine
      return undefined; // ask again once it is gone
    }
    return (await committed(db)) ? 'committed' : 'aborted';
  });
  return status ?? 'unknown';
}
