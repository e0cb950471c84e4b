// Applies the numbered SQL files in migrations/ in order, each in its own transaction, once.
// A transaction-level advisory lock makes concurrent start-ups (several instances) safe.
import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Db } from './index.js';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));
const MIGRATION_LOCK_KEY = 0x636f7570; // 'coup'

export interface MigrationResult {
  applied: string[];
  current: number;
}

async function migrationFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => /^\d{6}_[\w-]+\.sql$/.test(f)).sort();
}

/** Migration files not yet applied to this database. */
export async function pendingMigrations(db: Db, dir: string = MIGRATIONS_DIR): Promise<string[]> {
  const { rows } = await db.query<{ exists: boolean }>(`SELECT to_regclass('couponrush_migrations') IS NOT NULL AS exists`);
  const applied = new Set<number>();
  if (rows[0]?.exists === true) {
    for (const r of (await db.query<{ id: number }>('SELECT id FROM couponrush_migrations')).rows) applied.add(r.id);
  }
  return (await migrationFiles(dir)).filter((f) => !applied.has(Number(f.slice(0, 6))));
}

export async function migrate(db: Db, dir: string = MIGRATIONS_DIR): Promise<MigrationResult> {
  const files = await migrationFiles(dir);
  await db.exec(`CREATE TABLE IF NOT EXISTS couponrush_migrations (
    id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
  const applied: string[] = [];
  for (const file of files) {
    const id = Number(file.slice(0, 6));
    const sql = await readFile(new URL(file, `file://${dir}/`), 'utf8');
    const ran = await db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
      const done = await tx.query('SELECT 1 FROM couponrush_migrations WHERE id = $1', [id]);
      if (done.rows.length > 0) return false;
      await tx.exec(sql);
      await tx.query('INSERT INTO couponrush_migrations (id, name) VALUES ($1, $2)', [id, file]);
      return true;
    });
    if (ran) applied.push(file);
  }
  const last = files.at(-1);
  return { applied, current: last === undefined ? 0 : Number(last.slice(0, 6)) };
}
