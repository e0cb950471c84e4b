// db-naive: read, check, insert — no lock. Kept to demonstrate the race every seed started from:
// concurrent requests read the same count and all pass the check, so it over-issues. The
// coupons_not_over_issued CHECK exempts this strategy on purpose; UNIQUE still stops doubles.
import { ALREADY_ISSUED, ISSUED, SOLD_OUT } from '../domain.js';
import { bumpIssued, insertIssueIfAbsent, issuedCount } from '../repository.js';
import { transactionOutcome } from './shared.js';
import type { StrategyModule } from './types.js';

export const dbNaive: StrategyModule = {
  summary: 'read, check, insert with no locking — over-issues under concurrency; a demonstration, never for production',
  requires: [],
  admission: 'database',
  queued: false,
  mayOverIssue: true,
  create: ({ db }) => ({
    async issue(coupon, userId, now) {
      // The race: between this read and the update below, others read the same count.
      if (((await issuedCount(db, coupon.id)) ?? 0) >= coupon.totalQuantity) return SOLD_OUT;
      return transactionOutcome(db, { couponId: coupon.id, userId }, async (tx) => {
        if (!(await insertIssueIfAbsent(tx, coupon.id, userId, now))) return ALREADY_ISSUED;
        await bumpIssued(tx, coupon.id);
        return ISSUED;
      });
    },
  }),
};
