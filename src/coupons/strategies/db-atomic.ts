// db-atomic: one conditional UPDATE decides the stock (`WHERE issued_quantity < total_quantity`)
// and the UNIQUE constraint decides the duplicate, in one short transaction. Exact with any
// number of instances; the coupon row lock is held only from the UPDATE to COMMIT.
import { isSoldOut } from '../repository.js';
import { insertAndClaim, soldOutUnlessHeld } from './shared.js';
import type { StrategyModule } from './types.js';

export const dbAtomic: StrategyModule = {
  summary: 'conditional UPDATE … WHERE issued < total plus a unique insert, one short transaction — exact with any number of instances',
  requires: [],
  admission: 'database',
  queued: false,
  mayOverIssue: false,
  create: ({ db }) => ({
    async issue(coupon, userId, now) {
      // Cheap read first: once sold out, the stampede costs one SELECT instead of a transaction.
      if (await isSoldOut(db, coupon.id)) return soldOutUnlessHeld(db, coupon.id, userId);
      return insertAndClaim(db, coupon.id, userId, now);
    },
  }),
};
