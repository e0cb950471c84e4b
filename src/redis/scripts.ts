// The one typed wrapper around the Lua scripts in lua/: each script is loaded from its file once
// (shared fragments in lua/includes/ spliced in where a `--- @include` line names them),
// registered with ioredis (`defineCommand`: EVALSHA, with a NOSCRIPT fallback to EVAL), and its
// return codes are mapped to domain outcomes here and nowhere else. Key order follows each
// script's header.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Cluster, type Redis } from 'ioredis';

type RedisClient = Redis | Cluster;
import {
  ACCEPTED,
  ALREADY_ISSUED,
  SOLD_OUT,
  WINDOW_CLOSED,
  WINDOW_NOT_OPEN,
  type IssueOutcome,
} from '../coupons/domain.js';
import type { CampaignKeys } from './keys.js';
import { isReplyError } from './streams.js';

/** Cluster refusals of a command that did not run: its slot is another node's, or the cluster is mid-failover. */
const CLUSTER_REFUSALS = ['MOVED', 'ASK', 'CLUSTERDOWN', 'TRYAGAIN'];

export const LUA_DIR = fileURLToPath(new URL('../../lua/', import.meta.url));

/** Script name → [file, number of keys]. The command names are ours, prefixed to avoid clashes. */
const SCRIPTS = {
  crAdmit: ['admit.lua', 2],
  crAdmitEnqueue: ['admit-enqueue.lua', 3],
  crAdmitProduce: ['admit-produce.lua', 3],
  crReleaseUnproduced: ['release-unproduced.lua', 3],
  crRelease: ['release.lua', 2],
  crRestore: ['restore.lua', 3],
  crUnlock: ['unlock.lua', 1],
  crExtend: ['extend.lua', 1],
  crDeadLetter: ['dead-letter.lua', 4],
  crReplay: ['replay.lua', 3],
  crDiscard: ['discard.lua', 5],
  crReleaseHeld: ['release-held.lua', 3],
  crSettle: ['settle.lua', 3],
} as const;

type ScriptName = keyof typeof SCRIPTS;
/** Sent directly, never auto-pipelined: the admissions arrive batched already (admissions.ts). */
export const ADMIT_COMMANDS: readonly ScriptName[] = ['crAdmitEnqueue', 'crAdmitProduce'];
type ScriptCall = (...args: (string | number)[]) => Promise<unknown>;

/** A line `--- @include "includes/x.lua"`: replaced by that file when the script loads. */
const INCLUDE = /^--- @include "([a-z0-9/-]+\.lua)"[ \t]*$/gm;

/** A script's text with its includes resolved (each fragment once; fragments may include others). */
export function resolveIncludes(file: string, seen: ReadonlySet<string> = new Set()): string {
  if (seen.has(file)) throw new Error(`lua: ${file} includes itself`);
  const text = readFileSync(new URL(file, `file://${LUA_DIR}`), 'utf8');
  return text.replace(INCLUDE, (_line, included: string) => resolveIncludes(included, new Set([...seen, file])).trimEnd());
}

/** The Lua sources, read once per process. */
const sources = new Map<ScriptName, string>();
function source(name: ScriptName): string {
  let lua = sources.get(name);
  if (lua === undefined) {
    lua = resolveIncludes(SCRIPTS[name][0]);
    sources.set(name, lua);
  }
  return lua;
}

/** The campaign's admission state is missing in Redis: rebuild it from the database and retry. */
export const MISSING = 'MISSING';
/**
 * The campaign's state was created or settled on another Redis server (a promoted replica, a
 * restart): settle it against the database and the queue, then retry (campaign-state.ts).
 */
export const UNSETTLED = 'UNSETTLED';
/** admit.lua said yes: the caller must now insert the row (or release the admission). */
export const ADMITTED = 'ADMITTED';

/** What the admission scripts can refuse with (a subset of the domain's `Refusal`). */
export type ScriptRefusal = typeof ALREADY_ISSUED | typeof SOLD_OUT | typeof WINDOW_NOT_OPEN | typeof WINDOW_CLOSED;
export type AdmitResult = typeof ADMITTED | typeof MISSING | typeof UNSETTLED | ScriptRefusal;
export type AdmitEnqueueResult = typeof ACCEPTED | typeof MISSING | typeof UNSETTLED | ScriptRefusal;

