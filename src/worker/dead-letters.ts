// Dead letters: entries the worker could not persist, kept per campaign ({cpn:N}:dead) with the
// reason. Listing them, replaying them (after fixing the cause) and discarding them (an issuance
// that will never be honoured) is an operator's job, through the admin endpoints. A dead letter
// holds its user's admission and a unit of stock until it is replayed or discarded; its user
// hears HELD meanwhile (the held index, kept by the scripts).
import type { Db } from '../db/index.js';
import { findIssue } from '../coupons/repository.js';
import { registerStream } from '../redis/campaign-state.js';
import type { RedisHandle } from '../redis/client.js';
import { parseEntries, type StreamEntry } from '../redis/streams.js';

/** Discard records kept per campaign (XADD MAXLEN ~), and how long after the latest discard. */
const DISCARDED_KEPT = 1_000;
const DISCARDED_RETENTION_MS = 30 * 24 * 3_600_000;

const U64_MAX = 2n ** 64n - 1n;

/** A Redis stream id: two unsigned 64-bit integers (what XRANGE accepts without an error). */
export function isStreamId(id: string): boolean {
  const m = /^([0-9]{1,20})-([0-9]{1,20})$/.exec(id);
  return m !== null && BigInt(m[1]!) <= U64_MAX && BigInt(m[2]!) <= U64_MAX;
}

export interface DeadLetter {
  readonly couponId: number;
  /** Id in the dead-letter stream (what replay and discard take). */
  readonly id: string;
  /** Id the entry had in the issuance stream. */
  readonly sourceId: string;
  readonly reason: string;
  readonly deliveries: number;
  readonly failedAt: string;
  /** The entry's own fields (normally c, u, t, r). */
  readonly entry: Record<string, string>;
  /** `held`: waiting for a replay or a discard. `discarded`: settled by a discard, at `settledAt`. */
  readonly state: 'held' | 'discarded';
  readonly settledAt?: string | undefined;
}

function isoOf(ms: string | undefined): string {
  const n = Number(ms);
  return ms !== undefined && Number.isFinite(n) && n > 0 ? new Date(n).toISOString() : '';
}

function toDeadLetter(couponId: number, e: StreamEntry): DeadLetter {
  const entry: Record<string, string> = {};
  for (const [k, v] of e.fields) if (!k.startsWith('_')) entry[k] = v;
  return {
    couponId,
    id: e.id,
    sourceId: e.fields.get('_source') ?? '',
    reason: e.fields.get('_reason') ?? '',
    deliveries: Number(e.fields.get('_deliveries') ?? 0),
    failedAt: isoOf(e.fields.get('_failed')),
    entry,
    state: 'held',
  };
}

/** A record of discard.lua: the dead letter as it was, under its dead-letter id. */
function toDiscarded(couponId: number, e: StreamEntry): DeadLetter {
  return { ...toDeadLetter(couponId, e), id: e.fields.get('_dead') ?? '', state: 'discarded', settledAt: isoOf(e.fields.get('_discarded')) };
}

async function couponIds(redis: RedisHandle, couponId: number | undefined): Promise<number[]> {
  if (couponId !== undefined) return [couponId];
  return (await redis.client.smembers(redis.keys.registry)).map(Number).filter(Number.isSafeInteger).sort((a, b) => a - b);
}

/** Dead letters of one coupon, or of every registered campaign; oldest first, at most `limit`. */
export async function listDeadLetters(redis: RedisHandle, options: { couponId?: number | undefined; limit: number }): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  for (const couponId of await couponIds(redis, options.couponId)) {
    if (out.length >= options.limit) break;
    const reply = await redis.client.xrange(redis.keys.campaign(couponId).dead, '-', '+', 'COUNT', options.limit - out.length);
    for (const e of parseEntries(reply)) out.push(toDeadLetter(couponId, e));
  }
  return out;
}

/** Discarded dead letters of one coupon, or of every registered campaign; oldest discard first, at most `limit`. */
export async function listDiscarded(redis: RedisHandle, options: { couponId?: number | undefined; limit: number }): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  for (const couponId of await couponIds(redis, options.couponId)) {
    if (out.length >= options.limit) break;
    const reply = await redis.client.xrange(redis.keys.campaign(couponId).discarded, '-', '+', 'COUNT', options.limit - out.length);
    for (const e of parseEntries(reply)) out.push(toDiscarded(couponId, e));
  }
  return out;
}

