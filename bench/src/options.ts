// What one `couponrush bench` run does: flags and environment resolved once into a frozen
// BenchOptions, with a clear message for every value that cannot work.
import { MAX_TOTAL_QUANTITY } from '../../src/coupons/domain.js';
import { isStrategyName, STRATEGY_NAMES, type StrategyName } from '../../src/coupons/strategies/index.js';
import { ConfigError, REDIS_VARIABLES, redisSettings, type BenchEnvironment, type RedisTarget } from '../../src/config.js';
import { DATABASE_URL_SCHEMES } from '../../src/db/types.js';
import type { Generator } from './load.js';
import type { ArrivalShape } from './open-loop.js';

export const DEFAULTS = Object.freeze({
  stock: 10_000,
  users: 40_000,
  connections: 64,
  /** Requests per user on average when --requests is not given: every user once, one in four again (40,000 users → 50,000 requests). */
  retryFactor: 1.25,
  drainTimeoutSeconds: 30,
  requestTimeoutSeconds: 30,
  /** Requests sent to each target before it is measured, so JIT and connection pools are warm. */
  warmupRequests: 2_000,
  /** Untracked (.gitignore): a run never changes what the README shows. */
  out: 'bench-results/local',
  generator: 'sockets' as Generator,
  /** Open loop: connections opened as needed up to this many. */
  maxConnections: 1_000,
  arrivalShape: 'poisson' as ArrivalShape,
});

/** Where `--publish` writes latest.{md,json,svg}: the committed results the README links. */
export const PUBLISHED_DIR = 'bench-results';

/** Bounds that keep one run's memory (tokens, plan, per-user counters) reasonable. */
export const MAX_USERS = 2_000_000;
export const MAX_REQUESTS = 20_000_000;
export const MAX_CONNECTIONS = 10_000;

/**
 * The open loop: `count` arrivals within `windowSeconds`, each plan entry sent at its intended
 * time whatever the answers. `rate` (--rate): evenly spaced; `drop` (--arrivals): `shape`.
 */
export interface ArrivalOptions {
  readonly kind: 'rate' | 'drop';
  readonly count: number;
  readonly windowSeconds: number;
  readonly shape: ArrivalShape;
  readonly maxConnections: number;
}

/** Redis as the bench's environment names it (REDIS_URL, or REDIS_SENTINELS and the rest). */
export interface BenchRedis {
  readonly target: RedisTarget;
  /** The REDIS_* variables that were set, handed on to the API processes as they are. */
  readonly env: Readonly<Record<string, string>>;
}

/** The Redis variables, checked as the service checks them (one target, what it needs). */
function benchRedis(env: Omit<BenchEnvironment, 'noColor'>): BenchRedis | undefined {
  let settings: ReturnType<typeof redisSettings>;
  try {
    settings = redisSettings(env);
  } catch (err) {
    if (err instanceof ConfigError) throw new BenchOptionsError(err.message);
    throw err;
  }
  if (settings === undefined) return undefined;
  const set = REDIS_VARIABLES.flatMap((name) => {
    const value = nonEmpty(env[name]);
    return value === undefined ? [] : [[name, value] as const];
  });
  return { target: settings.target, env: Object.fromEntries(set) };
}