function refusal(code: number): ScriptRefusal {
  switch (code) {
    case -1:
      return ALREADY_ISSUED;
    case -2:
      return SOLD_OUT;
    case -3:
      return WINDOW_NOT_OPEN;
    case -4:
      return WINDOW_CLOSED;
    default:
      throw new Error(`unexpected admission script return code ${code}`);
  }
}

function integer(reply: unknown, script: string): number {
  if (typeof reply !== 'number') throw new Error(`${script}: expected an integer reply, got ${typeof reply}`);
  return reply;
}

/** A stream id reply, or undefined for the script's 0 ("nothing done"). */
function streamIdOrNone(reply: unknown, script: string): string | undefined {
  if (reply === 0) return undefined;
  if (typeof reply !== 'string') throw new Error(`${script}: expected a stream id or 0, got ${typeof reply}`);
  return reply;
}

/** What discard.lua did with a dead letter. */
export type DiscardResult = 'RELEASED' | 'DISCARDED' | 'NOT_FOUND';

/** One issue attempt for admit-enqueue.lua. */
export interface AdmissionAttempt {
  readonly userId: string;
  /** The admission instant chosen by the API (ms since epoch); becomes issued_at. */
  readonly nowMs: number;
  /** '' when none. */
  readonly requestId: string;
  /** The W3C traceparent of a sampled admission (tracing on); none when absent or ''. */
  readonly traceparent?: string;
}

export interface CampaignWindow {
  readonly totalQuantity: number;
  readonly startsAtMs: number;
  readonly endsAtMs: number;
  /** When the state expires (retention after the window). */
  readonly expireAtMs: number;
}

/**
 * An admission call failed before it was written to Redis: the connection was not ready when it
 * was made and did not become ready before it failed, so it waited in ioredis's offline queue the
 * whole time and cannot have run. Any other failure may have come after the script ran.
 */
export class NotSentError extends Error {
  constructor(cause: unknown) {
    super(`Redis is unreachable: ${(cause as Error | undefined)?.message ?? String(cause)}`, { cause });
    this.name = 'NotSentError';
  }
}

/**
 * An admission call that certainly wrote nothing: it never reached Redis (NotSentError), or the
 * primary refused the write for want of replicas (NOREPLICAS, min-replicas-to-write). Any other
 * failure may have come after the script ran.
 */
export function wroteNothing(err: unknown): boolean {
  return err instanceof NotSentError || isReplyError(err, 'NOREPLICAS');
}

/** Scripts bound to one connection. Create once per connection; calls are cheap. */
export class Scripts {
  private readonly fns: Record<ScriptName, ScriptCall>;
  /** How many times the connection became ready: a call made while it was not, failing before it was again, was never sent. */
  private readies = 0;

  constructor(readonly client: RedisClient) {
    client.on('ready', () => this.readies++);
    const fns: Partial<Record<ScriptName, ScriptCall>> = {};
    for (const name of Object.keys(SCRIPTS) as ScriptName[]) {
      client.defineCommand(name, { lua: source(name), numberOfKeys: SCRIPTS[name][1] });
      // defineCommand adds a method ioredis's types cannot know about: the one cast, here.
      const method = (client as unknown as Record<string, ScriptCall>)[name];
      if (method === undefined) throw new Error(`ioredis did not define ${name}`);
      fns[name] = method.bind(client);
    }
    this.fns = fns as Record<ScriptName, ScriptCall>;
  }

  /** admit.lua (redis-lua-sync): window → duplicate → stock; records the user on success. */
  async admit(keys: CampaignKeys, userId: string, nowMs: number): Promise<AdmitResult> {
    const code = integer(await this.unlessUnsent(() => this.fns.crAdmit(keys.state, keys.users, userId, nowMs)), 'admit');
    return code === 1 ? ADMITTED : code === 0 ? MISSING : code === -5 ? UNSETTLED : refusal(code);
  }

  /**
   * admit-enqueue.lua (redis-lua-async*): as admit, for a batch of attempts on one campaign,
   * decided in order; each admission is appended to the stream. One result per attempt.
   */
  async admitEnqueue(keys: CampaignKeys, couponId: string, attempts: readonly AdmissionAttempt[]): Promise<AdmitEnqueueResult[]> {
    const args: (string | number)[] = [keys.state, keys.users, keys.stream, couponId];
    for (const a of attempts) args.push(a.userId, a.nowMs, a.requestId, a.traceparent ?? '');
    return this.codes(await this.unlessUnsent(() => this.fns.crAdmitEnqueue(...args)), attempts.length, 'admit-enqueue');
  }

