// The database handle's types: one small interface over node-postgres (a pool), PGlite (embedded, one
// connection) and mysql2 (a pool, MySQL 8.0+ / MariaDB 10.11+). Each handle says which SQL
// dialect it speaks; the repositories pick their statements by it (src/coupons/sql/).
export interface QueryResult<R> {
  rows: R[];
  /** Rows returned by a SELECT, or rows changed by an INSERT/UPDATE/DELETE. */
  rowCount: number;
  /** MySQL: the AUTO_INCREMENT id an INSERT generated (PostgreSQL uses RETURNING instead). */
  insertId?: number;
}

/** `postgres` for PostgreSQL and PGlite, `mysql` for MySQL and MariaDB. */
export type Dialect = 'postgres' | 'mysql';

export interface Queryable {
  readonly dialect: Dialect;
  /** Placeholders are the dialect's own: `$1, $2…` on PostgreSQL, `?` on MySQL. */
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

export interface TransactionOptions {
  /**
   * Whether the transaction's writes are in the database, asked on another connection only when
   * its COMMIT's answer was lost and the transaction has certainly ended (MySQL: its connection is
   * gone from the server; PostgreSQL: its server restarted, which hands out again the ids of the
   * transactions the crash lost, so the id alone no longer tells). Without one, such a lost COMMIT
   * answer is OutcomeUnknownError.
   */
  committed?: (db: Queryable) => Promise<boolean>;
}

export interface Db extends Queryable {
  readonly kind: 'postgres' | 'pglite' | 'mysql';
  /**
   * Runs fn in one transaction: COMMIT if it resolves, ROLLBACK if it throws. Resolves only once
   * the COMMIT is known to have succeeded; rejects with OutcomeUnknownError when it cannot be
   * known whether it did, and with any other error when it did not.
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T>, options?: TransactionOptions): Promise<T>;
  /**
   * Runs one statement as a transaction of its own (autocommit): one round trip where a
   * transaction block costs three or more. Resolves with its result once it committed, rejects
   * with the server's error when it did not. When the answer is lost, `committed` is asked once
   * the statement has certainly ended (its server session is gone, ended by itself or made to):
   * true resolves with COMMITTED_UNSEEN (committed, its result never seen), false rejects with the
   * original error, and no answer within LOST_ANSWER_CHECK_MS rejects with OutcomeUnknownError.
   */
  statement<R = Record<string, unknown>>(sql: string, params: readonly unknown[], options: Required<TransactionOptions>): Promise<QueryResult<R> | typeof COMMITTED_UNSEEN>;
  /**
   * Runs fn on one connection held for its whole duration, outside any transaction (session
   * locks, DDL that commits by itself on MySQL).
   */
  session<T>(fn: (conn: Transaction) => Promise<T>): Promise<T>;
  /** Runs a multi-statement script (migrations). */
  exec(sql: string): Promise<void>;
  poolStats(): PoolStats;
  close(): Promise<void>;
}

/** `statement` committed, but its answer (and so its result) was lost: its `committed` check said so. */
export const COMMITTED_UNSEEN: unique symbol = Symbol('committed, result unseen');

/**
 * The COMMIT of a transaction was sent and neither its answer nor, within LOST_ANSWER_CHECK_MS, the
 * server's word on what became of it came back: the transaction may or may not have committed.
 * Every other error of `transaction` means it did not commit.
 */
export class OutcomeUnknownError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'OutcomeUnknownError';
  }
}

/** The URL schemes DATABASE_URL accepts, and the dialect each one speaks. */
export const DATABASE_URL_SCHEMES: Readonly<Record<string, Dialect>> = {
  'postgres:': 'postgres',
  'postgresql:': 'postgres',
  'mysql:': 'mysql',
  'mariadb:': 'mysql',
};

export function dialectOf(url: string): Dialect {
  const dialect = DATABASE_URL_SCHEMES[new URL(url).protocol];
  if (dialect === undefined) throw new Error(`unsupported database URL scheme: ${new URL(url).protocol}`);
  return dialect;
}

export interface ServerDbOptions {
  poolSize: number;
  /** Bound on waiting for a pooled connection, so requests fail fast instead of hanging. */
  connectionTimeoutMs?: number;
  /** Bound on one statement (PostgreSQL) or on one lock wait (MySQL). */
  statementTimeoutMs?: number;
}
