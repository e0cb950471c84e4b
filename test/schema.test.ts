// The schema's own guarantees, on every database couponrush runs on (PGlite, PostgreSQL,
// MariaDB): whatever the application does, coupon_issues holds one row per (coupon, user), only
// for well-formed user ids (and, on PostgreSQL, only for coupons that exist); the over-issue CHECK
// exempts exactly the strategies that declare they over-issue. Also the migrations: concurrent
// start-ups apply each file once, and a PostgreSQL database migrated to 000001 with rows in it
// keeps every row through the later migrations.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, copyFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { STRATEGY_NAMES, strategyModules } from '../src/coupons/strategies/index.js';
import { createPgliteDb, type Db, type Queryable } from '../src/db/index.js';
import { findCoupon, insertCoupon as insertCampaign } from '../src/coupons/repository.js';
import { migrate, migrationsDir } from '../src/db/migrate.js';
import { createTestDatabase, DB_KINDS, needDatabase, openTestDb, SERVER_KINDS, type DbKind, type TestDatabase } from './helpers.js';

const ALLOWED = 'AZaz09._:-';

async function expectRefused(db: Db, sql: string, params: unknown[], constraint: RegExp): Promise<void> {
  await assert.rejects(db.query(sql, params), (err: Error) => {
    assert.match(err.message, constraint);
    return true;
  });
}

/** The few statements this suite writes itself, per dialect (it checks the schema, not the repository). */
const SQL = {
  postgres: {
    coupon: `INSERT INTO coupons (name, total_quantity, issue_starts_at, issue_ends_at, strategy)
             VALUES ('schema test', $1, now(), now() + interval '1 hour', $2) RETURNING id`,
    issue: 'INSERT INTO coupon_issues (coupon_id, user_id) VALUES ($1, $2)',
    setIssued: 'UPDATE coupons SET issued_quantity = $1 WHERE id = $2',
    users: 'SELECT user_id FROM coupon_issues WHERE coupon_id = $1 ORDER BY user_id',
    count: 'SELECT count(*)::int AS n FROM coupon_issues',
    // What the inserts use to skip a duplicate; it names the constraint, which must keep its name.
    skipDuplicate: ' ON CONFLICT ON CONSTRAINT coupon_issues_one_per_user DO NOTHING',
    duplicate: /coupon_issues_one_per_user/,
  },
  mysql: {
    coupon: `INSERT INTO coupons (name, total_quantity, issue_starts_at, issue_ends_at, strategy)
             VALUES ('schema test', ?, NOW(3), NOW(3) + INTERVAL 1 HOUR, ?)`,
    issue: 'INSERT INTO coupon_issues (coupon_id, user_id) VALUES (?, ?)',
    setIssued: 'UPDATE coupons SET issued_quantity = ? WHERE id = ?',
    users: 'SELECT user_id FROM coupon_issues WHERE coupon_id = ? ORDER BY user_id',
    count: 'SELECT COUNT(*) AS n FROM coupon_issues',
    // The repository's skip: a no-op assignment that only a primary-key collision reaches and that
    // reports 0 affected rows (the connections count changed rows, not matched ones).
    skipDuplicate: ' ON DUPLICATE KEY UPDATE user_id = user_id',
    duplicate: /Duplicate entry .* for key 'PRIMARY'/,
  },
} as const;

async function insertCoupon(db: Db, strategy = 'db-atomic', total = 10): Promise<number> {
  const res = await db.query<{ id: number }>(SQL[db.dialect].coupon, [total, strategy]);
  return res.insertId ?? res.rows[0]!.id;
}

