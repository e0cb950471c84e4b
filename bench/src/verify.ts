// After a stampede: wait for the admitted issuances to reach the database, then check the
// product's promises (docs/architecture.md, invariants 1, 2, 4, 5 and 7) against the rows, user
// by user.
import type { Db } from '../../src/db/index.js';
import type { LoadResult } from './load.js';
import type { BenchUser } from './plan.js';

const DRAIN_POLL_MS = 20;

/**
 * Statuses the issue endpoint may answer under a stampede: issued, queued, duplicate, sold out,
 * rate-limited, shed or unavailable, and a handler timeout. Anything else is a bug.
 */
const EXPECTED_STATUSES = new Set([201, 202, 409, 410, 429, 503, 504]);

export async function countRows(db: Db, couponId: number): Promise<number> {
  // Its own SQL, not the repository's, so a repository bug cannot hide from it; portable (the id is
  // an integer, inlined) so one statement serves every dialect.
  const { rows } = await db.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM coupon_issues WHERE coupon_id = ${Math.trunc(couponId)}`);
  return Number(rows[0]?.n ?? 0);
}

export interface DrainResult {
  /** Milliseconds from the last response until the rows covered every acknowledgement; undefined if they never did. */
  readonly drainMs: number | undefined;
  readonly rowsAtEnd: number;
}

/** Polls the row count until it reaches `acknowledged` or the timeout passes. */
export async function waitForDrain(
  db: Db,
  couponId: number,
  acknowledged: number,
  endedAt: number,
  timeoutMs: number,
  onProgress?: (rows: number) => void,
): Promise<DrainResult> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const askedAt = performance.now();
    const rows = await countRows(db, couponId);
    onProgress?.(rows);
    // The rows were there when the query was sent at the latest.
    if (rows >= acknowledged) return { drainMs: Math.max(0, askedAt - endedAt), rowsAtEnd: rows };
    if (performance.now() >= deadline) return { drainMs: undefined, rowsAtEnd: rows };
    await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
  }
}

export interface Verification {
  readonly rows: number;
  readonly distinctUsers: number;
  /** coupons.issued_quantity, which every strategy maintains alongside the rows. */
  readonly counter: number;
  readonly overIssue: number;
  readonly duplicates: number;
  /** 201 + 202 responses. */
  readonly acknowledged: number;
  readonly acknowledgedUsers: number;
  /** Acknowledged users without a row (invariant 4). */
  readonly missing: number;
  /** Rows for users who were refused or never asked (invariant 5). */
  readonly invented: number;
  /** Rows for users whose unanswered (or 504/500) request may have been served: not judged. */
  readonly undetermined: number;
  /** Broken promises: each makes the run fail. */
  readonly violations: readonly string[];
  /** Worth knowing, not a failure (the expected over-issue of db-naive, timeouts, unmet demand). */
  readonly notes: readonly string[];
}

export interface VerifyInput {
  readonly db: Db;
  readonly couponId: number;
  readonly stock: number;
  /** db-naive exists to over-issue: its over-issue is reported, not failed. */
  readonly overIssueExpected: boolean;
  readonly users: readonly BenchUser[];
  readonly load: LoadResult;
  readonly drain: DrainResult;
  readonly drainTimeoutMs: number;
}

export async function verify(input: VerifyInput): Promise<Verification> {
  const { db, couponId, stock, load, users } = input;
  const id = Math.trunc(couponId);
  const issued = await db.query<{ user_id: string }>(`SELECT user_id FROM coupon_issues WHERE coupon_id = ${id}`);
  const counterRow = await db.query<{ issued_quantity: number }>(`SELECT issued_quantity FROM coupons WHERE id = ${id}`);
  const counter = counterRow.rows[0]?.issued_quantity ?? -1;

  const rowUsers = issued.rows.map((r) => r.user_id);
  const rows = rowUsers.length;
  const rowSet = new Set(rowUsers);
  const distinctUsers = rowSet.size;
  const duplicates = rows - distinctUsers;
  const overIssue = Math.max(0, rows - stock);

  const indexOf = new Map<string, number>();
  for (const u of users) indexOf.set(u.id, u.index);

  let acknowledged = 0;
  let acknowledgedUsers = 0;
  let doubleAcked = 0;
  let missing = 0;
  const missingExamples: string[] = [];
  for (let i = 0; i < users.length; i++) {
    const acks = load.ackedByUser[i]!;
    if (acks === 0) continue;
    acknowledged += acks;
    acknowledgedUsers++;
    if (acks > 1) doubleAcked++;
    if (!rowSet.has(users[i]!.id)) {
      missing++;
      if (missingExamples.length < 3) missingExamples.push(users[i]!.id);
    }
  }

  let invented = 0;
  let undetermined = 0;
  const inventedExamples: string[] = [];
  for (const id of rowSet) {
    const i = indexOf.get(id);
    if (i !== undefined && load.ackedByUser[i]! > 0) continue;
    // A request that never got an answer (or got a 504) may still have been served: not judged.
    if (i !== undefined && (load.sentByUser[i]! > load.answeredByUser[i]! || load.uncertainByUser[i]! > 0)) {
      undetermined++;
      continue;
    }
    invented++;
    if (inventedExamples.length < 3) inventedExamples.push(id);
  }

  const violations: string[] = [];
  const notes: string[] = [];
  if (overIssue > 0) {
    const msg = `over-issued: ${rows} rows for a stock of ${stock} (+${overIssue})`;
    if (input.overIssueExpected) notes.push(`${msg} — expected: db-naive exists to show this race`);
    else violations.push(msg);
  } else if (input.overIssueExpected) {
    notes.push('db-naive did not over-issue this time (the race needs enough concurrency to show)');
  }
  if (duplicates > 0) violations.push(`${duplicates} user(s) hold two rows for this coupon`);
  if (doubleAcked > 0) violations.push(`${doubleAcked} user(s) were acknowledged (201/202) more than once`);
  if (input.drain.drainMs === undefined) {
    violations.push(`not drained: ${input.drain.rowsAtEnd} rows ${input.drainTimeoutMs / 1000} s after the stampede, ${acknowledgedUsers} acknowledged`);
  }
  if (missing > 0) violations.push(`${missing} acknowledged user(s) have no row (lost), e.g. ${missingExamples.join(', ')}`);
  if (invented > 0) violations.push(`${invented} row(s) for users who were never acknowledged (invented), e.g. ${inventedExamples.join(', ')}`);
  if (acknowledged + undetermined !== rows) {
    const extra = undetermined > 0 ? ` (+${undetermined} undetermined)` : '';
    violations.push(`${acknowledged} success responses${extra} but ${rows} rows`);
  }
  if (counter !== rows) violations.push(`coupons.issued_quantity is ${counter} but there are ${rows} rows`);
  const soldOut = load.statuses.get(410) ?? 0;
  if (soldOut > 0 && rows < stock) violations.push(`answered 410 SOLD_OUT ${soldOut} time(s) with only ${rows} of ${stock} issued`);

  const unexpected = [...load.statuses].filter(([status]) => !EXPECTED_STATUSES.has(status));
  if (unexpected.length > 0) {
    violations.push(`unexpected responses: ${unexpected.map(([s, n]) => `${n}× ${s}`).join(', ')}`);
  }
  const unavailable = load.statuses.get(503) ?? 0;
  if (unavailable > 0) notes.push(`${unavailable} request(s) answered 503 (shed, contention or a dependency; nothing issued, the client may retry)`);
  const limited = load.statuses.get(429) ?? 0;
  if (limited > 0) notes.push(`${limited} request(s) answered 429 (rate limit; set RATE_LIMIT_USER=off to measure without it)`);
  const timedOut = load.statuses.get(504) ?? 0;
  if (timedOut > 0) notes.push(`${timedOut} request(s) answered 504 (handler timeout; outcome unknown to the client)`);
  if (load.errors > 0) notes.push(`${load.errors} request(s) got no answer (${load.timeouts} timed out)`);
  if (undetermined > 0) notes.push(`${undetermined} row(s) belong to users whose request got no answer or a 5xx: not judged`);
  if (rows < stock && soldOut === 0) {
    notes.push(`demand did not exhaust the stock: ${rows} of ${stock} issued`);
  }

  return { rows, distinctUsers, counter, overIssue, duplicates, acknowledged, acknowledgedUsers, missing, invented, undetermined, violations, notes };
}
