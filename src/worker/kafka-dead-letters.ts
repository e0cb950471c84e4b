// Replaying and discarding the Kafka dead letters (`<topic>.dead`), each id at most once however
// many requests race: an id is claimed in Redis (SET NX PX) before anything is produced, the
// topic is read after the claim (a request that lost a race sees the settlement record), and a
// `done` marker replaces the claim once the settlement is on the topic. The Redis side follows:
// the user's held entry goes, and a discard gives back the seat of a dead letter that holds one
// (the worker's own validation says which do) when the user has no row.
import { randomBytes } from 'node:crypto';
import type { Db } from '../db/index.js';
import { cachedCoupons, validateRecord } from '../coupons/queued-admission.js';
import { findIssue } from '../coupons/repository.js';
import type { KafkaHandle } from '../kafka/client.js';
import { isKafkaDeadLetterId, produceDiscards, produceReplays, readDeadLetters, type KafkaDeadLetter } from '../kafka/dead-letters.js';
import { AUTH_HEADER } from '../kafka/records.js';
import type { RedisHandle } from '../redis/client.js';
import type { DiscardResult, RefusalReason, ReplayResult } from './dead-letters.js';

/** Outlives a topic read and the bounded sends of one request; a crashed request's claim expires. */
const CLAIM_TTL_MS = 5 * 60_000;
/** The `done` marker: the settlement record on the topic says it too, for ever; this saves a read. */
const DONE_TTL_MS = 30 * 24 * 3_600_000;

type How = 'replayed' | 'discarded';

/** What a request found of the ids it was given, once it holds the claims it could take. */
interface Claimed {
  /** Live dead letters of the coupon this request holds the claim of, with the claim's token. */
  readonly mine: ReadonlyArray<{ readonly letter: KafkaDeadLetter; readonly token: string }>;
  /** Known to the topic for this coupon but settled (or settled meanwhile). */
  readonly settled: readonly string[];
  readonly inProgress: readonly string[];
  /** Not Kafka dead letters of this coupon: the caller tries the streams with them. */
  readonly unknown: readonly string[];
}

export class KafkaDeadLetters {
  constructor(
    private readonly redis: RedisHandle,
    private readonly kafka: KafkaHandle,
    private readonly db: Db,
  ) {}

  /** The coupon's dead letters on the topic (`couponId` undefined: every coupon's), live and settled. */
  async read(couponId?: number): Promise<KafkaDeadLetter[]> {
    return (await readDeadLetters(this.kafka)).filter((d) => couponId === undefined || d.couponId === couponId);
  }

  /**
   * Replays the coupon's live dead letters with these ids (all of them when `ids` is undefined).
   * A truncated one is refused (`truncated`): only a discard settles it. Ids the topic does not
   * know for this coupon come back in `unknown`.
   */
  async replay(couponId: number, ids: readonly string[] | undefined): Promise<ReplayResult & { unknown: readonly string[] }> {
    const c = await this.claim(couponId, ids);
    const refused: Array<{ id: string; reason: RefusalReason }> = c.inProgress.map((id) => ({ id, reason: 'in-progress' }));
    const go: Array<{ letter: KafkaDeadLetter; token: string }> = [];
    for (const m of c.mine) {
      if (!m.letter.truncated) go.push(m);
      else {
        refused.push({ id: m.letter.id, reason: 'truncated' });
        await this.unclaim(m.letter.id, m.token);
      }
    }
    const placed = await this.settle(go, 'replayed', () => produceReplays(this.kafka, go.map((m) => m.letter)));
    const keys = this.redis.keys.campaign(couponId);
    for (const { letter } of go) {
      const user = letter.entry.u;
      if (user !== undefined && user !== '') await this.redis.scripts.releaseHeld(keys, user, `kafka:${letter.id}`, false);
    }
    return { replayed: go.map((m, i) => ({ id: m.letter.id, streamId: placed[i] ?? '' })), notFound: c.settled, refused, unknown: c.unknown };
  }

