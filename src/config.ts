// Configuration: the only module that reads process.env. Parsed once, validated, frozen;
// a bad or missing value fails start-up with a message naming the variable.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';
import { STRATEGY_NAMES, unavailableReason, type StrategyName } from './coupons/strategies/index.js';
import { DATABASE_URL_SCHEMES } from './db/types.js';
import type { HostPort, RedisTarget } from './redis/target.js';
import { SAMPLER_NAMES, type SamplerName, type TracingSettings } from './tracing/tracing.js';

export type { RedisTarget } from './redis/target.js';

export type AuthMode = 'jwt' | 'header';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** A fixed-window limit: at most `max` requests per `windowMs`. */
export interface RateLimit {
  readonly max: number;
  readonly windowMs: number;
}

/** Fastify's trustProxy: false (the TCP peer is the client) or the proxies' addresses/CIDRs. */
export type TrustProxy = false | string;

export interface Config {
  readonly port: number;
  readonly host: string;
  /** Unset → embedded PGlite under dataDir. */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  readonly embedded: boolean;
  readonly adminToken: string;
  /** The embedded mode generated adminToken (the banner prints it). */
  readonly generatedAdminToken: boolean;
  /** The embedded mode generated jwtSecret: a development secret, so the banner may print a user token. */
  readonly generatedJwtSecret: boolean;
  readonly authMode: AuthMode;
  readonly jwtSecret: string;
  /** A user JWT whose `exp` is further away than this is refused (JWT_MAX_TTL_S). */
  readonly jwtMaxTtlS: number;
  readonly defaultStrategy: StrategyName;
  readonly logLevel: LogLevel;
  readonly dbPoolSize: number;
  /** Per-user limit on the issue route; undefined = off. */
  readonly rateLimitUser: RateLimit | undefined;
  /** Per-client-address limit on the issue route; undefined = off (needs TRUST_PROXY). */
  readonly rateLimitIp: RateLimit | undefined;
  /** undefined = TRUST_PROXY not set (treated as false). */
  readonly trustProxy: TrustProxy | undefined;
  /** Shed load (503 OVERLOADED) above this mean event-loop delay; 0 = off. */
  readonly shedEventLoopDelayMs: number;
  /** Answer 504 TIMEOUT when a handler runs longer; 0 = off. */
  readonly requestTimeoutMs: number;
  /** Set → /admin/* and /metrics answer only on this port (ADMIN_HOST), not on PORT. */
  readonly adminPort: number | undefined;
  readonly adminHost: string;
  /**
   * Set (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES) → Redis strategies are available and
   * `redis-lua-async-cached` is the default.
   */
  readonly redis: RedisTarget | undefined;
  /** Prefix of every Redis key and channel (a test or a tenant gets its own). */
  readonly redisPrefix: string;
  /**
   * REDIS_WAIT_REPLICAS: a queued admission (202) is answered only once this many replicas have
   * it (Redis `WAIT`), so a failover cannot drop it; 0 = answer on the primary's word.
   */
  readonly redisWaitReplicas: number;
  /** REDIS_WAIT_TIMEOUT_MS: how long `WAIT` may take before the admission answers OUTCOME_UNKNOWN. */
  readonly redisWaitTimeoutMs: number;
  /** Set (KAFKA_BROKERS) → `redis-lua-kafka` is available and `couponrush worker` consumes its topic. */
  readonly kafka: KafkaConfig | undefined;
  readonly worker: WorkerConfig;
  /**
   * OpenTelemetry traces (the standard OTEL_* variables): on when an OTLP endpoint is set or
   * OTEL_TRACES_EXPORTER=otlp, off otherwise and whenever OTEL_TRACES_EXPORTER=none.
   */
  readonly tracing: TracingSettings | undefined;
}

/** The variables that say where Redis is: at most one may be set. */
const REDIS_TARGET_VARIABLES = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'] as const;

