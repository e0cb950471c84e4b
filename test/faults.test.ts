// Faults in the middle of a stampede, against private PostgreSQL, MariaDB and Redis servers of
// this test (fault-helpers.ts) and a real `couponrush serve --with-worker` process: the database
// (PostgreSQL, then MariaDB) crashes and hangs, Redis is killed and restarted from its files or from nothing, hangs, has its connections
// reset, and the API itself is killed. Every answer is recorded and, once the fault has healed
// and the queue drained, compared with the database: nothing acknowledged is lost, nobody told
// "no" holds a coupon, no 409 without a coupon, no over-issue — and the process never exits.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { strategiesWhere } from '../src/coupons/strategies/index.js';
import { createPgliteDb } from '../src/db/index.js';
import { openRedis, type RedisHandle } from '../src/redis/client.js';
import { WORKER_GROUP } from '../src/redis/keys.js';
import {
  createCampaign,
  guaranteesMarkdown,
  guaranteesPivot,
  Ledger,
  mariadbBinaries,
  postgresBinDir,
  PrivateMariaDb,
  PrivatePostgres,
  type PrivateDatabase,
  PrivateRedis,
  RECOVERY_BOUND_MS,
  redisServerBinary,
  reportAudit,
  rowsOf,
  startApi,
  stampedeThroughFault,
  type ApiProcess,
  type FaultPlan,
  type Target,
} from './fault-helpers.js';
import { ADMIN_TOKEN, JWT_SECRET, missing, request } from './helpers.js';
import { freePort, TcpProxy, waitFor } from './ops-helpers.js';
import { backlog, exited, FAST_WORKER_ENV, silent, spawnWorker } from './redis-helpers.js';

const PREFIX = 'faults:';
/** Stock per campaign: enough that the fault comes during admissions, for the fast strategies too. */
const stockOf = (strategy: string) => (QUEUED.has(strategy) ? 20_000 : strategy === 'redis-lua-sync' || strategy === 'db-batch' ? 6_000 : 2_000);

const DB_STRATEGIES = ['db-atomic', 'db-batch', 'db-pessimistic', 'db-optimistic'] as const;
const REDIS_STRATEGIES = ['redis-lock', 'redis-lua-sync', 'redis-lua-async', 'redis-lua-async-cached'] as const;
// The Redis Stream strategies (redis-lua-kafka's faults are test/kafka-strategy.test.ts's).
const QUEUED = new Set<string>(strategiesWhere((m) => m.queued && m.queue === 'redis-stream'));

// The guarantees table of this run (the README quotes it): printed and kept in test-results/.
after(() => {
  const tables = `${guaranteesPivot()}\n\nCells: lost / wrongly refused · answering again after the heal.\n\n${guaranteesMarkdown()}\n`;
  mkdirSync('test-results', { recursive: true });
  writeFileSync('test-results/guarantees.md', tables);
  process.stdout.write(`\n${tables}`);
});

/** Entries delivered to `consumer` and not acknowledged, over every registered stream. */
async function pendingOf(redis: RedisHandle, consumer: string): Promise<number> {
  let n = 0;
  for (const id of await redis.client.smembers(redis.keys.registry)) {
    const summary = (await redis.client.xpending(redis.keys.campaign(Number(id)).stream, WORKER_GROUP)) as [number, string, string, Array<[string, string]> | null];
    for (const [name, count] of summary[3] ?? []) if (name === consumer) n += Number(count);
  }
  return n;
}

/**
 * The stampede-through-a-fault suite over a private database server of one kind: every fault on
 * PostgreSQL; on MariaDB the database's own faults (crash, hang) and the API's kill -9 — the Redis
 * and worker faults do not depend on the database and run once.
 */
