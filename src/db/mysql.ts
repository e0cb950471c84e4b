// MySQL 8.0+ and MariaDB 10.11+ over mysql2 (a pool). Every connection is set up alike before
// its first use: READ COMMITTED (as PostgreSQL: no gap locks on the rows a statement reads, so
// concurrent claims and inserts do not block each other on ranges), UTC for every DATETIME
// (the driver converts with 'Z'), and a bound on lock waits. Affected rows count rows changed,
// not rows matched, so a no-op `ON DUPLICATE KEY UPDATE` reports 0 (a duplicate).
import type { PoolConnection as CoreConnection } from 'mysql2';
import mysql from 'mysql2/promise';
import { OutcomeUnknownError, type Db, type QueryResult, type ServerDbOptions, type Transaction } from './types.js';

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
  });
  // Set up every new connection before it is handed out (the commands queue in order on it).
  pool.on('connection', (promised) => {
    // mysql2 emits its callback-style connection here, whatever the typings say.
    const conn = promised as unknown as CoreConnection;
    // A connection losing its server must not crash the process; the next query reports it.
    conn.on('error', () => {});
    conn.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED', () => {});
    conn.query(`SET time_zone = '+00:00', innodb_lock_wait_timeout = ${lockWaitSeconds}`, () => {});
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

  return {
    kind: 'mysql',
    dialect: 'mysql',
    query: (sql, params) => hold((conn) => run(conn, sql, params), (err) => !isFatal(err)),
    transaction: (fn) => {
      let rolledBack = true;
      return hold(async (conn) => {
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
          // failed with the COMMIT in flight): MySQL has no txid_status to ask afterwards, so
          // the outcome is unknown and is said so.
          if (!isFatal(err)) throw err;
          throw new OutcomeUnknownError('the COMMIT was sent and no answer came', { cause: err });
        }
        return result;
      }, (err) => rolledBack && !isFatal(err) && !isFatal((err as { cause?: unknown }).cause));
    },
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
}