/** Apache Kafka, for `redis-lua-kafka` (KAFKA_* variables). */
export interface KafkaConfig {
  /** host:port of the bootstrap brokers. */
  readonly brokers: readonly string[];
  /** The issuance topic; its dead letters go to `<topic>.dead`. */
  readonly topic: string;
  /** Partitions when couponrush creates the topic (an existing topic keeps its own). */
  readonly partitions: number;
  /**
   * A produce unacknowledged this long answers OUTCOME_UNKNOWN (the producer is closed and the
   * record may still be in the log); the seat stays until `reconcile` settles it.
   */
  readonly produceTimeoutMs: number;
  /** KAFKA_EVENTS=on: every persisted issuance is published to this topic (KAFKA_EVENTS_TOPIC). */
  readonly eventsTopic: string | undefined;
  /**
   * KAFKA_RECORD_SECRET: the API signs each issuance record with it and the worker persists only
   * records it verifies (anyone who can write to the topic could otherwise issue coupons).
   * KAFKA_RECORD_SECRET_PREVIOUS is also accepted while the secret is rotated.
   */
  readonly recordSecrets: RecordSecrets;
}

/** The record authenticator's keys: new records are signed with `current`. */
export interface RecordSecrets {
  readonly current: string;
  readonly previous: string | undefined;
}

