// The stream worker: persists admitted issuances from the campaigns' Redis Streams into the
// database, idempotently. Several may run at once (one consumer group; each entry goes to one
// consumer).
//
//   start-up   its own pending entries first (a restart with the same consumer name), then
//   loop       claim entries idle longer than WORKER_CLAIM_IDLE_MS (a dead or stuck worker's,
//              or our own that failed) with XAUTOCLAIM; read new ones with XREADGROUP … COUNT
//              … BLOCK; validate; write the batch in ONE transaction (rows + issued counts); XACK
//              only after that commit; after a partial batch, linger WORKER_LINGER_MS so the next
//              one is fuller. A redelivered entry is harmless (the insert skips a pair already
//              there, and the counter counts only rows inserted).
//   failures   an entry that does not validate goes to the dead-letter stream at once; a batch
//              the database refuses is retried entry by entry, and an entry failing its
//              WORKER_MAX_DELIVERIES-th delivery is dead-lettered with the error. The database
//              being down dead-letters nothing: entries stay pending and are claimed later.
//   upkeep     trims each stream below what every group has acknowledged (XTRIM MINID, never
//              MAXLEN), retires drained streams of long-ended campaigns.
//   stop()     stops reading (a blocked read is unblocked), finishes and acks the batch in hand.
import { hostname } from 'node:os';
import type { Logger } from '../util/logger.js';
import type { Redis } from 'ioredis';
import type { WorkerConfig } from '../config.js';
import { insertIssues, type NewIssue } from '../coupons/repository.js';
import type { Db } from '../db/index.js';
import { isDependencyUnavailable } from '../util/dependency-errors.js';
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
import { boundedReason, cachedCoupons, validateEntry, type CouponLookup } from '../coupons/queued-admission.js';

const BLOCK_MS = 1_000;
const REGISTRY_REFRESH_MS = 1_000;
const UPKEEP_EVERY_MS = 5_000;
const MAX_BACKOFF_MS = 5_000;
/** Consumers with nothing pending, idle this long, are removed from the group. */
const FORGET_CONSUMER_IDLE_MS = 3600_000;

/** What a metrics module may want to count; every method must be cheap and must not throw. */
export interface WorkerObserver {
  /** A batch committed and was acknowledged (rows inserted may be fewer: redeliveries are skipped). */
  batchWritten(entries: number, seconds: number): void;
  /** Entries taken over from idle consumers. */
  claimed?(entries: number): void;
  /** `invalid`: did not validate; `refused`: the database refused it WORKER_MAX_DELIVERIES times. */
  deadLettered?(reason: 'invalid' | 'refused'): void;
}

export interface WorkerDeps {
  readonly db: Db;
  readonly redis: RedisHandle;
  readonly config: WorkerConfig;
  readonly log: Logger;
  /** Consumer name; keep it stable across restarts (e.g. the pod name) so a restart finishes its own pending entries first. */
  readonly consumer?: string;
  readonly observer?: WorkerObserver;
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

export class IssueWorker {
  readonly consumer: string;
  private readonly db: Db;
  private readonly redis: RedisHandle;
  private readonly config: WorkerConfig;
  private readonly log: Logger;
  private observer: WorkerObserver | undefined;
  /** Blocking reads happen on their own connection. */
  private readonly reader: Redis;
  private readerId: string | undefined;
  private reading = false;
  private stopping = false;
  private readonly wake = new AbortController();
  private loop: Promise<void> | undefined;
  private couponIds: number[] = [];
  private registryReadAt = 0;
  private claimedAt = 0;
  private upkeepAt = 0;
  /** An iteration failed with entries in hand: re-read our own pending ones before new ones. */
  private recoverOwn = false;
  private readonly coupon: CouponLookup;
  /** Entries written and acked since start (for logs and tests). */
  written = 0;
  deadLettered = 0;

  constructor(deps: WorkerDeps) {
    this.db = deps.db;
    this.redis = deps.redis;
    this.config = deps.config;
    this.observer = deps.observer;
    this.log = deps.log.child({ worker: deps.consumer ?? defaultConsumerName() });
    this.consumer = deps.consumer ?? defaultConsumerName();
    this.coupon = cachedCoupons(deps.db);
    this.reader = deps.redis.duplicate('couponrush-worker');
    // A reconnected reader has a new client id.
    this.reader.on('close', () => (this.readerId = undefined));
  }

