// Coupon persistence: plain functions taking a Queryable (db or transaction) first, plain SQL —
// every statement on `coupons` and `coupon_issues`, including the ones that decide correctness
// (the row lock, the conditional and compare-and-set updates, ON CONFLICT), which the strategies
// call by name. A column change touches this module only.
import type { Queryable } from '../db/index.js';
import type { CouponWithStock, DiscountType, NewCoupon } from './domain.js';

/** Columns of `coupons`, as the driver returns them. */
export interface CouponsTable {
  id: number;
  name: string;
  total_quantity: number;
  issued_quantity: number;
  issue_starts_at: Date;
  issue_ends_at: Date;
  strategy: string;
  discount_type: DiscountType | null;
  discount_value: number | null;
  min_order_amount: number | null;
  version: number;
  created_at: Date;
}

/** Columns of `coupon_issues`; the primary key is (coupon_id, user_id). */
export interface CouponIssuesTable {
  coupon_id: number;
  user_id: string;
  issued_at: Date;
}

type CouponRow = Omit<CouponsTable, 'version' | 'created_at'>;

const COUPON_COLUMNS = `id, name, total_quantity, issued_quantity, issue_starts_at, issue_ends_at, strategy,
  discount_type, discount_value, min_order_amount`;

function toCoupon(row: CouponRow): CouponWithStock {
  return {
    id: row.id,
    name: row.name,
    totalQuantity: row.total_quantity,
    issuedCount: row.issued_quantity,
    issueStartsAt: row.issue_starts_at,
    issueEndsAt: row.issue_ends_at,
    strategy: row.strategy,
    discountType: row.discount_type,
    discountValue: row.discount_value,
    minOrderAmount: row.min_order_amount,
  };
}

export async function insertCoupon(db: Queryable, c: NewCoupon): Promise<CouponWithStock> {
  const { rows } = await db.query<CouponRow>(
    `INSERT INTO coupons (name, total_quantity, issue_starts_at, issue_ends_at, strategy,
                          discount_type, discount_value, min_order_amount)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     RETURNING ${COUPON_COLUMNS}`,
    [c.name, c.totalQuantity, c.issueStartsAt, c.issueEndsAt, c.strategy, c.discountType, c.discountValue, c.minOrderAmount],
  );
  return toCoupon(rows[0]!);
}

export async function findCoupon(db: Queryable, id: number): Promise<CouponWithStock | undefined> {
  const { rows } = await db.query<CouponRow>(`SELECT ${COUPON_COLUMNS} FROM coupons WHERE id = $1`, [id]);
  return rows[0] === undefined ? undefined : toCoupon(rows[0]);
}

/** Campaigns whose window has not ended yet (open now or upcoming), soonest first. */
export async function listCurrentCoupons(db: Queryable, now: Date, limit = 100): Promise<CouponWithStock[]> {
  const { rows } = await db.query<CouponRow>(
    `SELECT ${COUPON_COLUMNS} FROM coupons WHERE issue_ends_at > $1 ORDER BY issue_starts_at, id LIMIT $2`,
    [now, limit],
  );
  return rows.map(toCoupon);
}

/** The committed issued count, or undefined for an unknown coupon. */
export async function issuedCount(db: Queryable, couponId: number): Promise<number | undefined> {
  const { rows } = await db.query<Pick<CouponsTable, 'issued_quantity'>>('SELECT issued_quantity FROM coupons WHERE id = $1', [couponId]);
  return rows[0]?.issued_quantity;
}

/** True when the counter reached the stock, or the coupon does not exist. */
export async function isSoldOut(db: Queryable, couponId: number): Promise<boolean> {
  const { rows } = await db.query<{ sold_out: boolean }>('SELECT issued_quantity >= total_quantity AS sold_out FROM coupons WHERE id = $1', [couponId]);
  return rows[0]?.sold_out !== false;
}

/** SELECT … FOR UPDATE: the coupon row stays locked until the transaction ends. Its issued count. */
export async function lockIssuedCount(tx: Queryable, couponId: number): Promise<number | undefined> {
  const { rows } = await tx.query<Pick<CouponsTable, 'issued_quantity'>>('SELECT issued_quantity FROM coupons WHERE id = $1 FOR UPDATE', [couponId]);
  return rows[0]?.issued_quantity;
}

/** Issued count and version, for a compare-and-set (db-optimistic). */
export async function issuedAndVersion(tx: Queryable, couponId: number): Promise<{ issued: number; version: number } | undefined> {
  const { rows } = await tx.query<Pick<CouponsTable, 'issued_quantity' | 'version'>>('SELECT issued_quantity, version FROM coupons WHERE id = $1', [couponId]);
  const row = rows[0];
  return row === undefined ? undefined : { issued: row.issued_quantity, version: row.version };
}

/** Adds one to the counter: for strategies that decided the stock themselves (the CHECK still stands behind them). */
export async function bumpIssued(tx: Queryable, couponId: number): Promise<void> {
  await tx.query('UPDATE coupons SET issued_quantity = issued_quantity + 1 WHERE id = $1', [couponId]);
}

