// The coupon statements in PostgreSQL's dialect (a server, or embedded PGlite).
import { COMMITTED_UNSEEN, type Queryable, type Transaction } from '../../db/index.js';
import type { NewCoupon } from '../domain.js';
import { COUPON_COLUMNS, couponColumnsOf, toCoupon, type CampaignStock, type CouponIssuesTable, type CouponRow, type CouponsTable, type CouponStatements, type NewIssue, requestIdsOf } from './tables.js';

// One statement: the rows and the issued counts move together, and each coupon's counter grows by
// exactly the rows inserted (duplicates are skipped; an over-issue fails the CHECK for the whole
// statement).
const INSERT_ISSUES_SQL = `
  WITH ins AS (
    INSERT INTO coupon_issues (coupon_id, user_id, issued_at)
    SELECT * FROM unnest($1::int[], $2::text[], $3::timestamptz[])
    ON CONFLICT ON CONSTRAINT coupon_issues_one_per_user DO NOTHING
    RETURNING coupon_id, user_id
  ), bumped AS (
    UPDATE coupons c SET issued_quantity = c.issued_quantity + n.rows
      FROM (SELECT coupon_id, count(*)::int AS rows FROM ins GROUP BY coupon_id) n
     WHERE c.id = n.coupon_id
  )
  SELECT coupon_id, user_id FROM ins`;

/** check_violation of the over-issue CHECK (node-postgres and PGlite both report the constraint). */
function isOverIssueRefusal(err: unknown): boolean {
  const e = err as { code?: unknown; constraint?: unknown };
  return e.code === '23514' && e.constraint === 'coupons_not_over_issued';
}