  /**
   * Discards the coupon's live dead letters with these ids (all of them when `ids` is undefined):
   * settled as `discarded` on the topic, then, for one that holds a seat (it passes the worker's
   * validation) and whose user has no row, the seat and admission are given back.
   */
  async discard(couponId: number, ids: readonly string[] | undefined): Promise<DiscardResult & { unknown: readonly string[] }> {
    const c = await this.claim(couponId, ids);
    await this.settle(c.mine, 'discarded', () => produceDiscards(this.kafka, c.mine.map((m) => m.letter.id)));
    const keys = this.redis.keys.campaign(couponId);
    const coupons = cachedCoupons(this.db);
    const discarded: Array<{ id: string; released: boolean }> = [];
    for (const { letter } of c.mine) {
      let released = false;
      const user = letter.entry.u;
      if (user !== undefined && user !== '') {
        const seat = await this.holdsSeat(letter, coupons);
        const noRow = seat && (await findIssue(this.db, couponId, user)) === undefined;
        released = await this.redis.scripts.releaseHeld(keys, user, `kafka:${letter.id}`, noRow);
      }
      discarded.push({ id: letter.id, released });
    }
    if (discarded.some((d) => d.released)) await this.redis.invalidate(couponId);
    return { discarded, notFound: c.settled, refused: c.inProgress.map((id) => ({ id, reason: 'in-progress' })), unknown: c.unknown };
  }

  /** Exactly when a rebuilt state counts it (heldInKafka): the worker's validation accepts it. */
  private async holdsSeat(d: KafkaDeadLetter, coupons: ReturnType<typeof cachedCoupons>): Promise<boolean> {
    if (d.truncated) return false;
    const v = await validateRecord({ key: d.sourceKey, value: d.value, headers: new Map(d.auth === undefined ? [] : [[AUTH_HEADER, d.auth]]) }, this.kafka.settings.recordSecrets, coupons);
    return v.ok && v.issue.couponId === d.couponId && v.issue.userId === d.entry.u;
  }

  /**
   * Claims the ids that are dead letters of this coupon on the topic, then reads the topic again:
   * only what is still live after the claim is this request's to settle.
   */
  private async claim(couponId: number, ids: readonly string[] | undefined): Promise<Claimed> {
    const before = await this.read(couponId);
    const known = new Set(before.map((d) => d.id));
    const targets = ids ?? before.filter((d) => d.settled === undefined).map((d) => d.id);
    const unknown = targets.filter((id) => !known.has(id) || !isKafkaDeadLetterId(id));
    const settled: string[] = [];
    const inProgress: string[] = [];
    const tokens = new Map<string, string>();
    for (const id of new Set(targets.filter((id) => known.has(id) && isKafkaDeadLetterId(id)))) {
      const token = `claim:${randomBytes(12).toString('hex')}`;
      const key = this.claimKey(id);
      if ((await this.redis.client.set(key, token, 'PX', CLAIM_TTL_MS, 'NX')) === 'OK') tokens.set(id, token);
      else if ((await this.redis.client.get(key))?.startsWith('done:') === true) settled.push(id);
      else inProgress.push(id);
    }
    const mine: Array<{ letter: KafkaDeadLetter; token: string }> = [];
    if (tokens.size > 0) {
      const live = new Map((await this.read(couponId)).filter((d) => d.settled === undefined).map((d) => [d.id, d]));
      for (const [id, token] of tokens) {
        const letter = live.get(id);
        if (letter !== undefined) mine.push({ letter, token });
        else {
          settled.push(id);
          await this.unclaim(id, token);
        }
      }
    }
    return { mine, settled, inProgress, unknown };
  }

  /**
   * Runs `produce` (the sends that settle the claimed dead letters), then marks them done; if it
   * fails, gives the claims back so that the operator can try again, and rethrows.
   */
  private async settle<T>(claimed: ReadonlyArray<{ letter: KafkaDeadLetter; token: string }>, how: How, produce: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await produce();
    } catch (err) {
      for (const m of claimed) await this.unclaim(m.letter.id, m.token).catch(() => undefined);
      throw err;
    }
    for (const m of claimed) await this.redis.client.set(this.claimKey(m.letter.id), `done:${how}`, 'PX', DONE_TTL_MS);
    return result;
  }

  private async unclaim(id: string, token: string): Promise<void> {
    await this.redis.scripts.unlock(this.claimKey(id), token);
  }

  private claimKey(id: string): string {
    return this.redis.keys.kafkaDeadLetterClaim(this.kafka.topics.dead, id);
  }
}
