// db-atomic: one conditional UPDATE decides the stock (`WHERE issued_quantity < total_quantity`)
// and the UNIQUE constraint decides the duplicate, in one short transaction. Exact with any
// number of instances; the coupon row lock is held only from the UPDATE to COMMIT.
import { ALREADY_ISSUED, ISSUED, SOLD_OUT } from '../domain.js';
import { insertIssueIfAbsent } from '../repository.js';
import { rollbackWith, soldOutUnlessHeld, transactionOutcome } from './shared.js';
import type { StrategyModule } from './types.js';

export const dbAtomic: StrategyModule = {
  summary: 'conditional UPDATE … WHERE issued < total plus a unique insert, one short transaction — exact with any number of instances',
  requires: [],
  admission: 'database',
  queued: false,
  create: ({ db }) => ({
    async issue(coupon, userId, now) {
      // Cheap read first: once sold out, the stampede costs one SELECT instead of a transaction.
      const { rows } = await db.query<{ sold_out: boolean }>(
        'SELECT issued_quantity >= total_quantity AS sold_out FROM coupons WHERE id = $1',
        [coupon.id],
      );
      if (rows[0]?.sold_out !== false) return soldOutUnlessHeld(db, coupon.id, userId);
      return transactionOutcome(db, async (tx) => {
        if (!(await insertIssueIfAbsent(tx, coupon.id, userId, now))) return ALREADY_ISSUED;
        const { rowCount } = await tx.query(
          `UPDATE coupons SET issued_quantity = issued_quantity + 1
            WHERE id = $1 AND issued_quantity < total_quantity`,
          [coupon.id],
        );
        // The user was not a duplicate, so losing here means the last unit went to someone else.
        return rowCount === 1 ? ISSUED : rollbackWith(SOLD_OUT);
      });
    },
  }),
};