function storeFaults(kind: 'postgres' | 'mysql'): void {
  describe(`faults in the middle of a stampede (private ${kind === 'mysql' ? 'MariaDB' : 'PostgreSQL'} and Redis, real API process)`, () => {
    const label = kind === 'mysql' ? 'MariaDB' : 'PostgreSQL';
    /** Registers a test only on PostgreSQL: its fault is not the database's. */
    const onceOnPostgres: typeof it = ((name: string, fn: (t: TestContext) => Promise<void>) => (kind === 'postgres' ? it(name, fn) : undefined)) as typeof it;
    const pgBin = postgresBinDir();
    const mariaBins = mariadbBinaries();
    const redisBin = redisServerBinary();
    let dbServer: PrivateDatabase | undefined;
    let redisServer: PrivateRedis | undefined;
    let databaseUrl = '';
    let api: ApiProcess | undefined;
    let apiEnv: Record<string, string> = {};
    let apiPort = 0;
    let redis: RedisHandle | undefined;
    let steadyWorker: ChildProcess | undefined;

    const ready = (t: TestContext): boolean => {
      if (kind === 'postgres' && pgBin === undefined) missing(t, 'PostgreSQL server binaries (initdb, pg_ctl) are not installed');
      else if (kind === 'mysql' && mariaBins === undefined) missing(t, 'MariaDB server binaries (mariadbd, mariadb-install-db) are not installed');
      else if (redisBin === undefined) missing(t, 'the redis-server binary is not installed');
      else return api !== undefined;
      return false;
    };

    before(async () => {
      if (redisBin === undefined) return;
      if (kind === 'postgres') {
        if (pgBin === undefined) return;
        dbServer = await PrivatePostgres.create(pgBin);
      } else {
        if (mariaBins === undefined) return;
        dbServer = await PrivateMariaDb.create(mariaBins);
      }
      databaseUrl = await dbServer.createDatabase();
      redisServer = await PrivateRedis.create(redisBin, 'aof-always');
      apiEnv = {
        DATABASE_URL: databaseUrl,
        REDIS_URL: redisServer.url,
        REDIS_PREFIX: PREFIX,
        REQUEST_TIMEOUT_MS: '3000',
        ...FAST_WORKER_ENV,
      };
      api = await startApi(['--migrate', '--with-worker'], apiEnv);
      apiPort = Number(new URL(api.url).port);
      // A `couponrush worker` process beside the API's own, through every fault: it must survive them
      // all. Its /healthz answers once it has started (a store away at start-up ends it, by design).
      const workerAdmin = await freePort();
      steadyWorker = spawnWorker({ ...apiEnv, ADMIN_TOKEN, JWT_SECRET, LOG_LEVEL: 'warn', ADMIN_PORT: String(workerAdmin) }, 'faults-steady');
      await waitFor('the couponrush worker started', async () => (await request(`http://127.0.0.1:${workerAdmin}`, 'GET', '/healthz')).status === 200, 30_000);
      redis = await openRedis(redisServer.url, PREFIX, silent);
    });

    after(async () => {
      steadyWorker?.kill('SIGTERM');
      if (steadyWorker !== undefined) await exited(steadyWorker);
      await api?.stop();
      await redis?.close();
      await redisServer?.destroy();
      await dbServer?.destroy();
    });

    interface Scenario {
      fault: string;
      strategies: readonly string[];
      plan: Pick<FaultPlan, 'inject' | 'heal' | 'holdMs'> & Partial<FaultPlan>;
      /** The store forgot acknowledged work (Redis without persistence): losses are allowed, but only of answers given before the heal. */
      forgets?: (strategy: string) => boolean;
      /** A store is away: /readyz must say so while the fault lasts. */
      unready?: boolean;
    }

    async function run(t: TestContext, s: Scenario, via: () => ApiProcess = () => api!): Promise<void> {
      const targets: Target[] = [];
      for (const strategy of s.strategies) {
        const stock = stockOf(strategy);
        targets.push({ strategy, couponId: await createCampaign(via().url, strategy, stock), users: Math.round(stock * 1.5), ledger: new Ledger() });
      }
      // While the fault lasts, /readyz is asked every 200 ms (each answer takes up to its 2 s bound).
      const readiness: number[] = [];
      let probing: Promise<void> | undefined;
      let healed = false;
      const { healedAt } = await stampedeThroughFault(() => via().url, targets, {
        concurrency: 6,
        faultAfterAnswers: 150,
        afterHealMs: 4_000,
        ...s.plan,
        inject: async () => {
          await s.plan.inject();
          probing = (async () => {
            while (!healed) {
              readiness.push(await request(via().url, 'GET', '/readyz').then((r) => r.status, () => 0));
              await new Promise((r) => setTimeout(r, 200));
            }
          })();
        },
        heal: async () => {
          healed = true;
          await s.plan.heal();
        },
      });
      await probing;
      if (s.unready === true) assert.ok(readiness.includes(503), `/readyz during "${s.fault}" answered ${readiness.join(',')}`);
      assert.ok(via().alive(), `the API process exited during "${s.fault}":\n${via().child.output()}`);
      assert.ok(steadyWorker?.exitCode === null && steadyWorker.signalCode === null, `the couponrush worker process exited during "${s.fault}"`);
      // Queued admissions are persisted by the worker: wait until every stream is acknowledged.
      for (const q of targets.filter((x) => QUEUED.has(x.strategy))) {
        await waitFor(
          `the ${q.strategy} queue drained`,
          async () => {
            const b = await backlog(redis!, q.couponId);
            return b.pending === 0 && b.undelivered === 0;
          },
          30_000,
        );
      }
      for (const target of targets) {
        const rows = await rowsOf(databaseUrl, target.couponId);
        const audit = target.ledger.audit(rows.users);
        const what = `${s.fault}, ${target.strategy}: ${JSON.stringify(Object.fromEntries(audit.statuses))}`;
        t.diagnostic(what);
        const forgets = s.forgets?.(target.strategy) === true;
        reportAudit(s.fault, target.strategy, audit, target.recoveredAfterMs);
        if (forgets) {
          // What the store forgot was acknowledged before it came back empty; nothing after.
          assert.deepEqual(audit.lost.filter((c) => c.at > healedAt), [], `${what}: an answer given after the restart was lost`);
          assert.deepEqual(audit.falseDuplicates.filter((c) => c.at > healedAt), [], `${what}: a 409 given after the restart has no row`);
        } else {
          assert.deepEqual(audit.lost, [], `${what}: acknowledged and absent`);
          assert.deepEqual(audit.falseDuplicates, [], `${what}: told 409 ALREADY_ISSUED without a coupon`);
        }
        assert.deepEqual(audit.unexpected, [], `${what}: holds a coupon though every answer said no`);
        assert.equal(audit.internalErrors, 0, `${what}: 500s`);
        assert.ok(audit.acknowledged > 0, `${what}: nothing was issued at all`);
        assert.ok(rows.users.length <= rows.total, `${what}: over-issued ${rows.users.length} > ${rows.total}`);
        assert.equal(rows.counter, rows.users.length, `${what}: issued_quantity disagrees with the rows`);
        assert.ok(target.recoveredAfterMs !== undefined && target.recoveredAfterMs <= RECOVERY_BOUND_MS, `${what}: answering again after ${target.recoveredAfterMs} ms`);
      }
      assert.equal((await request(via().url, 'GET', '/readyz')).status, 200, 'ready again');
    }

    // Faults used more than once.
    const dbCrash = (): Scenario['plan'] => ({ inject: () => dbServer!.crash(), holdMs: 1_500, heal: () => dbServer!.start() });
    const redisKill = (): Scenario['plan'] => ({ inject: () => redisServer!.kill9(), holdMs: 1_000, heal: () => redisServer!.start() });

    it(`${label} crash (${kind === 'mysql' ? 'kill -9' : 'immediate stop'}) and restart: every strategy stays exact and truthful, the API stays up`, async (t) => {
      if (!ready(t)) return;
      await run(t, {
        fault: `${label} crash + restart`,
        unready: true,
        strategies: [...DB_STRATEGIES, ...REDIS_STRATEGIES],
        plan: dbCrash(),
      });
    });

    it(`${label} hang (SIGSTOP: connections accepted, nothing answered) for 4 s`, async (t) => {
      if (!ready(t)) return;
      await run(t, {
        fault: `${label} hang 4 s`,
        unready: true,
        strategies: [...DB_STRATEGIES, ...REDIS_STRATEGIES],
        plan: { inject: async () => dbServer!.hang(), holdMs: 4_000, heal: async () => dbServer!.resume() },
      });
    });

    onceOnPostgres('Redis kill -9 with appendfsync always, restarted from its files', async (t) => {
      if (!ready(t)) return;
      await run(t, {
        fault: 'Redis kill -9 (AOF always) + restart',
        unready: true,
        strategies: REDIS_STRATEGIES,
        plan: redisKill(),
      });
    });

    onceOnPostgres('Redis restarted without its data (no persistence): the rebuild path; only queued admissions answered before the restart can be lost', async (t) => {
      if (!ready(t)) return;
      await run(t, {
        fault: 'Redis restart without persistence',
        unready: true,
        strategies: REDIS_STRATEGIES,
        plan: {
          inject: async () => {
            await redisServer!.kill9();
            redisServer!.wipe();
          },
          holdMs: 1_000,
          heal: () => redisServer!.start(),
        },
        forgets: (strategy) => QUEUED.has(strategy),
      });
    });

    onceOnPostgres('Redis hang (SIGSTOP) for 5 s, longer than the request deadline', async (t) => {
      if (!ready(t)) return;
      await run(t, {
        fault: 'Redis hang 5 s',
        unready: true,
        strategies: REDIS_STRATEGIES,
        plan: { inject: async () => redisServer!.hang(), holdMs: 5_000, heal: async () => redisServer!.resume() },
      });
    });

    onceOnPostgres('connection resets between the API and Redis, every 250 ms for 2 s', async (t) => {
      if (!ready(t)) return;
      // This API reaches Redis through a proxy that cuts every open connection on command.
      const proxy = await new TcpProxy('127.0.0.1', redisServer!.port).up();
      const viaProxy = await startApi(['--with-worker'], { ...apiEnv, REDIS_URL: `redis://${proxy.url}` });
      let timer: NodeJS.Timeout | undefined;
      try {
        await run(
          t,
          {
            fault: 'API↔Redis connection resets',
            strategies: REDIS_STRATEGIES,
            plan: {
              inject: async () => {
                proxy.resetConnections();
                timer = setInterval(() => proxy.resetConnections(), 250);
              },
              holdMs: 2_000,
              heal: async () => clearInterval(timer),
            },
          },
          () => viaProxy,
        );
      } finally {
        clearInterval(timer);
        await viaProxy.stop();
        await proxy.down();
      }
    });

    onceOnPostgres('serve --workers 2: a PostgreSQL crash and a Redis kill -9 end none of the API processes', async (t) => {
      if (!ready(t)) return;
      const cluster = await startApi(['--workers', '2', '--with-worker'], apiEnv);
      try {
        await run(
          t,
          {
            fault: 'PostgreSQL crash + restart, --workers 2',
            strategies: ['db-atomic', 'db-batch', 'redis-lua-sync', 'redis-lua-async-cached'],
            unready: true,
            plan: dbCrash(),
          },
          () => cluster,
        );
        await run(
          t,
          {
            fault: 'Redis kill -9 (AOF always) + restart, --workers 2',
            strategies: ['redis-lua-sync', 'redis-lua-async-cached'],
            unready: true,
            plan: redisKill(),
          },
          () => cluster,
        );
        // The primary re-forks a worker that dies; it must have had nothing to re-fork.
        assert.doesNotMatch(cluster.child.output(), /API worker died/, cluster.child.output());
      } finally {
        await cluster.stop();
      }
    });

    onceOnPostgres('kill -9 of a `couponrush worker` mid-batch: its pending entries are claimed and persisted once', async (t) => {
      if (!ready(t)) return;
      // A second worker beside the API's own takes its share of the entries; it dies with some in hand.
      let worker = spawnWorker({ ...apiEnv, ADMIN_TOKEN, JWT_SECRET, LOG_LEVEL: 'warn' }, 'faults-external');
      try {
        await run(t, {
          fault: 'worker kill -9 mid-batch',
          strategies: [...QUEUED],
          plan: {
            inject: async () => {
              // Kill it while it holds entries it has read and not acknowledged.
              await waitFor('the external worker holding a batch', async () => (await pendingOf(redis!, 'faults-external')) > 0, 30_000, 2);
              worker.kill('SIGKILL');
              await exited(worker);
              t.diagnostic(`killed with ${await pendingOf(redis!, 'faults-external')} entries pending`);
            },
            holdMs: 1_000,
            heal: async () => {
              worker = spawnWorker({ ...apiEnv, ADMIN_TOKEN, JWT_SECRET, LOG_LEVEL: 'warn' }, 'faults-external');
            },
          },
        });
      } finally {
        worker.kill('SIGTERM');
        await exited(worker);
      }
    });

    it('kill -9 of the API process (with its worker), restarted on the same port', async (t) => {
      if (!ready(t)) return;
      await run(t, {
        fault: kind === 'postgres' ? 'API kill -9 + restart' : `API kill -9 + restart (${label})`,
        strategies: [...DB_STRATEGIES, ...REDIS_STRATEGIES],
        plan: {
          inject: () => api!.kill9(),
          holdMs: 500,
          heal: async () => {
            api = await startApi(['--with-worker'], apiEnv, apiPort);
          },
        },
      });
    });
  });
}

