// db-optimistic: read the coupon's version, then compare-and-set it while inserting the row;
// a lost race rolls back and retries after a jittered backoff. Exact with any number of
// instances; under heavy contention most attempts lose, so retries are bounded and an attempt
// that keeps losing answers 503 (nothing issued) rather than waiting forever.
import { setTimeout as sleep } from 'node:timers/promises';
import { ALREADY_ISSUED, ISSUED, unavailable } from '../domain.js';
import { claimUnitAtVersion, insertIssueIfAbsent, issuedAndVersion } from '../repository.js';
import { rollbackWith, soldOutUnlessHeld, transactionOutcome } from './shared.js';
import type { StrategyModule } from './types.js';

const MAX_ATTEMPTS = 200;
const MAX_BACKOFF_MS = 20;
const LOST_RACE = unavailable('optimistic version check lost');

export const dbOptimistic: StrategyModule = {
  summary: 'version column compare-and-set with bounded, jittered retries — exact with any number of instances, retry storms under contention',
  requires: [],
  admission: 'database',
  queued: false,
  mayOverIssue: false,
  create: ({ db }) => ({
    async issue(coupon, userId, now) {
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        // Read and compare-and-set on one connection: reading on another pooled connection would
        // let the version go stale while waiting for the pool, and nearly every CAS would lose.
        const outcome = await transactionOutcome(db, { couponId: coupon.id, userId }, async (tx) => {
          const row = await issuedAndVersion(tx, coupon.id);
          if (row === undefined || row.issued >= coupon.totalQuantity) return soldOutUnlessHeld(tx, coupon.id, userId);
          if (!(await insertIssueIfAbsent(tx, coupon.id, userId, now))) return ALREADY_ISSUED;
          return (await claimUnitAtVersion(tx, coupon.id, row.version)) ? ISSUED : rollbackWith(LOST_RACE);
        });
        if (outcome !== LOST_RACE) return outcome;
        await sleep(Math.random() * Math.min(MAX_BACKOFF_MS, 2 ** attempt));
      }
      return unavailable(`gave up after ${MAX_ATTEMPTS} optimistic attempts under contention`);
    },
  }),
};
