// db-atomic: the row and the unit in one all-or-nothing step — the UNIQUE key decides the
// duplicate, the conditional claim (and the over-issue CHECK) the stock. On PostgreSQL that is one
// autocommit statement, a single round trip; on MySQL a short transaction (insert, conditional
// UPDATE). Exact with any number of instances: the coupon row lock is held only while the claim
// commits. Once an instance sees the sell-out it loads the final holders and answers every later
// attempt without the database (final-holders.ts).
import { ALREADY_ISSUED, ISSUED, SOLD_OUT, type Coupon, type IssueOutcome } from '../domain.js';
import { issueAtOnce, isSoldOut } from '../repository.js';
import { FinalHolders } from './final-holders.js';
import { insertAndClaim, soldOutUnlessHeld } from './shared.js';
import type { StrategyModule } from './types.js';

const AT_ONCE = { issued: ISSUED, held: ALREADY_ISSUED, 'sold-out': SOLD_OUT } as const;

export const dbAtomic: StrategyModule = {
  summary: 'the row and a conditional claim of a unit in one all-or-nothing statement (PostgreSQL) or short transaction (MySQL) — exact with any number of instances',
  requires: [],
  admission: 'database',
  queued: false,
  mayOverIssue: false,
  create: ({ db, log }) => {
    const holders = new FinalHolders(db, (couponId, err) => log.warn({ couponId, err }, 'db-atomic: could not load the holders of a sold-out campaign; refusals keep asking the database'));
    const atOnce = issueAtOnce(db);
    const decide = async (coupon: Coupon, userId: string, now: Date): Promise<IssueOutcome> => {
      if (atOnce !== undefined) return AT_ONCE[await atOnce(db, coupon.id, userId, now)];
      // Cheap read first: once sold out, an attempt costs one SELECT instead of a transaction.
      if (await isSoldOut(db, coupon.id)) return soldOutUnlessHeld(db, coupon.id, userId);
      return insertAndClaim(db, coupon.id, userId, now);
    };
    return {
      async issue(coupon, userId, now) {
        const known = holders.answer(coupon.id, userId);
        if (known !== undefined) return known;
        const outcome = await decide(coupon, userId, now);
        // SOLD_OUT comes only from a committed counter at the stock: the holders are final.
        if (outcome === SOLD_OUT) holders.soldOut(coupon.id, coupon.totalQuantity);
        return outcome;
      },
    };
  },
};
