// db-pessimistic: SELECT … FOR UPDATE on the coupon row (the seeds' V0 / record lock). Exact
// with any number of API processes; every request for the coupon queues on one row lock while
// holding a pooled connection, which is why it is slow under a stampede.
import { ALREADY_ISSUED, ISSUED } from '../domain.js';
import { bumpIssued, insertIssueIfAbsent, lockIssuedCount } from '../repository.js';
import { soldOutUnlessHeld, transactionOutcome } from './shared.js';
import type { StrategyModule } from './types.js';

export const dbPessimistic: StrategyModule = {
  summary: 'SELECT … FOR UPDATE on the coupon row — exact with any number of instances, one request at a time per coupon',
  requires: [],
  admission: 'database',
  queued: false,
  mayOverIssue: false,
  create: ({ db }) => ({
    issue: (coupon, userId, now) =>
      transactionOutcome(db, { couponId: coupon.id, userId }, async (tx) => {
        if (((await lockIssuedCount(tx, coupon.id)) ?? 0) >= coupon.totalQuantity) return soldOutUnlessHeld(tx, coupon.id, userId);
        if (!(await insertIssueIfAbsent(tx, coupon.id, userId, now))) return ALREADY_ISSUED;
        await bumpIssued(tx, coupon.id);
        return ISSUED;
      }),
  }),
};
