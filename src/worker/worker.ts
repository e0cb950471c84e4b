// The stream worker: persists admitted issuances from the campaigns' Redis Streams into the
// database, through the one persistence loop (persist-loop.ts: validate, one transaction per
// batch, dead letters, acknowledge). Several may run at once (one consumer group; each entry goes
// to one consumer). This module is the streams' side of it, the source:
//
//   start-up   its own pending entries first (a restart with the same consumer name; again after
//              an outage), then
//   reading    claim entries idle longer than WORKER_CLAIM_IDLE_MS (a dead or stuck worker's,
//              or our own that failed) with XAUTOCLAIM; read new ones with XREADGROUP … COUNT
//              … BLOCK; after a partial batch, linger WORKER_LINGER_MS so the next one is fuller
//              (the first entry after a quiet spell is read at once). On a Redis Cluster each
//              campaign's stream lives in its own slot and one read cannot span slots: the
//              streams are read without blocking, one XREADGROUP each (auto-pipelined per
//              node), every CLUSTER_POLL_MS while they are empty.
//   redelivery `pending`: an entry the database refuses stays pending, is claimed again after
//              WORKER_CLAIM_IDLE_MS, its deliveries counted by XPENDING. An outage leaves the
//              batch pending too; the loop then re-reads our own pending entries first.
//   dead letters  dead-letter.lua moves an entry to the campaign's dead-letter stream and
//              acknowledges it atomically (a refused one also enters the held index: its user
//              hears HELD); one another consumer claimed meanwhile is left to it.
//   acknowledge  XACK, after the commit.
//   upkeep     trims each stream below what every group has acknowledged (XTRIM MINID, never
//              MAXLEN), forgets idle consumers, retires drained streams of long-ended campaigns.
//   stop()     a blocked read is unblocked (CLIENT UNBLOCK); the loop finishes the batch in hand.
import { hostname } from 'node:os';
import type { Logger } from '../util/logger.js';
import { Redis } from 'ioredis';
import type { WorkerConfig } from '../config.js';
import { cachedCoupons, validateEntry, type CouponLookup, type Validation } from '../coupons/queued-admission.js';
import { STATE_RETENTION_MS, ensureGroup } from '../redis/campaign-state.js';
import type { RedisHandle } from '../redis/client.js';
import { WORKER_GROUP, type CampaignKeys } from '../redis/keys.js';
import {
  compareIds,
  isReplyError,
  nextId,
  parseAutoClaim,
  parseGroups,
  parsePending,
  parsePendingSummary,
  parseRead,
  type StreamEntry,
} from '../redis/streams.js';
import { started } from '../util/lifecycle.js';
import { Pause } from '../util/pause.js';
import { PersistLoop, type Doomed, type IssuanceSource, type PersistLoopDeps } from './persist-loop.js';

const BLOCK_MS = 1_000;
/** On a Cluster, how long the worker waits before reading empty streams again. */
const CLUSTER_POLL_MS = 50;
const REGISTRY_REFRESH_MS = 1_000;
const UPKEEP_EVERY_MS = 5_000;
/** Consumers with nothing pending, idle this long, are removed from the group. */
const FORGET_CONSUMER_IDLE_MS = 3600_000;

export interface WorkerDeps extends PersistLoopDeps {
  readonly redis: RedisHandle;
  /** Consumer name; keep it stable across restarts (e.g. the pod name) so a restart finishes its own pending entries first. */
  readonly consumer?: string;
}

/** One entry delivered to this worker. */
interface Delivery {
  readonly couponId: number;
  readonly keys: CampaignKeys;
  readonly entry: StreamEntry;
}

export function defaultConsumerName(): string {
  return `${hostname()}-${process.pid}`;
}

/** The stream worker: the persistence loop over the campaigns' streams. */
export class IssueWorker extends PersistLoop<Delivery> {
  readonly consumer: string;
  private readonly streams: StreamSource;

  constructor(deps: WorkerDeps) {
    const consumer = deps.consumer ?? defaultConsumerName();
    const log = deps.log.child({ worker: consumer });
    const streams = new StreamSource(deps.redis, deps.config, log, consumer, cachedCoupons(deps.db));
    super(streams, { ...deps, log });
    this.consumer = consumer;
    this.streams = streams;
    streams.claimed = (entries) => this.observer?.claimed?.(entries);
  }

  /** Trim below what every group acknowledged; forget idle consumers; retire finished streams. Runs every 5 s. */
  upkeep(): Promise<void> {
    return this.streams.upkeep();
  }
}

