// The Redis handle of one process: the command connection (auto-pipelined, shared by the hot
// path), the Lua wrapper bound to it, key names, cache invalidation over pub/sub, and the
// admission channel (admission-channel.ts; with REDIS_WAIT_REPLICAS on a connection of its own).
// Redis is one node (REDIS_URL), the primary Sentinel names (REDIS_SENTINELS), followed across
// failovers by every connection, or a Redis Cluster (REDIS_CLUSTER_NODES), each command routed to
// the master of its keys' slot. Opened by the runtime (or the CLI) and closed by whoever opened it.
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisTarget } from './target.js';
import type { Logger } from '../util/logger.js';
import { AdmissionChannel, type AdmissionChannelOptions } from './admission-channel.js';
import { RedisKeys } from './keys.js';
import { within } from '../util/within.js';
import { ADMIT_COMMANDS, Scripts } from './scripts.js';

/** A connection: to one node (REDIS_URL, Sentinel's primary) or to a Redis Cluster (routed by key slot). */
export type RedisClient = Redis | Cluster;

/** Receives a coupon id whose local caches must go, or undefined for "everything" (after a reconnect). */
export type InvalidationListener = (couponId: number | undefined) => void;

export interface RedisHandle {
  /** Commands and scripts. Never used for blocking reads. */
  readonly client: RedisClient;
  /**
   * A Redis Cluster: a command's keys must share a slot (one campaign's do), and a blocking read
   * cannot span campaigns (the worker polls instead).
   */
  readonly cluster: boolean;
  readonly keys: RedisKeys;
  readonly scripts: Scripts;
  /** A new connection with the same settings, for blocking reads. The caller closes it. */
  duplicate(name: string): RedisClient;
  /** Subscribes to invalidations (the subscriber connection opens on first use). */
  onInvalidate(listener: InvalidationListener): void;
  /** Tells every instance to drop its local caches for this coupon. */
  invalidate(couponId: number): Promise<void>;
  /** Where queued admissions go, and how they wait for replicas (its connection opens on first use: API processes only). */
  admissions(): AdmissionChannel;
  /** Counts for /metrics: admissions left unconfirmed by WAIT, campaign states settled after a change of primary. */
  readonly stats: { unconfirmed(): number; settles: number };
  close(): Promise<void>;
}

/** Where Redis is, for a message (never a password): host:port, or the sentinels and the master's name. */
export function redisAddress(target: RedisTarget): string {
  if (target.kind === 'sentinel') return `primary "${target.master}" of sentinels ${target.sentinels.map((s) => `${s.host}:${s.port}`).join(',')}`;
  if (target.kind === 'cluster') return `Redis Cluster at ${target.nodes.map((n) => `${n.host}:${n.port}`).join(',')}`;
  const u = new URL(target.url);
  return `${u.hostname}:${u.port === '' ? '6379' : u.port}`;
}

/** The connection settings of the target: a URL, or Sentinel's (ioredis asks the sentinels for the primary on every connect). */
function targetOptions(target: Exclude<RedisTarget, { kind: 'cluster' }>): { url?: string; options: RedisOptions } {
  if (target.kind === 'node') return { url: target.url, options: {} };
  return {
    options: {
      sentinels: target.sentinels.map((s) => ({ host: s.host, port: s.port })),
      name: target.master,
      role: 'master',
      ...(target.username === undefined ? {} : { username: target.username }),
      ...(target.password === undefined ? {} : { password: target.password }),
      ...(target.sentinelPassword === undefined ? {} : { sentinelPassword: target.sentinelPassword }),
      // Not ioredis's failoverDetector: its sentinel subscriptions outlive quit() and keep
      // reconnecting (a closed process would never exit). A dead primary closes the socket, and a
      // demoted one answers READONLY (below): either way the client asks the sentinels again.
      sentinelRetryStrategy: (times) => Math.min(times * 100, 1_000),
    },
  };
}

/** A bare connection to the target (the bench's set-up and clean-up); the caller closes it. */
export function connectRedis(target: RedisTarget, options: RedisOptions = {}): RedisClient {
  if (target.kind === 'cluster') return new Cluster(clusterNodes(target), clusterOptions(target, options, {}));
  const { url, options: targetOpts } = targetOptions(target);
  const settings = { ...targetOpts, ...options };
  return url === undefined ? new Redis(settings) : new Redis(url, settings);
}