function schemaSuite(kind: DbKind): void {
  const dbs: Db[] = [];
  const testDbs: TestDatabase[] = [];
  /** A fresh database; `again` opens another handle (another pool: another instance) on the last one. */
  const open = async (t: TestContext, again = false): Promise<Db | undefined> => {
    if (kind === 'pglite') {
      const db = again ? dbs.at(-1)! : await createPgliteDb(undefined);
      dbs.push(db);
      return db;
    }
    if (!(await needDatabase(t, kind))) return undefined;
    if (!again) testDbs.push(await createTestDatabase(SERVER_KINDS[kind].dialect));
    const db = openTestDb(kind, testDbs.at(-1)!.url, 2);
    dbs.push(db);
    return db;
  };
  after(async () => {
    for (const db of new Set(dbs)) await db.close();
    for (const testDb of testDbs) await testDb.drop();
  });

  it('accepts 1-64 characters of [A-Za-z0-9._:-] and refuses anything else as user_id', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    await migrate(db);
    const sql = SQL[db.dialect];
    const coupon = await insertCoupon(db);
    const good = [ALLOWED, 'a', 'x'.repeat(64), 'user-42', 'ns:user.7_b'];
    for (const userId of good) await db.query(sql.issue, [coupon, userId]);
    const bad = ['', 'x'.repeat(65), 'a b', 'é', 'a\n', '\nab', 'a/b', 'user;drop'];
    for (const userId of bad) await expectRefused(db, sql.issue, [coupon, userId], /coupon_issues_user_id_check|Data too long for column 'user_id'|Incorrect string value: .* for column .*user_id/);
    const { rows } = await db.query<{ n: number }>(sql.count);
    assert.equal(Number(rows[0]!.n), good.length);
  });

  it('refuses a second row for the same user and coupon, and tells case apart', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    await migrate(db);
    const sql = SQL[db.dialect];
    const coupon = await insertCoupon(db);
    const other = await insertCoupon(db);
    await db.query(sql.issue, [coupon, 'alice']);
    await db.query(sql.issue, [other, 'alice']); // the same user on another coupon is fine
    await db.query(sql.issue, [coupon, 'Alice']); // another user: ids are case-sensitive everywhere
    await expectRefused(db, sql.issue, [coupon, 'alice'], sql.duplicate);
    const skipped = await db.query(`${sql.issue}${sql.skipDuplicate}`, [coupon, 'alice']);
    assert.equal(skipped.rowCount, 0, 'a skipped duplicate reports no row');
    const inserted = await db.query(`${sql.issue}${sql.skipDuplicate}`, [coupon, 'carol']);
    assert.equal(inserted.rowCount, 1, 'a new row reports one');
    // The skip must not hide other errors: a malformed id still fails.
    await expectRefused(db, `${sql.issue}${sql.skipDuplicate}`, [coupon, 'a b'], /coupon_issues_user_id_check/);
  });

  if (kind !== 'mysql') {
    // MySQL has no foreign key here, on purpose: migrations/mysql/000001_init.sql says why.
    it('refuses a row for a coupon that does not exist', async (t) => {
      const db = await open(t);
      if (db === undefined) return;
      await migrate(db);
      const coupon = await insertCoupon(db);
      await expectRefused(db, SQL[db.dialect].issue, [coupon + 1000, 'bob'], /coupon_issues_coupon_id_fkey/);
    });
  }

  it('refuses an issued count above the stock for every strategy but those declaring mayOverIssue', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    await migrate(db);
    for (const strategy of STRATEGY_NAMES) {
      const id = await insertCoupon(db, strategy, 1);
      const over = db.query(SQL[db.dialect].setIssued, [2, id]);
      if (strategyModules[strategy].mayOverIssue) await over;
      else await assert.rejects(over, /coupons_not_over_issued/, `${strategy} must not be able to over-issue`);
    }
  });

  it('keeps campaign times exact, in UTC, whatever the server\'s time zone', async (t) => {
    const db = await open(t);
    if (db === undefined) return;
    await migrate(db);
    const starts = new Date('2026-03-29T00:59:59.123Z'); // around a European DST change
    const ends = new Date('2026-10-25T01:00:00.456Z');
    const created = await insertCampaign(db, {
      name: '시간 test',
      totalQuantity: 3,
      issueStartsAt: starts,
      issueEndsAt: ends,
      strategy: 'db-atomic',
      discountType: null,
      discountValue: null,
      minOrderAmount: null,
    });
    const read = await findCoupon(db, created.id);
    assert.equal(read?.issueStartsAt.toISOString(), starts.toISOString());
    assert.equal(read?.issueEndsAt.toISOString(), ends.toISOString());
    assert.equal(read?.name, '시간 test');
  });

  if (kind === 'mysql') {
    it('sets every pooled connection up once and keeps it so: UTC, READ COMMITTED', async (t) => {
      const db = await open(t);
      if (db === undefined) return;
      // More uses than connections, some in transactions: each connection is handed out again.
      // SHOW VARIABLES: MariaDB calls the isolation tx_isolation, MySQL 8 transaction_isolation.
      const read = async (q: Queryable): Promise<Record<string, string>> => {
        const { rows } = await q.query<{ Variable_name: string; Value: string }>(
          "SHOW SESSION VARIABLES WHERE Variable_name IN ('time_zone', 'tx_isolation', 'transaction_isolation')",
        );
        return Object.fromEntries(rows.map((r) => [r.Variable_name === 'time_zone' ? 'tz' : 'iso', r.Value]));
      };
      for (let i = 0; i < 6; i++) {
        const seen: Record<string, string> = i % 2 === 0 ? await read(db) : await db.transaction((tx) => read(tx));
        assert.deepEqual(seen, { tz: '+00:00', iso: 'READ-COMMITTED' }, `use ${i}`);
      }
    });
  }

  it('applies each migration once when several instances start at the same time', async (t) => {
    const first = await open(t);
    if (first === undefined) return;
    const second = await open(t, true);
    if (second === undefined) return;
    const results = await Promise.all([migrate(first), migrate(second), migrate(first)]);
    const files = readdirSync(migrationsDir(first.dialect)).filter((f) => f.endsWith('.sql'));
    assert.deepEqual(results.flatMap((r) => r.applied).sort(), files.sort(), 'every file applied exactly once');
    assert.deepEqual((await migrate(first)).applied, [], 'nothing left to apply');
  });

  if (kind !== 'mysql') {
    // MySQL's schema starts at the PostgreSQL schema's latest version: nothing to upgrade yet.
    it('keeps every row when a database at 000001 is migrated to the latest', async (t) => {
      const db = await open(t);
      if (db === undefined) return;
      const sql = SQL[db.dialect];
      const all = migrationsDir(db.dialect);
      const first = readdirSync(all).filter((f) => f.endsWith('.sql')).sort()[0]!;
      const dir = mkdtempSync(join(tmpdir(), 'couponrush-migrations-'));
      try {
        copyFileSync(join(all, first), join(dir, first));
        assert.equal((await migrate(db, dir)).current, 1);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      const coupon = await insertCoupon(db);
      for (const userId of ['u1', 'u2', 'u3']) await db.query(sql.issue, [coupon, userId]);
      const result = await migrate(db);
      assert.ok(result.applied.length >= 1, 'later migrations applied');
      const { rows } = await db.query<{ user_id: string }>(sql.users, [coupon]);
      assert.deepEqual(
        rows.map((r) => r.user_id),
        ['u1', 'u2', 'u3'],
      );
      await expectRefused(db, sql.issue, [coupon, 'u2'], sql.duplicate);
    });
  }
}

for (const kind of DB_KINDS) describe(`schema on ${kind}`, () => schemaSuite(kind));
