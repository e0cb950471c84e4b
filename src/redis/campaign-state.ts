// A campaign's admission state in Redis (state hash + admitted-users set, and for queued
// campaigns the stream, its consumer group and the workers' registry entry): created when the
// campaign is created, and rebuilt from the database when Redis has lost it.
//
// The rebuild never re-admits anyone and never exceeds the stock: the admitted users are the
// database's rows ∪ entries still in the stream ∪ dead letters. Redis is read first, in one
// MULTI (an entry leaves the stream only after its row committed, or atomically into the dead
// letters), then the database, so an entry moving on in between is seen on one side or the
// other. While the state is missing every admission answers MISSING, so nothing new can be
// admitted between the reads and the atomic restore (which only creates state that is absent).
import { randomBytes } from 'node:crypto';
import type { Logger } from '../util/logger.js';
import type { RedisHandle } from './client.js';
import { WORKER_GROUP, type CampaignKeys } from './keys.js';
import { unavailable } from '../coupons/domain.js';
import { MISSING, UNSETTLED, type CampaignWindow } from './scripts.js';
import { isReplyError, parseEntries } from './streams.js';

/** What Redis needs to know of a campaign (a coupon is one). */
export interface Campaign {
  readonly id: number;
  readonly totalQuantity: number;
  readonly issueStartsAt: Date;
  readonly issueEndsAt: Date;
}

/**
 * The users holding a row for a campaign, read from the database by the caller (the coupons
 * layer, which owns the repository: this module stays below it).
 */
export type IssuedUsers = (couponId: number) => Promise<readonly string[]>;

/** Redis keeps a campaign's state this long after its window closes (status lookups, reconcile). */
export const STATE_RETENTION_MS = 24 * 3600 * 1000;
const LOAD_CHUNK = 5_000;
const LOAD_KEY_TTL_MS = 60_000;

export function campaignWindow(coupon: Campaign): CampaignWindow {
  const endsAtMs = coupon.issueEndsAt.getTime();
  return { totalQuantity: coupon.totalQuantity, startsAtMs: coupon.issueStartsAt.getTime(), endsAtMs, expireAtMs: endsAtMs + STATE_RETENTION_MS };
}

/** Creates the stream's consumer group (from the beginning) unless it exists. */
export async function ensureGroup(redis: RedisHandle, couponId: number): Promise<void> {
  try {
    await redis.client.xgroup('CREATE', redis.keys.campaign(couponId).stream, WORKER_GROUP, '0', 'MKSTREAM');
  } catch (err) {
    if (!isReplyError(err, 'BUSYGROUP')) throw err;
  }
}

/** Makes a queued campaign's stream known to the workers. */
export async function registerStream(redis: RedisHandle, couponId: number): Promise<void> {
  await ensureGroup(redis, couponId);
  await redis.client.sadd(redis.keys.registry, String(couponId));
}

export interface AdmittedUsers {
  /** Users with a row. */
  readonly issued: readonly string[];
  /** Users with an entry in the stream (acknowledged or not). */
  readonly queued: readonly string[];
  /** Users with a dead letter (admitted, not persisted: they hold stock until replayed). */
  readonly dead: readonly string[];
}

/** Everyone Redis must consider admitted for this campaign (see the module header for the order). */
export async function loadAdmittedUsers(redis: RedisHandle, issuedUsers: IssuedUsers, couponId: number): Promise<AdmittedUsers> {
  const keys = redis.keys.campaign(couponId);
  const replies = await redis.client.multi().xrange(keys.stream, '-', '+').xrange(keys.dead, '-', '+').exec();
  if (replies === null) throw new Error('redis: MULTI was aborted');
  const users = (i: number): string[] => {
    const [err, reply] = replies[i] ?? [new Error('missing MULTI reply'), null];
    if (err !== null) throw err;
    const out: string[] = [];
    for (const e of parseEntries(reply)) {
      const u = e.fields.get('u');
      if (u !== undefined && u !== '') out.push(u);
    }
    return out;
  };
  const queued = users(0);
  const dead = users(1);
  const issued = await issuedUsers(couponId);
  return { issued, queued, dead };
}

/**
 * Creates the campaign's state from the database and the queue unless it exists — `rebuilt`
 * unless this is the campaign's creation. Returns the issued count it created, or undefined when
 * another process restored it first.
 */
