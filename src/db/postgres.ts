// PostgreSQL over node-postgres (a pool), and embedded PostgreSQL (PGlite, one connection).
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';
import { askUntil } from '../util/ask-until.js';
import { COMMITTED_UNSEEN, OutcomeUnknownError, type Db, type Queryable, type QueryResult, type ServerDbOptions, type Transaction, type TransactionOptions } from './types.js';

export function createPostgresDb(url: string, options: ServerDbOptions): Db {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    statement_timeout: options.statementTimeoutMs ?? 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client losing its server must not crash the process; the next query reports it.
  pool.on('error', () => {});
  const backends = new WeakMap<pg.PoolClient, Backend>();
  const query = async <R>(sql: string, params?: readonly unknown[]) => {
    const res = await pool.query(sql, params as unknown[] | undefined);
    return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 };
  };
  /** The pool as a plain Queryable: where a lost answer is looked up, on any other connection. */
  const elsewhere: Queryable = { dialect: 'postgres', query };
  return {
    kind: 'postgres',
    dialect: 'postgres',
    query,
    async transaction<T>(fn: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T> {
      const client = await pool.connect();
      // pg-pool listens for a client's 'error' only while it is idle in the pool. A checked-out
      // client whose server goes away emits 'error' (after failing the query in flight, if any):
      // without a listener that is an uncaught exception that ends the process.
      const ignore = () => {};
      client.on('error', ignore);
      let broken = false;
      const release = () => {
        client.removeListener('error', ignore);
        client.release(broken);
      };
      let result: T;
      let begun: Begun | undefined;
      try {
        // The transaction's id and the server's start, known before COMMIT goes out: if the
        // COMMIT's answer is lost, txid_status(xid) tells what became of it.
        const answers = (await client.query(BEGIN_SQL)) as unknown as Array<pg.QueryResult<Begun>>;
        begun = answers[1]?.rows[0];
        result = await fn(onClient(client));
      } catch (err) {
        // No COMMIT was sent: whatever happened, the server rolls the transaction back.
        try {
          await client.query('ROLLBACK');
        } catch {
          broken = true; // connection is gone; do not hand it back to the pool
        }
        release();
        throw err;
      }
      try {
        await client.query('COMMIT');
      } catch (err) {
        broken = true;
        release();
        const status = begun === undefined ? 'unknown' : await commitStatus(elsewhere, begun, options?.committed);
        if (status === 'committed') return result;
        if (status === 'aborted') throw err;
        throw new OutcomeUnknownError('the COMMIT was sent and no answer came', { cause: err });
      }
      release();
      return result;
    },
    async statement<R>(sql: string, params: readonly unknown[], { committed }: Required<TransactionOptions>) {
      const client = await pool.connect();
      const ignore = () => {};
      client.on('error', ignore);
      let broken = false;
      try {
        // Who runs it on the server, known before it is sent: if its answer is lost, that session
        // is what must be gone before the outcome can be read.
        const session = backends.get(client) ?? (await backendOf(client));
        backends.set(client, session);
        // A connection that died while idle in the pool cannot send it: nothing to look up.
        if (!isWritable(client)) throw new Error('Connection terminated while idle in the pool: the statement was not sent');
        try {
          const res = await client.query(sql, params as unknown[]);
          return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 };
        } catch (err) {
          if (isStatementError(err)) throw err; // the server refused it: nothing committed
          broken = true;
          const status = await statementStatus(elsewhere, session, committed);
          if (status === 'committed') return COMMITTED_UNSEEN;
          if (status === 'aborted') throw err;
          throw new OutcomeUnknownError('the statement was sent and no answer came', { cause: err });
        }
      } catch (err) {
        if (!isStatementError(err)) broken = true;
        throw err;
      } finally {
        client.removeListener('error', ignore);
        client.release(broken);
      }
    },
    async session(fn) {
      const client = await pool.connect();
      const ignore = () => {};
      client.on('error', ignore);
      let broken = false;
      try {
        return await fn(onClient(client));
      } catch (err) {
        broken = true; // it may hold session state (a lock) that must not go back to the pool
        throw err;
      } finally {
        client.removeListener('error', ignore);
        client.release(broken);
      }
    },
    async exec(sql) {
      await pool.query(sql);
    },
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    close: () => pool.end(),
  };
}

function onClient(client: pg.PoolClient): Transaction {
  return {
    dialect: 'postgres',
    async query<R>(sql: string, params?: readonly unknown[]) {
      const res = await client.query(sql, params as unknown[] | undefined);
      return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 };
    },
    async exec(sql) {
      await client.query(sql);
    },
  };
}

const BEGIN_SQL = 'BEGIN; SELECT txid_current()::text AS xid, pg_postmaster_start_time()::text AS started';

/** What a transaction learnt when it began: its id, and when the server it runs on started. */
interface Begun {
  readonly xid: string;
  readonly started: string;
}

/**
 * What became of the transaction whose COMMIT answer was lost: asks the server (on another
 * connection, as soon as one works) until it knows, or LOST_ANSWER_CHECK_MS has passed.
 *
 * On the same server life, txid_status(xid) is the transaction's own. After a restart it may not
 * be: an id whose transaction never reached the WAL is handed out again (a crash rewinds the
 * counter to the last logged id), so "committed" may be a newer transaction's. A transaction that
 * did commit was logged, so its id is never reused: "aborted" and "in the future" are still its
 * own. For "committed" or "in progress" after a restart, the caller's `committed` check reads what
 * the transaction wrote (it has certainly ended: its server did); without one, it is unknown.
 */
