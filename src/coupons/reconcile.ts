// `couponrush reconcile`: compares each Redis-admitted campaign's state with the database and
// the queue, reports drift, and with `repair` rebuilds the state from the database.
//
// Admitted users must equal rows ∪ queued entries ∪ dead letters, and the state's issued count
// must equal their number; total and window must match the campaign row. Repair deletes the
// state and restores it exactly like the hot path's rebuild (see campaign-state.ts), then
// publishes an invalidation so every instance drops its local caches. Run it after Redis lost
// writes (a crash with appendfsync everysec, a failover) and before reopening traffic: a
// redis-lua-sync insert still in flight at that moment looks like drift and is dropped from
// Redis (the database's constraints keep the result exact anyway).
import type { Db } from '../db/index.js';
import type { KafkaHandle } from '../kafka/client.js';
import { cachedCoupons, heldInKafka } from './queued-admission.js';
import { STATE_RETENTION_MS, campaignWindow, ensureGroup, loadAdmittedUsers, restoreCampaign, type IssuedUsers } from '../redis/campaign-state.js';
import type { RedisHandle } from '../redis/client.js';
import type { Coupon } from './domain.js';
import { campaignsOf, findCoupon, issuedCount, loadIssuedUsers } from './repository.js';

const SAMPLE = 5;

export interface CampaignReport {
  readonly couponId: number;
  readonly strategy: string;
  readonly status: 'OK' | 'DRIFT';
  readonly problems: readonly string[];
  readonly redisIssued: number | undefined;
  readonly total: number;
  readonly dbRows: number;
  readonly dbCounter: number;
  /** Admissions in the stream whose user has no row yet: what the worker still has to persist. */
  readonly queued: number;
  /** Admissions in the dead-letter stream: they hold stock until replayed. */
  readonly dead: number;
  /** redis-lua-kafka: seats marked producing (a record not acknowledged yet, or never sent). */
  readonly producing?: number;
  readonly repaired: boolean;
}

/**
 * A producing mark older than this cannot belong to a produce still in flight (the API gives up
 * on one after KAFKA_PRODUCE_TIMEOUT_MS and closes its producer), even across clock skew.
 */
export function producingGraceMs(produceTimeoutMs: number): number {
  return Math.max(60_000, 2 * produceTimeoutMs + 10_000);
}

export interface ReconcileOptions {
  readonly repair: boolean;
  /**
   * The strategies whose admission state lives in Redis (the only ones reconciled), and those of
   * them that queue; the caller derives both from the strategies' declarations.
   */
  readonly strategies: { readonly redisAdmitted: readonly string[]; readonly queued: readonly string[]; readonly kafka?: readonly string[] };
  /** Set with KAFKA_BROKERS: the kafka strategies' campaigns are checked against the topic too. */
  readonly kafka?: KafkaHandle | undefined;
  /** Only this campaign; default: every Redis campaign whose window ended less than the retention ago. */
  readonly couponId?: number | undefined;
}

async function campaigns(db: Db, couponId: number | undefined, redisAdmitted: readonly string[]): Promise<Coupon[]> {
  if (couponId !== undefined) {
    // A campaign of another strategy has no Redis state to check (and --repair must not make one).
    const c = await findCoupon(db, couponId);
    return c === undefined || !redisAdmitted.includes(c.strategy) ? [] : [c];
  }
  const out: Coupon[] = [];
  for (const r of await campaignsOf(db, redisAdmitted, new Date(Date.now() - STATE_RETENTION_MS))) {
    const c = await findCoupon(db, r.id);
    if (c !== undefined) out.push(c);
  }
  return out;
}

function sample(values: readonly string[]): string {
  return values.slice(0, SAMPLE).join(', ') + (values.length > SAMPLE ? ', …' : '');
}

