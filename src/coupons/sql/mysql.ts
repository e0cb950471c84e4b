// The coupon statements in MySQL's dialect (MySQL 8.0.16+, MariaDB 10.11+). SQL both accept: no
// RETURNING, no data-modifying CTE, no INSERT IGNORE (it would turn every error into a warning,
// the over-issue CHECK's included). A duplicate is skipped by `ON DUPLICATE KEY UPDATE` with a
// no-op assignment, which only a primary-key collision reaches and which reports 0 affected rows
// (the connections count changed rows, src/db/mysql.ts). Connections run at READ COMMITTED.
import type { Queryable, Transaction } from '../../db/index.js';
import type { NewCoupon } from '../domain.js';
import { COUPON_COLUMNS, couponColumnsOf, toCoupon, type CampaignStock, type CouponIssuesTable, type CouponRow, type CouponsTable, type CouponStatements, type NewIssue, requestIdsOf } from './tables.js';

const SKIP_DUPLICATE = 'ON DUPLICATE KEY UPDATE user_id = user_id';

/** A row set a concurrent transaction changed between our read and our insert: the batch is retried. */
export class ConcurrentIssueError extends Error {
  constructor(couponId: number) {
    super(`coupon ${couponId}: another transaction inserted some of the same issuances concurrently`);
    this.name = 'ConcurrentIssueError';
  }
}