/** Creates a worker and starts it (own pending entries are recovered before this resolves). */
export function startWorker(deps: WorkerDeps): Promise<IssueWorker> {
  return started(new IssueWorker(deps));
}

class StreamSource implements IssuanceSource<Delivery> {
  readonly queue = 'stream';
  readonly noun = 'entry';
  readonly redelivery = 'pending';
  /** Told how many entries a claim took over. */
  claimed: (entries: number) => void = () => undefined;
  /** Blocking reads happen on their own connection (none on a Cluster, where the worker polls). */
  private readonly reader: Redis | undefined;
  private readerId: string | undefined;
  private reading = false;
  private stopping = false;
  private readonly pause = new Pause();
  private couponIds: number[] = [];
  private registryReadAt = 0;
  private claimedAt = 0;
  private upkeepAt = 0;
  private batches: AsyncGenerator<readonly Delivery[], void, undefined> | undefined;

  constructor(
    private readonly redis: RedisHandle,
    private readonly config: WorkerConfig,
    private readonly log: Logger,
    private readonly consumer: string,
    private readonly coupon: CouponLookup,
  ) {
    const reader = redis.cluster ? undefined : redis.duplicate('couponrush-worker');
    this.reader = reader instanceof Redis ? reader : undefined;
    // A reconnected reader has a new client id.
    this.reader?.on('close', () => (this.readerId = undefined));
  }

  async open(): Promise<void> {
    await this.refreshRegistry(true);
  }

