// The coupon tables as the drivers return them, and the one typed interface every SQL dialect
// implements (postgres.ts, mysql.ts): each operation on `coupons` and `coupon_issues`, including
// the ones that decide correctness — the row lock, the conditional and compare-and-set claims,
// the insert that skips a duplicate. A column change touches this directory only.
import type { Db, Queryable, Transaction } from '../../db/index.js';
import type { CouponWithStock, DiscountType, NewCoupon } from '../domain.js';

/** Columns of `coupons`. */
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

export type CouponRow = Omit<CouponsTable, 'version' | 'created_at'>;

/** The columns a campaign is read with (a CouponRow): every statement that returns campaigns selects these. */
const COUPON_ROW_COLUMNS = [
  'id',
  'name',
  'total_quantity',
  'issued_quantity',
  'issue_starts_at',
  'issue_ends_at',
  'strategy',
  'discount_type',
  'discount_value',
  'min_order_amount',
] as const satisfies ReadonlyArray<keyof CouponRow>;

export const COUPON_COLUMNS = COUPON_ROW_COLUMNS.join(', ');

/** COUPON_COLUMNS of a table aliased in a join (`c.id, c.name, …`). */
export function couponColumnsOf(alias: string): string {
  return COUPON_ROW_COLUMNS.map((c) => `${alias}.${c}`).join(', ');
}

