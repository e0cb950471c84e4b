// Redis key names, in one place. Every per-campaign key carries the coupon's hash tag {cpn:N},
// so all keys one Lua script touches live in one Redis Cluster slot; the prefix keeps tests and
// tenants apart (it never contains braces: config validates that).

/** The consumer group every worker joins. */
export const WORKER_GROUP = 'couponrush-workers';

export interface CampaignKeys {
  /** Hash: total, starts, ends, issued, expireat. */
  readonly state: string;
  /** Set of admitted user ids. */
  readonly users: string;
  /** Issuance stream (admitted, to be persisted by the worker). */
  readonly stream: string;
  /** Dead-letter stream. */
  readonly dead: string;
  /** redis-lock's lock. */
  readonly lock: string;
  /** redis-lua-kafka: admitted users whose Kafka record is not acknowledged yet (user → admitted at). */
  readonly producing: string;
  /**
   * Hash: user → id of the dead letter that holds their seat (stream or Kafka), so that the
   * status route answers HELD without reading the dead letters; replay and discard remove it.
   */
  readonly held: string;
  /** Capped stream: the dead letters discarded by an operator (discard.lua), for the dead-letter list. */
  readonly discarded: string;
}

export class RedisKeys {
  constructor(readonly prefix: string) {}

  campaign(couponId: number): CampaignKeys {
    const tag = `${this.prefix}{cpn:${couponId}}`;
    return {
      state: `${tag}:state`,
      users: `${tag}:users`,
      stream: `${tag}:stream`,
      dead: `${tag}:dead`,
      lock: `${tag}:lock`,
      producing: `${tag}:producing`,
      held: `${tag}:held`,
      discarded: `${tag}:discarded`,
    };
  }

  /** A temporary set filled before `restore` renames it into place (same slot as the campaign). */
  usersLoad(couponId: number, nonce: string): string {
    return `${this.prefix}{cpn:${couponId}}:users:load:${nonce}`;
  }

  /**
   * A Kafka dead letter's replay/discard claim (SET NX PX), then its `done` marker: one id of one
   * dead-letter topic is settled at most once however many requests race.
   */
  kafkaDeadLetterClaim(deadTopic: string, id: string): string {
    return `${this.prefix}kafka-dead:${deadTopic}:${id}`;
  }

  /** Set of coupon ids whose streams the workers read. Never touched by a script. */
  get registry(): string {
    return `${this.prefix}streams`;
  }

  /** Pub/sub channel: a coupon id published here drops every instance's local caches for it. */
  get invalidations(): string {
    return `${this.prefix}invalidate`;
  }

  /** Hash: coupon id → the last periodic reconcile's verdict of it ("OK"/"DRIFT"), and `at` (ms). */
  get reconcileStatus(): string {
    return `${this.prefix}reconcile:status`;
  }

  /** One worker at a time runs the periodic reconcile (SET NX PX). */
  get reconcileLock(): string {
    return `${this.prefix}reconcile:lock`;
  }

  /** Hash: API process id → its issue-route counters (JSON), for the console (src/console/board.ts). */
  get consoleBoard(): string {
    return `${this.prefix}console:processes`;
  }

  /** Coupon id of a stream key, or undefined for a key that is not one. */
  couponOfStream(streamKey: string): number | undefined {
    const m = /\{cpn:(\d+)\}:stream$/.exec(streamKey);
    return m?.[1] === undefined || !streamKey.startsWith(this.prefix) ? undefined : Number(m[1]);
  }
}