  /**
   * admit-enqueue.lua then `WAIT replicas timeoutMs`, in one pipeline: both on the connection that
   * serves the campaign's slot, so the WAIT counts the replicas that have the script's writes.
   * Returns the results and how many replicas acknowledged them in time.
   */
  async admitEnqueueReplicated(
    keys: CampaignKeys,
    couponId: string,
    attempts: readonly AdmissionAttempt[],
    replicas: number,
    timeoutMs: number,
  ): Promise<{ results: AdmitEnqueueResult[]; replicas: number }> {
    const args: (string | number)[] = [keys.state, keys.users, keys.stream, couponId];
    for (const a of attempts) args.push(a.userId, a.nowMs, a.requestId, a.traceparent ?? '');
    for (let attempt = 1; ; attempt++) {
      const pipeline = this.client.pipeline();
      // The script's pipeline method, which ioredis's types cannot know about either.
      (pipeline as unknown as Record<string, (...a: (string | number)[]) => unknown>).crAdmitEnqueue!(...args);
      pipeline.call('WAIT', replicas, timeoutMs);
      const replies = await this.unlessUnsent(() => pipeline.exec());
      const [[scriptErr, scriptReply] = [new Error('admit-enqueue: no reply'), null], [waitErr, waitReply] = [null, 0]] = replies ?? [];
      if (scriptErr === null) return { results: this.codes(scriptReply, attempts.length, 'admit-enqueue'), replicas: waitErr === null ? Number(waitReply) : 0 };
      // A Cluster node that does not serve the slot (a failover moved it; ioredis does not follow
      // a pipeline whose WAIT did answer) or a cluster mid-failover: the script did not run.
      if (!CLUSTER_REFUSALS.some((code) => isReplyError(scriptErr, code))) throw scriptErr;
      if (attempt > 1 || !(this.client instanceof Cluster)) throw new NotSentError(scriptErr);
      const cluster = this.client;
      await new Promise<void>((resolve) => cluster.refreshSlotsCache(() => resolve()));
    }
  }

  /** One admission code per attempt, mapped to outcomes. */
  private codes(reply: unknown, attempts: number, script: string): AdmitEnqueueResult[] {
    if (!Array.isArray(reply) || reply.length !== attempts) {
      throw new Error(`${script}: expected ${attempts} codes, got ${Array.isArray(reply) ? reply.length : typeof reply}`);
    }
    return reply.map((code: unknown) => {
      const c = integer(code, script);
      return c === 1 ? ACCEPTED : c === 0 ? MISSING : c === -5 ? UNSETTLED : refusal(c);
    });
  }

  /**
   * admit-produce.lua (redis-lua-kafka): as admitEnqueue, but each admission is marked producing
   * instead of queued in a stream. One result per attempt.
   */
  async admitProduce(keys: CampaignKeys, attempts: readonly AdmissionAttempt[]): Promise<AdmitEnqueueResult[]> {
    const args: (string | number)[] = [keys.state, keys.users, keys.producing];
    for (const a of attempts) args.push(a.userId, a.nowMs);
    return this.codes(await this.unlessUnsent(() => this.fns.crAdmitProduce(...args)), attempts.length, 'admit-produce');
  }

  /** release-unproduced.lua: the seats of these users, if still marked producing. Returns how many were released. */
  async releaseUnproduced(keys: CampaignKeys, userIds: readonly string[]): Promise<number> {
    if (userIds.length === 0) return 0;
    return integer(await this.fns.crReleaseUnproduced(keys.state, keys.users, keys.producing, ...userIds), 'release-unproduced');
  }

  /** Runs a call; a failure of a call that was never written to Redis becomes a NotSentError. */
  private async unlessUnsent<T>(call: () => Promise<T>): Promise<T> {
    // Queued, not written: ioredis queues a command unless the connection is ready AND its socket
    // writable (a socket that just closed, before ioredis has heard of it, is not).
    const socket = this.client instanceof Cluster ? undefined : this.client.stream;
    const queued = this.client.status !== 'ready' || (socket !== undefined && !socket.writable);
    const readies = this.readies;
    try {
      return await call();
    } catch (err) {
      throw queued && readies === this.readies ? new NotSentError(err) : err;
    }
  }

