// Configuration: the only module that reads process.env. Parsed once, validated, frozen;
// a bad or missing value fails start-up with a message naming the variable.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { STRATEGY_NAMES, type StrategyName } from './coupons/strategies/index.js';

export type AuthMode = 'jwt' | 'header';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  readonly port: number;
  readonly host: string;
  /** Unset → embedded PGlite under dataDir. */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  readonly embedded: boolean;
  readonly adminToken: string;
  /** True when adminToken/jwtSecret were generated (embedded mode prints them). */
  readonly generatedSecrets: boolean;
  readonly authMode: AuthMode;
  readonly jwtSecret: string;
  readonly defaultStrategy: StrategyName;
  readonly logLevel: LogLevel;
  readonly dbPoolSize: number;
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
    throw new ConfigError(name, `must start with ${protocols.map((p) => `${p}//`).join(' or ')}`);
  }
  return raw;
}

interface EmbeddedSecrets {
  adminToken: string;
  jwtSecret: string;
}

/** Embedded mode keeps generated secrets in the data directory so tokens survive restarts. */
function loadOrCreateSecrets(dataDir: string): EmbeddedSecrets {
  const file = join(dataDir, 'secrets.json');
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<EmbeddedSecrets>;
    if (typeof parsed.adminToken === 'string' && typeof parsed.jwtSecret === 'string') {
      return { adminToken: parsed.adminToken, jwtSecret: parsed.jwtSecret };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const secrets = { adminToken: randomBytes(24).toString('base64url'), jwtSecret: randomBytes(32).toString('base64url') };
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(file, JSON.stringify(secrets, null, 2), { mode: 0o600 });
  return secrets;
}

export function defaultStrategyFor(databaseUrl: string | undefined): StrategyName {
  // A real PostgreSQL may sit behind several API instances: pick the strategy that is exact with any number.
  if (databaseUrl !== undefined) return 'db-atomic';
  return 'local';
}

export function loadConfig(env: Env = process.env): Config {
  const databaseUrl = urlVar(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const embedded = databaseUrl === undefined;
  const dataDir = resolve(nonEmpty(env, 'DATA_DIR') ?? '.couponrush');

  let adminToken = nonEmpty(env, 'ADMIN_TOKEN');
  let jwtSecret = nonEmpty(env, 'JWT_SECRET');
  const authMode = oneOf<AuthMode>(env, 'AUTH_MODE', ['jwt', 'header'], 'jwt');
  let generatedSecrets = false;

  if (embedded && (adminToken === undefined || jwtSecret === undefined)) {
    const secrets = loadOrCreateSecrets(dataDir);
    generatedSecrets = adminToken === undefined;
    adminToken ??= secrets.adminToken;
    jwtSecret ??= secrets.jwtSecret;
  }
  if (adminToken === undefined) {
    throw new ConfigError('ADMIN_TOKEN', 'is required when DATABASE_URL is set (only the embedded mode generates one)');
  }
  if (adminToken.length < 16) throw new ConfigError('ADMIN_TOKEN', 'must be at least 16 characters');
  if (jwtSecret === undefined) {
    if (authMode === 'jwt') {
      throw new ConfigError('JWT_SECRET', 'is required with AUTH_MODE=jwt when DATABASE_URL is set');
    }
    jwtSecret = ''; // header mode never verifies a JWT; `couponrush token` refuses an empty secret
  } else if (jwtSecret.length < MIN_SECRET_LENGTH) {
    throw new ConfigError('JWT_SECRET', `must be at least ${MIN_SECRET_LENGTH} characters for HS256`);
  }

  return Object.freeze({
    port: intVar(env, 'PORT', 3000, 0, 65535),
    host: nonEmpty(env, 'HOST') ?? '127.0.0.1',
    databaseUrl,
    dataDir,
    embedded,
    adminToken,
    generatedSecrets,
    authMode,
    jwtSecret,
    defaultStrategy: oneOf(env, 'DEFAULT_STRATEGY', STRATEGY_NAMES, defaultStrategyFor(databaseUrl)),
    logLevel: oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info'),
    dbPoolSize: intVar(env, 'DB_POOL_SIZE', 20, 1, 1000),
  });
}
