// Coupon persistence, called by name: every statement on `coupons` and `coupon_issues` lives in
// src/coupons/sql/, one module per SQL dialect behind one typed interface (tables.ts). This module
// only picks the dialect the handle speaks; callers never see SQL.
import type { Db, Queryable, Transaction } from '../db/index.js';
import type { CouponWithStock, NewCoupon } from './domain.js';
import { mysqlStatements } from './sql/mysql.js';
import { postgresStatements } from './sql/postgres.js';
import type { AtOnceOutcome, CampaignStock, CouponStatements, IssueEvent, NewIssue, UserCoupon } from './sql/tables.js';

export type { AtOnceOutcome, CampaignStock, CouponIssuesTable, CouponsTable, IssueEvent, NewIssue, UserCoupon } from './sql/tables.js';

const STATEMENTS = { postgres: postgresStatements, mysql: mysqlStatements } as const satisfies Record<Queryable['dialect'], CouponStatements>;

const sql = (db: Queryable): CouponStatements => STATEMENTS[db.dialect];

export const insertCoupon = (db: Queryable, c: NewCoupon): Promise<CouponWithStock> => sql(db).insertCoupon(db, c);
export const findCoupon = (db: Queryable, id: number): Promise<CouponWithStock | undefined> => sql(db).findCoupon(db, id);
export const listCurrentCoupons = (db: Queryable, now: Date, limit = 100): Promise<CouponWithStock[]> => sql(db).listCurrentCoupons(db, now, limit);
export const issuedCount = (db: Queryable, couponId: number): Promise<number | undefined> => sql(db).issuedCount(db, couponId);
export const isSoldOut = (db: Queryable, couponId: number): Promise<boolean> => sql(db).isSoldOut(db, couponId);
export const lockIssuedCount = (tx: Queryable, couponId: number): Promise<number | undefined> => sql(tx).lockIssuedCount(tx, couponId);
export const issuedAndVersion = (tx: Queryable, couponId: number): Promise<{ issued: number; version: number } | undefined> => sql(tx).issuedAndVersion(tx, couponId);
export const bumpIssued = (tx: Queryable, couponId: number): Promise<void> => sql(tx).bumpIssued(tx, couponId);
export const claimUnit = (tx: Queryable, couponId: number): Promise<boolean> => sql(tx).claimUnit(tx, couponId);
export const claimUnitAtVersion = (tx: Queryable, couponId: number, version: number): Promise<boolean> => sql(tx).claimUnitAtVersion(tx, couponId, version);
export const countCoupons = (db: Queryable): Promise<number> => sql(db).countCoupons(db);
export const campaignsOf = (db: Queryable, strategies: readonly string[], after: Date): Promise<Array<{ id: number; strategy: string }>> =>
  sql(db).campaignsOf(db, strategies, after);
export const campaignStock = (db: Queryable, from: Date, to: Date, limit: number): Promise<CampaignStock[]> => sql(db).campaignStock(db, from, to, limit);
export const findIssue = (db: Queryable, couponId: number, userId: string): Promise<{ issuedAt: Date } | undefined> => sql(db).findIssue(db, couponId, userId);
export const listUserIssues = (db: Queryable, userId: string): Promise<UserCoupon[]> => sql(db).listUserIssues(db, userId);
export const insertIssueIfAbsent = (tx: Queryable, couponId: number, userId: string, issuedAt: Date): Promise<boolean> =>
  sql(tx).insertIssueIfAbsent(tx, couponId, userId, issuedAt);
export const loadIssuedUsers = (db: Queryable, couponId: number): Promise<string[]> => sql(db).loadIssuedUsers(db, couponId);
export const insertIssues = (tx: Transaction, issues: readonly NewIssue[]): Promise<Array<{ couponId: number; userId: string }>> => sql(tx).insertIssues(tx, issues);
export const lockRemaining = (tx: Queryable, couponId: number): Promise<number | undefined> => sql(tx).lockRemaining(tx, couponId);
export const insertNewIssues = (tx: Transaction, couponId: number, issues: readonly NewIssue[]): Promise<string[]> => sql(tx).insertNewIssues(tx, couponId, issues);
export const removeIssues = (tx: Queryable, couponId: number, userIds: readonly string[]): Promise<void> => sql(tx).removeIssues(tx, couponId, userIds);
export const addIssued = (tx: Queryable, couponId: number, n: number): Promise<void> => sql(tx).addIssued(tx, couponId, n);
export const holdersAmong = (db: Queryable, couponId: number, userIds: readonly string[]): Promise<string[]> => sql(db).holdersAmong(db, couponId, userIds);
/** The one-statement issuance, where the handle's dialect has one (PostgreSQL); undefined elsewhere. */
export const issueAtOnce = (db: Db): CouponStatements['issueAtOnce'] => sql(db).issueAtOnce;
export const soldOutAmong = (db: Queryable, couponIds: readonly number[]): Promise<number[]> => sql(db).soldOutAmong(db, couponIds);
export const setEventCapture = (db: Queryable, enabled: boolean): Promise<void> => sql(db).setEventCapture(db, enabled);
export const eventCapture = (db: Queryable): Promise<{ enabled: boolean; pending: number }> => sql(db).eventCapture(db);
export const claimIssueEvents = (tx: Transaction, limit: number): Promise<IssueEvent[]> => sql(tx).claimIssueEvents(tx, limit);
export const deleteIssueEvents = (tx: Transaction, ids: readonly string[]): Promise<void> => sql(tx).deleteIssueEvents(tx, ids);
export const clearIssueEvents = (db: Queryable): Promise<number> => sql(db).clearIssueEvents(db);
