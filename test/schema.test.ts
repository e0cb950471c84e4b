// The schema's own guarantees, on both databases couponrush runs on: whatever the application
// does, coupon_issues holds one row per (coupon, user), only for coupons that exist, and only for
// well-formed user ids; the over-issue CHECK exempts exactly the strategies that declare they
// over-issue. Also the upgrade: a database migrated to 000001 with rows in it keeps
// every row through the later migrations.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { STRATEGY_NAMES, strategyModules } from '../src/coupons/strategies/index.js';
import { createPgliteDb, createPostgresDb, type Db } from '../src/db/index.js';
import { MIGRATIONS_DIR, migrate } from '../src/db/migrate.js';
import { createTestDatabase, needServer, PG_ADMIN_URL, type TestDatabase } from './helpers.js';

const ALLOWED = 'AZaz09._:-';

async function expectRefused(db: Db, sql: string, params: unknown[], constraint: RegExp): Promise<void> {
  await assert.rejects(db.query(sql, params), (err: Error) => {
    assert.match(err.message, constraint);
    return true;
  });
}

async function insertCoupon(db: Db): Promise<number> {
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO coupons (name, total_quantity, issue_starts_at, issue_ends_at, strategy)
     VALUES ('schema test', 10, now(), now() + interval '1 hour', 'db-atomic') RETURNING id`,
  );
  return rows[0]!.id;
}

const INSERT = 'INSERT INTO coupon_issues (coupon_id, user_id) VALUES ($1, $2)';

function schemaSuite(kind: 'pglite' | 'postgres'): void {
  const dbs: Array<{ db: Db; testDb?: TestDatabase }> = [];
  const open = async (t: TestContext): Promise<Db | undefined> => {
    if (kind === 'pglite') {
      const db = await createPgliteDb(undefined);
      dbs.push({ db });
      return db;
    }
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return undefined;
    const testDb = await createTestDatabase();
    const db = createPostgresDb(testDb.url, { poolSize: 2 });
    dbs.push({ db, testDb });
    return db;
  };
  after(async () => {
    for (const { db, testDb } of dbs) {
      await db.close();
      await testDb?.drop();
    }
  });

  it('accepts 1-64 characters of [A-Za-z0-9._:-] and refuses anything else as user_id', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    await migrate(db);
    const coupon = await insertCoupon(db);
    const good = [ALLOWED, 'a', 'x'.repeat(64), 'user-42', 'ns:user.7_b'];
    for (const userId of good) await db.query(INSERT, [coupon, userId]);
    const bad = ['', 'x'.repeat(65), 'a b', 'é', 'a\n', '\nab', 'a/b', 'user;drop'];
    for (const userId of bad) await expectRefused(db, INSERT, [coupon, userId], /coupon_issues_user_id_check/);
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM coupon_issues');
    assert.equal(rows[0]!.n, good.length);
  });

  it('refuses a second row for the same user and coupon, and a row for a coupon that does not exist', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    await migrate(db);
    const coupon = await insertCoupon(db);
    const other = await insertCoupon(db);
    await db.query(INSERT, [coupon, 'alice']);
    await db.query(INSERT, [other, 'alice']); // the same user on another coupon is fine
    await expectRefused(db, INSERT, [coupon, 'alice'], /coupon_issues_one_per_user/);
    await expectRefused(db, INSERT, [other + 1000, 'bob'], /coupon_issues_coupon_id_fkey/);
    // The inserts' ON CONFLICT clause names the constraint: it must keep that name.
    const skipped = await db.query(`${INSERT} ON CONFLICT ON CONSTRAINT coupon_issues_one_per_user DO NOTHING`, [coupon, 'alice']);
    assert.equal(skipped.rowCount, 0);
  });

  it('refuses an issued count above the stock for every strategy but those declaring mayOverIssue', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    await migrate(db);
    for (const strategy of STRATEGY_NAMES) {
      const { rows } = await db.query<{ id: number }>(
        `INSERT INTO coupons (name, total_quantity, issue_starts_at, issue_ends_at, strategy)
         VALUES ('over-issue', 1, now(), now() + interval '1 hour', $1) RETURNING id`,
        [strategy],
      );
      const over = db.query('UPDATE coupons SET issued_quantity = 2 WHERE id = $1', [rows[0]!.id]);
      if (strategyModules[strategy].mayOverIssue) await over;
      else await assert.rejects(over, /coupons_not_over_issued/, `${strategy} must not be able to over-issue`);
    }
  });

  it('keeps every row when a database at 000001 is migrated to the latest', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    const first = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort()[0]!;
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-migrations-'));
    try {
      copyFileSync(join(MIGRATIONS_DIR, first), join(dir, first));
      assert.equal((await migrate(db, dir)).current, 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const coupon = await insertCoupon(db);
    for (const userId of ['u1', 'u2', 'u3']) await db.query(INSERT, [coupon, userId]);
    const result = await migrate(db);
    assert.ok(result.applied.length >= 1, 'later migrations applied');
    const { rows } = await db.query<{ user_id: string }>('SELECT user_id FROM coupon_issues WHERE coupon_id = $1 ORDER BY user_id', [coupon]);
    assert.deepEqual(
      rows.map((r) => r.user_id),
      ['u1', 'u2', 'u3'],
    );
    await expectRefused(db, INSERT, [coupon, 'u2'], /coupon_issues_one_per_user/);
  });
}

describe('schema on PGlite', () => schemaSuite('pglite'));
describe('schema on PostgreSQL', () => schemaSuite('postgres'));
