// Small pieces the database strategies share: refusal precedence, and a transaction's outcome
// (rolled back with a refusal, or a COMMIT whose fate is unknown).
import { OutcomeUnknownError, type Db, type Queryable, type Transaction } from '../../db/index.js';
import { ALREADY_ISSUED, OUTCOME_UNKNOWN, SOLD_OUT, type IssueOutcome } from '../domain.js';
import { findIssue } from '../repository.js';

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
 * Runs fn in a transaction; a `rollbackWith(outcome)` inside rolls back and yields that outcome,
 * and a COMMIT whose fate could not be learnt yields OUTCOME_UNKNOWN. Any error it throws means
 * nothing was committed.
 */
export async function transactionOutcome(db: Db, fn: (tx: Transaction) => Promise<IssueOutcome>): Promise<IssueOutcome> {
  try {
    return await db.transaction(fn);
  } catch (err) {
    if (err instanceof Rollback) return err.outcome;
    if (err instanceof OutcomeUnknownError) return OUTCOME_UNKNOWN;
    throw err;
  }
}
