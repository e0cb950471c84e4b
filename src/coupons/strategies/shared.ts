// Small pieces the database strategies share: refusal precedence, and a transaction's outcome
// (rolled back with a refusal, or a COMMIT whose fate is unknown).
import { OutcomeUnknownError, type Db, type Queryable, type Transaction } from '../../db/index.js';
import { ALREADY_ISSUED, ISSUED, OUTCOME_UNKNOWN, SOLD_OUT, type IssueOutcome } from '../domain.js';
import { claimUnit, findIssue, insertIssueIfAbsent } from '../repository.js';

/** Stock is gone: a user who already holds the coupon still hears ALREADY_ISSUED. */
export async function soldOutUnlessHeld(db: Queryable, couponId: number, userId: string): Promise<IssueOutcome> {
  return (await findIssue(db, couponId, userId)) === undefined ? SOLD_OUT : ALREADY_ISSUED;
}

class Rollback {
  constructor(readonly outcome: IssueOutcome) {}
}

/** Throw from inside `transactionOutcome` to roll back and answer `outcome`. */
export function rollbackWith(outcome: IssueOutcome): never {
  throw new Rollback(outcome);
}

/**
 * Runs fn, the issuance of one coupon to one user, in a transaction; a `rollbackWith(outcome)`
 * inside rolls back and yields that outcome, and a COMMIT whose fate could not be learnt yields
 * OUTCOME_UNKNOWN. Any error it throws means nothing was committed. If the COMMIT's answer is
 * lost, the user's row is what tells whether it committed (on MySQL; PostgreSQL is asked by id).
 */
export async function transactionOutcome(db: Db, issue: { couponId: number; userId: string }, fn: (tx: Transaction) => Promise<IssueOutcome>): Promise<IssueOutcome> {
  try {
    return await db.transaction(fn, { committed: async (q) => (await findIssue(q, issue.couponId, issue.userId)) !== undefined });
  } catch (err) {
    if (err instanceof Rollback) return err.outcome;
    if (err instanceof OutcomeUnknownError) return OUTCOME_UNKNOWN;
    throw err;
  }
}

/**
 * Insert the row unless the user has one (UNIQUE decides) and claim a unit only while below the
 * stock (the conditional UPDATE decides), in one transaction: exact on its own, whatever sits in
 * front of it. db-atomic's whole decision; the database half of redis-lock and redis-lua-sync.
 */
export function insertAndClaim(db: Db, couponId: number, userId: string, now: Date): Promise<IssueOutcome> {
  return transactionOutcome(db, { couponId, userId }, async (tx) => {
    if (!(await insertIssueIfAbsent(tx, couponId, userId, now))) return ALREADY_ISSUED;
    // The user was not a duplicate, so losing here means the last unit went to someone else.
    return (await claimUnit(tx, couponId)) ? ISSUED : rollbackWith(SOLD_OUT);
  });
}
