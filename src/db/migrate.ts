// Applies the numbered SQL files of the database's dialect (migrations/postgres/,
// migrations/mysql/) in order, once each, under a lock that makes concurrent start-ups of several
// instances safe:
// - PostgreSQL: each file in its own transaction under a transaction-level advisory lock, so a
//   failing file leaves nothing behind.
// - MySQL/MariaDB: DDL commits by itself, so there is no transaction to hold a lock; one session
//   holds a named lock (GET_LOCK) for the whole run instead.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Db, Dialect, Queryable, Transaction } from './index.js';

const MIGRATIONS_ROOT = fileURLToPath(new URL('../../migrations/', import.meta.url));
const MIGRATION_LOCK_KEY = 0x636f7570; // 'coup'
const MYSQL_LOCK_NAME = 'couponrush_migrations';
const MYSQL_LOCK_WAIT_SECONDS = 60;

/** The directory of a dialect's migration files. */
export function migrationsDir(dialect: Dialect): string {
  return `${MIGRATIONS_ROOT}${dialect}/`;
}

export interface MigrationResult {
  applied: string[];
  current: number;
}

async function migrationFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => /^\d{6}_[\w-]+\.sql$/.test(f)).sort();
}

const BOOKKEEPING: Record<Dialect, { exists: string; create: string; done: string; record: string }> = {
  postgres: {
    exists: `SELECT to_regclass('couponrush_migrations') IS NOT NULL AS present`,
    create: `CREATE TABLE IF NOT EXISTS couponrush_migrations (
      id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    done: 'SELECT 1 FROM couponrush_migrations WHERE id = $1',
    record: 'INSERT INTO couponrush_migrations (id, name) VALUES ($1, $2)',
  },
  mysql: {
    exists: `SELECT COUNT(*) > 0 AS present FROM information_schema.TABLES
              WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'couponrush_migrations'`,
    create: `CREATE TABLE IF NOT EXISTS couponrush_migrations (
      id INT PRIMARY KEY, name VARCHAR(200) NOT NULL, applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))`,
    done: 'SELECT 1 FROM couponrush_migrations WHERE id = ?',
    record: 'INSERT INTO couponrush_migrations (id, name) VALUES (?, ?)',
  },
};

async function appliedIds(db: Queryable): Promise<Set<number>> {
  const sql = BOOKKEEPING[db.dialect];
  const { rows } = await db.query<{ present: boolean | number }>(sql.exists);
  const applied = new Set<number>();
  if (rows[0]?.present === true || rows[0]?.present === 1) {
    for (const r of (await db.query<{ id: number }>('SELECT id FROM couponrush_migrations')).rows) applied.add(Number(r.id));
  }
  return applied;
}

/** Migration files not yet applied to this database. */
export async function pendingMigrations(db: Db, dir: string = migrationsDir(db.dialect)): Promise<string[]> {
  const applied = await appliedIds(db);
  return (await migrationFiles(dir)).filter((f) => !applied.has(Number(f.slice(0, 6))));
}

/** Applies one file unless it is recorded; true when it ran. */
async function applyOnce(conn: Transaction, dir: string, file: string): Promise<boolean> {
  const sql = BOOKKEEPING[conn.dialect];
  const id = Number(file.slice(0, 6));
  if ((await conn.query(sql.done, [id])).rows.length > 0) return false;
  await conn.exec(await readFile(join(dir, file), 'utf8'));
  await conn.query(sql.record, [id, file]);
  return true;
}

export async function migrate(db: Db, dir: string = migrationsDir(db.dialect)): Promise<MigrationResult> {
  const files = await migrationFiles(dir);
  const applied: string[] = [];
  if (db.dialect === 'postgres') {
    for (const file of files) {
      const ran = await db.transaction(async (tx) => {
        await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
        // Under the lock: two concurrent CREATE TABLE IF NOT EXISTS can both miss the table and
        // one then fails on the catalog's unique index.
        await tx.exec(BOOKKEEPING.postgres.create);
        return applyOnce(tx, dir, file);
      });
      if (ran) applied.push(file);
    }
  } else {
    await db.session(async (conn) => {
      const { rows } = await conn.query<{ got: number | null }>('SELECT GET_LOCK(?, ?) AS got', [MYSQL_LOCK_NAME, MYSQL_LOCK_WAIT_SECONDS]);
      if (rows[0]?.got !== 1) throw new Error(`another instance has held the migration lock for ${MYSQL_LOCK_WAIT_SECONDS} s`);
      try {
        await conn.exec(BOOKKEEPING.mysql.create);
        for (const file of files) if (await applyOnce(conn, dir, file)) applied.push(file);
      } finally {
        await conn.query('SELECT RELEASE_LOCK(?)', [MYSQL_LOCK_NAME]);
      }
    });
  }
  const last = files.at(-1);
  return { applied, current: last === undefined ? 0 : Number(last.slice(0, 6)) };
}