function clusterNodes(target: Extract<RedisTarget, { kind: 'cluster' }>): Array<{ host: string; port: number }> {
  return target.nodes.map((n) => ({ host: n.host, port: n.port }));
}

/**
 * A Cluster's settings: the nodes' connection options (credentials, the base options), writes
 * and reads on masters only, and short waits while a failover or a slot move is under way
 * (CLUSTERDOWN, TRYAGAIN: retried every 100 ms, ~1.6 s in all, then the command fails → 503).
 */
function clusterOptions(target: Extract<RedisTarget, { kind: 'cluster' }>, redisOptions: RedisOptions, options: ClusterOptions): ClusterOptions {
  return {
    redisOptions: {
      ...redisOptions,
      ...(target.username === undefined ? {} : { username: target.username }),
      ...(target.password === undefined ? {} : { password: target.password }),
    },
    scaleReads: 'master',
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    maxRedirections: 16,
    slotsRefreshTimeout: 2_000,
    clusterRetryStrategy: (times) => Math.min(times * 100, 1_000),
    ...options,
  };
}

/**
 * A write refused by a server that is no longer (or never was) the primary: reconnect, which
 * asks the sentinels again. The command is not resent (it failed, and says so).
 */
function reconnectOnReadOnly(err: Error): 1 | false {
  return err.message.startsWith('READONLY') ? 1 : false;
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
  } satisfies RedisOptions;
}

export interface OpenRedisOptions extends Partial<AdmissionChannelOptions> {
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
export async function openRedis(where: RedisTarget | string, prefix: string, log: Logger, options: OpenRedisOptions = {}): Promise<RedisHandle> {
  const target: RedisTarget = typeof where === 'string' ? { kind: 'node', url: where } : where;
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
  const connect = (name: string, pipelined = false): RedisClient => {
    // Auto-pipelining sends the commands of one event-loop tick in one write (per node, on a
    // Cluster): under a stampede that is most of the hot path's syscalls saved. Admissions
    // batch themselves (admissions.ts) and go out at once, not one more turn later.
    const pipelining = pipelined ? { enableAutoPipelining: true, autoPipeliningIgnoredCommands: [...ADMIT_COMMANDS] } : {};
    const base = { ...baseOptions(name, options.commandTimeoutMs), reconnectOnError: reconnectOnReadOnly };
    let r: RedisClient;
    if (target.kind === 'cluster') {
      r = new Cluster(clusterNodes(target), clusterOptions(target, base, pipelining));
      r.on('node error', onError);
    } else {
      const { url, options: targetOpts } = targetOptions(target);
      const settings: RedisOptions = { ...base, ...targetOpts, ...pipelining };
      r = url === undefined ? new Redis(settings) : new Redis(url, settings);
    }
    r.on('error', onError);
    return r;
  };
  const client = connect('couponrush', true);
  try {
    const ping = client.ping();
    ping.catch(() => undefined);
    await within(ping, OPEN_TIMEOUT_MS, `no answer within ${OPEN_TIMEOUT_MS} ms`);
  } catch (err) {
    client.disconnect();
    // The connection's error says why (refused, host not found); a timeout alone says it did not answer.
    throw openError ?? new Error(`no answer from ${redisAddress(target)} within ${OPEN_TIMEOUT_MS} ms`, { cause: err });
  }
  opened = true;
  const keys = new RedisKeys(prefix);
  const scripts = new Scripts(client);
  const listeners: InvalidationListener[] = [];
  let subscriber: RedisClient | undefined;
  let admissions: AdmissionChannel | undefined;
  let admitter: RedisClient | undefined;

  // On a Cluster, a PUBLISH reaches the subscribers of every node (classic pub/sub is cluster-wide).
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
    cluster: target.kind === 'cluster',
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
    admissions() {
      if (admissions === undefined) {
        const settings = { waitReplicas: options.waitReplicas ?? 0, waitTimeoutMs: options.waitTimeoutMs ?? 1_000 };
        // WAIT blocks its connection until the replicas answer: not the hot path's.
        if (settings.waitReplicas > 0) admitter = connect('couponrush-admit');
        admissions = new AdmissionChannel(admitter === undefined ? scripts : new Scripts(admitter), settings);
      }
      return admissions;
    },
    stats: { unconfirmed: () => admissions?.unconfirmed ?? 0, settles: 0 },
    async close() {
      await Promise.all([client, subscriber, admitter].map(async (c) => {
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
