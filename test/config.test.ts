// Configuration is validated at start-up with an error naming the variable, both as a function
// and as the real `couponrush serve` process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig, loadStoresConfig, loadTokenConfig } from '../src/config.js';

const PG = 'postgres://postgres@127.0.0.1:5432/test';
const SECRET = 'x'.repeat(32);
const base = { DATABASE_URL: PG, ADMIN_TOKEN: 'a'.repeat(20), JWT_SECRET: SECRET };

function throwsNaming(env: Record<string, string>, variable: string): void {
  assert.throws(
    () => loadConfig(env),
    (err: unknown) => err instanceof ConfigError && err.variable === variable && err.message.startsWith(`${variable}:`),
    `expected a ConfigError naming ${variable}`,
  );
}

describe('loadConfig', () => {
  it('requires ADMIN_TOKEN when DATABASE_URL is set', () => throwsNaming({ DATABASE_URL: PG, JWT_SECRET: SECRET }, 'ADMIN_TOKEN'));
  it('requires JWT_SECRET when DATABASE_URL is set and AUTH_MODE=jwt', () => throwsNaming({ DATABASE_URL: PG, ADMIN_TOKEN: 'a'.repeat(20) }, 'JWT_SECRET'));
  it('does not require JWT_SECRET with AUTH_MODE=header', () => {
    assert.equal(loadConfig({ DATABASE_URL: PG, ADMIN_TOKEN: 'a'.repeat(20), AUTH_MODE: 'header' }).authMode, 'header');
  });
  it('rejects a short JWT_SECRET', () => throwsNaming({ ...base, JWT_SECRET: 'short' }, 'JWT_SECRET'));
  it('rejects a short ADMIN_TOKEN', () => throwsNaming({ ...base, ADMIN_TOKEN: 'short' }, 'ADMIN_TOKEN'));
  it('ADMIN_TOKEN: refuses what a bearer header cannot carry intact, and states the rule', () => {
    // A space ends the bearer token; non-ASCII arrives as latin-1 from a browser and UTF-8 from curl.
    for (const token of ['correct horse battery staple', 'Ä'.repeat(16), `${'a'.repeat(16)}\tb`, `${'a'.repeat(16)}\u007f`]) {
      throwsNaming({ ...base, ADMIN_TOKEN: token }, 'ADMIN_TOKEN');
    }
    assert.throws(() => loadConfig({ ...base, ADMIN_TOKEN: 'Ä'.repeat(16) }), /at least 16 characters of printable ASCII without whitespace \(0x21-0x7E\)/);
    assert.throws(() => loadConfig({ ...base, ADMIN_TOKEN: 'a'.repeat(15) }), /at least 16 characters/);
    assert.equal(loadConfig({ ...base, ADMIN_TOKEN: '!~+/=abcdefghijklmnop' }).adminToken, '!~+/=abcdefghijklmnop');
    assert.equal(loadConfig({ ...base, ADMIN_TOKEN: 'a'.repeat(16) }).adminToken, 'a'.repeat(16));
  });
  it('JWT_MAX_TTL_S: a day by default, a positive whole number', () => {
    assert.equal(loadConfig(base).jwtMaxTtlS, 86_400);
    assert.equal(loadConfig({ ...base, JWT_MAX_TTL_S: '600' }).jwtMaxTtlS, 600);
    for (const bad of ['0', '-5', '1.5', 'a day', '1e3', String(366 * 86_400)]) throwsNaming({ ...base, JWT_MAX_TTL_S: bad }, 'JWT_MAX_TTL_S');
  });
  it('rejects a non-numeric PORT', () => throwsNaming({ ...base, PORT: 'eighty' }, 'PORT'));
  it('rejects an out-of-range PORT', () => throwsNaming({ ...base, PORT: '70000' }, 'PORT'));
  it('rejects an unknown AUTH_MODE', () => throwsNaming({ ...base, AUTH_MODE: 'oauth' }, 'AUTH_MODE'));
  it('rejects an unknown DEFAULT_STRATEGY', () => throwsNaming({ ...base, DEFAULT_STRATEGY: 'fastest' }, 'DEFAULT_STRATEGY'));
  it('rejects a DEFAULT_STRATEGY this configuration cannot run (a Redis strategy without REDIS_URL)', () => {
    throwsNaming({ ...base, DEFAULT_STRATEGY: 'redis-lua-async' }, 'DEFAULT_STRATEGY');
    assert.throws(() => loadConfig({ ...base, DEFAULT_STRATEGY: 'redis-lua-async' }), /needs REDIS_URL/);
    assert.equal(loadConfig({ ...base, DEFAULT_STRATEGY: 'redis-lua-async', REDIS_URL: 'redis://127.0.0.1:6379' }).defaultStrategy, 'redis-lua-async');
  });
  describe('Redis: REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES, and REDIS_WAIT_REPLICAS', () => {
    const sentinel = { ...base, REDIS_SENTINELS: '10.0.0.1:26379, sentinel-2:26380', REDIS_SENTINEL_MASTER: 'couponrush' };
    it('reads the sentinels, the master name and the credentials', () => {
      const cfg = loadConfig({ ...sentinel, REDIS_USERNAME: 'app', REDIS_PASSWORD: 'pw', REDIS_SENTINEL_PASSWORD: 'spw' });
      assert.deepEqual(cfg.redis, {
        kind: 'sentinel',
        sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: 'sentinel-2', port: 26380 }],
        master: 'couponrush',
        username: 'app',
        password: 'pw',
        sentinelPassword: 'spw',
      });
      // Redis is configured: the Redis default strategy, as with REDIS_URL.
      assert.equal(cfg.defaultStrategy, 'redis-lua-async-cached');
      assert.deepEqual(loadConfig({ ...base, REDIS_URL: 'redis://h:6379' }).redis, { kind: 'node', url: 'redis://h:6379' });
      assert.equal(loadConfig(base).redis, undefined);
    });
    it('reads the Cluster nodes and the credentials', () => {
      const cfg = loadConfig({ ...base, REDIS_CLUSTER_NODES: 'node-1:6379,node-2:6379', REDIS_PASSWORD: 'pw' });
      assert.deepEqual(cfg.redis, { kind: 'cluster', nodes: [{ host: 'node-1', port: 6379 }, { host: 'node-2', port: 6379 }], username: undefined, password: 'pw' });
      assert.equal(cfg.defaultStrategy, 'redis-lua-async-cached');
      for (const bad of ['node-1', 'node-1:6379,:1']) throwsNaming({ ...base, REDIS_CLUSTER_NODES: bad }, 'REDIS_CLUSTER_NODES');
      // Sentinel's own variables mean nothing to a Cluster.
      throwsNaming({ ...base, REDIS_CLUSTER_NODES: 'node-1:6379', REDIS_SENTINEL_MASTER: 'x' }, 'REDIS_SENTINEL_MASTER');
    });
    it('takes one place for Redis: two of REDIS_URL, REDIS_SENTINELS and REDIS_CLUSTER_NODES is an error naming both', () => {
      throwsNaming({ ...sentinel, REDIS_URL: 'redis://h:6379' }, 'REDIS_SENTINELS');
      assert.throws(() => loadConfig({ ...sentinel, REDIS_URL: 'redis://h:6379' }), /REDIS_SENTINELS: is set together with REDIS_URL/);
      assert.throws(() => loadConfig({ ...base, REDIS_URL: 'redis://h:6379', REDIS_CLUSTER_NODES: 'n:1' }), /REDIS_CLUSTER_NODES: is set together with REDIS_URL/);
      assert.throws(() => loadConfig({ ...sentinel, REDIS_CLUSTER_NODES: 'n:1' }), /REDIS_CLUSTER_NODES: is set together with REDIS_SENTINELS/);
      // An empty variable is unset (a compose override blanks REDIS_URL that way).
      assert.equal(loadConfig({ ...sentinel, REDIS_URL: '' }).redis?.kind, 'sentinel');
    });
    it('needs the master name, host:port sentinels, and no Sentinel variable without REDIS_SENTINELS', () => {
      throwsNaming({ ...base, REDIS_SENTINELS: '10.0.0.1:26379' }, 'REDIS_SENTINEL_MASTER');
      throwsNaming({ ...sentinel, REDIS_SENTINEL_MASTER: 'two words' }, 'REDIS_SENTINEL_MASTER');
      for (const bad of ['10.0.0.1', 'h:0', 'h:99999', ',', 'h:1,nope']) throwsNaming({ ...sentinel, REDIS_SENTINELS: bad }, 'REDIS_SENTINELS');
      throwsNaming({ ...base, REDIS_SENTINEL_MASTER: 'couponrush' }, 'REDIS_SENTINEL_MASTER');
      throwsNaming({ ...base, REDIS_SENTINEL_PASSWORD: 'x' }, 'REDIS_SENTINEL_PASSWORD');
      // With REDIS_URL the credentials are the URL's: two places for one password would be one too many.
      throwsNaming({ ...base, REDIS_URL: 'redis://h:6379', REDIS_PASSWORD: 'pw' }, 'REDIS_PASSWORD');
      assert.throws(() => loadConfig({ ...base, REDIS_URL: 'redis://h:6379', REDIS_PASSWORD: 'pw' }), /credentials go in the URL/);
    });
    it('REDIS_WAIT_REPLICAS: 0 by default, a small whole number, only with Redis; its timeout stays under 2 s', () => {
      assert.equal(loadConfig(sentinel).redisWaitReplicas, 0);
      const waiting = loadConfig({ ...sentinel, REDIS_WAIT_REPLICAS: '1' });
      assert.equal(waiting.redisWaitReplicas, 1);
      assert.equal(waiting.redisWaitTimeoutMs, 1_000);
      assert.equal(loadConfig({ ...sentinel, REDIS_WAIT_REPLICAS: '2', REDIS_WAIT_TIMEOUT_MS: '250' }).redisWaitTimeoutMs, 250);
      for (const bad of ['-1', 'one', '65']) throwsNaming({ ...sentinel, REDIS_WAIT_REPLICAS: bad }, 'REDIS_WAIT_REPLICAS');
      for (const bad of ['5', '2001']) throwsNaming({ ...sentinel, REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: bad }, 'REDIS_WAIT_TIMEOUT_MS');
      throwsNaming({ ...base, REDIS_WAIT_REPLICAS: '1' }, 'REDIS_WAIT_REPLICAS');
      throwsNaming({ ...sentinel, REDIS_WAIT_TIMEOUT_MS: '500' }, 'REDIS_WAIT_TIMEOUT_MS');
    });
  });
  describe('KAFKA_RECORD_SECRET', () => {
    const kafka = { ...base, REDIS_URL: 'redis://127.0.0.1:6379', KAFKA_BROKERS: '127.0.0.1:9092' };
    const secret = 's'.repeat(32);
    it('is required with KAFKA_BROKERS (the worker persists only signed records)', () => {
      throwsNaming(kafka, 'KAFKA_RECORD_SECRET');
      assert.throws(() => loadConfig(kafka), /at least 32 characters/);
    });
    it('must be at least 32 characters, and so must the previous one', () => {
      throwsNaming({ ...kafka, KAFKA_RECORD_SECRET: 's'.repeat(31) }, 'KAFKA_RECORD_SECRET');
      throwsNaming({ ...kafka, KAFKA_RECORD_SECRET: secret, KAFKA_RECORD_SECRET_PREVIOUS: 'old' }, 'KAFKA_RECORD_SECRET_PREVIOUS');
    });
    it('refuses a previous secret equal to the current one', () => throwsNaming({ ...kafka, KAFKA_RECORD_SECRET: secret, KAFKA_RECORD_SECRET_PREVIOUS: secret }, 'KAFKA_RECORD_SECRET_PREVIOUS'));
    it('is refused without KAFKA_BROKERS (a setting nothing reads)', () => {
      throwsNaming({ ...base, KAFKA_RECORD_SECRET: secret }, 'KAFKA_RECORD_SECRET');
      throwsNaming({ ...base, KAFKA_RECORD_SECRET_PREVIOUS: secret }, 'KAFKA_RECORD_SECRET_PREVIOUS');
    });
    it('takes both during a rotation', () => {
      const previous = 'p'.repeat(40);
      assert.deepEqual(loadConfig({ ...kafka, KAFKA_RECORD_SECRET: secret, KAFKA_RECORD_SECRET_PREVIOUS: previous }).kafka?.recordSecrets, { current: secret, previous });
    });
  });
  describe('tracing: the standard OTEL_* variables', () => {
    const tracing = (env: Record<string, string>) => loadConfig({ ...base, ...env }).tracing;
    it('is off by default, and with an endpoint but OTEL_TRACES_EXPORTER=none', () => {
      assert.equal(tracing({}), undefined);
      assert.equal(tracing({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_TRACES_EXPORTER: 'none' }), undefined);
      assert.equal(tracing({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318', OTEL_TRACES_EXPORTER: 'otlp,none' }), undefined);
    });
    it('is on with an endpoint (plus v1/traces), a traces endpoint (as given, and preferred), or OTEL_TRACES_EXPORTER=otlp (the default endpoint)', () => {
      assert.deepEqual(tracing({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }), {
        url: 'http://collector:4318/v1/traces',
        serviceName: 'couponrush',
        sampler: 'parentbased_always_on',
        ratio: 1,
        batch: { scheduleDelayMs: 5_000, maxQueueSize: 65_536, maxExportBatchSize: 4_096 },
      });
      assert.equal(tracing({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://b/traces' })?.url, 'https://b/traces');
      assert.equal(tracing({ OTEL_TRACES_EXPORTER: 'otlp' })?.url, 'http://localhost:4318/v1/traces');
    });
    it('reads the service name, the sampler and its ratio', () => {
      const on = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };
      assert.deepEqual(tracing({ ...on, OTEL_SERVICE_NAME: 'api-1', OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.01', OTEL_BSP_SCHEDULE_DELAY: '1000', OTEL_BSP_MAX_QUEUE_SIZE: '2048' }), {
        url: 'http://collector:4318/v1/traces',
        serviceName: 'api-1',
        sampler: 'parentbased_traceidratio',
        ratio: 0.01,
        batch: { scheduleDelayMs: 1_000, maxQueueSize: 2_048, maxExportBatchSize: 2_048 },
      });
      assert.equal(tracing({ ...on, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1' })?.ratio, 1);
      assert.equal(tracing({ ...on, OTEL_TRACES_SAMPLER: 'always_off' })?.sampler, 'always_off');
    });
    it('a bad value stops start-up, tracing on or off', () => {
      throwsNaming({ ...base, OTEL_TRACES_EXPORTER: 'zipkin' }, 'OTEL_TRACES_EXPORTER');
      throwsNaming({ ...base, OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' }, 'OTEL_EXPORTER_OTLP_ENDPOINT');
      throwsNaming({ ...base, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'grpc://collector:4317' }, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
      throwsNaming({ ...base, OTEL_TRACES_SAMPLER: 'jaeger_remote' }, 'OTEL_TRACES_SAMPLER');
      throwsNaming({ ...base, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1.5' }, 'OTEL_TRACES_SAMPLER_ARG');
      throwsNaming({ ...base, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: 'half' }, 'OTEL_TRACES_SAMPLER_ARG');
      throwsNaming({ ...base, OTEL_TRACES_EXPORTER: 'none', OTEL_TRACES_SAMPLER_ARG: '-0.1', OTEL_TRACES_SAMPLER: 'traceidratio' }, 'OTEL_TRACES_SAMPLER_ARG');
      // A ratio for a sampler that takes none would be a setting nothing reads.
      throwsNaming({ ...base, OTEL_TRACES_SAMPLER_ARG: '0.5' }, 'OTEL_TRACES_SAMPLER_ARG');
      throwsNaming({ ...base, OTEL_BSP_SCHEDULE_DELAY: '1s' }, 'OTEL_BSP_SCHEDULE_DELAY');
      throwsNaming({ ...base, OTEL_BSP_MAX_QUEUE_SIZE: '100', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '200' }, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE');
    });
    it('the worker reads them too (its spans are half of an issuance)', () => {
      assert.equal(loadStoresConfig({ DATABASE_URL: PG, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }).tracing?.url, 'http://c:4318/v1/traces');
    });
  });
  it('rejects an unknown LOG_LEVEL', () => throwsNaming({ ...base, LOG_LEVEL: 'loud' }, 'LOG_LEVEL'));
  it('rejects a DATABASE_URL that is neither postgres:// nor mysql://', () => throwsNaming({ ...base, DATABASE_URL: 'sqlite:///tmp/x.db' }, 'DATABASE_URL'));
  it('accepts postgres://, postgresql://, mysql:// and mariadb:// as DATABASE_URL', () => {
    for (const url of ['postgres://u@h/d', 'postgresql://u@h/d', 'mysql://root@127.0.0.1:3306/d', 'mariadb://root@h/d']) {
      assert.equal(loadConfig({ ...base, DATABASE_URL: url }).databaseUrl, url);
    }
  });
  it('rejects a DB_POOL_SIZE of 0', () => throwsNaming({ ...base, DB_POOL_SIZE: '0' }, 'DB_POOL_SIZE'));
  it('rejects a WORKER_LINGER_MS above one second', () => throwsNaming({ ...base, WORKER_LINGER_MS: '1001' }, 'WORKER_LINGER_MS'));
  it('WORKER_BATCH_SIZE: 500 by default, 1 to 10,000', () => {
    assert.equal(loadConfig(base).worker.batchSize, 500);
    assert.equal(loadConfig({ ...base, WORKER_BATCH_SIZE: '10000' }).worker.batchSize, 10_000);
    throwsNaming({ ...base, WORKER_BATCH_SIZE: '0' }, 'WORKER_BATCH_SIZE');
    throwsNaming({ ...base, WORKER_BATCH_SIZE: '10001' }, 'WORKER_BATCH_SIZE');
  });
  it('WORKER_LINGER_MS: 50 by default, 0 turns it off', () => {
    assert.equal(loadConfig(base).worker.lingerMs, 50);
    assert.equal(loadConfig({ ...base, WORKER_LINGER_MS: '0' }).worker.lingerMs, 0);
  });

  it('defaults to db-batch on a real database, port 3000 on 127.0.0.1', () => {
    const c = loadConfig(base);
    assert.equal(c.defaultStrategy, 'db-batch');
    assert.equal(c.port, 3000);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.embedded, false);
    assert.ok(Object.isFrozen(c));
  });

  it('embedded: generates secrets once, keeps them in DATA_DIR, defaults to local', () => {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-config-'));
    try {
      const first = loadConfig({ DATA_DIR: dir });
      assert.equal(first.embedded, true);
      assert.equal(first.defaultStrategy, 'local');
      assert.equal(first.generatedAdminToken, true);
      assert.equal(first.generatedJwtSecret, true);
      assert.ok(first.adminToken.length >= 16 && first.jwtSecret.length >= 32);
      const second = loadConfig({ DATA_DIR: dir });
      assert.equal(second.adminToken, first.adminToken);
      assert.equal(second.jwtSecret, first.jwtSecret);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('loadStoresConfig (migrate, worker, reconcile, events)', () => {
  it('asks for no secret: neither ADMIN_TOKEN nor JWT_SECRET, which these commands never use', () => {
    const c = loadStoresConfig({ DATABASE_URL: PG, REDIS_URL: 'redis://127.0.0.1:6379' });
    assert.equal(c.databaseUrl, PG);
    assert.equal(c.defaultStrategy, 'redis-lua-async-cached');
    assert.ok(!('adminToken' in c) && !('jwtSecret' in c), 'no secret in it');
    assert.ok(Object.isFrozen(c));
  });
  it('embedded: creates no secrets file in DATA_DIR', () => {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-config-'));
    try {
      assert.equal(loadStoresConfig({ DATA_DIR: dir }).embedded, true);
      assert.equal(existsSync(join(dir, 'secrets.json')), false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('still names a bad variable it reads', () => {
    assert.throws(() => loadStoresConfig({ DATABASE_URL: 'sqlite:///x' }), (err: unknown) => err instanceof ConfigError && err.variable === 'DATABASE_URL');
    assert.throws(() => loadStoresConfig({ DATABASE_URL: PG, WORKER_BATCH_SIZE: '0' }), (err: unknown) => err instanceof ConfigError && err.variable === 'WORKER_BATCH_SIZE');
  });
});

describe('loadTokenConfig (couponrush token)', () => {
  it('needs JWT_SECRET alone, not the server\'s other variables', () => {
    assert.deepEqual({ ...loadTokenConfig({ JWT_SECRET: SECRET }) }, { jwtSecret: SECRET, jwtMaxTtlS: 86_400 });
    assert.equal(loadTokenConfig({ JWT_SECRET: SECRET, JWT_MAX_TTL_S: '60' }).jwtMaxTtlS, 60);
  });
  it('names JWT_SECRET when DATABASE_URL is set without it, and checks its length', () => {
    assert.throws(() => loadTokenConfig({ DATABASE_URL: PG }), (err: unknown) => err instanceof ConfigError && err.variable === 'JWT_SECRET');
    assert.throws(() => loadTokenConfig({ JWT_SECRET: 'short' }), (err: unknown) => err instanceof ConfigError && err.variable === 'JWT_SECRET');
  });
  it('embedded: reads the server\'s generated secret and never creates one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-config-'));
    try {
      assert.throws(() => loadTokenConfig({ DATA_DIR: dir }), (err: unknown) => err instanceof ConfigError && err.variable === 'DATA_DIR');
      const server = loadConfig({ DATA_DIR: dir });
      assert.equal(loadTokenConfig({ DATA_DIR: dir }).jwtSecret, server.jwtSecret);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('couponrush token', () => {
  const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { sub: string; exp: number; iat: number };

  it('mints from JWT_SECRET alone, for a day by default or JWT_MAX_TTL_S when shorter', async () => {
    const day = await runCli(['token', 'demo-user'], { JWT_SECRET: SECRET });
    assert.equal(day.code, 0, day.stderr);
    const c = claims(day.stdout.trim());
    assert.equal(c.sub, 'demo-user');
    assert.equal(c.exp - c.iat, 86_400);
    const short = await runCli(['token', 'demo-user'], { JWT_SECRET: SECRET, JWT_MAX_TTL_S: '600' });
    assert.equal(short.code, 0, short.stderr);
    assert.equal(claims(short.stdout.trim()).exp - claims(short.stdout.trim()).iat, 600);
  });

  it('refuses a --ttl above JWT_MAX_TTL_S with exit code 2 and mints nothing', async () => {
    const over = await runCli(['token', 'demo-user', '--ttl', '86401'], { JWT_SECRET: SECRET });
    assert.equal(over.code, 2);
    assert.equal(over.stdout, '');
    assert.match(over.stderr, /--ttl 86401 is more than JWT_MAX_TTL_S \(86400 s\)/);
    const lowered = await runCli(['token', 'demo-user', '--ttl', '601'], { JWT_SECRET: SECRET, JWT_MAX_TTL_S: '600' });
    assert.equal(lowered.code, 2);
    const within = await runCli(['token', 'demo-user', '--ttl', '600'], { JWT_SECRET: SECRET, JWT_MAX_TTL_S: '600' });
    assert.equal(within.code, 0, within.stderr);
  });
});

describe('couponrush serve start-up', () => {
  it('exits non-zero naming ADMIN_TOKEN when it is missing with DATABASE_URL', async () => {
    const { code, stderr } = await runCli(['serve'], { DATABASE_URL: PG, JWT_SECRET: SECRET });
    assert.equal(code, 2);
    assert.match(stderr, /configuration error: ADMIN_TOKEN: is required/);
  });

  it('exits non-zero naming PORT when it is invalid', async () => {
    const { code, stderr } = await runCli(['serve'], { ...base, PORT: 'x' });
    assert.equal(code, 2);
    assert.match(stderr, /configuration error: PORT:/);
  });
});

describe('a subcommand used wrongly prints its own usage, not the top-level one', () => {
  const cases: Array<{ args: string[]; env: Record<string, string>; says: RegExp; usage: string }> = [
    { args: ['worker'], env: { DATABASE_URL: PG }, says: /couponrush worker: Redis is not configured \(REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES\)/, usage: 'couponrush worker [options]' },
    { args: ['reconcile'], env: { DATABASE_URL: PG }, says: /couponrush reconcile: Redis is not configured \(REDIS_URL, REDIS_SENTINELS or REDIS_CLUSTER_NODES\)/, usage: 'couponrush reconcile [options]' },
    { args: ['token', 'bad user!'], env: { JWT_SECRET: SECRET }, says: /couponrush token: the user id must be/, usage: 'couponrush token [options] <userId>' },
    { args: ['events', 'bogus'], env: { DATABASE_URL: PG }, says: /couponrush events: the action is status or off/, usage: 'couponrush events [options] <action>' },
  ];
  for (const c of cases) {
    it(`${c.args.join(' ')}: one line saying why, then \`${c.usage}\``, async () => {
      const r = await runCli(c.args, c.env);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, c.says);
      assert.ok(r.stderr.includes(`Usage: ${c.usage}`), r.stderr);
      assert.doesNotMatch(r.stderr, /Usage: couponrush \[options\] \[command\]/, 'not the top-level usage');
    });
  }
  it('serve --workers 2 on the embedded database: exit 2 and serve\'s usage', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-config-'));
    try {
      const r = await runCli(['serve', '--workers', '2'], { DATA_DIR: dir, PORT: '0' });
      assert.equal(r.code, 2);
      assert.match(r.stderr, /--workers > 1 needs DATABASE_URL/);
      assert.ok(r.stderr.includes('Usage: couponrush serve [options]'), r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('couponrush worker --help', () => {
  it('names both queues it persists (Redis Streams and the Kafka topic) and the events it publishes', async () => {
    const r = await runCli(['worker', '--help'], {});
    assert.equal(r.code, 0, r.stderr);
    const help = r.stdout.replace(/\s+/g, ' ');
    assert.match(help, /Redis Streams/);
    assert.match(help, /KAFKA_BROKERS from the Kafka issuance topic/);
    assert.match(help, /KAFKA_EVENTS=on it also publishes/);
  });
});