  /** release.lua: undo one admission. True when the user was admitted and is now released. */
  async release(keys: CampaignKeys, userId: string, soldOut: boolean): Promise<boolean> {
    return integer(await this.fns.crRelease(keys.state, keys.users, userId, soldOut ? '1' : '0'), 'release') === 1;
  }

  /**
   * restore.lua: create the state from the users loaded into `loadKey`, unless it exists;
   * `rebuiltAtMs` is 0 at campaign creation, else now. Returns the issued count it created, or
   * undefined when the state already existed.
   */
  async restore(keys: CampaignKeys, loadKey: string, w: CampaignWindow, rebuiltAtMs = 0): Promise<number | undefined> {
    const n = integer(
      await this.fns.crRestore(keys.state, keys.users, loadKey, w.totalQuantity, w.startsAtMs, w.endsAtMs, w.expireAtMs, rebuiltAtMs),
      'restore',
    );
    return n === -1 ? undefined : n;
  }

  /**
   * settle.lua: admit the users loaded into `loadKey` that the state lacks (after a change of
   * primary). Returns how many were missing, or undefined when the state does not exist.
   */
  async settle(keys: CampaignKeys, loadKey: string): Promise<number | undefined> {
    const n = integer(await this.fns.crSettle(keys.state, keys.users, loadKey), 'settle');
    return n === -1 ? undefined : n;
  }

  /** unlock.lua: true when the lock was ours and is released. */
  async unlock(lockKey: string, token: string): Promise<boolean> {
    return integer(await this.fns.crUnlock(lockKey, token), 'unlock') === 1;
  }

  /** extend.lua: true when the lock was ours and now lives `ttlMs` more. */
  async extend(lockKey: string, token: string, ttlMs: number): Promise<boolean> {
    return integer(await this.fns.crExtend(lockKey, token, ttlMs), 'extend') === 1;
  }

  /**
   * dead-letter.lua: move an entry pending for `consumer` to the dead-letter stream with the
   * reason, and ack it. Returns the dead letter's id, or undefined when it was no longer ours.
   */
  async deadLetter(
    keys: CampaignKeys,
    group: string,
    consumer: string,
    entryId: string,
    reason: string,
    deliveries: number,
    nowMs: number,
    fields: readonly string[],
  ): Promise<string | undefined> {
    return streamIdOrNone(await this.fns.crDeadLetter(keys.stream, keys.dead, keys.held, keys.users, group, consumer, entryId, reason, deliveries, nowMs, ...fields), 'dead-letter');
  }

  /**
   * replay.lua: move a dead letter back onto the stream and settle its user's HELD. Returns its
   * new id, or undefined if not found (already replayed or discarded).
   */
  async replay(keys: CampaignKeys, deadId: string): Promise<string | undefined> {
    return streamIdOrNone(await this.fns.crReplay(keys.dead, keys.stream, keys.held, deadId), 'replay');
  }

  /**
   * discard.lua: delete a dead letter, settle its user's HELD and record the discard (capped at
   * about `keep` records, living `retentionMs` after the latest). The seat is given back only
   * when `noRowFor` is the dead letter's user (the caller checked they have no row) and they were
   * admitted.
   */
  async discard(keys: CampaignKeys, deadId: string, noRowFor: string, nowMs: number, keep: number, retentionMs: number): Promise<DiscardResult> {
    const code = integer(await this.fns.crDiscard(keys.dead, keys.users, keys.state, keys.held, keys.discarded, deadId, noRowFor, nowMs, keep, retentionMs), 'discard');
    if (code === 2) return 'RELEASED';
    if (code === 1) return 'DISCARDED';
    if (code === 0) return 'NOT_FOUND';
    throw new Error(`unexpected discard script return code ${code}`);
  }

  /**
   * release-held.lua: settle the Redis side of a Kafka dead letter (held index value `heldAs`)
   * and, with `releaseSeat`, give back its user's seat. True when a seat was given back.
   */
  async releaseHeld(keys: CampaignKeys, userId: string, heldAs: string, releaseSeat: boolean): Promise<boolean> {
    return integer(await this.fns.crReleaseHeld(keys.state, keys.users, keys.held, userId, heldAs, releaseSeat ? '1' : '0'), 'release-held') === 1;
  }
}