export interface ReplayResult {
  /** Dead-letter id → new issuance stream id (Kafka: its new partition-offset). */
  readonly replayed: ReadonlyArray<{ readonly id: string; readonly streamId: string }>;
  readonly notFound: readonly string[];
  /** Found but not replayed, and why (Kafka only: `truncated`, `in-progress`). */
  readonly refused: ReadonlyArray<{ readonly id: string; readonly reason: RefusalReason }>;
}

export interface DiscardResult {
  /** `released`: the user's seat and admission were given back (they may issue again). */
  readonly discarded: ReadonlyArray<{ readonly id: string; readonly released: boolean }>;
  readonly notFound: readonly string[];
  /** Found but not discarded, and why (Kafka only: `in-progress`). */
  readonly refused: ReadonlyArray<{ readonly id: string; readonly reason: RefusalReason }>;
}

/**
 * `truncated`: a Kafka dead letter that kept only part of its record; it can only be discarded.
 * `in-progress`: another replay or discard of it holds its claim; ask again.
 */
export type RefusalReason = 'truncated' | 'in-progress';

/** The ids to act on: those given, or every dead letter of the coupon. */
async function targetsOf(redis: RedisHandle, couponId: number, ids: readonly string[] | undefined): Promise<readonly string[]> {
  return ids ?? parseEntries(await redis.client.xrange(redis.keys.campaign(couponId).dead, '-', '+')).map((e) => e.id);
}

/**
 * Puts dead letters (the given ids, or all of the coupon's) back on its stream. Each id is
 * replayed at most once however many replays race (replay.lua finds it and deletes it in one
 * step). The ids must be stream ids (isStreamId): the caller validates them all first.
 */
export async function replayDeadLetters(redis: RedisHandle, couponId: number, ids?: readonly string[]): Promise<ReplayResult> {
  const keys = redis.keys.campaign(couponId);
  const targets = await targetsOf(redis, couponId, ids);
  // The stream may have been retired or lost its group: make sure a worker will read it (but
  // do not create a stream for a coupon that has no dead letters at all).
  if (targets.length > 0 && (await redis.client.xlen(keys.dead)) > 0) await registerStream(redis, couponId);
  const replayed: Array<{ id: string; streamId: string }> = [];
  const notFound: string[] = [];
  for (const id of targets) {
    const streamId = await redis.scripts.replay(keys, id);
    if (streamId === undefined) notFound.push(id);
    else replayed.push({ id, streamId });
  }
  return { replayed, notFound, refused: [] };
}

/**
 * Discards dead letters (the given ids, or all of the coupon's): each is deleted, recorded as
 * discarded, and gives back its user's seat and admission unless the user has a row (then the
 * row is the seat). Caches are invalidated after a release, so that a cached sold-out flag does
 * not keep refusing. The ids must be stream ids (isStreamId).
 */
export async function discardDeadLetters(redis: RedisHandle, db: Db, couponId: number, ids?: readonly string[]): Promise<DiscardResult> {
  const keys = redis.keys.campaign(couponId);
  const discarded: Array<{ id: string; released: boolean }> = [];
  const notFound: string[] = [];
  for (const id of await targetsOf(redis, couponId, ids)) {
    const [found] = parseEntries(await redis.client.xrange(keys.dead, id, id));
    if (found === undefined) {
      notFound.push(id);
      continue;
    }
    // The row is checked first: discard.lua releases the seat only for the user named here, and
    // nothing else can write this user's row while their issuance is a dead letter.
    const user = found.fields.get('u') ?? '';
    const noRowFor = user !== '' && (await findIssue(db, couponId, user)) === undefined ? user : '';
    const outcome = await redis.scripts.discard(keys, id, noRowFor, Date.now(), DISCARDED_KEPT, DISCARDED_RETENTION_MS);
    if (outcome === 'NOT_FOUND') notFound.push(id); // replayed or discarded meanwhile
    else discarded.push({ id, released: outcome === 'RELEASED' });
  }
  if (discarded.some((d) => d.released)) await redis.invalidate(couponId);
  return { discarded, notFound, refused: [] };
}
