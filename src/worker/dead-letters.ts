// Dead letters: entries the worker could not persist, kept per campaign ({cpn:N}:dead) with the
// reason. Listing them and replaying them (after fixing the cause) is an operator's job, through
// the admin endpoints. A dead letter still holds its user's admission and a unit of stock.
import { registerStream } from '../redis/campaign-state.js';
import type { RedisHandle } from '../redis/client.js';
import { parseEntries, type StreamEntry } from '../redis/streams.js';

export interface DeadLetter {
  readonly couponId: number;
  /** Id in the dead-letter stream (what replay takes). */
  readonly id: string;
  /** Id the entry had in the issuance stream. */
  readonly sourceId: string;
  readonly reason: string;
  readonly deliveries: number;
  readonly failedAt: string;
  /** The entry's own fields (normally c, u, t, r). */
  readonly entry: Record<string, string>;
}

function toDeadLetter(couponId: number, e: StreamEntry): DeadLetter {
  const entry: Record<string, string> = {};
  for (const [k, v] of e.fields) if (!k.startsWith('_')) entry[k] = v;
  const failed = Number(e.fields.get('_failed'));
  return {
    couponId,
    id: e.id,
    sourceId: e.fields.get('_source') ?? '',
    reason: e.fields.get('_reason') ?? '',
    deliveries: Number(e.fields.get('_deliveries') ?? 0),
    failedAt: Number.isFinite(failed) ? new Date(failed).toISOString() : '',
    entry,
  };
}

/** Dead letters of one coupon, or of every registered campaign; oldest first, at most `limit`. */
export async function listDeadLetters(redis: RedisHandle, options: { couponId?: number | undefined; limit: number }): Promise<DeadLetter[]> {
  const ids =
    options.couponId !== undefined
      ? [options.couponId]
      : (await redis.client.smembers(redis.keys.registry)).map(Number).filter(Number.isSafeInteger).sort((a, b) => a - b);
  const out: DeadLetter[] = [];
  for (const couponId of ids) {
    if (out.length >= options.limit) break;
    const reply = await redis.client.xrange(redis.keys.campaign(couponId).dead, '-', '+', 'COUNT', options.limit - out.length);
    for (const e of parseEntries(reply)) out.push(toDeadLetter(couponId, e));
  }
  return out;
}

export interface ReplayResult {
  /** Dead-letter id → new issuance stream id. */
  readonly replayed: ReadonlyArray<{ readonly id: string; readonly streamId: string }>;
  readonly notFound: readonly string[];
}

/** Puts dead letters (the given ids, or all of the coupon's) back on its stream. */
export async function replayDeadLetters(redis: RedisHandle, couponId: number, ids?: readonly string[]): Promise<ReplayResult> {
  const keys = redis.keys.campaign(couponId);
  const targets = ids ?? parseEntries(await redis.client.xrange(keys.dead, '-', '+')).map((e) => e.id);
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
  return { replayed, notFound };
}