export async function restoreCampaign(redis: RedisHandle, issuedUsers: IssuedUsers, coupon: Campaign, queued: boolean, rebuilt = true): Promise<number | undefined> {
  if (queued) await registerStream(redis, coupon.id);
  const loadKey = await loadSeatHolders(redis, issuedUsers, coupon.id);
  const created = await redis.scripts.restore(redis.keys.campaign(coupon.id), loadKey, campaignWindow(coupon), rebuilt ? Date.now() : 0);
  // A rebuilt count may differ from what instances cached (a local sold-out flag): drop it.
  if (created !== undefined) await redis.invalidate(coupon.id);
  return created;
}

/** Everyone holding a seat (rows, queue, dead letters) in a temporary set of the campaign's slot; returns its key. */
async function loadSeatHolders(redis: RedisHandle, issuedUsers: IssuedUsers, couponId: number): Promise<string> {
  const admitted = await loadAdmittedUsers(redis, issuedUsers, couponId);
  const all = [...new Set([...admitted.issued, ...admitted.queued, ...admitted.dead])];
  const loadKey = redis.keys.usersLoad(couponId, randomBytes(6).toString('hex'));
  for (let i = 0; i < all.length; i += LOAD_CHUNK) {
    await redis.client.multi().sadd(loadKey, ...all.slice(i, i + LOAD_CHUNK)).pexpire(loadKey, LOAD_KEY_TTL_MS).exec();
  }
  return loadKey;
}

/**
 * A state created or settled on another server (the admission scripts' UNSETTLED: a promoted
 * replica, a restart): admits in Redis everyone holding a seat in the database or the queue that
 * the state lacks (admissions the old primary acknowledged and never passed on, whose entries a
 * worker had already persisted), and records this server's run id (settle.lua). Returns how many
 * were missing, or undefined when the campaign has no state (its next admission rebuilds it).
 */
export async function settleCampaign(redis: RedisHandle, issuedUsers: IssuedUsers, coupon: Campaign, queued: boolean): Promise<number | undefined> {
  if (queued) await registerStream(redis, coupon.id);
  const loadKey = await loadSeatHolders(redis, issuedUsers, coupon.id);
  const added = await redis.scripts.settle(redis.keys.campaign(coupon.id), loadKey);
  if (added !== undefined && added > 0) await redis.invalidate(coupon.id);
  return added;
}

/** Admitted count and stock per campaign, from the state hashes; campaigns without state are left out. */
export async function admissionCounts(redis: RedisHandle, couponIds: readonly number[]): Promise<Map<number, { admitted: number; total: number }>> {
  const out = new Map<number, { admitted: number; total: number }>();
  if (couponIds.length === 0) return out;
  // One command each (auto-pipelined, per node on a Cluster, where a pipeline cannot span slots).
  const replies = await Promise.all(couponIds.map((id) => redis.client.hmget(redis.keys.campaign(id).state, 'total', 'issued').catch(() => null)));
  couponIds.forEach((id, i) => {
    const reply = replies[i];
    if (!Array.isArray(reply)) return;
    const [total, issued] = reply;
    if (total === null || total === undefined || issued === null || issued === undefined) return;
    out.set(id, { admitted: Number(issued), total: Number(total) });
  });
  return out;
}

/** Stock not yet admitted per campaign, from the state hashes; campaigns without state are left out. */
export async function remainingStock(redis: RedisHandle, couponIds: readonly number[]): Promise<Map<number, number>> {
  const counts = await admissionCounts(redis, couponIds);
  return new Map([...counts].map(([id, c]) => [id, Math.max(0, c.total - c.admitted)]));
}

/** Admitted count per campaign (IssueStrategy.admitted of the Redis strategies). */
export async function admittedCounts(redis: RedisHandle, couponIds: readonly number[]): Promise<Map<number, number>> {
  const counts = await admissionCounts(redis, couponIds);
  return new Map([...counts].map(([id, c]) => [id, c.admitted]));
}

/** What Redis tells of one user's admission after an admission call lost its answer. */
export type AdmissionCheck = 'admitted' | 'not-admitted' | 'unknown';

/**
 * API clocks may disagree by this much: a state rebuilt this long before an attempt may still
 * have been rebuilt after it.
 */
const CLOCK_MARGIN_MS = 10_000;