export interface BenchOptions {
  readonly strategies: readonly StrategyName[];
  /** True when the user named the strategies: a skipped one is then worth a warning. */
  readonly strategiesExplicit: boolean;
  readonly stock: number;
  readonly users: number;
  /** Size of the request plan (every user once, the rest repeats); the run length unless `durationSeconds`. */
  readonly requests: number;
  /** Run each stampede for this long instead, cycling through the plan. */
  readonly durationSeconds: number | undefined;
  /** Keep-alive connections, one request in flight each; the open loop opens these before its first arrival, and more as needed. */
  readonly connections: number;
  /** Set: the open loop (--rate or --arrivals) instead of the closed one. */
  readonly arrivals: ArrivalOptions | undefined;
  /** The load generator: the bench's raw-socket client (default) or autocannon. */
  readonly generator: Generator;
  /** Target an already running server instead of starting one. */
  readonly url: string | undefined;
  readonly adminToken: string | undefined;
  readonly jwtSecret: string | undefined;
  /** Self-managed: the server a scratch database is created on. With --url: the target's database. */
  readonly databaseUrl: string;
  /** Redis for the strategies that need it: where it is, and the variables that say so to the API processes. */
  readonly redis: BenchRedis | undefined;
  /** KAFKA_BROKERS: redis-lua-kafka runs (on a topic of the run's own, deleted afterwards). */
  readonly kafkaBrokers: string | undefined;
  readonly out: string;
  /** Set (--publish): also write the report as latest.* here, the README's committed results. */
  readonly publish: string | undefined;
  readonly keep: boolean;
  readonly ceiling: boolean;
  /** Unmeasured requests to each target first (a throwaway campaign for strategies). */
  readonly warmupRequests: number;
  readonly drainTimeoutMs: number;
  readonly requestTimeoutSeconds: number;
  /** Write a V8 CPU profile of each API process (self-managed mode only). */
  readonly cpuProf: boolean;
  /** Keep a live console open on each campaign during its run (the A/B of what one costs). */
  readonly watchConsole: boolean;
  /**
   * Run the stream worker as a process of its own (`couponrush worker`) instead of inside the API
   * (`serve --with-worker`): the API's CPU then excludes the worker's, which is reported apart.
   */
  readonly workerApart: boolean;
  /**
   * --trace-sampling: tracing on in the processes the bench starts, at this ratio
   * (parentbased_traceidratio), exported to the bench's own OTLP receiver; undefined = off (the
   * bench hands no OTEL_* variable of its own environment on, so it never traces by accident).
   */
  readonly traceSampling: number | undefined;
  /** Print the JSON report on stdout instead of the table. */
  readonly json: boolean;
  readonly color: boolean;
  readonly progress: boolean;
  /** The command as typed, for the report header. */
  readonly commandLine: string;
  /** The environment children inherit (PATH, DB_POOL_SIZE and the like). */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** Raw flags as commander hands them over (already type-checked by the parsers below). */
export interface BenchFlags {
  strategies?: StrategyName[];
  stock?: number;
  users?: number;
  requests?: number;
  duration?: number;
  connections?: number;
  rate?: number;
  arrivals?: { readonly users: number; readonly seconds: number };
  arrivalShape?: ArrivalShape;
  maxConnections?: number;
  generator?: Generator;
  url?: string;
  adminToken?: string;
  jwtSecret?: string;
  out?: string;
  publish?: boolean;
  keep?: boolean;
  ceiling?: boolean;
  warmup?: number;
  drainTimeout?: number;
  timeout?: number;
  cpuProf?: boolean;
  watchConsole?: boolean;
  workerApart?: boolean;
  traceSampling?: number;
  json?: boolean;
  progress?: boolean;
}

export class BenchOptionsError extends Error {
  override name = 'BenchOptionsError';
}

/** --trace-sampling: a ratio in (0, 1]. */
export function samplingRatio(value: string): number {
  const n = Number(value.trim());
  if (!/^\d*\.?\d+$/.test(value.trim()) || !(n > 0 && n <= 1)) throw new BenchOptionsError('must be a ratio above 0 and at most 1 (0.01 samples 1 % of the requests)');
  return n;
}

/** Parses `a,b,c` into known strategy names; throws with the list of valid ones. */
export function parseStrategyList(value: string): StrategyName[] {
  const names = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (names.length === 0) throw new BenchOptionsError('give at least one strategy');
  const unknown = names.filter((n) => !isStrategyName(n));
  if (unknown.length > 0) {
    throw new BenchOptionsError(`unknown strateg${unknown.length === 1 ? 'y' : 'ies'} ${unknown.join(', ')}; known: ${STRATEGY_NAMES.join(', ')}`);
  }
  return [...new Set(names)] as StrategyName[];
}

/** `40000@1`: that many users arriving within that many seconds. */
export function parseArrivals(value: string): { users: number; seconds: number } {
  const m = /^\s*(\d+)\s*@\s*(\d+(?:\.\d+)?)\s*$/.exec(value);
  const users = Number(m?.[1]);
  const seconds = Number(m?.[2]);
  if (m === null || !Number.isSafeInteger(users) || users <= 0 || !(seconds > 0)) {
    throw new BenchOptionsError('--arrivals is <users>@<seconds>, e.g. 40000@1 (40,000 users within one second)');
  }
  return { users, seconds };
}

/** The open loop's arrivals, or undefined for the closed loop; checks the flags that go with each. */
function resolveArrivals(flags: BenchFlags, requests: number): ArrivalOptions | undefined {
  if (flags.rate !== undefined && flags.arrivals !== undefined) throw new BenchOptionsError('give --rate or --arrivals, not both');
  if (flags.arrivalShape !== undefined && flags.arrivals === undefined) throw new BenchOptionsError('--arrival-shape goes with --arrivals (--rate sends at even intervals)');
  const open = flags.rate !== undefined || flags.arrivals !== undefined;
  if (!open) {
    if (flags.maxConnections !== undefined) throw new BenchOptionsError('--max-connections goes with --rate or --arrivals (the open loop); the closed loop uses --connections');
    return undefined;
  }
  if (flags.generator === 'autocannon') throw new BenchOptionsError('the open loop (--rate, --arrivals) is the raw-socket generator\'s: not with --generator autocannon');
  const maxConnections = flags.maxConnections ?? DEFAULTS.maxConnections;
  if (maxConnections > MAX_CONNECTIONS) throw new BenchOptionsError(`--max-connections is at most ${MAX_CONNECTIONS}`);
  if (flags.arrivals !== undefined) {
    const { users, seconds } = flags.arrivals;
    return { kind: 'drop', count: users, windowSeconds: seconds, shape: flags.arrivalShape ?? DEFAULTS.arrivalShape, maxConnections };
  }
  const rate = flags.rate!;
  const count = flags.duration === undefined ? requests : Math.round(rate * flags.duration);
  if (count > MAX_REQUESTS) throw new BenchOptionsError(`--rate × --duration is at most ${MAX_REQUESTS} arrivals`);
  return { kind: 'rate', count, windowSeconds: count / rate, shape: 'uniform', maxConnections };
}

export function defaultRequests(users: number): number {
  return Math.ceil(users * DEFAULTS.retryFactor);
}

function nonEmpty(value: string | undefined): string | undefined {
  const v = value?.trim();
  return v === undefined || v === '' ? undefined : v;
}

function databaseUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new BenchOptionsError('DATABASE_URL is not a valid URL');
  }
  if (DATABASE_URL_SCHEMES[url.protocol] === undefined) {
    throw new BenchOptionsError(`DATABASE_URL must start with ${Object.keys(DATABASE_URL_SCHEMES).map((p) => `${p}//`).join(', ')}`);
  }
  return raw;
}