  interrupt(): void {
    this.stopping = true;
    this.pause.wake();
    if (this.reading && this.readerId !== undefined) {
      // An unblocked XREADGROUP returns as on timeout: nothing was delivered to us.
      this.redis.client.call('CLIENT', 'UNBLOCK', this.readerId, 'TIMEOUT').catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    this.reader?.disconnect();
  }

  /** A wait that stop() cuts short. */
  private sleep(ms: number): Promise<void> {
    return this.stopping ? Promise.resolve() : this.pause.for(ms);
  }

  async read(): Promise<readonly Delivery[]> {
    this.batches ??= this.cycle();
    try {
      return (await this.batches.next()).value ?? [];
    } catch (err) {
      this.batches = undefined;
      throw err;
    }
  }

  /** Claims what idles (when due), upkeep (when due), new entries; again until stopping. */
  private async *cycle(): AsyncGenerator<readonly Delivery[], void, undefined> {
    while (!this.stopping) {
      await this.refreshRegistry(false);
      const now = Date.now();
      if (now - this.claimedAt >= Math.min(this.config.claimIdleMs / 2, 5_000)) {
        this.claimedAt = now;
        yield* this.claimIdle();
      }
      if (now - this.upkeepAt >= UPKEEP_EVERY_MS) {
        this.upkeepAt = now;
        await this.upkeep();
      }
      const batch = await this.readNew();
      if (batch.length === 0) continue;
      yield batch;
      // A partial batch: let the next one gather (see WorkerConfig.lingerMs).
      if (batch.length < this.config.batchSize && this.config.lingerMs > 0) await this.sleep(this.config.lingerMs);
    }
  }

  private async refreshRegistry(force: boolean): Promise<void> {
    const now = Date.now();
    if (!force && now - this.registryReadAt < REGISTRY_REFRESH_MS) return;
    this.registryReadAt = now;
    const members = await this.redis.client.smembers(this.redis.keys.registry);
    this.couponIds = members.map(Number).filter((n) => Number.isSafeInteger(n) && n > 0).sort((a, b) => a - b);
  }

  private keysOf(couponId: number): CampaignKeys {
    return this.redis.keys.campaign(couponId);
  }

  /** Entries delivered to this consumer and not acknowledged (a restart, an outage): before anything new. */
  async *recover(): AsyncGenerator<readonly Delivery[], void, undefined> {
    // The cycle starts over after them.
    this.batches = undefined;
    await this.refreshRegistry(false);
    for (const couponId of this.couponIds) {
      const keys = this.keysOf(couponId);
      let after = '0';
      while (!this.stopping) {
        let reply: unknown;
        try {
          reply = await this.redis.client.call('XREADGROUP', 'GROUP', WORKER_GROUP, this.consumer, 'COUNT', this.config.batchSize, 'STREAMS', keys.stream, after);
        } catch (err) {
          if (isReplyError(err, 'NOGROUP')) break; // nothing was ever delivered from it
          throw err;
        }
        const entries = parseRead(reply)[0]?.entries ?? [];
        if (entries.length === 0) break;
        after = entries[entries.length - 1]!.id;
        const deliveries = entries.map((entry) => ({ couponId, keys, entry }));
        // Deleted from the stream before being persisted: nothing to write.
        const gone = deliveries.filter((d) => d.entry.raw.length === 0);
        for (const d of gone) this.log.error({ couponId, id: d.entry.id }, 'worker: pending entry was deleted from the stream before being persisted');
        await this.acknowledge(gone);
        yield deliveries.filter((d) => d.entry.raw.length > 0);
      }
    }
  }

  /** New entries of every registered stream, blocking up to BLOCK_MS. */
  private async readNew(): Promise<Delivery[]> {
    if (this.couponIds.length === 0) {
      await this.sleep(BLOCK_MS);
      return [];
    }
    const ids = this.couponIds;
    if (this.reader === undefined) return this.pollNew(ids);
    const streams = ids.map((id) => this.keysOf(id).stream);
    this.readerId ??= String(await this.reader.call('CLIENT', 'ID'));
    let reply: unknown;
    this.reading = true;
    try {
      if (this.stopping) return [];
      reply = await this.reader.call('XREADGROUP', 'GROUP', WORKER_GROUP, this.consumer, 'COUNT', this.config.batchSize, 'BLOCK', BLOCK_MS, 'STREAMS', ...streams, ...streams.map(() => '>'));
    } catch (err) {
      if (!isReplyError(err, 'NOGROUP')) throw err;
      // A stream lost its group (Redis lost data) or was retired by another worker: recreate
      // the groups, from 0, of the streams still registered.
      await this.refreshRegistry(true);
      for (const id of this.couponIds) await ensureGroup(this.redis, id);
      return [];
    } finally {
      this.reading = false;
    }
    return this.deliveriesOf([reply]);
  }

  /**
   * A Cluster: one non-blocking read per stream (each in its own slot), a pause when all are
   * empty. Each read takes up to a batch, so a drop on one campaign drains as fast as on one node
   * (a batch may then hold up to a batch per campaign).
   */
  private async pollNew(ids: readonly number[]): Promise<Delivery[]> {
    const count = this.config.batchSize;
    const replies = await Promise.all(
      ids.map(async (id) => {
        const stream = this.keysOf(id).stream;
        try {
          return await this.redis.client.call('XREADGROUP', 'GROUP', WORKER_GROUP, this.consumer, 'COUNT', count, 'STREAMS', stream, '>');
        } catch (err) {
          if (!isReplyError(err, 'NOGROUP')) throw err;
          await ensureGroup(this.redis, id); // lost with its data, or retired: from 0 again
          return null;
        }
      }),
    );
    const out = this.deliveriesOf(replies);
    if (out.length === 0) await this.sleep(CLUSTER_POLL_MS);
    return out;
  }

  private deliveriesOf(replies: readonly unknown[]): Delivery[] {
    const out: Delivery[] = [];
    for (const reply of replies) {
      for (const { key, entries } of parseRead(reply)) {
        const couponId = this.redis.keys.couponOfStream(key);
        if (couponId === undefined) continue;
        const keys = this.keysOf(couponId);
        for (const entry of entries) out.push({ couponId, keys, entry });
      }
    }
    return out;
  }

  /** Takes over entries idle longer than claimIdleMs (dead workers', or ours that failed), a batch at a time. */
  private async *claimIdle(): AsyncGenerator<readonly Delivery[], void, undefined> {
    for (const couponId of this.couponIds) {
      const keys = this.keysOf(couponId);
      let cursor = '0-0';
      do {
        let reply: unknown;
        try {
          reply = await this.redis.client.xautoclaim(keys.stream, WORKER_GROUP, this.consumer, this.config.claimIdleMs, cursor, 'COUNT', this.config.batchSize);
        } catch (err) {
          if (isReplyError(err, 'NOGROUP')) break;
          throw err;
        }
        const { next, entries, deleted } = parseAutoClaim(reply);
        cursor = next;
        // Redis drops deleted entries from the pending list itself; they cannot be recovered.
        if (deleted.length > 0) this.log.error({ couponId, ids: deleted }, 'worker: pending entries were deleted from the stream before being persisted');
        if (entries.length > 0) {
          this.log.warn({ couponId, entries: entries.length }, 'worker: claimed idle pending entries');
          this.claimed(entries.length);
          yield entries.map((entry) => ({ couponId, keys, entry }));
        }
      } while (cursor !== '0-0' && !this.stopping);
    }
  }

  async validate(d: Delivery): Promise<Validation> {
    return validateEntry(d.entry, d.couponId, await this.coupon(d.couponId));
  }

  /** Deliveries so far, as the group's pending list counts them. */
  async deliveries(d: Delivery): Promise<number> {
    const reply = await this.redis.client.xpending(d.keys.stream, WORKER_GROUP, d.entry.id, d.entry.id, 1, this.consumer);
    return parsePending(reply)[0]?.deliveries ?? 0;
  }

  /** dead-letter.lua, one entry at a time: moved, acknowledged and (refused) held at once. */
  async deadLetter(doomed: readonly Doomed<Delivery>[]): Promise<Array<{ doomed: Doomed<Delivery>; letter: string }>> {
    const done: Array<{ doomed: Doomed<Delivery>; letter: string }> = [];
    for (const d of doomed) {
      const { keys, entry } = d.delivery;
      const letter = await this.redis.scripts.deadLetter(keys, WORKER_GROUP, this.consumer, entry.id, d.reason, d.deliveries, Date.now(), entry.raw);
      // Undefined: another worker claimed it meanwhile and decides.
      if (letter !== undefined) done.push({ doomed: d, letter });
    }
    return done;
  }

  /** XACK (a dead letter's entry was acknowledged by dead-letter.lua already: again is a no-op). */
  async acknowledge(settled: readonly Delivery[]): Promise<void> {
    const byStream = new Map<string, string[]>();
    for (const d of settled) {
      const ids = byStream.get(d.keys.stream);
      if (ids === undefined) byStream.set(d.keys.stream, [d.entry.id]);
      else ids.push(d.entry.id);
    }
    await Promise.all([...byStream].map(([stream, ids]) => this.redis.client.xack(stream, WORKER_GROUP, ...ids)));
  }

  describe(d: Delivery): Record<string, unknown> {
    return { couponId: d.couponId, userId: d.entry.fields.get('u'), requestId: d.entry.fields.get('r'), id: d.entry.id };
  }

  /** Trim below what every group acknowledged; forget idle consumers; retire finished streams. */
  async upkeep(): Promise<void> {
    for (const couponId of this.couponIds) {
      if (this.stopping) return;
      const keys = this.keysOf(couponId);
      await this.trim(keys.stream);
      await this.forgetIdleConsumers(keys.stream);
      await this.retireIfDone(couponId, keys);
    }
  }

  private async trim(stream: string): Promise<void> {
    let groups: ReturnType<typeof parseGroups>;
    try {
      groups = parseGroups(await this.redis.client.call('XINFO', 'GROUPS', stream));
    } catch (err) {
      if (isReplyError(err, 'ERR no such key')) return;
      throw err;
    }
    if (groups.length === 0) return; // nobody has acknowledged anything
    let min: string | undefined;
    for (const g of groups) {
      // Everything up to last-delivered-id is acknowledged unless still pending.
      const bound = g.pending > 0 ? parsePendingSummary(await this.redis.client.xpending(stream, g.name)).smallest : nextId(g.lastDeliveredId);
      if (bound !== undefined && (min === undefined || compareIds(bound, min) < 0)) min = bound;
    }
    if (min !== undefined) await this.redis.client.xtrim(stream, 'MINID', min);
  }

  private async forgetIdleConsumers(stream: string): Promise<void> {
    let reply: unknown;
    try {
      reply = await this.redis.client.call('XINFO', 'CONSUMERS', stream, WORKER_GROUP);
    } catch {
      return; // no stream or no group yet
    }
    if (!Array.isArray(reply)) return;
    for (const c of reply) {
      if (!Array.isArray(c)) continue;
      const info = new Map<string, unknown>();
      for (let i = 0; i + 1 < c.length; i += 2) info.set(String(c[i]), c[i + 1]);
      const name = String(info.get('name'));
      if (name !== this.consumer && Number(info.get('pending')) === 0 && Number(info.get('idle')) > FORGET_CONSUMER_IDLE_MS) {
        await this.redis.client.xgroup('DELCONSUMER', stream, WORKER_GROUP, name);
      }
    }
  }

  /** A campaign past its retention with an empty stream and no dead letters needs no reader. */
  private async retireIfDone(couponId: number, keys: CampaignKeys): Promise<void> {
    const coupon = await this.coupon(couponId);
    if (coupon === undefined || coupon.issueEndsAt.getTime() + STATE_RETENTION_MS > Date.now()) return;
    const [streamLen, deadLen] = await Promise.all([this.redis.client.xlen(keys.stream), this.redis.client.xlen(keys.dead)]);
    if (streamLen > 0 || deadLen > 0) return;
    // No API instance admits (or rebuilds) after the window closed, so nothing can race this.
    await this.redis.client.srem(this.redis.keys.registry, String(couponId));
    await this.redis.client.del(keys.stream);
    this.log.info({ couponId }, 'worker: campaign ended and drained; stream retired');
  }
}