/** The stream worker (`couponrush worker`, `serve --with-worker`). */
export interface WorkerConfig {
  /** Entries read per XREADGROUP and written per transaction. */
  readonly batchSize: number;
  /**
   * After a batch smaller than batchSize, wait this long before reading again, so that under load
   * the next batch is a full one: one database statement per few hundred rows instead of per few.
   * The first entry after a quiet spell is read at once; 0 reads again immediately.
   */
  readonly lingerMs: number;
  /** A pending entry idle this long belongs to a dead (or stuck) worker and is claimed. */
  readonly claimIdleMs: number;
  /** An entry that failed this many deliveries goes to the dead-letter stream. */
  readonly maxDeliveries: number;
  /**
   * RECONCILE_INTERVAL_S: how often one of the workers runs a read-only `reconcile` and records
   * each campaign's verdict for the `couponrush_reconcile_drift` series (0: never).
   */
  readonly reconcileIntervalMs: number;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const MIN_SECRET_LENGTH = 32;
export const MIN_ADMIN_TOKEN_LENGTH = 16;
/**
 * What a bearer token can carry intact: printable ASCII without whitespace. The bearer parser
 * stops at a space, and a non-ASCII byte arrives differently from a browser (latin-1) and curl.
 */
const ADMIN_TOKEN_PATTERN = /^[\x21-\x7E]+$/;
export const DEFAULT_JWT_MAX_TTL_S = 24 * 3600;

function nonEmpty(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

function intVar(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = nonEmpty(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = nonEmpty(env, name);
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${allowed.join(', ')}; got "${raw}"`);
  }
  return raw as T;
}

function urlVar(env: Env, name: string, protocols: readonly string[]): string | undefined {
  const raw = nonEmpty(env, name);
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, 'is not a valid URL');
  }
  if (!protocols.includes(url.protocol)) {
    throw new ConfigError(name, `must start with ${protocols.map((p) => `${p}//`).join(', ')}`);
  }
  return raw;
}

interface EmbeddedSecrets {
  adminToken: string;
  jwtSecret: string;
}

/**
 * Embedded mode keeps generated secrets in the data directory so tokens survive restarts. With
 * `create` false (a command that must use the server's secrets, not new ones) a missing file is a
 * ConfigError that says where it looked.
 */
function loadOrCreateSecrets(dataDir: string, create: boolean): EmbeddedSecrets {
  const file = join(dataDir, 'secrets.json');
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<EmbeddedSecrets>;
    if (typeof parsed.adminToken === 'string' && typeof parsed.jwtSecret === 'string') {
      return { adminToken: parsed.adminToken, jwtSecret: parsed.jwtSecret };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (!create) {
    throw new ConfigError(
      'DATA_DIR',
      `no embedded secrets at ${file}: run this from the directory where \`npm start\` runs (its data is in ./.couponrush), or set DATA_DIR to the server's data directory, or JWT_SECRET`,
    );
  }
  const secrets = { adminToken: randomBytes(24).toString('base64url'), jwtSecret: randomBytes(32).toString('base64url') };
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets;
}

export function defaultStrategyFor(databaseUrl: string | undefined, withRedis = false): StrategyName {
  // With Redis, admission is one Lua round trip and the worker persists: the fastest exact path.
  if (withRedis) return 'redis-lua-async-cached';
  // A real database may sit behind several API instances: the fastest strategy that is exact with
  // any number of them (group commit under the coupon row lock; docs/performance.md measures it).
  if (databaseUrl !== undefined) return 'db-batch';
  return 'local';
}

/** A comma-separated host:port list (IPv6 in brackets), at least one. */
function hostPortList(name: string, raw: string, noun: string): HostPort[] {
  const entries = raw.split(',').map((b) => b.trim()).filter((b) => b !== '');
  if (entries.length === 0) throw new ConfigError(name, `names no ${noun}`);
  return entries.map((b) => {
    const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(b);
    if (m === null || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new ConfigError(name, `"${b}" is not host:port`);
    return { host: m[1]!, port: Number(m[2]) };
  });
}

const SENTINEL_ONLY = ['REDIS_SENTINEL_MASTER', 'REDIS_SENTINEL_PASSWORD'] as const;
const CREDENTIALS = ['REDIS_USERNAME', 'REDIS_PASSWORD'] as const;

/** REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES (one of them), with what each needs. */
function redisTargetVar(env: Env): RedisTarget | undefined {
  const set = REDIS_TARGET_VARIABLES.filter((name) => nonEmpty(env, name) !== undefined);
  if (set.length > 1) throw new ConfigError(set[1]!, `is set together with ${set[0]}: say where Redis is with one of ${REDIS_TARGET_VARIABLES.join(', ')}`);
  const url = urlVar(env, 'REDIS_URL', ['redis:', 'rediss:']);
  const sentinels = nonEmpty(env, 'REDIS_SENTINELS');
  const clusterNodes = nonEmpty(env, 'REDIS_CLUSTER_NODES');
  if (sentinels === undefined) {
    for (const name of SENTINEL_ONLY) if (nonEmpty(env, name) !== undefined) throw new ConfigError(name, 'is set but REDIS_SENTINELS is not');
  }
  if (sentinels === undefined && clusterNodes === undefined) {
    for (const name of CREDENTIALS) {
      if (nonEmpty(env, name) === undefined) continue;
      if (url !== undefined) throw new ConfigError(name, 'is for REDIS_SENTINELS and REDIS_CLUSTER_NODES; with REDIS_URL the credentials go in the URL (redis://user:password@host:port)');
      throw new ConfigError(name, 'is set but neither REDIS_SENTINELS nor REDIS_CLUSTER_NODES is');
    }
    return url === undefined ? undefined : Object.freeze({ kind: 'node', url });
  }
  const credentials = { username: nonEmpty(env, 'REDIS_USERNAME'), password: nonEmpty(env, 'REDIS_PASSWORD') };
  if (clusterNodes !== undefined) {
    return Object.freeze({ kind: 'cluster', nodes: Object.freeze(hostPortList('REDIS_CLUSTER_NODES', clusterNodes, 'node')), ...credentials });
  }
  const master = nonEmpty(env, 'REDIS_SENTINEL_MASTER');
  if (master === undefined) throw new ConfigError('REDIS_SENTINEL_MASTER', 'is required with REDIS_SENTINELS: the name the sentinels monitor the primary under (`sentinel monitor <name> …`)');
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(master)) throw new ConfigError('REDIS_SENTINEL_MASTER', 'must be 1-128 characters of [A-Za-z0-9._-]');
  return Object.freeze({
    kind: 'sentinel',
    sentinels: Object.freeze(hostPortList('REDIS_SENTINELS', sentinels!, 'sentinel')),
    master,
    ...credentials,
    sentinelPassword: nonEmpty(env, 'REDIS_SENTINEL_PASSWORD'),
  });
}

/** The variables that say how to reach Redis (a process hands them on to the processes it starts). */
export const REDIS_VARIABLES = [...REDIS_TARGET_VARIABLES, ...SENTINEL_ONLY, ...CREDENTIALS, 'REDIS_WAIT_REPLICAS', 'REDIS_WAIT_TIMEOUT_MS'] as const;

/** Where Redis is and how admissions wait for its replicas; undefined when Redis is not configured. */
export function redisSettings(env: Env): { target: RedisTarget; waitReplicas: number; waitTimeoutMs: number } | undefined {
  const target = redisTargetVar(env);
  const waitReplicas = intVar(env, 'REDIS_WAIT_REPLICAS', 0, 0, 64);
  // WAIT's timeout stays under the issue route's 3 s for finding out what happened to an admission.
  const waitTimeoutMs = intVar(env, 'REDIS_WAIT_TIMEOUT_MS', 1_000, 10, 2_000);
  if (target === undefined) {
    for (const name of ['REDIS_WAIT_REPLICAS', 'REDIS_WAIT_TIMEOUT_MS']) {
      if (nonEmpty(env, name) !== undefined) throw new ConfigError(name, 'is set but Redis is not (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES)');
    }
    return undefined;
  }
  if (waitReplicas === 0 && nonEmpty(env, 'REDIS_WAIT_TIMEOUT_MS') !== undefined) {
    throw new ConfigError('REDIS_WAIT_TIMEOUT_MS', 'is set but REDIS_WAIT_REPLICAS is 0 (nothing waits)');
  }
  return { target, waitReplicas, waitTimeoutMs };
}

const TOPIC_NAME = /^[A-Za-z0-9._-]{1,200}$/;

function kafkaVar(env: Env): KafkaConfig | undefined {
  const raw = nonEmpty(env, 'KAFKA_BROKERS');
  if (raw === undefined) {
    for (const name of ['KAFKA_TOPIC', 'KAFKA_PARTITIONS', 'KAFKA_PRODUCE_TIMEOUT_MS', 'KAFKA_EVENTS', 'KAFKA_EVENTS_TOPIC', 'KAFKA_RECORD_SECRET', 'KAFKA_RECORD_SECRET_PREVIOUS']) {
      if (nonEmpty(env, name) !== undefined && !(name === 'KAFKA_EVENTS' && env[name] === 'off')) throw new ConfigError(name, 'is set but KAFKA_BROKERS is not');
    }
    return undefined;
  }
  const brokers = hostPortList('KAFKA_BROKERS', raw, 'broker').map(({ host, port }) => `${host}:${port}`);
  const topic = nonEmpty(env, 'KAFKA_TOPIC') ?? 'couponrush.issuances';
  if (!TOPIC_NAME.test(topic)) throw new ConfigError('KAFKA_TOPIC', 'must be 1-200 characters of [A-Za-z0-9._-]');
  const events = oneOf(env, 'KAFKA_EVENTS', ['on', 'off'], 'off');
  const eventsTopic = nonEmpty(env, 'KAFKA_EVENTS_TOPIC');
  if (eventsTopic !== undefined && events === 'off') throw new ConfigError('KAFKA_EVENTS_TOPIC', 'is set but KAFKA_EVENTS is not "on": set KAFKA_EVENTS=on to publish the events');
  if (eventsTopic !== undefined && !TOPIC_NAME.test(eventsTopic)) throw new ConfigError('KAFKA_EVENTS_TOPIC', 'must be 1-200 characters of [A-Za-z0-9._-]');
  if (events === 'on' && (eventsTopic ?? 'coupon.issued') === topic) throw new ConfigError('KAFKA_EVENTS_TOPIC', 'must differ from KAFKA_TOPIC');
  const current = recordSecretVar(env, 'KAFKA_RECORD_SECRET');
  if (current === undefined) {
    throw new ConfigError('KAFKA_RECORD_SECRET', `is required with KAFKA_BROKERS: the API signs its issuance records with it and the worker persists only those (at least ${MIN_RECORD_SECRET} characters, the same in every API and worker process; e.g. $(openssl rand -base64 32))`);
  }
  const previous = recordSecretVar(env, 'KAFKA_RECORD_SECRET_PREVIOUS');
  if (previous === current) throw new ConfigError('KAFKA_RECORD_SECRET_PREVIOUS', 'equals KAFKA_RECORD_SECRET: set it to the secret being retired, or unset it');
  return Object.freeze({
    brokers: Object.freeze(brokers),
    topic,
    eventsTopic: events === 'on' ? (eventsTopic ?? 'coupon.issued') : undefined,
    partitions: intVar(env, 'KAFKA_PARTITIONS', 6, 1, 10_000),
    produceTimeoutMs: intVar(env, 'KAFKA_PRODUCE_TIMEOUT_MS', 5_000, 100, 120_000),
    recordSecrets: Object.freeze({ current, previous }),
  });
}

const MIN_RECORD_SECRET = 32;

function recordSecretVar(env: Env, name: string): string | undefined {
  const value = nonEmpty(env, name);
  if (value !== undefined && value.length < MIN_RECORD_SECRET) throw new ConfigError(name, `must be at least ${MIN_RECORD_SECRET} characters`);
  return value;
}

/** Where OTLP/HTTP traces go when OTEL_TRACES_EXPORTER=otlp names no endpoint (the SDK's default). */
const DEFAULT_TRACES_URL = 'http://localhost:4318/v1/traces';

/**
 * Tracing's settings, as the OpenTelemetry specification defines the variables: the traces
 * endpoint as given, or the general endpoint plus `v1/traces`; the parent-based always-on sampler
 * by default; a ratio in [0, 1] (default 1) for the traceidratio samplers only. couponrush exports
 * over OTLP/HTTP alone, so any exporter but `otlp` and `none` is refused rather than ignored.
 */
function tracingVar(env: Env): TracingSettings | undefined {
  const exporters = (nonEmpty(env, 'OTEL_TRACES_EXPORTER') ?? '').split(',').map((e) => e.trim()).filter((e) => e !== '');
  for (const e of exporters) {
    if (e !== 'otlp' && e !== 'none') throw new ConfigError('OTEL_TRACES_EXPORTER', `couponrush exports traces over OTLP/HTTP only: use otlp or none, got "${e}"`);
  }
  const tracesUrl = urlVar(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', ['http:', 'https:']);
  const baseUrl = urlVar(env, 'OTEL_EXPORTER_OTLP_ENDPOINT', ['http:', 'https:']);
  const sampler = oneOf<SamplerName>(env, 'OTEL_TRACES_SAMPLER', SAMPLER_NAMES, 'parentbased_always_on');
  const rawRatio = nonEmpty(env, 'OTEL_TRACES_SAMPLER_ARG');
  let ratio = 1;
  if (rawRatio !== undefined) {
    if (!sampler.endsWith('traceidratio')) throw new ConfigError('OTEL_TRACES_SAMPLER_ARG', `is the ratio of a traceidratio sampler; OTEL_TRACES_SAMPLER is ${sampler}, which takes none`);
    ratio = Number(rawRatio);
    if (!/^\d*\.?\d+(e-?\d+)?$/i.test(rawRatio) || !(ratio >= 0 && ratio <= 1)) throw new ConfigError('OTEL_TRACES_SAMPLER_ARG', `must be a number between 0 and 1, got "${rawRatio}"`);
  }
  // The SDK's delay; a queue and batches larger than its (2,048 and 512), which a stampede traced
  // at 100 % overflows within a second.
  const maxQueueSize = intVar(env, 'OTEL_BSP_MAX_QUEUE_SIZE', 65_536, 1, 10_000_000);
  const maxExportBatchSize = intVar(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', Math.min(4_096, maxQueueSize), 1, 10_000_000);
  if (maxExportBatchSize > maxQueueSize) throw new ConfigError('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', `must be at most OTEL_BSP_MAX_QUEUE_SIZE (${maxQueueSize})`);
  const batch = Object.freeze({ scheduleDelayMs: intVar(env, 'OTEL_BSP_SCHEDULE_DELAY', 5_000, 1, 3_600_000), maxQueueSize, maxExportBatchSize });
  if (exporters.includes('none')) return undefined;
  if (!exporters.includes('otlp') && tracesUrl === undefined && baseUrl === undefined) return undefined;
  const url = tracesUrl ?? (baseUrl === undefined ? DEFAULT_TRACES_URL : `${baseUrl.replace(/\/+$/, '')}/v1/traces`);
  return Object.freeze({ url, serviceName: nonEmpty(env, 'OTEL_SERVICE_NAME') ?? 'couponrush', sampler, ratio, batch });
}

function rateLimitVar(env: Env, name: string, fallback: string): RateLimit | undefined {
  const raw = nonEmpty(env, name) ?? fallback;
  if (raw === 'off') return undefined;
  const m = /^(\d+)\s*\/\s*(\d+)(ms|s|m)$/.exec(raw);
  if (m === null) throw new ConfigError(name, `must be "<max>/<window>" like "20/10s" (ms, s or m), or "off"; got "${raw}"`);
  const max = Number(m[1]);
  const windowMs = Number(m[2]) * (m[3] === 'ms' ? 1 : m[3] === 's' ? 1000 : 60_000);
  if (max < 1 || max > 1_000_000) throw new ConfigError(name, `max must be between 1 and 1000000, got ${max}`);
  if (windowMs < 100 || windowMs > 3600_000) throw new ConfigError(name, 'window must be between 100ms and 60m');
  return Object.freeze({ max, windowMs });
}

const PROXY_KEYWORDS = new Set(['loopback', 'linklocal', 'uniquelocal']);

function trustProxyVar(env: Env): TrustProxy | undefined {
  const raw = nonEmpty(env, 'TRUST_PROXY');
  if (raw === undefined) return undefined;
  if (raw === 'false' || raw === 'none') return false;
  // `true` would believe any X-Forwarded-For a client sends, so anyone could pick their address.
  // A hop count is not offered: Fastify cannot check that the nearest hop is a proxy.
  if (raw === 'true') throw new ConfigError('TRUST_PROXY', 'name the proxies (addresses or CIDRs) instead of "true"');
  for (const entry of raw.split(',').map((e) => e.trim())) {
    const [address = '', prefix] = entry.split('/');
    const family = isIP(address);
    const prefixOk = prefix === undefined || (/^\d+$/.test(prefix) && Number(prefix) <= (family === 6 ? 128 : 32));
    if (!PROXY_KEYWORDS.has(entry) && (family === 0 || !prefixOk)) {
      throw new ConfigError('TRUST_PROXY', `"${entry}" is not an IP address, a CIDR, loopback, linklocal or uniquelocal`);
    }
  }
  return raw;
}

/** Overload protection, rate limits and the admin listener. */
function protectionConfig(env: Env, port: number): Pick<
  Config,
  'rateLimitUser' | 'rateLimitIp' | 'trustProxy' | 'shedEventLoopDelayMs' | 'requestTimeoutMs' | 'adminPort' | 'adminHost'
> {
  const trustProxy = trustProxyVar(env);
  const rateLimitIp = rateLimitVar(env, 'RATE_LIMIT_IP', 'off');
  if (rateLimitIp !== undefined && trustProxy === undefined) {
    // Behind nginx every request comes from nginx's address: an IP limit without the proxy
    // setting would throttle everyone together.
    throw new ConfigError('RATE_LIMIT_IP', 'needs TRUST_PROXY too: the proxies\' addresses, or "false" when clients connect directly');
  }
  const requestTimeoutMs = intVar(env, 'REQUEST_TIMEOUT_MS', 10_000, 0, 600_000);
  if (requestTimeoutMs > 0 && requestTimeoutMs < 100) throw new ConfigError('REQUEST_TIMEOUT_MS', 'must be 0 (off) or at least 100');
  const adminPort = nonEmpty(env, 'ADMIN_PORT') === undefined ? undefined : intVar(env, 'ADMIN_PORT', 0, 0, 65535);
  if (adminPort !== undefined && adminPort !== 0 && adminPort === port) throw new ConfigError('ADMIN_PORT', 'must differ from PORT');
  return {
    rateLimitUser: rateLimitVar(env, 'RATE_LIMIT_USER', '20/10s'),
    rateLimitIp,
    trustProxy,
    shedEventLoopDelayMs: intVar(env, 'SHED_EVENT_LOOP_DELAY_MS', 200, 0, 60_000),
    requestTimeoutMs,
    adminPort,
    adminHost: nonEmpty(env, 'ADMIN_HOST') ?? '127.0.0.1',
  };
}

function checkAdminToken(adminToken: string): void {
  if (adminToken.length < MIN_ADMIN_TOKEN_LENGTH || !ADMIN_TOKEN_PATTERN.test(adminToken)) {
    throw new ConfigError(
      'ADMIN_TOKEN',
      `must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters of printable ASCII without whitespace (0x21-0x7E), as \`openssl rand -base64 24\` makes`,
    );
  }
}

function checkJwtSecret(jwtSecret: string): void {
  if (jwtSecret.length < MIN_SECRET_LENGTH) throw new ConfigError('JWT_SECRET', `must be at least ${MIN_SECRET_LENGTH} characters for HS256`);
}

/** A year: a longer "maximum" lifetime would be none at all. */
const MAX_JWT_MAX_TTL_S = 365 * 24 * 3600;

function jwtMaxTtlVar(env: Env): number {
  return intVar(env, 'JWT_MAX_TTL_S', DEFAULT_JWT_MAX_TTL_S, 1, MAX_JWT_MAX_TTL_S);
}

/** What `couponrush token` needs: the secret that signs user tokens, and how long one may live. */
export interface TokenConfig {
  readonly jwtSecret: string;
  readonly jwtMaxTtlS: number;
}

/**
 * For `couponrush token`: JWT_SECRET alone is enough (a shell that exported it can mint tokens
 * without the server's other variables); without it, the embedded server's generated secret, which
 * is never created here (a token signed with a secret made up here would be refused).
 */
export function loadTokenConfig(env: Env = process.env): TokenConfig {
  const jwtMaxTtlS = jwtMaxTtlVar(env);
  const jwtSecret = nonEmpty(env, 'JWT_SECRET');
  if (jwtSecret !== undefined) {
    checkJwtSecret(jwtSecret);
    return Object.freeze({ jwtSecret, jwtMaxTtlS });
  }
  if (urlVar(env, 'DATABASE_URL', Object.keys(DATABASE_URL_SCHEMES)) !== undefined) {
    throw new ConfigError('JWT_SECRET', 'is required when DATABASE_URL is set (only the embedded mode generates one)');
  }
  const dataDir = resolve(nonEmpty(env, 'DATA_DIR') ?? '.couponrush');
  return Object.freeze({ jwtSecret: loadOrCreateSecrets(dataDir, false).jwtSecret, jwtMaxTtlS });
}

export interface LoadOptions {
  /** Embedded mode: create the secrets file when missing (serve). Off for commands that must use the server's. */
  createSecrets?: boolean;
}

/** The secrets and what depends on them: only the processes that answer HTTP (serve) use them. */
type SecretField = 'adminToken' | 'generatedAdminToken' | 'generatedJwtSecret' | 'authMode' | 'jwtSecret' | 'jwtMaxTtlS';

/**
 * What a command that never answers HTTP reads (migrate, worker, reconcile, events): the stores
 * and the worker's settings. It has no secrets, so it cannot ask for ADMIN_TOKEN or JWT_SECRET.
 */
export type StoresConfig = Omit<Config, SecretField>;

/** For migrate, worker, reconcile and events: every variable but the secrets, which they do not use. */
export function loadStoresConfig(env: Env = process.env): StoresConfig {
  return Object.freeze(storesSettings(env));
}

function storesSettings(env: Env): StoresConfig {
  const databaseUrl = urlVar(env, 'DATABASE_URL', Object.keys(DATABASE_URL_SCHEMES));
  const { target: redis, waitReplicas: redisWaitReplicas, waitTimeoutMs: redisWaitTimeoutMs } = redisSettings(env) ?? { target: undefined, waitReplicas: 0, waitTimeoutMs: 0 };
  const redisPrefix = nonEmpty(env, 'REDIS_PREFIX') ?? 'couponrush:';
  // A brace would become the key's hash tag and break the per-coupon {cpn:N} slotting.
  if (!/^[A-Za-z0-9._:-]{1,64}$/.test(redisPrefix)) {
    throw new ConfigError('REDIS_PREFIX', 'must be 1-64 characters of [A-Za-z0-9._:-]');
  }
  const embedded = databaseUrl === undefined;
  const dataDir = resolve(nonEmpty(env, 'DATA_DIR') ?? '.couponrush');
  const port = intVar(env, 'PORT', 3000, 0, 65535);
  const kafka = kafkaVar(env);
  if (kafka !== undefined && (redis === undefined || embedded)) {
    // The strategy admits in Redis, and the topic's consumer is `couponrush worker`, a process of its own.
    throw new ConfigError('KAFKA_BROKERS', 'needs Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES) and DATABASE_URL too (redis-lua-kafka admits in Redis; `couponrush worker` persists)');
  }
  const defaultStrategy = oneOf(env, 'DEFAULT_STRATEGY', STRATEGY_NAMES, defaultStrategyFor(databaseUrl, redis !== undefined));
  // A default no campaign could use would turn every campaign created without a strategy into a 400.
  const unusable = unavailableReason(defaultStrategy, { redis: redis !== undefined, kafka: kafka !== undefined });
  if (unusable !== undefined) throw new ConfigError('DEFAULT_STRATEGY', unusable);
  return {
    port,
    host: nonEmpty(env, 'HOST') ?? '127.0.0.1',
    databaseUrl,
    dataDir,
    embedded,
    defaultStrategy,
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    dbPoolSize: intVar(env, 'DB_POOL_SIZE', 20, 1, 1000),
    ...protectionConfig(env, port),
    redis,
    redisPrefix,
    redisWaitReplicas,
    redisWaitTimeoutMs,
    kafka,
    worker: Object.freeze({
      batchSize: intVar(env, 'WORKER_BATCH_SIZE', 500, 1, 10_000),
      lingerMs: intVar(env, 'WORKER_LINGER_MS', 50, 0, 1_000),
      claimIdleMs: intVar(env, 'WORKER_CLAIM_IDLE_MS', 30_000, 100, 3_600_000),
      maxDeliveries: intVar(env, 'WORKER_MAX_DELIVERIES', 5, 1, 1000),
      reconcileIntervalMs: intVar(env, 'RECONCILE_INTERVAL_S', 60, 0, 3600) * 1000,
    }),
    tracing: tracingVar(env),
  };
}

/** For serve (and the tests' app): the stores, and the secrets that admin and user requests are checked with. */
export function loadConfig(env: Env = process.env, options: LoadOptions = {}): Config {
  const stores = storesSettings(env);
  let adminToken = nonEmpty(env, 'ADMIN_TOKEN');
  let jwtSecret = nonEmpty(env, 'JWT_SECRET');
  const authMode = oneOf<AuthMode>(env, 'AUTH_MODE', ['jwt', 'header'], 'jwt');
  let generatedAdminToken = false;
  let generatedJwtSecret = false;

  if (stores.embedded && (adminToken === undefined || jwtSecret === undefined)) {
    const secrets = loadOrCreateSecrets(stores.dataDir, options.createSecrets ?? true);
    generatedAdminToken = adminToken === undefined;
    generatedJwtSecret = jwtSecret === undefined;
    adminToken ??= secrets.adminToken;
    jwtSecret ??= secrets.jwtSecret;
  }
  if (adminToken === undefined) {
    throw new ConfigError('ADMIN_TOKEN', 'is required when DATABASE_URL is set (only the embedded mode generates one)');
  }
  checkAdminToken(adminToken);
  if (jwtSecret === undefined) {
    if (authMode === 'jwt') {
      throw new ConfigError('JWT_SECRET', 'is required with AUTH_MODE=jwt when DATABASE_URL is set');
    }
    jwtSecret = ''; // header mode never verifies a JWT; `couponrush token` refuses an empty secret
  } else {
    checkJwtSecret(jwtSecret);
  }
  return Object.freeze({
    ...stores,
    adminToken,
    generatedAdminToken,
    generatedJwtSecret,
    authMode,
    jwtSecret,
    jwtMaxTtlS: jwtMaxTtlVar(env),
  });
}

/**
 * What `couponrush bench` reads from the environment. It does not load the server's Config: a
 * bench starts its own servers (or targets one with --url), and validates these itself.
 */
export type BenchEnvironment = {
  readonly [name in (typeof REDIS_VARIABLES)[number]]?: string | undefined;
} & {
  readonly DATABASE_URL?: string | undefined;
  readonly KAFKA_BROKERS?: string | undefined;
  readonly ADMIN_TOKEN?: string | undefined;
  readonly JWT_SECRET?: string | undefined;
  /** https://no-color.org: set (to anything) turns colour off. */
  readonly noColor: boolean;
};

export function benchEnvironment(env: Env = process.env): BenchEnvironment {
  return Object.freeze({
    ...Object.fromEntries(REDIS_VARIABLES.map((name) => [name, env[name]])),
    DATABASE_URL: env.DATABASE_URL,
    KAFKA_BROKERS: env.KAFKA_BROKERS,
    ADMIN_TOKEN: env.ADMIN_TOKEN,
    JWT_SECRET: env.JWT_SECRET,
    noColor: env.NO_COLOR !== undefined,
  });
}
