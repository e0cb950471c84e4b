// The Redis handle of one process: the command connection (auto-pipelined, shared by the hot
// path), the Lua wrapper bound to it, key names, and cache invalidation over pub/sub. Opened by
// the runtime (or the CLI) and closed by whoever opened it.
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '../util/logger.js';
import { RedisKeys } from './keys.js';
import { within } from '../util/within.js';
import { ADMIT_COMMANDS, Scripts } from './scripts.js';

/** Receives a coupon id whose local caches must go, or undefined for "everything" (after a reconnect). */
export type InvalidationListener = (couponId: number | undefined) => void;

export interface RedisHandle {
  /** Commands and scripts. Never used for blocking reads. */
  readonly client: Redis;
  readonly keys: RedisKeys;
  readonly scripts: Scripts;
  /** A new connection with the same settings, for blocking reads. The caller closes it. */
  duplicate(name: string): Redis;
  /** Subscribes to invalidations (the subscriber connection opens on first use). */
  onInvalidate(listener: InvalidationListener): void;
  /** Tells every instance to drop its local caches for this coupon. */
  invalidate(couponId: number): Promise<void>;
  close(): Promise<void>;
}

/** host:port of a redis:// URL, for a message (never its password). */
function redisAddress(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port === '' ? '6379' : u.port}`;
}

const ERROR_LOG_INTERVAL_MS = 5_000;
/** The first PING must answer within this, so a Redis that accepts and never answers fails start-up. */
const OPEN_TIMEOUT_MS = 5_000;

function baseOptions(name: string, commandTimeoutMs: number | undefined): RedisOptions {
  return {
    connectionName: name,
    // Fail a command after two reconnect attempts (~150 ms) instead of queueing it for long:
    // the API answers 503 and the client retries, rather than a request hanging.
    maxRetriesPerRequest: 2,
    retryStrategy: (times) => Math.min(times * 50, 1_000),
    ...(commandTimeoutMs === undefined ? {} : { commandTimeout: commandTimeoutMs }),
  };
}

export interface OpenRedisOptions {
  /**
   * Fail any command unanswered after this long. For the one-shot commands (a hung Redis must not
   * hang them); the long-running processes leave it off: a hung command resumes with Redis, and
   * the request deadline answers the client meanwhile.
   */
  commandTimeoutMs?: number;
}

/**
 * Opens the connection and checks that Redis answers, so a bad REDIS_URL fails at start-up with
 * the connection's own error (ECONNREFUSED at host:port), not the client's retry advice.
 */
export async function openRedis(url: string, prefix: string, log: Logger, options: OpenRedisOptions = {}): Promise<RedisHandle> {
  let lastErrorLog = 0;
  // Until the first answer a failure is the start-up's to report, once, not a log line per retry.
  let opened = false;
  let openError: Error | undefined;
  const onError = (err: Error) => {
    if (!opened) {
      openError = err;
      return;
    }
    // ioredis reports every failed reconnect; once in a while is enough.
    const now = Date.now();
    if (now - lastErrorLog < ERROR_LOG_INTERVAL_MS) return;
    lastErrorLog = now;
    log.warn({ err }, 'redis connection error');
  };
  const connect = (name: string, extra: RedisOptions = {}) => {
    const r = new Redis(url, { ...baseOptions(name, options.commandTimeoutMs), ...extra });
    r.on('error', onError);
    return r;
  };
  // Auto-pipelining sends the commands of one event-loop tick in one write: under a stampede
  // that is most of the hot path's syscalls saved. Admissions batch themselves (admissions.ts)
  // and go out at once, not one more turn later.
  const client = connect('couponrush', { enableAutoPipelining: true, autoPipeliningIgnoredCommands: [...ADMIT_COMMANDS] });
  try {
    const ping = client.ping();
    ping.catch(() => undefined);
    await within(ping, OPEN_TIMEOUT_MS, `no answer within ${OPEN_TIMEOUT_MS} ms`);
  } catch (err) {
    client.disconnect();
    // The connection's error says why (refused, host not found); a timeout alone says it did not answer.
    throw openError ?? new Error(`no answer from ${redisAddress(url)} within ${OPEN_TIMEOUT_MS} ms`, { cause: err });
  }
  opened = true;
  const keys = new RedisKeys(prefix);
  const scripts = new Scripts(client);
  const listeners: InvalidationListener[] = [];
  let subscriber: Redis | undefined;

  const subscribe = () => {
    const sub = connect('couponrush-sub');
    let connectedOnce = false;
    sub.on('ready', () => {
      // Messages published while we were disconnected are lost: drop everything instead.
      if (connectedOnce) for (const l of listeners) l(undefined);
      connectedOnce = true;
    });
    sub.on('message', (_channel: string, message: string) => {
      const id = Number(message);
      if (!Number.isSafeInteger(id)) return;
      for (const l of listeners) l(id);
    });
    void sub.subscribe(keys.invalidations).catch((err: unknown) => log.error({ err }, 'redis: subscribing to invalidations failed'));
    return sub;
  };

  return {
    client,
    keys,
    scripts,
    duplicate: (name) => connect(name),
    onInvalidate(listener) {
      listeners.push(listener);
      subscriber ??= subscribe();
    },
    async invalidate(couponId) {
      await client.publish(keys.invalidations, String(couponId));
    },
    async close() {
      await Promise.all([client, subscriber].map(async (c) => {
        if (c === undefined) return;
        try {
          await c.quit();
        } catch {
          c.disconnect();
        }
      }));
    },
  };
}
