// The issue-route counters of every API process that shares this Redis (several instances behind
// a load balancer, and the workers of `serve --workers N`): each process writes its own, once a
// second, into one hash; the console's sampler sums the fresh ones. One HSET a second per process
// is its whole cost, off the request path. A process that stops removes its entry; one that died
// stops refreshing it and is left out after FRESH_MS, and dropped after FORGET_MS.
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { IssueCounters } from '../metrics/index.js';
import type { RedisHandle } from '../redis/client.js';

const PUBLISH_EVERY_MS = 1_000;
/** Entries older than this are a process that is gone (or cut off): not counted. */
const FRESH_MS = 3_000;
/** Entries older than this are deleted by the next reader. */
const FORGET_MS = 60_000;
/** The hash outlives its last writer by this much. */
const HASH_TTL_MS = 10 * 60_000;

interface Entry extends IssueCounters {
  readonly at: number;
}

export interface BoardReading {
  readonly counters: IssueCounters;
  /** API processes counted. */
  readonly processes: number;
}

export class CounterBoard {
  private readonly id = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: RedisHandle,
    private readonly local: () => IssueCounters,
  ) {}

  start(): void {
    void this.publish();
    this.timer = setInterval(() => void this.publish(), PUBLISH_EVERY_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.redis.client.hdel(this.redis.keys.consoleBoard, this.id).catch(() => undefined);
  }

  /** The sum over every process whose entry is fresh. */
  async read(): Promise<BoardReading> {
    const key = this.redis.keys.consoleBoard;
    const now = Date.now();
    const entries = Object.entries(await this.redis.client.hgetall(key)).map(([id, json]) => ({ id, entry: parse(json) }));
    const forgotten = entries.filter((e) => e.entry === undefined || now - e.entry.at > FORGET_MS).map((e) => e.id);
    if (forgotten.length > 0) await this.redis.client.hdel(key, ...forgotten);
    const fresh = entries.flatMap((e) => (e.entry !== undefined && now - e.entry.at <= FRESH_MS ? [e.entry] : []));
    return { counters: sumCounters(fresh), processes: fresh.length };
  }

  private async publish(): Promise<void> {
    const entry: Entry = { at: Date.now(), ...this.local() };
    // Infinity has no JSON: the last bucket is written as null and read back as Infinity.
    const json = JSON.stringify(entry);
    try {
      await this.redis.client.multi().hset(this.redis.keys.consoleBoard, this.id, json).pexpire(this.redis.keys.consoleBoard, HASH_TTL_MS).exec();
    } catch {
      // Redis away: this process's entry goes stale and the readers say how many they counted.
    }
  }
}

function parse(json: string): Entry | undefined {
  try {
    const e = JSON.parse(json) as { at: number; answers: Record<string, number>; buckets: Array<[number | null, number]> };
    return { at: e.at, answers: e.answers, buckets: e.buckets.map(([le, n]) => [le ?? Infinity, n] as const) };
  } catch {
    return undefined;
  }
}

/** Adds counters of several processes (same bucket bounds: every process runs the same code). */
export function sumCounters(list: readonly IssueCounters[]): IssueCounters {
  const answers: Record<string, number> = {};
  const buckets = new Map<number, number>();
  for (const c of list) {
    for (const [status, n] of Object.entries(c.answers)) answers[status] = (answers[status] ?? 0) + n;
    for (const [le, n] of c.buckets) buckets.set(le, (buckets.get(le) ?? 0) + n);
  }
  return { answers, buckets: [...buckets].sort((a, b) => a[0] - b[0]) };
}
