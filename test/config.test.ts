// Configuration is validated at start-up with an error naming the variable, both as a function
// and as the real `couponrush serve` process.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';

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
  it('rejects a non-numeric PORT', () => throwsNaming({ ...base, PORT: 'eighty' }, 'PORT'));
  it('rejects an out-of-range PORT', () => throwsNaming({ ...base, PORT: '70000' }, 'PORT'));
  it('rejects an unknown AUTH_MODE', () => throwsNaming({ ...base, AUTH_MODE: 'oauth' }, 'AUTH_MODE'));
  it('rejects an unknown DEFAULT_STRATEGY', () => throwsNaming({ ...base, DEFAULT_STRATEGY: 'fastest' }, 'DEFAULT_STRATEGY'));
  it('rejects a DEFAULT_STRATEGY this configuration cannot run (a Redis strategy without REDIS_URL)', () => {
    throwsNaming({ ...base, DEFAULT_STRATEGY: 'redis-lua-async' }, 'DEFAULT_STRATEGY');
    assert.throws(() => loadConfig({ ...base, DEFAULT_STRATEGY: 'redis-lua-async' }), /needs REDIS_URL/);
    assert.equal(loadConfig({ ...base, DEFAULT_STRATEGY: 'redis-lua-async', REDIS_URL: 'redis://127.0.0.1:6379' }).defaultStrategy, 'redis-lua-async');
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
      assert.equal(first.generatedSecrets, true);
      assert.ok(first.adminToken.length >= 16 && first.jwtSecret.length >= 32);
      const second = loadConfig({ DATA_DIR: dir });
      assert.equal(second.adminToken, first.adminToken);
      assert.equal(second.jwtSecret, first.jwtSecret);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

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