export const mysqlStatements: CouponStatements = {
  async insertCoupon(db: Queryable, c: NewCoupon) {
    const { insertId } = await db.query(
      `INSERT INTO coupons (name, total_quantity, issue_starts_at, issue_ends_at, strategy,
                            discount_type, discount_value, min_order_amount)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
      [c.name, c.totalQuantity, c.issueStartsAt, c.issueEndsAt, c.strategy, c.discountType, c.discountValue, c.minOrderAmount],
    );
    const created = await mysqlStatements.findCoupon(db, insertId!);
    if (created === undefined) throw new Error(`coupon ${insertId} vanished right after its INSERT`);
    return created;
  },

  async findCoupon(db, id) {
    const { rows } = await db.query<CouponRow>(`SELECT ${COUPON_COLUMNS} FROM coupons WHERE id = ?`, [id]);
    return rows[0] === undefined ? undefined : toCoupon(rows[0]);
  },

  async listCurrentCoupons(db, now, limit) {
    const { rows } = await db.query<CouponRow>(
      `SELECT ${COUPON_COLUMNS} FROM coupons WHERE issue_ends_at > ? ORDER BY issue_starts_at, id LIMIT ?`,
      [now, limit],
    );
    return rows.map(toCoupon);
  },

  async issuedCount(db, couponId) {
    const { rows } = await db.query<Pick<CouponsTable, 'issued_quantity'>>('SELECT issued_quantity FROM coupons WHERE id = ?', [couponId]);
    return rows[0]?.issued_quantity;
  },

  async isSoldOut(db, couponId) {
    const { rows } = await db.query<{ sold_out: number }>('SELECT issued_quantity >= total_quantity AS sold_out FROM coupons WHERE id = ?', [couponId]);
    return rows[0] === undefined || rows[0].sold_out === 1;
  },

  async lockIssuedCount(tx, couponId) {
    const { rows } = await tx.query<Pick<CouponsTable, 'issued_quantity'>>('SELECT issued_quantity FROM coupons WHERE id = ? FOR UPDATE', [couponId]);
    return rows[0]?.issued_quantity;
  },

  async issuedAndVersion(tx, couponId) {
    const { rows } = await tx.query<Pick<CouponsTable, 'issued_quantity' | 'version'>>('SELECT issued_quantity, version FROM coupons WHERE id = ?', [couponId]);
    const row = rows[0];
    return row === undefined ? undefined : { issued: row.issued_quantity, version: row.version };
  },

  async bumpIssued(tx, couponId) {
    await tx.query('UPDATE coupons SET issued_quantity = issued_quantity + 1 WHERE id = ?', [couponId]);
  },

  async claimUnit(tx, couponId) {
    const { rowCount } = await tx.query(
      `UPDATE coupons SET issued_quantity = issued_quantity + 1
        WHERE id = ? AND issued_quantity < total_quantity`,
      [couponId],
    );
    return rowCount === 1;
  },

  async claimUnitAtVersion(tx, couponId, version) {
    const { rowCount } = await tx.query(
      `UPDATE coupons SET issued_quantity = issued_quantity + 1, version = version + 1
        WHERE id = ? AND version = ?`,
      [couponId, version],
    );
    return rowCount === 1;
  },

  async countCoupons(db) {
    const { rows } = await db.query<{ n: number }>('SELECT COUNT(*) AS n FROM coupons');
    return Number(rows[0]?.n ?? 0);
  },

  async campaignsOf(db, strategies, after) {
    if (strategies.length === 0) return [];
    const { rows } = await db.query<Pick<CouponsTable, 'id' | 'strategy'>>(
      'SELECT id, strategy FROM coupons WHERE strategy IN (?) AND issue_ends_at > ? ORDER BY id',
      [strategies, after],
    );
    return rows;
  },

  async campaignStock(db, from, to, limit) {
    const { rows } = await db.query<CampaignStock>(
      `SELECT id, strategy, total_quantity AS total, issued_quantity AS issued FROM coupons
        WHERE issue_starts_at < ? AND issue_ends_at > ?
        ORDER BY id DESC LIMIT ?`,
      [to, from, limit],
    );
    return rows;
  },

  async findIssue(db, couponId, userId) {
    const { rows } = await db.query<Pick<CouponIssuesTable, 'issued_at'>>(
      'SELECT issued_at FROM coupon_issues WHERE coupon_id = ? AND user_id = ?',
      [couponId, userId],
    );
    return rows[0] === undefined ? undefined : { issuedAt: rows[0].issued_at };
  },

  async listUserIssues(db, userId) {
    const { rows } = await db.query<CouponRow & Pick<CouponIssuesTable, 'issued_at'>>(
      `SELECT ${couponColumnsOf('c')}, i.issued_at
         FROM coupon_issues i JOIN coupons c ON c.id = i.coupon_id
        WHERE i.user_id = ?
        ORDER BY i.issued_at DESC
        LIMIT 1000`,
      [userId],
    );
    return rows.map((row) => ({ coupon: toCoupon(row), issuedAt: row.issued_at }));
  },

  async insertIssueIfAbsent(tx, couponId, userId, issuedAt) {
    const { rowCount } = await tx.query(`INSERT INTO coupon_issues (coupon_id, user_id, issued_at) VALUES (?, ?, ?) ${SKIP_DUPLICATE}`, [
      couponId,
      userId,
      issuedAt,
    ]);
    return rowCount === 1;
  },

  async loadIssuedUsers(db, couponId) {
    const { rows } = await db.query<Pick<CouponIssuesTable, 'user_id'>>('SELECT user_id FROM coupon_issues WHERE coupon_id = ?', [couponId]);
    return rows.map((r) => r.user_id);
  },

  async lockRemaining(tx, couponId) {
    const { rows } = await tx.query<{ remaining: number }>(
      'SELECT GREATEST(total_quantity - issued_quantity, 0) AS remaining FROM coupons WHERE id = ? FOR UPDATE',
      [couponId],
    );
    return rows[0] === undefined ? undefined : Number(rows[0].remaining);
  },

  // Without RETURNING, the rows inserted are the batch minus the pairs already there: read those,
  // insert the rest skipping duplicates, and check that the rows the server reports inserted are
  // exactly that many. A mismatch means another transaction inserted some of the same pairs in
  // between (a redelivered entry written twice at once): the caller's transaction rolls back and
  // is retried, rather than a counter moving by a guess.
  async insertNewIssues(tx, couponId, issues) {
    if (issues.length === 0) return [];
    const present = new Set(await mysqlStatements.holdersAmong(tx, couponId, issues.map((i) => i.userId)));
    const fresh = new Map<string, NewIssue>();
    for (const i of issues) if (!present.has(i.userId) && !fresh.has(i.userId)) fresh.set(i.userId, i);
    if (fresh.size === 0) return [];
    const { rowCount } = await tx.query(`INSERT INTO coupon_issues (coupon_id, user_id, issued_at) VALUES ? ${SKIP_DUPLICATE}`, [
      [...fresh.values()].map((i) => [couponId, i.userId, i.issuedAt]),
    ]);
    if (rowCount !== fresh.size) throw new ConcurrentIssueError(couponId);
    return [...fresh.keys()];
  },

  async removeIssues(tx, couponId, userIds) {
    if (userIds.length === 0) return;
    await tx.query('DELETE FROM coupon_issues WHERE coupon_id = ? AND user_id IN (?)', [couponId, userIds]);
  },

  async addIssued(tx, couponId, n) {
    await tx.query('UPDATE coupons SET issued_quantity = issued_quantity + ? WHERE id = ?', [n, couponId]);
  },

  async holdersAmong(db, couponId, userIds) {
    if (userIds.length === 0) return [];
    const { rows } = await db.query<Pick<CouponIssuesTable, 'user_id'>>('SELECT user_id FROM coupon_issues WHERE coupon_id = ? AND user_id IN (?)', [couponId, userIds]);
    return rows.map((r) => r.user_id);
  },

  async soldOutAmong(db, couponIds) {
    if (couponIds.length === 0) return [];
    const { rows } = await db.query<{ id: number }>('SELECT id FROM coupons WHERE id IN (?) AND issued_quantity < total_quantity', [couponIds]);
    const open = new Set(rows.map((r) => r.id));
    return couponIds.filter((id) => !open.has(id));
  },

  // Per coupon (in id order, so two batches lock coupon rows in the same order): insert the new
  // pairs (insertNewIssues says which), then move the counter by exactly that many.
  async insertIssues(tx: Transaction, issues: readonly NewIssue[]) {
    // A session variable outlives the transaction: set for these inserts only, cleared after.
    const ids = requestIdsOf(issues);
    if (ids !== undefined) await tx.query('SET @couponrush_request_ids = ?', [ids]);
    try {
      return await mysqlInsertIssues(tx, issues);
    } finally {
      if (ids !== undefined) await tx.query('SET @couponrush_request_ids = NULL');
    }
  },

  // MySQL cannot disable a trigger: it exists only while capture is on (a per-row trigger costs
  // every insert, measured in docs/performance.md). Request ids, when given, are a JSON object
  // "couponId:userId" → id in @couponrush_request_ids, set and cleared by insertIssues.
  async setEventCapture(db, enabled) {
    if (enabled) {
      await db.query(`CREATE TRIGGER IF NOT EXISTS coupon_issue_events_capture AFTER INSERT ON coupon_issues FOR EACH ROW
        INSERT INTO coupon_issue_events (coupon_id, user_id, request_id)
        SELECT NEW.coupon_id, NEW.user_id, JSON_UNQUOTE(JSON_EXTRACT(@couponrush_request_ids, CONCAT('$."', NEW.coupon_id, ':', NEW.user_id, '"')))
        FROM coupon_events_switch WHERE enabled = 1`);
    } else {
      await db.query('DROP TRIGGER IF EXISTS coupon_issue_events_capture');
    }
    await db.query('UPDATE coupon_events_switch SET enabled = ?', [enabled ? 1 : 0]);
  },

  async eventCapture(db) {
    const { rows } = await db.query<{ enabled: number; pending: number | string }>('SELECT enabled, (SELECT count(*) FROM coupon_issue_events) AS pending FROM coupon_events_switch');
    return { enabled: Number(rows[0]?.enabled ?? 0) === 1, pending: Number(rows[0]?.pending ?? 0) };
  },

  // Two statements: a FOR UPDATE over a join would lock the issuance rows too.
  async claimIssueEvents(tx, limit) {
    const { rows } = await tx.query<{ id: number | string; coupon_id: number; user_id: string; request_id: string | null }>(
      'SELECT id, coupon_id, user_id, request_id FROM coupon_issue_events ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED',
      [limit],
    );
    if (rows.length === 0) return [];
    const pairs = rows.map((r) => [r.coupon_id, r.user_id]);
    const issued = await tx.query<{ coupon_id: number; user_id: string; issued_at: Date }>('SELECT coupon_id, user_id, issued_at FROM coupon_issues WHERE (coupon_id, user_id) IN (?)', [pairs]);
    const at = new Map(issued.rows.map((r) => [`${r.coupon_id}:${r.user_id}`, new Date(r.issued_at)]));
    return rows.map((r) => ({ id: String(r.id), couponId: r.coupon_id, userId: r.user_id, requestId: r.request_id ?? undefined, issuedAt: at.get(`${r.coupon_id}:${r.user_id}`) }));
  },

  async deleteIssueEvents(tx, ids) {
    if (ids.length > 0) await tx.query('DELETE FROM coupon_issue_events WHERE id IN (?)', [ids]);
  },

  async clearIssueEvents(db) {
    const { rowCount } = await db.query('DELETE FROM coupon_issue_events');
    return rowCount ?? 0;
  },
};

/** insertIssues: per coupon in id order, the fresh pairs, then the counter by exactly as many. */
async function mysqlInsertIssues(tx: Transaction, issues: readonly NewIssue[]): Promise<Array<{ couponId: number; userId: string }>> {
  const byCoupon = new Map<number, NewIssue[]>();
  for (const i of issues) {
    const list = byCoupon.get(i.couponId);
    if (list === undefined) byCoupon.set(i.couponId, [i]);
    else list.push(i);
  }
  const inserted: Array<{ couponId: number; userId: string }> = [];
  for (const couponId of [...byCoupon.keys()].sort((a, b) => a - b)) {
    const users = await mysqlStatements.insertNewIssues(tx, couponId, byCoupon.get(couponId)!);
    if (users.length === 0) continue;
    await mysqlStatements.addIssued(tx, couponId, users.length);
    for (const userId of users) inserted.push({ couponId, userId });
  }
  return inserted;
}