/** --url and the credentials a running target needs (the bench makes its own otherwise). */
function targetOf(
  flags: BenchFlags,
  env: Pick<BenchEnvironment, 'ADMIN_TOKEN' | 'JWT_SECRET'>,
): { url: string | undefined; adminToken: string | undefined; jwtSecret: string | undefined } {
  const url = nonEmpty(flags.url);
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new BenchOptionsError(`--url ${url} is not a valid URL`);
    }
    if (parsed.protocol !== 'http:') throw new BenchOptionsError('--url must be an http:// URL');
  }
  const adminToken = nonEmpty(flags.adminToken) ?? (url === undefined ? undefined : nonEmpty(env.ADMIN_TOKEN));
  const jwtSecret = nonEmpty(flags.jwtSecret) ?? (url === undefined ? undefined : nonEmpty(env.JWT_SECRET));
  if (url !== undefined && adminToken === undefined) {
    throw new BenchOptionsError('--url needs the target\'s admin token: --admin-token or ADMIN_TOKEN');
  }
  if (url !== undefined && jwtSecret === undefined) {
    throw new BenchOptionsError('--url needs the target\'s JWT secret to mint user tokens: --jwt-secret or JWT_SECRET');
  }
  if (url === undefined && (flags.adminToken !== undefined || flags.jwtSecret !== undefined)) {
    throw new BenchOptionsError('--admin-token and --jwt-secret only make sense with --url (the bench generates its own otherwise)');
  }
  if (url !== undefined && flags.cpuProf === true) {
    throw new BenchOptionsError('--cpu-prof profiles the API process the bench starts; it cannot with --url');
  }
  return { url, adminToken, jwtSecret };
}

