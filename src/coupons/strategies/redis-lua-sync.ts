// redis-lua-sync: admit.lua decides the window, the duplicate and the stock atomically in Redis;
// then the API inserts the row itself and answers 201. When the database refuses or fails the
// insert, release.lua undoes the admission so Redis and the database agree again. The database's
// own constraints (conditional counter update, CHECK, UNIQUE) still stand behind Redis.
//
// Issued means a row. An admission can outlive its failed insert (admit's answer lost, a release
// that failed, a COMMIT of unknown fate): Redis then holds a user the database does not. So a
// duplicate from Redis is checked against the database before it is answered 409, and a user
// Redis holds without a row gets the insert now — the database's constraints decide.
import { ALREADY_ISSUED, SOLD_OUT, type IssueOutcome } from '../domain.js';
import { findIssue, loadIssuedUsers } from '../repository.js';
import { admittedCounts, CampaignStates } from '../../redis/campaign-state.js';
import { ADMITTED } from '../../redis/scripts.js';
import { CampaignRefs, redisOf } from './redis-shared.js';
import { insertAndClaim } from './shared.js';
import type { StrategyModule } from './types.js';

export const redisLuaSync: StrategyModule = {
  summary: 'atomic Lua admission in Redis, then a synchronous insert (201); a failed insert is rolled back in Redis by a second script',
  requires: ['redis'],
  admission: 'redis',
  queued: false,
  mayOverIssue: false,
  create: (ctx) => {
    const redis = redisOf(ctx);
    const { db, log } = ctx;
    const refs = new CampaignRefs(redis);
    const states = new CampaignStates(redis, (id) => loadIssuedUsers(db, id), log, false);

    const release = async (couponId: number, userId: string, soldOut: boolean) => {
      try {
        await redis.scripts.release(refs.get(couponId).keys, userId, soldOut);
      } catch (err) {
        // Redis keeps a user the database does not have: `couponrush reconcile` reports it.
        log.error({ err, couponId, userId }, 'redis-lua-sync: releasing the admission failed');
      }
    };

    return {
      prepare: (coupon) => states.prepare(coupon),
      admitted: (couponIds) => admittedCounts(redis, couponIds),

      async issue(coupon, userId, now) {
        const { keys } = refs.get(coupon.id);
        const admitted = await states.admit(coupon, () => redis.scripts.admit(keys, userId, now.getTime()));
        if (admitted === ALREADY_ISSUED && (await findIssue(db, coupon.id, userId)) !== undefined) return ALREADY_ISSUED;
        if (admitted !== ADMITTED && admitted !== ALREADY_ISSUED) return admitted;

        let outcome: IssueOutcome;
        try {
          // A row Redis did not know about (it lost data) answers ALREADY_ISSUED: the admission
          // now matches that row, so it is kept.
          outcome = await insertAndClaim(db, coupon.id, userId, now);
        } catch (err) {
          await release(coupon.id, userId, false);
          throw err;
        }
        // The database is full although Redis was not: pin Redis to sold out as well.
        if (outcome === SOLD_OUT) await release(coupon.id, userId, true);
        // OUTCOME_UNKNOWN keeps the admission: if the row did commit, the seat is that row's.
        return outcome;
      },
    };
  },
};