  /** Reports to `observer` from now on (metrics are often built after the worker they observe). */
  observe(observer: WorkerObserver): void {
    this.observer = observer;
  }

  /** Starts the loop; resolves once the worker has recovered its own pending entries. */
  async start(): Promise<void> {
    await this.refreshRegistry(true);
    await this.drainOwnPending();
    this.loop = this.run();
    this.log.info({ consumer: this.consumer, streams: this.couponIds.length }, 'worker started');
  }

  /** SIGTERM: stop reading, finish and ack the batch in hand, close the reader. */
  async stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = true;
      this.wake.abort();
      if (this.reading && this.readerId !== undefined) {
        // An unblocked XREADGROUP returns as on timeout: nothing was delivered to us.
        await this.redis.client.call('CLIENT', 'UNBLOCK', this.readerId, 'TIMEOUT').catch(() => undefined);
      }
    }
    await this.loop;
    this.reader.disconnect();
    this.log.info({ written: this.written, deadLettered: this.deadLettered }, 'worker stopped');
  }

  private async run(): Promise<void> {
    let backoff = 0;
    while (!this.stopping) {
      try {
        await this.refreshRegistry(false);
        if (this.recoverOwn) {
          await this.drainOwnPending();
          this.recoverOwn = false;
        }
        const now = Date.now();
        if (now - this.claimedAt >= Math.min(this.config.claimIdleMs / 2, 5_000)) {
          this.claimedAt = now;
          await this.claimIdle();
        }
        if (now - this.upkeepAt >= UPKEEP_EVERY_MS) {
          this.upkeepAt = now;
          await this.upkeep();
        }
        const batch = await this.readNew();
        if (batch.length > 0) {
          await this.process(batch);
          // A partial batch: let the next one gather (see WorkerConfig.lingerMs).
          if (batch.length < this.config.batchSize && this.config.lingerMs > 0) await this.pause(this.config.lingerMs);
        }
        backoff = 0;
      } catch (err) {
        if (this.stopping) break;
        this.recoverOwn = true;
        backoff = Math.min(MAX_BACKOFF_MS, Math.max(200, backoff * 2));
        this.log.error({ err, retryInMs: backoff }, 'worker: iteration failed; entries stay pending');
        await this.pause(backoff);
      }
    }
  }

  private pause(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    const signal = this.wake.signal;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
    });
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

  /** Entries delivered to this consumer before a restart: finish them before anything new. */
  private async drainOwnPending(): Promise<void> {
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
        await this.process(entries.map((entry) => ({ couponId, keys, entry })));
        after = entries[entries.length - 1]!.id;
      }
    }
  }

  /** New entries of every registered stream, blocking up to BLOCK_MS. */
  private async readNew(): Promise<Delivery[]> {
    if (this.couponIds.length === 0) {
      await this.pause(BLOCK_MS);
      return [];
    }
    const ids = this.couponIds;
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
    const out: Delivery[] = [];
    for (const { key, entries } of parseRead(reply)) {
      const couponId = this.redis.keys.couponOfStream(key);
      if (couponId === undefined) continue;
      const keys = this.keysOf(couponId);
      for (const entry of entries) out.push({ couponId, keys, entry });
    }
    return out;
  }

  /** Takes over entries idle longer than claimIdleMs (dead workers', or ours that failed). */
  private async claimIdle(): Promise<void> {
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
        // Redis drops deleted entries from the pending list itself; they cannot be recovered.
        if (deleted.length > 0) this.log.error({ couponId, ids: deleted }, 'worker: pending entries were deleted from the stream before being persisted');
        if (entries.length > 0) {
          this.log.warn({ couponId, entries: entries.length }, 'worker: claimed idle pending entries');
          this.observer?.claimed?.(entries.length);
          await this.process(entries.map((entry) => ({ couponId, keys, entry })));
        }
        cursor = next;
      } while (cursor !== '0-0' && !this.stopping);
    }
  }

  /** Validate, write in one statement, ack after commit; isolate failures entry by entry. */
  private async process(deliveries: readonly Delivery[]): Promise<void> {
    const valid: Array<{ d: Delivery; issue: NewIssue }> = [];
    for (const d of deliveries) {
      if (d.entry.raw.length === 0) {
        // Read back from our pending list after it was deleted from the stream: nothing to write.
        this.log.error({ couponId: d.couponId, id: d.entry.id }, 'worker: pending entry was deleted from the stream before being persisted');
        await this.ack([d]);
        continue;
      }
      const v = validateEntry(d.entry, d.couponId, await this.coupon(d.couponId));
      if (v.ok) valid.push({ d, issue: v.issue });
      else await this.deadLetter(d, 'invalid', `invalid entry: ${v.reason}`);
    }
    if (valid.length === 0) return;
    const started = performance.now();
    try {
      await this.db.transaction((tx) => insertIssues(tx, valid.map((v) => v.issue)));
    } catch (err) {
      if (isDependencyUnavailable(err)) throw err;
      this.log.warn({ err, entries: valid.length }, 'worker: batch refused by the database; writing its entries one by one');
      for (const v of valid) await this.writeOne(v.d, v.issue);
      return;
    }
    await this.ack(valid.map((v) => v.d));
    this.written += valid.length;
    this.observer?.batchWritten(valid.length, (performance.now() - started) / 1000);
    this.logPersisted(valid.map((v) => v.d));
  }

  /** One debug line per persisted issuance, carrying the API's request id (off at the default level). */
  private logPersisted(deliveries: readonly Delivery[]): void {
    if (this.log.level !== 'debug' && this.log.level !== 'trace') return;
    for (const d of deliveries) {
      this.log.debug(
        { couponId: d.couponId, userId: d.entry.fields.get('u'), requestId: d.entry.fields.get('r'), id: d.entry.id },
        'worker: issuance persisted',
      );
    }
  }

  private async writeOne(d: Delivery, issue: NewIssue): Promise<void> {
    const started = performance.now();
    try {
      await this.db.transaction((tx) => insertIssues(tx, [issue]));
    } catch (err) {
      if (isDependencyUnavailable(err)) throw err;
      const deliveries = await this.deliveries(d);
      if (deliveries >= this.config.maxDeliveries) {
        await this.deadLetter(d, 'refused', boundedReason(`database refused it on ${deliveries} deliveries: ${(err as Error).message}`), deliveries);
      } else {
        // Left pending: claimIdle redelivers it after claimIdleMs, with a higher delivery count.
        this.log.warn({ err, couponId: d.couponId, id: d.entry.id, deliveries }, 'worker: entry refused by the database; will retry');
      }
      return;
    }
    await this.ack([d]);
    this.written++;
    this.observer?.batchWritten(1, (performance.now() - started) / 1000);
    this.logPersisted([d]);
  }

  private async deliveries(d: Delivery): Promise<number> {
    const reply = await this.redis.client.xpending(d.keys.stream, WORKER_GROUP, d.entry.id, d.entry.id, 1, this.consumer);
    return parsePending(reply)[0]?.deliveries ?? 0;
  }

  private async deadLetter(d: Delivery, kind: 'invalid' | 'refused', reason: string, knownDeliveries?: number): Promise<void> {
    const deliveries = knownDeliveries ?? (await this.deliveries(d));
    const id = await this.redis.scripts.deadLetter(d.keys, WORKER_GROUP, this.consumer, d.entry.id, reason, deliveries, Date.now(), d.entry.raw);
    if (id === undefined) return; // another worker claimed it meanwhile and decides
    this.deadLettered++;
    this.observer?.deadLettered?.(kind);
    this.log.error(
      { couponId: d.couponId, userId: d.entry.fields.get('u'), requestId: d.entry.fields.get('r'), id: d.entry.id, deadLetter: id, reason },
      'worker: entry dead-lettered',
    );
  }

  private async ack(deliveries: readonly Delivery[]): Promise<void> {
    const byStream = new Map<string, string[]>();
    for (const d of deliveries) {
      const ids = byStream.get(d.keys.stream);
      if (ids === undefined) byStream.set(d.keys.stream, [d.entry.id]);
      else ids.push(d.entry.id);
    }
    await Promise.all([...byStream].map(([stream, ids]) => this.redis.client.xack(stream, WORKER_GROUP, ...ids)));
  }

  /** Trim below what every group acknowledged; forget idle consumers; retire finished streams. Runs every 5 s. */
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

/** Creates a worker and starts it (own pending entries are recovered before this resolves). */
export async function startWorker(deps: WorkerDeps): Promise<IssueWorker> {
  const worker = new IssueWorker(deps);
  try {
    await worker.start();
  } catch (err) {
    await worker.stop();
    throw err;
  }
  return worker;
}