export async function reconcile(db: Db, redis: RedisHandle, options: ReconcileOptions): Promise<CampaignReport[]> {
  const reports: CampaignReport[] = [];
  const list = await campaigns(db, options.couponId, options.strategies.redisAdmitted);
  const kafkaStrategies = options.strategies.kafka ?? [];
  // The topic is read once for every campaign (its unconsumed records and dead letters).
  const held = options.kafka !== undefined && list.some((c) => kafkaStrategies.includes(c.strategy)) ? await heldInKafka(options.kafka, cachedCoupons(db)) : undefined;
  for (const coupon of list) {
    const viaKafka = kafkaStrategies.includes(coupon.strategy)
      ? { held: held?.get(coupon.id) ?? new Set<string>(), known: held !== undefined, graceMs: producingGraceMs(options.kafka?.settings.produceTimeoutMs ?? 0) }
      : undefined;
    reports.push(await reconcileOne(db, redis, coupon, options.repair, options.strategies.queued.includes(coupon.strategy), viaKafka));
  }
  return reports;
}

interface ViaKafka {
  /** Users with an unconsumed record or a live dead letter on the topic. */
  readonly held: ReadonlySet<string>;
  /** False without KAFKA_BROKERS: the topic could not be read. */
  readonly known: boolean;
  readonly graceMs: number;
}

async function reconcileOne(db: Db, redis: RedisHandle, coupon: Coupon, repair: boolean, queued: boolean, viaKafka?: ViaKafka): Promise<CampaignReport> {
  const keys = redis.keys.campaign(coupon.id);
  const problems: string[] = [];

  const state = await redis.client.hgetall(keys.state);
  const redisUsers = new Set(await redis.client.smembers(keys.users));
  const admitted = await loadAdmittedUsers(redis, issuedUsersOf(db), coupon.id);
  const dbCounter = (await issuedCount(db, coupon.id)) ?? 0;
  const expected = new Set([...admitted.issued, ...admitted.queued, ...admitted.dead]);
  const persisted = new Set(admitted.issued);

  // redis-lua-kafka: a seat marked producing is settled when the database or the topic has the
  // user; an old mark with neither is an admission whose record never reached Kafka (a produce
  // whose outcome was unknown and did not land, or a process that died before producing).
  let producing = 0;
  let settledMarks: string[] = [];
  let unproduced: string[] = [];
  if (viaKafka !== undefined) {
    if (!viaKafka.known) problems.push('KAFKA_BROKERS is not set: the topic\'s unconsumed records cannot be checked (not repaired)');
    for (const u of viaKafka.held) expected.add(u);
    const marks = await redis.client.zrange(keys.producing, 0, -1, 'WITHSCORES');
    const rows = new Set(admitted.issued);
    const oldBefore = Date.now() - viaKafka.graceMs;
    for (let i = 0; i + 1 < marks.length; i += 2) {
      const user = marks[i]!;
      producing++;
      if (rows.has(user) || viaKafka.held.has(user)) settledMarks.push(user);
      else if (viaKafka.known && Number(marks[i + 1]) < oldBefore) unproduced.push(user);
      else expected.add(user); // a produce that may still land: its seat stays
    }
    if (unproduced.length > 0) {
      problems.push(`${unproduced.length} seat(s) held by admissions whose record is neither in the database nor on the topic, admitted over ${Math.round(viaKafka.graceMs / 1000)} s ago (never produced): ${sample(unproduced)}`);
    }
    if (!viaKafka.known) {
      settledMarks = [];
      unproduced = [];
    }
  }

  const present = state.total !== undefined;
  const redisIssued = present ? Number(state.issued) : undefined;
  const w = campaignWindow(coupon);
  const open = coupon.issueEndsAt.getTime() > Date.now();
  if (!present) {
    // After the window nothing admits any more, so a missing state matters only while open.
    if (open) problems.push('admission state is missing in Redis (the next request would rebuild it)');
  } else {
    if (Number(state.total) !== w.totalQuantity || Number(state.starts) !== w.startsAtMs || Number(state.ends) !== w.endsAtMs) {
      problems.push(`total/window in Redis (${state.total}, ${state.starts}..${state.ends}) differ from the database (${w.totalQuantity}, ${w.startsAtMs}..${w.endsAtMs})`);
    }
    if (redisIssued !== expected.size) {
      problems.push(`Redis counts ${redisIssued} admitted, the database and the queue account for ${expected.size}`);
    }
    const unknown = [...expected].filter((u) => !redisUsers.has(u));
    if (unknown.length > 0) {
      problems.push(`${unknown.length} user(s) with a row, a queued entry or a dead letter are unknown to Redis and could be admitted again (the database's UNIQUE would refuse a second row): ${sample(unknown)}`);
    }
    const orphans = [...redisUsers].filter((u) => !expected.has(u));
    if (orphans.length > 0) {
      problems.push(`${orphans.length} user(s) admitted in Redis have no row, no queued entry and no dead letter (a lost admission, or a redis-lua-sync insert in flight): ${sample(orphans)}`);
    }
  }
  if (dbCounter !== admitted.issued.length) {
    problems.push(`database counter issued_quantity=${dbCounter} but ${admitted.issued.length} rows (not repaired here: investigate)`);
  }
  if (queued && (await redis.client.sismember(redis.keys.registry, String(coupon.id))) === 0) {
    problems.push('the stream is not registered for the workers');
  }

  let repaired = false;
  if (repair && (settledMarks.length > 0 || unproduced.length > 0)) {
    if (settledMarks.length > 0) await redis.client.zrem(keys.producing, ...settledMarks);
    // Only seats still marked are freed: one whose record got acknowledged meanwhile stays.
    if ((await redis.scripts.releaseUnproduced(keys, unproduced)) > 0) await redis.invalidate(coupon.id);
    repaired = true;
  }
  const redisProblems = problems.filter((p) => !p.startsWith('database counter') && !p.startsWith('KAFKA_BROKERS') && !p.includes('(never produced)'));
  if (repair && redisProblems.length > 0 && open && viaKafka?.known !== false) {
    // Delete, then restore from a snapshot taken after the delete: admissions in between see
    // MISSING and rebuild the same way; restore only ever creates absent state.
    await redis.client.del(keys.state, keys.users);
    // Kafka campaigns: the rows, what the topic holds, and the marks of produces that may still land.
    const kafkaSeats = viaKafka === undefined ? [] : [...viaKafka.held, ...[...expected].filter((u) => !admitted.issued.includes(u))];
    const users: IssuedUsers = async (id) => [...new Set([...(await loadIssuedUsers(db, id)), ...kafkaSeats])];
    await restoreCampaign(redis, viaKafka === undefined ? issuedUsersOf(db) : users, coupon, queued);
    if (queued) await ensureGroup(redis, coupon.id);
    await redis.invalidate(coupon.id);
    repaired = true;
  }

  return {
    couponId: coupon.id,
    strategy: coupon.strategy,
    status: problems.length === 0 ? 'OK' : 'DRIFT',
    problems,
    redisIssued,
    total: coupon.totalQuantity,
    dbRows: admitted.issued.length,
    dbCounter,
    // The stream keeps acknowledged entries too (until trimmed): only those without a row still wait.
    queued: admitted.queued.filter((u) => !persisted.has(u)).length,
    dead: admitted.dead.length,
    ...(viaKafka === undefined ? {} : { producing }),
    repaired,
  };
}