async function commitStatus(db: Queryable, begun: Begun, committed: TransactionOptions['committed']): Promise<'committed' | 'aborted' | 'unknown'> {
  const status = await askUntil(async () => {
    let row: { status: string | null; started: string } | undefined;
    try {
      row = (await db.query<{ status: string | null; started: string }>('SELECT txid_status($1::bigint) AS status, pg_postmaster_start_time()::text AS started', [begun.xid])).rows[0];
    } catch (err) {
      // The restarted server has not handed the id out again: its transaction was never logged.
      if (/is in the future/.test((err as Error).message)) return 'aborted';
      throw err;
    }
    if (row === undefined) return undefined;
    if (row.status === 'aborted') return 'aborted';
    if (row.started === begun.started) return row.status === 'committed' ? 'committed' : undefined; // 'in progress': ask again
    if (committed === undefined) return 'unknown';
    return (await committed(db)) ? 'committed' : 'aborted';
  });
  return status ?? 'unknown';
}

/** A server session: its process id, and when it started (a pid alone may be reused later). */
interface Backend {
  readonly pid: number;
  readonly startedAt: string;
}

async function backendOf(client: pg.PoolClient): Promise<Backend> {
  const { rows } = await client.query<{ pid: number; started: string }>(
    'SELECT pid, backend_start::text AS started FROM pg_stat_activity WHERE pid = pg_backend_pid()',
  );
  const row = rows[0];
  if (row === undefined) throw new Error('pg_stat_activity does not show this session');
  return { pid: row.pid, startedAt: row.started };
}

/** Whether the client's socket can still carry a query (node-postgres keeps it on `connection.stream`). */
function isWritable(client: pg.PoolClient): boolean {
  const stream = (client as unknown as { connection?: { stream?: { destroyed?: boolean; writable?: boolean } } }).connection?.stream;
  return stream === undefined || (stream.destroyed !== true && stream.writable !== false);
}

/**
 * An ERROR the server sent for the statement: it was rolled back. A FATAL (the session being
 * terminated) may come after the commit, and a lost connection says nothing.
 */
function isStatementError(err: unknown): boolean {
  return err instanceof pg.DatabaseError && err.severity === 'ERROR';
}

/** A session still there this long after its answer was lost is terminated, so that its statement ends. */
const TERMINATE_AFTER_MS = 1_000;

/**
 * What became of an autocommit statement whose answer was lost: once its session is gone from
 * pg_stat_activity (ended by itself, by a restart, or terminated after TERMINATE_AFTER_MS — a
 * statement is committed or rolled back whole), the caller's `committed` check reads what it
 * wrote. On other connections, as soon as one works, for up to LOST_ANSWER_CHECK_MS.
 */
async function statementStatus(db: Queryable, session: Backend, committed: (db: Queryable) => Promise<boolean>): Promise<'committed' | 'aborted' | 'unknown'> {
  let seenSince: number | undefined;
  const status = await askUntil(async () => {
    const { rows } = await db.query<{ alive: boolean }>(
      'SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start::text = $2) AS alive',
      [session.pid, session.startedAt],
    );
    if (rows[0]?.alive === true) {
      seenSince ??= Date.now();
      if (Date.now() - seenSince >= TERMINATE_AFTER_MS) await db.query('SELECT pg_terminate_backend($1)', [session.pid]);
      return undefined;
    }
    return (await committed(db)) ? 'committed' : 'aborted';
  });
  return status ?? 'unknown';
}

/** Embedded PostgreSQL (WASM). `dataDir` undefined → in memory (tests). */
export async function createPgliteDb(dataDir: string | undefined): Promise<Db> {
  if (dataDir !== undefined) mkdirSync(dataDir, { recursive: true });
  const lite = await PGlite.create(dataDir);
  let waiting = 0;
  const wrap = async <R>(run: () => Promise<{ rows: unknown[]; affectedRows?: number }>): Promise<QueryResult<R>> => {
    const res = await run();
    return { rows: res.rows as R[], rowCount: res.affectedRows ?? res.rows.length };
  };
  return {
    kind: 'pglite',
    dialect: 'postgres',
    query: (sql, params) => wrap(() => lite.query(sql, params as unknown[] | undefined)),
    async transaction(fn) {
      waiting++;
      return lite.transaction(async (t) => {
        waiting--;
        return fn({
          dialect: 'postgres',
          query: (sql, params) => wrap(() => t.query(sql, params as unknown[] | undefined)),
          exec: async (sql) => {
            await t.exec(sql);
          },
        });
      });
    },
    // One connection: every call is already on the same session.
    session: (fn) =>
      fn({
        dialect: 'postgres',
        query: (sql, params) => wrap(() => lite.query(sql, params as unknown[] | undefined)),
        exec: async (sql) => {
          await lite.exec(sql);
        },
      }),
    async exec(sql) {
      await lite.exec(sql);
    },
    // In process: an answer cannot be lost on the way.
    statement: (sql, params) => wrap(() => lite.query(sql, params as unknown[])),
    // PGlite is one connection; "waiting" counts transactions queued for it.
    poolStats: () => ({ total: 1, idle: waiting === 0 ? 1 : 0, waiting }),
    close: () => lite.close(),
  };
}