export function toCoupon(row: CouponRow): CouponWithStock {
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

export interface UserCoupon {
  coupon: CouponWithStock;
  issuedAt: Date;
}

export interface NewIssue {
  readonly couponId: number;
  readonly userId: string;
  readonly issuedAt: Date;
  /** The API's request id, when the writer knows it (the workers: it travels in the queue); it reaches the issued-coupon event. */
  readonly requestId?: string | undefined;
}

/** An outbox row of coupon_issue_events, with its issuance's issued_at (undefined: the row is gone). */
export interface IssueEvent {
  readonly id: string;
  readonly couponId: number;
  readonly userId: string;
  readonly requestId: string | undefined;
  readonly issuedAt: Date | undefined;
}

export interface CampaignStock {
  id: number;
  strategy: string;
  total: number;
  issued: number;
}

/** What `issueAtOnce` decided: a new row and unit, a holder, or no unit left. */
export type AtOnceOutcome = 'issued' | 'held' | 'sold-out';

/** Every statement on the coupon tables, in one dialect. `db` may be a pool or a transaction. */
export interface CouponStatements {
  /**
   * db-atomic's whole decision in one autocommit statement, where the dialect can write one:
   * insert the row unless the user holds one and claim a unit only while below the stock, all or
   * nothing. Undefined where it cannot (MySQL has no data-modifying CTE): the caller runs the
   * insert and the claim in a transaction instead. A lost answer is settled by the user's row.
   */
  readonly issueAtOnce?: (db: Db, couponId: number, userId: string, issuedAt: Date) => Promise<AtOnceOutcome>;
  insertCoupon(db: Queryable, c: NewCoupon): Promise<CouponWithStock>;
  findCoupon(db: Queryable, id: number): Promise<CouponWithStock | undefined>;
  /** Campaigns whose window has not ended yet (open now or upcoming), soonest first. */
  listCurrentCoupons(db: Queryable, now: Date, limit: number): Promise<CouponWithStock[]>;
  /** The committed issued count, or undefined for an unknown coupon. */
  issuedCount(db: Queryable, couponId: number): Promise<number | undefined>;
  /** True when the counter reached the stock, or the coupon does not exist. */
  isSoldOut(db: Queryable, couponId: number): Promise<boolean>;
  /** SELECT … FOR UPDATE: the coupon row stays locked until the transaction ends. Its issued count. */
  lockIssuedCount(tx: Queryable, couponId: number): Promise<number | undefined>;
  /** Issued count and version, for a compare-and-set (db-optimistic). */
  issuedAndVersion(tx: Queryable, couponId: number): Promise<{ issued: number; version: number } | undefined>;
  /** Adds one to the counter: for strategies that decided the stock themselves (the CHECK still stands behind them). */
  bumpIssued(tx: Queryable, couponId: number): Promise<void>;
  /** Claims one unit only while below the stock (the conditional UPDATE decides). True when claimed. */
  claimUnit(tx: Queryable, couponId: number): Promise<boolean>;
  /** Claims one unit only if the version is still `version` (compare-and-set). True when it won. */
  claimUnitAtVersion(tx: Queryable, couponId: number, version: number): Promise<boolean>;
  countCoupons(db: Queryable): Promise<number>;
  /** Campaigns of these strategies whose window ends after `after`, by id. */
  campaignsOf(db: Queryable, strategies: readonly string[], after: Date): Promise<Array<{ id: number; strategy: string }>>;
  /** Stock figures of the campaigns whose window overlaps [from, to), newest first (the stock gauges). */
  campaignStock(db: Queryable, from: Date, to: Date, limit: number): Promise<CampaignStock[]>;
  findIssue(db: Queryable, couponId: number, userId: string): Promise<{ issuedAt: Date } | undefined>;
  listUserIssues(db: Queryable, userId: string): Promise<UserCoupon[]>;
  /**
   * Inserts one issuance unless the user already has one. False for a duplicate. The primary
   * key (coupon_id, user_id) decides, not a prior read; every other error is thrown.
   */
  insertIssueIfAbsent(tx: Queryable, couponId: number, userId: string, issuedAt: Date): Promise<boolean>;
  /** The users holding the coupon: to rebuild in-memory or Redis state. */
  loadIssuedUsers(db: Queryable, couponId: number): Promise<string[]>;
  /**
   * SELECT … FOR UPDATE: locks the coupon row until the transaction ends; the units left
   * (stock − issued, at least 0), or undefined for an unknown coupon.
   */
  lockRemaining(tx: Queryable, couponId: number): Promise<number | undefined>;
  /**
   * Inserts these issuances of one coupon, skipping users who already hold it; the users actually
   * inserted. The counter is NOT moved: the caller decides how many to keep (addIssued) and
   * removes the rest (removeIssues), in the same transaction.
   */
  insertNewIssues(tx: Transaction, couponId: number, issues: readonly NewIssue[]): Promise<string[]>;
  /** Deletes these users' rows of one coupon (rows the same transaction inserted and does not keep). */
  removeIssues(tx: Queryable, couponId: number, userIds: readonly string[]): Promise<void>;
  /** Adds n to the counter (the CHECK stands behind it). */
  addIssued(tx: Queryable, couponId: number, n: number): Promise<void>;
  /** Which of these users hold the coupon. */
  holdersAmong(db: Queryable, couponId: number, userIds: readonly string[]): Promise<string[]>;
  /** Which of these campaigns have no stock left (or do not exist). */
  soldOutAmong(db: Queryable, couponIds: readonly number[]): Promise<number[]>;
  /**
   * Inserts many issuances (any coupons) unless the user already has one, and moves each coupon's
   * counter by exactly the rows inserted, in the caller's transaction (an over-issue fails the
   * coupons_not_over_issued CHECK, so the transaction). Returns the rows inserted. Group commit
   * (local) and the stream worker write through this.
   */
  insertIssues(tx: Transaction, issues: readonly NewIssue[]): Promise<Array<{ couponId: number; userId: string }>>;
  /** Issued-coupon events: turn the outbox trigger's capture on or off. */
  setEventCapture(db: Queryable, enabled: boolean): Promise<void>;
  /** Whether capture is on, and how many outbox rows wait. */
  eventCapture(db: Queryable): Promise<{ enabled: boolean; pending: number }>;
  /** Locks up to `limit` outbox rows no other publisher holds (SKIP LOCKED), oldest first, with their issuance's issued_at. */
  claimIssueEvents(tx: Transaction, limit: number): Promise<IssueEvent[]>;
  deleteIssueEvents(tx: Transaction, ids: readonly string[]): Promise<void>;
  /** Empties the outbox (capture turned off: nobody will publish what it holds). */
  clearIssueEvents(db: Queryable): Promise<number>;
}

/** The issues' request ids as the outbox trigger reads them ("couponId:userId" → id), or undefined when none has one. */
export function requestIdsOf(issues: readonly NewIssue[]): string | undefined {
  const ids: Record<string, string> = {};
  let any = false;
  for (const i of issues) {
    if (i.requestId === undefined || i.requestId === '') continue;
    ids[`${i.couponId}:${i.userId}`] = i.requestId;
    any = true;
  }
  return any ? JSON.stringify(ids) : undefined;
}