/**
 * Whether `userId` is admitted to the campaign now, asked after an admission attempted at
 * `attemptMs` failed. `admitted`: the user is in the set (this attempt or an earlier one).
 * `not-admitted`: the state exists, was not rebuilt around the attempt, and does not hold the
 * user — the script did not run, so nothing was admitted. `unknown`: Redis lost the state around
 * the attempt (a worker may still be writing an entry that Redis no longer shows). A call that
 * fails is an error: Redis has not answered yet.
 */
export async function checkAdmission(redis: RedisHandle, keys: CampaignKeys, userId: string, attemptMs: number): Promise<AdmissionCheck> {
  const replies = await redis.client.multi().sismember(keys.users, userId).hget(keys.state, 'rebuilt').exists(keys.state).exec();
  if (replies === null) throw new Error('redis: MULTI was aborted');
  const [member, rebuilt, exists] = replies.map(([err, reply]) => {
    if (err !== null) throw err;
    return reply;
  });
  if (member === 1) return 'admitted';
  if (exists !== 1) return 'unknown';
  return Number(rebuilt ?? 0) > attemptMs - CLOCK_MARGIN_MS ? 'unknown' : 'not-admitted';
}

function needsRepair<R>(outcome: R | typeof MISSING | typeof UNSETTLED): outcome is typeof MISSING | typeof UNSETTLED {
  return outcome === MISSING || outcome === UNSETTLED;
}

/** An admission whose campaign state could be neither rebuilt nor settled: nothing was admitted (503). */
export const UNREPAIRED = unavailable("campaign state is missing in Redis, or another server's, and could not be rebuilt or settled");

/** Rebuilds on demand, once per coupon at a time per process (a stampede sees MISSING together). */
export class CampaignStates {
  private readonly inFlight = new Map<number, Promise<unknown>>();

  constructor(
    private readonly redis: RedisHandle,
    private readonly issuedUsers: IssuedUsers,
    private readonly log: Logger,
    /** Queued campaigns (redis-lua-async*) also get their stream registered for the workers. */
    private readonly queued: boolean,
  ) {}

  /**
   * At campaign creation: empty state (the database has no rows yet). A failure does not fail
   * the creation — the campaign row exists, and the first request rebuilds the state.
   */
  async prepare(coupon: Campaign): Promise<void> {
    try {
      await restoreCampaign(this.redis, this.issuedUsers, coupon, this.queued, false);
    } catch (err) {
      this.log.warn({ err, couponId: coupon.id }, 'redis: preparing the campaign state failed; the first request will build it');
    }
  }

  /**
   * Runs an admission; when it answers MISSING (Redis lost the state: rebuild it) or UNSETTLED
   * (the state is another server's — a promoted replica, a restart: settle it), repairs the state
   * and runs it once more. A repair runs once per coupon at a time per process. Answers UNREPAIRED
   * when the state is still not usable.
   */
  async admit<R>(coupon: Campaign, attempt: () => Promise<R | typeof MISSING | typeof UNSETTLED>): Promise<R | typeof UNREPAIRED> {
    const first = await attempt();
    if (!needsRepair(first)) return first;
    await this.repair(coupon, first);
    const second = await attempt();
    return needsRepair(second) ? UNREPAIRED : second;
  }

  private repair(coupon: Campaign, why: typeof MISSING | typeof UNSETTLED): Promise<unknown> {
    let p = this.inFlight.get(coupon.id);
    if (p === undefined) {
      p = (why === MISSING ? this.rebuildNow(coupon) : this.settleNow(coupon)).finally(() => this.inFlight.delete(coupon.id));
      this.inFlight.set(coupon.id, p);
    }
    return p;
  }

  private async rebuildNow(coupon: Campaign): Promise<void> {
    const created = await restoreCampaign(this.redis, this.issuedUsers, coupon, this.queued);
    if (created !== undefined) this.log.warn({ couponId: coupon.id, issued: created }, 'redis: campaign state was missing; rebuilt from the database');
  }

  private async settleNow(coupon: Campaign): Promise<void> {
    const added = await settleCampaign(this.redis, this.issuedUsers, coupon, this.queued);
    if (added === undefined) return;
    this.redis.stats.settles++;
    this.log.warn(
      { couponId: coupon.id, added },
      added > 0
        ? 'redis: the campaign state came from another server (a failover, a restart) and lacked admissions the database or the queue holds; admitted them again'
        : 'redis: the campaign state came from another server (a failover, a restart); settled against the database, nothing was missing',
    );
  }
}
