// redis-lock: a distributed lock per coupon (SET NX PX with a random token; release and extend by
// Lua that checks the token; bounded wait) around the db-atomic path — the seeds' V1/Redisson.
//
// A lock alone is NOT safe: a holder paused longer than the TTL (GC, a stalled socket, a stopped
// VM) loses the lock without knowing, a second holder enters, and both run the critical section.
// The token only stops the first from deleting the second's lock, and the watchdog cannot extend
// a lock from a paused process. What keeps the result exact anyway is the database: the
// conditional UPDATE (`issued_quantity < total_quantity`), the CHECK on the counter and the
// UNIQUE (coupon_id, user_id) — the lock only keeps contention off them.
//
// Requests of one process queue on a local per-coupon mutex first, so only one per process
// polls Redis for the lock (what Redisson does with pub/sub); both waits share one deadline.
// Stock never comes back in the database, so a process that saw SOLD_OUT remembers it and
// answers the rest of the stampede without the lock.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Mutex, withTimeout, type MutexInterface } from 'async-mutex';
import { SOLD_OUT, unavailable } from '../domain.js';
import { CampaignRefs, redisOf } from './redis-shared.js';
import { insertAndClaim, soldOutUnlessHeld } from './shared.js';
import type { StrategyModule } from './types.js';

/** The lock's time to live; the watchdog extends it every third of that while the holder works. */
const LOCK_TTL_MS = 3_000;
/** Longest a request waits for the lock (local queue + Redis) before answering 503. */
const LOCK_WAIT_MS = 10_000;
const MAX_POLL_MS = 20;
const MAX_COUPONS = 10_000;

const WAIT_EXCEEDED = new Error('lock wait exceeded');
const GAVE_UP = unavailable(`waited more than ${LOCK_WAIT_MS} ms for the coupon lock`);

export const redisLock: StrategyModule = {
  summary: 'distributed lock per coupon (token, TTL, watchdog, safe release) around the db-atomic path — exact because of the database, not the lock',
  requires: ['redis'],
  admission: 'database',
  queued: false,
  mayOverIssue: false,
  create: (ctx) => {
    const redis = redisOf(ctx);
    const { db, log } = ctx;
    const refs = new CampaignRefs(redis);
    const mutexes = new Map<number, MutexInterface>();
    const soldOut = new Set<number>();
    const mutexFor = (couponId: number) => {
      let m = mutexes.get(couponId);
      if (m === undefined) {
        if (mutexes.size >= MAX_COUPONS) mutexes.clear();
        mutexes.set(couponId, (m = withTimeout(new Mutex(), LOCK_WAIT_MS, WAIT_EXCEEDED)));
      }
      return m;
    };

    /** SET NX PX until it succeeds or the deadline passes; returns the token or undefined. */
    const lock = async (key: string, deadline: number): Promise<string | undefined> => {
      const token = randomBytes(16).toString('hex');
      for (let attempt = 0; ; attempt++) {
        if ((await redis.client.set(key, token, 'PX', LOCK_TTL_MS, 'NX')) === 'OK') return token;
        const left = deadline - Date.now();
        if (left <= 0) return undefined;
        await sleep(Math.min(left, 1 + Math.random() * Math.min(MAX_POLL_MS, 2 ** attempt)));
      }
    };

    return {
      async issue(coupon, userId, now) {
        if (soldOut.has(coupon.id)) return soldOutUnlessHeld(db, coupon.id, userId);
        const deadline = Date.now() + LOCK_WAIT_MS;
        let releaseLocal: MutexInterface.Releaser;
        try {
          releaseLocal = await mutexFor(coupon.id).acquire();
        } catch (err) {
          if (err === WAIT_EXCEEDED) return GAVE_UP;
          throw err;
        }
        try {
          // Decided while we queued.
          if (soldOut.has(coupon.id)) return await soldOutUnlessHeld(db, coupon.id, userId);
          const key = refs.get(coupon.id).keys.lock;
          const token = await lock(key, deadline);
          if (token === undefined) return GAVE_UP;
          const watchdog = setInterval(() => {
            redis.scripts.extend(key, token, LOCK_TTL_MS).then(
              (ok) => ok || log.warn({ couponId: coupon.id }, 'redis-lock: lock lost while held; the database constraints still decide'),
              () => undefined,
            );
          }, LOCK_TTL_MS / 3);
          try {
            const outcome = await insertAndClaim(db, coupon.id, userId, now);
            if (outcome === SOLD_OUT) {
              if (soldOut.size >= MAX_COUPONS) soldOut.clear();
              soldOut.add(coupon.id);
            }
            return outcome;
          } finally {
            clearInterval(watchdog);
            await redis.scripts.unlock(key, token).catch((err: unknown) => log.warn({ err, couponId: coupon.id }, 'redis-lock: unlock failed; the lock expires by itself'));
          }
        } finally {
          releaseLocal();
        }
      },
    };
  },
};