export const postgresStatements: CouponStatements = {
  async insertCoupon(db: Queryable, c: NewCoupon) {
    const { rows } = await db.query<CouponRow>(
      `INSERT INTO coupons (name, total_quantity, issue_starts_at, issue_ends_at, strategy,
                            discount_type, discount_value, min_order_amount)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
       RETURNING ${COUPON_COLUMNS}`,
      [c.name, c.totalQuantity, c.issueStartsAt, c.issueEndsAt, c.strategy, c.discountType, c.discountValue, c.minOrderAmount],
    );
    return toCoupon(rows[0]!);
  },

  async findCoupon(db, id) {
    const { rows } = await db.query<CouponRow>(`SELECT ${COUPON_COLUMNS} FROM coupons WHERE id = $1`, [id]);
    return rows[0] === undefined ? undefined : toCoupon(rows[0]);
  },

  async listCurrentCoupons(db, now, limit) {
    const { rows } = await db.query<CouponRow>(
      `SELECT ${COUPON_COLUMNS} FROM coupons WHERE issue_ends_at > $1 ORDER BY issue_starts_at, id LIMIT $2`,
      [now, limit],
    );
    return rows.map(toCoupon);
  },

  async issuedCount(db, couponId) {
    const { rows } = await db.query<Pick<CouponsTable, 'issued_quantity'>>('SELECT issued_quantity FROM coupons WHERE id = $1', [couponId]);
    return rows[0]?.issued_quantity;
  },

  async isSoldOut(db, couponId) {
    const { rows } = await db.query<{ sold_out: boolean }>('SELECT issued_quantity >= total_quantity AS sold_out FROM coupons WHERE id = $1', [couponId]);
    return rows[0]?.sold_out !== false;
  },

  async lockIssuedCount(tx, couponId) {
    const { rows } = await tx.query<Pick<CouponsTable, 'issued_quantity'>>('SELECT issued_quantity FROM coupons WHERE id = $1 FOR UPDATE', [couponId]);
    return rows[0]?.issued_quantity;
  },

  async issuedAndVersion(tx, couponId) {
    const { rows } = await tx.query<Pick<CouponsTable, 'issued_quantity' | 'version'>>('SELECT issued_quantity, version FROM coupons WHERE id = $1', [couponId]);
    const row = rows[0];
    return row === undefined ? undefined : { issued: row.issued_quantity, version: row.version };
  },

  async bumpIssued(tx, couponId) {
    await tx.query('UPDATE coupons SET issued_quantity = issued_quantity + 1 WHERE id = $1', [couponId]);
  },

  async claimUnit(tx, couponId) {
    const { rowCount } = await tx.query(
      `UPDATE coupons SET issued_quantity = issued_quantity + 1
        WHERE id = $1 AND issued_quantity < total_quantity`,
      [couponId],
    );
    return rowCount === 1;
  },

  async claimUnitAtVersion(tx, couponId, version) {
    const { rowCount } = await tx.query(
      `UPDATE coupons SET issued_quantity = issued_quantity + 1, version = version + 1
        WHERE id = $1 AND version = $2`,
      [couponId, version],
    );
    return rowCount === 1;
  },

  async countCoupons(db) {
    const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM coupons');
    return rows[0]?.n ?? 0;
  },

  async campaignsOf(db, strategies, after) {
    const { rows } = await db.query<Pick<CouponsTable, 'id' | 'strategy'>>(
      'SELECT id, strategy FROM coupons WHERE strategy = ANY($1::text[]) AND issue_ends_at > $2 ORDER BY id',
      [strategies, after],
    );
    return rows;
  },

  async campaignStock(db, from, to, limit) {
    const { rows } = await db.query<CampaignStock>(
      `SELECT id, strategy, total_quantity AS total, issued_quantity AS issued FROM coupons
        WHERE issue_starts_at < $2 AND issue_ends_at > $1
        ORDER BY id DESC LIMIT $3`,
      [from, to, limit],
    );
    return rows;
  },

  async findIssue(db, couponId, userId) {
    const { rows } = await db.query<Pick<CouponIssuesTable, 'issued_at'>>(
      'SELECT issued_at FROM coupon_issues WHERE coupon_id = $1 AND user_id = $2',
      [couponId, userId],
    );
    return rows[0] === undefined ? undefined : { issuedAt: rows[0].issued_at };
  },

  async listUserIssues(db, userId) {
    const { rows } = await db.query<CouponRow & Pick<CouponIssuesTable, 'issued_at'>>(
      `SELECT ${couponColumnsOf('c')}, i.issued_at
         FROM coupon_issues i JOIN coupons c ON c.id = i.coupon_id
        WHERE i.user_id = $1
        ORDER BY i.issued_at DESC
        LIMIT 1000`,
      [userId],
    );
    return rows.map((row) => ({ coupon: toCoupon(row), issuedAt: row.issued_at }));
  },

  async issueAtOnce(db, couponId, userId, issuedAt) {
    // One statement, so one implicit transaction. The row goes in only while the counter was
    // below the stock when the statement began and the user had no row (ON CONFLICT covers one
    // committed meanwhile); the claim moves the counter for exactly that row. A claim that finds
    // the stock gone by the time it holds the row lock breaks coupons_not_over_issued, and the
    // whole statement — the row too — is rolled back: that is the refusal of the last unit's losers.
    let result;
    try {
      result = await db.statement<{ open: boolean | null; held: boolean; claimed: boolean }>(
        `WITH coupon AS (
           SELECT issued_quantity < total_quantity AS open FROM coupons WHERE id = $1
         ), held AS (
           SELECT 1 FROM coupon_issues WHERE coupon_id = $1 AND user_id = $2
         ), inserted AS (
           INSERT INTO coupon_issues (coupon_id, user_id, issued_at)
           SELECT $1, $2, $3 WHERE (SELECT open FROM coupon) AND NOT EXISTS (SELECT 1 FROM held)
           ON CONFLICT ON CONSTRAINT coupon_issues_one_per_user DO NOTHING
           RETURNING 1
         ), claimed AS (
           UPDATE coupons SET issued_quantity = issued_quantity + 1
            WHERE id = $1 AND EXISTS (SELECT 1 FROM inserted)
           RETURNING 1
         )
         SELECT (SELECT open FROM coupon) AS open, EXISTS (SELECT 1 FROM held) AS held, EXISTS (SELECT 1 FROM claimed) AS claimed`,
        [couponId, userId, issuedAt],
        { committed: async (q) => (await postgresStatements.findIssue(q, couponId, userId)) !== undefined },
      );
    } catch (err) {
      if (isOverIssueRefusal(err)) return 'sold-out';
      throw err;
    }
    // Committed with its answer lost: the user's row is there.
    if (result === COMMITTED_UNSEEN) return 'issued';
    const row = result.rows[0];
    if (row?.claimed === true) return 'issued';
    if (row?.held === true) return 'held';
    // Open, no row, nothing inserted: a row of this user committed after the statement began.
    return row?.open === true ? 'held' : 'sold-out';
  },

  async insertIssueIfAbsent(tx, couponId, userId, issuedAt) {
    const { rowCount } = await tx.query(
      `INSERT INTO coupon_issues (coupon_id, user_id, issued_at) VALUES ($1, $2, $3)
       ON CONFLICT ON CONSTRAINT coupon_issues_one_per_user DO NOTHING`,
      [couponId, userId, issuedAt],
    );
    return rowCount === 1;
  },

  async loadIssuedUsers(db, couponId) {
    const { rows } = await db.query<Pick<CouponIssuesTable, 'user_id'>>('SELECT user_id FROM coupon_issues WHERE coupon_id = $1', [couponId]);
    return rows.map((r) => r.user_id);
  },

  async lockRemaining(tx, couponId) {
    const { rows } = await tx.query<{ remaining: number }>(
      'SELECT greatest(total_quantity - issued_quantity, 0) AS remaining FROM coupons WHERE id = $1 FOR UPDATE',
      [couponId],
    );
    return rows[0]?.remaining;
  },

  async insertNewIssues(tx, couponId, issues) {
    const { rows } = await tx.query<Pick<CouponIssuesTable, 'user_id'>>(
      `INSERT INTO coupon_issues (coupon_id, user_id, issued_at)
       SELECT $1, u, t FROM unnest($2::text[], $3::timestamptz[]) AS x(u, t)
       ON CONFLICT ON CONSTRAINT coupon_issues_one_per_user DO NOTHING
       RETURNING user_id`,
      [couponId, issues.map((i) => i.userId), issues.map((i) => i.issuedAt.toISOString())],
    );
    return rows.map((r) => r.user_id);
  },

  async removeIssues(tx, couponId, userIds) {
    await tx.query('DELETE FROM coupon_issues WHERE coupon_id = $1 AND user_id = ANY($2::text[])', [couponId, userIds]);
  },

  async addIssued(tx, couponId, n) {
    await tx.query('UPDATE coupons SET issued_quantity = issued_quantity + $2 WHERE id = $1', [couponId, n]);
  },

  async holdersAmong(db, couponId, userIds) {
    const { rows } = await db.query<Pick<CouponIssuesTable, 'user_id'>>('SELECT user_id FROM coupon_issues WHERE coupon_id = $1 AND user_id = ANY($2::text[])', [
      couponId,
      userIds,
    ]);
    return rows.map((r) => r.user_id);
  },

  async soldOutAmong(db, couponIds) {
    const { rows } = await db.query<{ id: number }>(
      `SELECT x.id FROM unnest($1::int[]) AS x(id) LEFT JOIN coupons c ON c.id = x.id
        WHERE c.id IS NULL OR c.issued_quantity >= c.total_quantity`,
      [couponIds],
    );
    return rows.map((r) => r.id);
  },

  async insertIssues(tx: Transaction, issues: readonly NewIssue[]) {
    const ids = requestIdsOf(issues);
    // Transaction-local: the outbox trigger reads it, and it is gone at COMMIT.
    if (ids !== undefined) await tx.query("SELECT set_config('couponrush.request_ids', $1, true)", [ids]);
    const { rows } = await tx.query<Pick<CouponIssuesTable, 'coupon_id' | 'user_id'>>(INSERT_ISSUES_SQL, [
      issues.map((i) => i.couponId),
      issues.map((i) => i.userId),
      issues.map((i) => i.issuedAt.toISOString()),
    ]);
    return rows.map((r) => ({ couponId: r.coupon_id, userId: r.user_id }));
  },

  // The trigger is enabled only while capture is on (a disabled trigger costs an insert nothing);
  // ALTER TABLE waits for the transactions on coupon_issues, so it runs only on a change.
  async setEventCapture(db, enabled) {
    const { rows } = await db.query<{ on: boolean }>("SELECT tgenabled <> 'D' AS on FROM pg_trigger WHERE tgname = 'coupon_issue_events_capture'");
    if (rows[0]?.on !== enabled) await db.query(`ALTER TABLE coupon_issues ${enabled ? 'ENABLE' : 'DISABLE'} TRIGGER coupon_issue_events_capture`);
    await db.query('UPDATE coupon_events_switch SET enabled = $1', [enabled]);
  },

  async eventCapture(db) {
    const { rows } = await db.query<{ enabled: boolean; pending: string }>('SELECT enabled, (SELECT count(*) FROM coupon_issue_events) AS pending FROM coupon_events_switch');
    return { enabled: rows[0]?.enabled === true, pending: Number(rows[0]?.pending ?? 0) };
  },

  async claimIssueEvents(tx, limit) {
    const { rows } = await tx.query<{ id: string; coupon_id: number; user_id: string; request_id: string | null; issued_at: Date | null }>(
      `SELECT e.id::text AS id, e.coupon_id, e.user_id, e.request_id, i.issued_at
         FROM (SELECT id, coupon_id, user_id, request_id FROM coupon_issue_events ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) e
         LEFT JOIN coupon_issues i ON i.coupon_id = e.coupon_id AND i.user_id = e.user_id
        ORDER BY e.id`,
      [limit],
    );
    return rows.map((r) => ({ id: r.id, couponId: r.coupon_id, userId: r.user_id, requestId: r.request_id ?? undefined, issuedAt: r.issued_at === null ? undefined : new Date(r.issued_at) }));
  },

  async deleteIssueEvents(tx, ids) {
    if (ids.length > 0) await tx.query('DELETE FROM coupon_issue_events WHERE id = ANY($1::bigint[])', [ids]);
  },

  async clearIssueEvents(db) {
    const { rowCount } = await db.query('DELETE FROM coupon_issue_events');
    return rowCount ?? 0;
  },
};
