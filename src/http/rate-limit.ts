// Fixed-window request counters for the issue route's rate limits, cheap enough for the hot path.
//
// Why not @fastify/rate-limit: measured under the bench's stampede, its Redis store added one
// Redis round trip to every issue request (the admission itself is one), which cost ~10% of
// redis-lua-async-cached's throughput, and its async plumbing more. Here a request is counted in
// process memory; only a key that goes past a small local allowance in the current window is
// counted in Redis too (INCRBY of what this process saw, so the shared total stays complete).
// A stampede user sends a handful of requests and never reaches Redis; a scripted hammer does, on
// every request past the allowance, and is cut off at the shared limit. Precision: with N
// instances a key can get at most (N − 1) × LOCAL_ALLOWANCE requests past the limit.
//
// Windows are aligned to the clock (window = floor(now / windowMs)), so every instance counts
// the same window under the same Redis key, and the local table is simply emptied when the window
// turns — no per-key timers, memory bounded by the keys seen in one window.
import type { Cluster, Redis } from 'ioredis';
import type { RateLimit } from '../config.js';

/** Requests a key may make in one window on one instance before Redis is asked. */
export const LOCAL_ALLOWANCE = 3;

interface Count {
  /** Requests this process saw in the current window. */
  seen: number;
  /** How many of them Redis already knows. */
  synced: number;
  /** The shared total Redis last reported (0 until asked). */
  shared: number;
}

/** `undefined`: allowed. A number: refused, retry after that many seconds. */
export type Verdict = number | undefined;

export interface SharedStore {
  redis: Redis | Cluster;
  /** Key prefix, e.g. `couponrush:ratelimit:user:`. */
  prefix: string;
}

export class WindowLimiter {
  /** Per key: the plain count while within the local allowance, a Count once Redis is involved. */
  private counts = new Map<string, number | Count>();
  private window = -1;
  private windowEndsAt = 0;

  constructor(
    readonly limit: RateLimit,
    private readonly shared?: SharedStore,
  ) {}

  /** Counts one request for `key`; a promise only when Redis has to be asked. */
  hit(key: string, nowMs = Date.now()): Verdict | Promise<Verdict> {
    if (nowMs >= this.windowEndsAt) this.turn(nowMs);
    const { max } = this.limit;
    const c = this.counts.get(key);
    if (typeof c !== 'object') {
      // The common case, kept to a number in a map: no allocation per key.
      const seen = (c ?? 0) + 1;
      if (this.shared === undefined || seen <= LOCAL_ALLOWANCE) {
        this.counts.set(key, seen);
        return seen > max ? this.retryAfter(nowMs) : undefined;
      }
      const count: Count = { seen, synced: 0, shared: 0 };
      this.counts.set(key, count);
      return this.sync(key, count, nowMs);
    }
    c.seen++;
    // Known to be over the limit already (the other instances' share, as of the last ask, plus
    // ours): refuse without asking again; the window is what it is.
    if (c.synced > 0 && c.shared + c.seen > max) return this.retryAfter(nowMs);
    return this.sync(key, c, nowMs);
  }

  private turn(nowMs: number): void {
    this.window = Math.floor(nowMs / this.limit.windowMs);
    this.windowEndsAt = (this.window + 1) * this.limit.windowMs;
    this.counts = new Map();
  }

  private retryAfter(nowMs: number): number {
    return Math.max(1, Math.ceil((this.windowEndsAt - nowMs) / 1000));
  }

  private async sync(key: string, c: Count, nowMs: number): Promise<Verdict> {
    const delta = c.seen - c.synced;
    c.synced = c.seen;
    const shared = this.shared!;
    const redisKey = `${shared.prefix}${key}:${this.window}`;
    try {
      const replies = await shared.redis.multi().incrby(redisKey, delta).pexpire(redisKey, this.limit.windowMs * 2).exec();
      const total = Number(replies?.[0]?.[1]);
      if (!Number.isFinite(total)) return c.seen > this.limit.max ? this.retryAfter(nowMs) : undefined;
      c.shared = total - c.seen; // what the other instances contributed
      return total > this.limit.max ? this.retryAfter(nowMs) : undefined;
    } catch {
      // Redis unreachable: fall back to this process's own count (a limit protects; it is not a
      // correctness rule, and the issue path reports the outage itself).
      c.synced -= delta;
      return c.seen > this.limit.max ? this.retryAfter(nowMs) : undefined;
    }
  }
}