export function resolveBenchOptions(
  flags: BenchFlags,
  env: Omit<BenchEnvironment, 'noColor'>,
  extra: { commandLine: string; color: boolean; interactive: boolean },
): BenchOptions {
  if (flags.arrivals !== undefined && (flags.requests !== undefined || flags.duration !== undefined)) {
    throw new BenchOptionsError('--arrivals <users>@<seconds> sets how many requests arrive, and when: not with --requests or --duration');
  }
  // A drop of N arrivals is N requests: every user once, and the arrivals beyond --users are second presses.
  const users = flags.users ?? (flags.arrivals === undefined ? DEFAULTS.users : Math.min(flags.arrivals.users, MAX_USERS));
  if (flags.arrivals !== undefined && flags.arrivals.users < users) {
    throw new BenchOptionsError(`--arrivals brings ${flags.arrivals.users} users, fewer than --users (${users}): every user arrives at least once`);
  }
  const stock = flags.stock ?? DEFAULTS.stock;
  const connections = flags.connections ?? DEFAULTS.connections;
  if (users > MAX_USERS) throw new BenchOptionsError(`--users is at most ${MAX_USERS}`);
  if (stock > MAX_TOTAL_QUANTITY) throw new BenchOptionsError(`--stock is at most ${MAX_TOTAL_QUANTITY}`);
  if (connections > MAX_CONNECTIONS) throw new BenchOptionsError(`--connections is at most ${MAX_CONNECTIONS}`);
  if (flags.requests !== undefined && flags.duration !== undefined) {
    throw new BenchOptionsError('give --requests or --duration, not both');
  }
  const requests = flags.arrivals?.users ?? flags.requests ?? defaultRequests(users);
  if (requests < users) {
    throw new BenchOptionsError(`--requests (${requests}) must be at least --users (${users}): every user sends at least once`);
  }
  if (requests > MAX_REQUESTS) throw new BenchOptionsError(`--requests is at most ${MAX_REQUESTS}`);
  const arrivals = resolveArrivals(flags, requests);
  if (connections > requests && arrivals === undefined) {
    throw new BenchOptionsError(`--connections (${connections}) cannot exceed the number of requests (${requests})`);
  }

  const { url, adminToken, jwtSecret } = targetOf(flags, env);
  if (flags.workerApart === true && url !== undefined) throw new BenchOptionsError('--worker-apart starts the worker beside the API the bench starts; it cannot with --url');
  if (flags.traceSampling !== undefined && url !== undefined) {
    throw new BenchOptionsError('--trace-sampling turns tracing on in the API the bench starts; with --url, set OTEL_* on your server instead');
  }

  const rawDb = nonEmpty(env.DATABASE_URL);
  if (rawDb === undefined) {
    throw new BenchOptionsError(
      url === undefined
        ? 'DATABASE_URL is required: the bench creates a scratch database on that PostgreSQL or MySQL/MariaDB server and verifies every issuance in it, ' +
            'e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres or DATABASE_URL=mysql://root@127.0.0.1:3306/mysql'
        : 'DATABASE_URL is required with --url: the database the target server writes to, to verify the issuances',
    );
  }

  const redis = benchRedis(env);
  if (flags.workerApart === true && redis === undefined) {
    throw new BenchOptionsError('--worker-apart needs Redis (REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES): without it no strategy has a worker');
  }
  return Object.freeze({
    strategies: flags.strategies ?? STRATEGY_NAMES,
    strategiesExplicit: flags.strategies !== undefined,
    stock,
    users,
    requests,
    durationSeconds: flags.duration,
    connections,
    arrivals,
    generator: flags.generator ?? DEFAULTS.generator,
    url,
    adminToken,
    jwtSecret,
    databaseUrl: databaseUrl(rawDb),
    redis,
    kafkaBrokers: nonEmpty(env.KAFKA_BROKERS),
    out: flags.out ?? DEFAULTS.out,
    publish: flags.publish === true ? PUBLISHED_DIR : undefined,
    keep: flags.keep === true,
    ceiling: flags.ceiling !== false,
    warmupRequests: Math.min(flags.warmup ?? DEFAULTS.warmupRequests, requests),
    drainTimeoutMs: (flags.drainTimeout ?? DEFAULTS.drainTimeoutSeconds) * 1000,
    requestTimeoutSeconds: flags.timeout ?? DEFAULTS.requestTimeoutSeconds,
    cpuProf: flags.cpuProf === true,
    watchConsole: flags.watchConsole === true,
    workerApart: flags.workerApart === true,
    traceSampling: flags.traceSampling,
    json: flags.json === true,
    color: extra.color && flags.json !== true,
    progress: flags.progress !== false && extra.interactive,
    commandLine: extra.commandLine,
    env,
  });
}