storeFaults('postgres');
storeFaults('mysql');

describe('faults of the embedded mode (local on PGlite, real API process)', () => {
  it('kill -9 of the API process mid-stampede: the data directory reopens, every 201 is a row, nobody refused holds one', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'couponrush-embedded-'));
    const env = { DATA_DIR: dataDir, REQUEST_TIMEOUT_MS: '3000' };
    let api = await startApi([], env);
    const port = Number(new URL(api.url).port);
    try {
      const stock = 5_000;
      const target: Target = { strategy: 'local', couponId: await createCampaign(api.url, 'local', stock), users: 7_500, ledger: new Ledger() };
      await stampedeThroughFault(() => api.url, [target], {
        concurrency: 16,
        faultAfterAnswers: 1_000,
        inject: () => api.kill9(),
        holdMs: 300,
        heal: async () => {
          api = await startApi([], env, port);
        },
        afterHealMs: 3_000,
      });
      assert.ok(api.alive(), `the restarted API exited:\n${api.child.output()}`);
      await api.stop();
      const db = await createPgliteDb(join(dataDir, 'pgdata'));
      let users: string[];
      let counter: number;
      try {
        users = (await db.query<{ user_id: string }>('SELECT user_id FROM coupon_issues WHERE coupon_id = $1', [target.couponId])).rows.map((r) => r.user_id);
        counter = (await db.query<{ n: number }>('SELECT issued_quantity AS n FROM coupons WHERE id = $1', [target.couponId])).rows[0]?.n ?? -1;
      } finally {
        await db.close();
      }
      const audit = target.ledger.audit(users);
      const what = `embedded kill -9, local: ${JSON.stringify(Object.fromEntries(audit.statuses))}`;
      t.diagnostic(what);
      reportAudit('API kill -9 + restart (embedded PGlite)', 'local', audit, target.recoveredAfterMs);
      assert.deepEqual(audit.lost, [], `${what}: acknowledged and absent`);
      assert.deepEqual(audit.falseDuplicates, [], `${what}: told 409 without a coupon`);
      assert.deepEqual(audit.unexpected, [], `${what}: holds a coupon though every answer said no`);
      assert.equal(audit.internalErrors, 0, `${what}: 500s`);
      assert.ok(users.length <= stock, `${what}: over-issued`);
      assert.equal(counter, users.length, `${what}: issued_quantity disagrees with the rows`);
      assert.ok(target.recoveredAfterMs !== undefined && target.recoveredAfterMs <= RECOVERY_BOUND_MS, `${what}: answering again after ${target.recoveredAfterMs} ms`);
    } finally {
      await api.kill9();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