/** Claims one unit only while below the stock (the conditional UPDATE decides). True when claimed. */
export async function claimUnit(tx: Queryable, couponId: number): Promise<boolean> {
  const { rowCount } = await tx.query(
    `UPDATE coupons SET issued_quantity = issued_quantity + 1
      WHERE id = $1 AND issued_quantity < total_quantity`,
    [couponId],
  );
  return rowCount === 1;
}

/** Claims one unit only if the version is still `version` (compare-and-set). True when it won. */
export async function claimUnitAtVersion(tx: Queryable, couponId: number, version: number): Promise<boolean> {
  const { rowCount } = await tx.query(
    `UPDATE coupons SET issued_quantity = issued_quantity + 1, version = version + 1
      WHERE id = $1 AND version = $2`,
    [couponId, version],
  );
  return rowCount === 1;
}

export async function countCoupons(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM coupons');
  return rows[0]?.n ?? 0;
}

/** Campaigns of these strategies whose window ends after `after`, by id. */
export async function campaignsOf(db: Queryable, strategies: readonly string[], after: Date): Promise<Array<{ id: number; strategy: string }>> {
  const { rows } = await db.query<Pick<CouponsTable, 'id' | 'strategy'>>(
    'SELECT id, strategy FROM coupons WHERE strategy = ANY($1::text[]) AND issue_ends_at > $2 ORDER BY id',
    [strategies, after],
  );
  return rows;
}

/** Stock figures of the campaigns whose window overlaps [from, to), newest first (the stock gauges). */
export async function campaignStock(db: Queryable, from: Date, to: Date, limit: number): Promise<Array<{ id: number; strategy: string; total: number; issued: number }>> {
  const { rows } = await db.query<{ id: number; strategy: string; total: number; issued: number }>(
    `SELECT id, strategy, total_quantity AS total, issued_quantity AS issued FROM coupons
      WHERE issue_starts_at < $2 AND issue_ends_at > $1
      ORDER BY id DESC LIMIT $3`,
    [from, to, limit],
  );
  return rows;
}

export async function findIssue(db: Queryable, couponId: number, userId: string): Promise<{ issuedAt: Date } | undefined> {
  const { rows } = await db.query<Pick<CouponIssuesTable, 'issued_at'>>(
    'SELECT issued_at FROM coupon_issues WHERE coupon_id = $1 AND user_id = $2',
    [couponId, userId],
  );
  return rows[0] === undefined ? undefined : { issuedAt: rows[0].issued_at };
}

export interface UserCoupon {
  coupon: CouponWithStock;
  issuedAt: Date;
}

export async function listUserIssues(db: Queryable, userId: string): Promise<UserCoupon[]> {
  const { rows } = await db.query<CouponRow & Pick<CouponIssuesTable, 'issued_at'>>(
    `SELECT c.id, c.name, c.total_quantity, c.issued_quantity, c.issue_starts_at, c.issue_ends_at, c.strategy,
            c.discount_type, c.discount_value, c.min_order_amount, i.issued_at
       FROM coupon_issues i JOIN coupons c ON c.id = i.coupon_id
      WHERE i.user_id = $1
      ORDER BY i.issued_at DESC
      LIMIT 1000`,
    [userId],
  );
  return rows.map((row) => ({ coupon: toCoupon(row), issuedAt: row.issued_at }));
}

/**
 * Inserts one issuance unless the user already has one. Returns false for a duplicate.
 * The UNIQUE (coupon_id, user_id) constraint decides, not a prior read.
 */
export async function insertIssueIfAbsent(tx: Queryable, couponId: number, userId: string, issuedAt: Date): Promise<boolean> {
  const { rowCount } = await tx.query(
    `INSERT INTO coupon_issues (coupon_id, user_id, issued_at) VALUES ($1, $2, $3)
     ON CONFLICT ON CONSTRAINT coupon_issues_one_per_user DO NOTHING`,
    [couponId, userId, issuedAt],
  );
  return rowCount === 1;
}

/** Counts issued rows and users for a coupon: used to rebuild in-memory or Redis state. */
export async function loadIssuedUsers(db: Queryable, couponId: number): Promise<string[]> {
  const { rows } = await db.query<Pick<CouponIssuesTable, 'user_id'>>(
    'SELECT user_id FROM coupon_issues WHERE coupon_id = $1',
    [couponId],
  );
  return rows.map((r) => r.user_id);
}

export interface NewIssue {
  readonly couponId: number;
  readonly userId: string;
  readonly issuedAt: Date;
}

// One statement, so one implicit transaction: the rows and the issued counts commit together,
// and each coupon's counter grows by exactly the rows inserted (duplicates are skipped, and an
// over-issue fails the coupons_not_over_issued CHECK for the whole statement).
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

/**
 * Inserts many issuances (any coupons) unless the user already has one, bumping each coupon's
 * issued count by the rows actually inserted. Returns the rows inserted. Group commit (local)
 * and the stream worker both write through this.
 */
export async function insertIssues(db: Queryable, issues: readonly NewIssue[]): Promise<Array<{ coupon_id: number; user_id: string }>> {
  const { rows } = await db.query<Pick<CouponIssuesTable, 'coupon_id' | 'user_id'>>(INSERT_ISSUES_SQL, [
    issues.map((i) => i.couponId),
    issues.map((i) => i.userId),
    issues.map((i) => i.issuedAt.toISOString()),
  ]);
  return rows;
}