function issuedUsersOf(db: Db): IssuedUsers {
  return (couponId) => loadIssuedUsers(db, couponId);
}

/** The verdicts of the last periodic reconcile (src/worker/reconcile-loop.ts), for the metrics. */
export interface ReconcileStatus {
  /** Coupon id → true when the campaign drifted. */
  readonly drift: ReadonlyMap<number, boolean>;
  /** When that reconcile ran (ms since epoch), or undefined when none has. */
  readonly at: number | undefined;
}

/** Replaces the recorded verdicts with these reports' (one MULTI: readers never see half). */
export async function saveReconcileStatus(redis: RedisHandle, reports: readonly CampaignReport[], at = Date.now()): Promise<void> {
  const key = redis.keys.reconcileStatus;
  const fields: string[] = ['at', String(at)];
  for (const r of reports) fields.push(String(r.couponId), r.status);
  await redis.client.multi().del(key).hset(key, ...fields).exec();
}

export async function loadReconcileStatus(redis: RedisHandle): Promise<ReconcileStatus> {
  const raw = await redis.client.hgetall(redis.keys.reconcileStatus);
  const drift = new Map<number, boolean>();
  for (const [k, v] of Object.entries(raw)) {
    const id = Number(k);
    if (k !== 'at' && Number.isSafeInteger(id) && id > 0) drift.set(id, v === 'DRIFT');
  }
  const at = Number(raw.at);
  return { drift, at: Number.isFinite(at) && at > 0 ? at : undefined };
}
