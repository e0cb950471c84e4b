// process-mutex: one in-process mutex per coupon serialises the read-check-write (the seeds'
// `synchronized` / ReentrantLock). Exact with ONE API process; a second process has its own
// mutexes, and then only the database constraints stand between it and an over-issue.
import { Mutex } from 'async-mutex';
import { ALREADY_ISSUED, ISSUED } from '../domain.js';
import { bumpIssued, insertIssueIfAbsent, issuedCount } from '../repository.js';
import { soldOutUnlessHeld, transactionOutcome } from './shared.js';
import type { StrategyModule } from './types.js';

export const processMutex: StrategyModule = {
  summary: 'per-coupon mutex inside the API process — exact with one process only, serialises every request',
  requires: [],
  admission: 'process',
  queued: false,
  mayOverIssue: false,
  create: ({ db }) => {
    const mutexes = new Map<number, Mutex>();
    const mutexFor = (couponId: number) => {
      let m = mutexes.get(couponId);
      if (m === undefined) mutexes.set(couponId, (m = new Mutex()));
      return m;
    };
    return {
      issue: (coupon, userId, now) =>
        mutexFor(coupon.id).runExclusive(async () => {
          if (((await issuedCount(db, coupon.id)) ?? 0) >= coupon.totalQuantity) return soldOutUnlessHeld(db, coupon.id, userId);
          return transactionOutcome(db, { couponId: coupon.id, userId }, async (tx) => {
            if (!(await insertIssueIfAbsent(tx, coupon.id, userId, now))) return ALREADY_ISSUED;
            await bumpIssued(tx, coupon.id);
            return ISSUED;
          });
        }),
    };
  },
};
