// The database handle: one small interface over node-postgres (a pool) and PGlite (embedded,
// one connection). Repositories and strategies take a `Queryable` first and write plain SQL.
import { mkdirSync } from 'node:fs';
import pg from 'pg';
import { PGlite } from '@electric-sql/pglite';

export interface QueryResult<R> {
  rows: R[];
  rowCount: number;
}

export interface Queryable {
  query<R = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<QueryResult<R>>;
}

/** Inside a transaction: queries plus multi-statement scripts (migrations). */
export interface Transaction extends Queryable {
  exec(sql: string): Promise<void>;
}

export interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
}

export interface Db extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /** Runs fn in one transaction: COMMIT if it resolves, ROLLBACK if it throws. */
  transaction<T>(fn: (tx: Transaction) => Promise<T>): Promise<T>;
  /** Runs a multi-statement script (migrations). */
  exec(sql: string): Promise<void>;
  poolStats(): PoolStats;
  close(): Promise<void>;
}

/** PostgreSQL error codes the domain reacts to. */
export const PG_UNIQUE_VIOLATION = '23505';
export const PG_CHECK_VIOLATION = '23514';
export const PG_SERIALIZATION_FAILURE = '40001';

export function pgErrorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export interface PostgresOptions {
  poolSize: number;
  /** Bound on waiting for a pooled connection, so requests fail fast instead of hanging. */
  connectionTimeoutMs?: number;
  statementTimeoutMs?: number;
}

export function createPostgresDb(url: string, options: PostgresOptions): Db {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolSize,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 5_000,
    statement_timeout: options.statementTimeoutMs ?? 10_000,
    idleTimeoutMillis: 30_000,
  });
  // An idle client losing its server must not crash the process; the next query reports it.
  pool.on('error', () => {});
  const query = async <R>(sql: string, params?: readonly unknown[]) => {
    const res = await pool.query(sql, params as unknown[] | undefined);
    return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 };
  };
  return {
    kind: 'postgres',
    query,
    async transaction(fn) {
      const client = await pool.connect();
      const tx: Transaction = {
        async query<R>(sql: string, params?: readonly unknown[]) {
          const res = await client.query(sql, params as unknown[] | undefined);
          return { rows: res.rows as R[], rowCount: res.rowCount ?? 0 };
        },
        async exec(sql) {
          await client.query(sql);
        },
      };
      let broken = false;
      try {
        await client.query('BEGIN');
        const result = await fn(tx);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        try {
          await client.query('ROLLBACK');
        } catch {
          broken = true; // connection is gone; do not hand it back to the pool
        }
        throw err;
      } finally {
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
    query: (sql, params) => wrap(() => lite.query(sql, params as unknown[] | undefined)),
    async transaction(fn) {
      waiting++;
      return lite.transaction(async (t) => {
        waiting--;
        return fn({
          query: (sql, params) => wrap(() => t.query(sql, params as unknown[] | undefined)),
          exec: async (sql) => {
            await t.exec(sql);
          },
        });
      });
    },
    async exec(sql) {
      await lite.exec(sql);
    },
    // PGlite is one connection; "waiting" counts transactions queued for it.
    poolStats: () => ({ total: 1, idle: waiting === 0 ? 1 : 0, waiting }),
    close: () => lite.close(),
  };
}
