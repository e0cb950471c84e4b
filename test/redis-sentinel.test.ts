// Redis behind Sentinel, in the middle of a stampede: a private primary with replicas and three
// sentinels (fault-helpers.ts, PrivateSentinelGroup; down-after-milliseconds 1000), a real
// `couponrush serve --with-worker` that finds the primary through REDIS_SENTINELS, and the shared
// PostgreSQL (a database of its own). Every answer is recorded and compared with the rows once the
// queue has drained (the Ledger):
//   - kill -9 of the primary with REDIS_WAIT_REPLICAS=1: nothing acknowledged is lost, nobody told
//     "no" holds a coupon, no over-issue, the API never exits and answers 202 again within 10 s;
//   - the same with REDIS_WAIT_REPLICAS=0: losses are measured and reported — only 202s given
//     before the kill may be lost — and the stock still holds (the new primary is settled against
//     the database and the stream before it admits);
//   - the replica killed with REDIS_WAIT_REPLICAS=1: OUTCOME_UNKNOWN (or 503 where the primary
//     refuses the write: min-replicas-to-write) within 3 s, never a hang, 202 again once it is back.
// The failovers run with two replicas: after one is promoted the other still confirms a WAIT 1.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openRedis, type RedisHandle } from '../src/redis/client.js';
import type { RedisTarget } from '../src/redis/target.js';
import {
  createCampaign,
  Ledger,
  PrivateSentinelGroup,
  privateRedisSuite,
  RECOVERY_BOUND_MS,
  rowsOf,
  startApi,
  stampedeThroughFault,
  type ApiProcess,
  type Target,
} from './fault-helpers.js';
import { JWT_SECRET, request } from './helpers.js';
import { backlog, FAST_WORKER_ENV, silent, waitFor } from './redis-helpers.js';
import { signUserToken } from '../src/http/auth.js';

const STRATEGY = 'redis-lua-async-cached';

function sentinelTarget(group: PrivateSentinelGroup): RedisTarget {
  return {
    kind: 'sentinel',
    sentinels: group.sentinelPorts.map((port) => ({ host: '127.0.0.1', port })),
    master: group.masterName,
    username: undefined,
    password: undefined,
    sentinelPassword: undefined,
  };
}

describe('Redis Sentinel: failovers and replicas in the middle of a stampede (private primary, replicas and sentinels; real API process)', () => {
  const suite = privateRedisSuite();
  const { bin, ready } = suite;

  /** A group, an API on it, a RedisHandle for the drain checks; closed in order whatever happens. */
  async function withApi(
    groupOptions: Parameters<typeof PrivateSentinelGroup.create>[1],
    env: Record<string, string>,
    work: (api: ApiProcess, group: PrivateSentinelGroup, redis: RedisHandle) => Promise<void>,
  ): Promise<void> {
    const group = await PrivateSentinelGroup.create(bin!, groupOptions);
    let api: ApiProcess | undefined;
    let redis: RedisHandle | undefined;
    const prefix = `sentinel-${Date.now().toString(36)}:`;
    try {
      api = await startApi(['--migrate', '--with-worker'], { DATABASE_URL: suite.databaseUrl(), ...group.env(), REDIS_PREFIX: prefix, REQUEST_TIMEOUT_MS: '5000', ...FAST_WORKER_ENV, ...env });
      redis = await openRedis(sentinelTarget(group), prefix, silent);
      await work(api, group, redis);
    } finally {
      await api?.stop();
      await redis?.close();
      await group.destroy();
    }
  }

  /** Kills the primary mid-stampede; the heal is the sentinels agreeing on the new one. Returns the audit's inputs. */
  async function failoverStampede(api: ApiProcess, group: PrivateSentinelGroup, redis: RedisHandle, stock: number) {
    const target: Target = { strategy: STRATEGY, couponId: await createCampaign(api.url, STRATEGY, stock), users: Math.round(stock * 1.5), ledger: new Ledger() };
    let killedAt = 0;
    let failoverMs = 0;
    const { healedAt } = await stampedeThroughFault(() => api.url, [target], {
      concurrency: 8,
      faultAfterAnswers: 300,
      afterHealMs: 4_000,
      holdMs: 0,
      inject: async () => {
        const from = (await group.primary()).port;
        killedAt = performance.now();
        await group.kill9Node(from);
        failoverMs = await group.waitForFailover(from, 30_000);
      },
      heal: async () => undefined,
    });
    assert.ok(api.alive(), `the API process exited during the failover:\n${api.child.output()}`);
    await waitFor(
      'the queue drained on the new primary',
      async () => {
        const b = await backlog(redis, target.couponId);
        return b.pending === 0 && b.undelivered === 0;
      },
      30_000,
    );
    const rows = await rowsOf(suite.databaseUrl(), target.couponId);
    return { target, rows, audit: target.ledger.audit(rows.users), killedAt, healedAt, failoverMs };
  }

  it('kill -9 of the primary with REDIS_WAIT_REPLICAS=1: lost 0, wrongly refused 0, no over-issue, 202 again within 10 s', async (t) => {
    if (!(await ready(t))) return;
    await withApi({ replicas: 2 }, { REDIS_WAIT_REPLICAS: '1' }, async (api, group, redis) => {
      const { target, rows, audit, failoverMs } = await failoverStampede(api, group, redis, 20_000);
      const what = `WAIT 1, primary kill -9: ${JSON.stringify(Object.fromEntries(audit.statuses))}; failover took ${failoverMs} ms`;
      t.diagnostic(what);
      assert.deepEqual(audit.lost, [], `${what}: acknowledged and absent`);
      assert.deepEqual(audit.falseDuplicates, [], `${what}: told 409 without a coupon`);
      assert.deepEqual(audit.unexpected, [], `${what}: holds a coupon though every answer said no`);
      assert.equal(audit.internalErrors, 0, `${what}: 500s`);
      assert.ok(audit.acknowledged > 0, `${what}: nothing was issued`);
      assert.ok(rows.users.length <= rows.total, `${what}: over-issued ${rows.users.length} > ${rows.total}`);
      assert.equal(rows.counter, rows.users.length, `${what}: issued_quantity disagrees with the rows`);
      assert.ok(target.recoveredAfterMs !== undefined && target.recoveredAfterMs <= RECOVERY_BOUND_MS, `${what}: answering again after ${target.recoveredAfterMs} ms`);
      // The API saw the new primary and settled the campaign before admitting there.
      const metrics = (await request(api.url, 'GET', '/metrics')).text;
      assert.match(metrics, /^couponrush_redis_settles_total [1-9]/m, 'the API settled the campaign on the new primary before admitting there');
      t.diagnostic(metrics.split('\n').filter((l) => l.startsWith('couponrush_redis_')).join('; '));
    });
  });

  it('kill -9 of the primary with REDIS_WAIT_REPLICAS=0: losses (if any) are 202s given before the kill, and the stock holds', async (t) => {
    if (!(await ready(t))) return;
    await withApi({ replicas: 2 }, {}, async (api, group, redis) => {
      const { target, rows, audit, killedAt, failoverMs } = await failoverStampede(api, group, redis, 20_000);
      const what = `WAIT 0, primary kill -9: ${JSON.stringify(Object.fromEntries(audit.statuses))}; lost ${audit.lost.length} of ${audit.acknowledged} acknowledged; failover took ${failoverMs} ms`;
      t.diagnostic(what);
      // Asynchronous replication may drop the last admissions the old primary acknowledged; only those.
      assert.deepEqual(audit.lost.filter((c) => c.at > killedAt), [], `${what}: a 202 given after the kill was lost`);
      assert.deepEqual(audit.unexpected, [], `${what}: holds a coupon though every answer said no`);
      assert.equal(audit.internalErrors, 0, `${what}: 500s`);
      assert.ok(rows.users.length <= rows.total, `${what}: over-issued ${rows.users.length} > ${rows.total}`);
      assert.equal(rows.counter, rows.users.length, `${what}: issued_quantity disagrees with the rows`);
      assert.ok(target.recoveredAfterMs !== undefined && target.recoveredAfterMs <= RECOVERY_BOUND_MS, `${what}: answering again after ${target.recoveredAfterMs} ms`);
    });
  });

  it('the replica killed with REDIS_WAIT_REPLICAS=1: OUTCOME_UNKNOWN within 3 s (503 when the primary refuses the write), never a hang; 202 again once it is back', async (t) => {
    if (!(await ready(t))) return;
    await withApi({ replicas: 1 }, { REDIS_WAIT_REPLICAS: '1', REDIS_WAIT_TIMEOUT_MS: '1000' }, async (api, group, redis) => {
      const couponId = await createCampaign(api.url, STRATEGY, 1_000);
      let n = 0;
      const issue = async () => {
        const user = `replica-${n++}`;
        const started = performance.now();
        const res = await request(api.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${signUserToken(JWT_SECRET, user)}` } });
        return { user, status: res.status, code: (res.json as { code?: string } | undefined)?.code, ms: performance.now() - started };
      };
      assert.equal((await issue()).status, 202, 'confirmed by the replica');

      const replicaPort = await group.killReplica();
      // No replica to confirm: the admission happened on the primary, whether it would survive a failover nobody can say.
      const unconfirmed = await Promise.all(Array.from({ length: 5 }, issue));
      for (const a of unconfirmed) {
        assert.equal(a.status, 503, JSON.stringify(a));
        assert.equal(a.code, 'OUTCOME_UNKNOWN', JSON.stringify(a));
        assert.ok(a.ms < 3_000, `answered in ${Math.round(a.ms)} ms`);
      }
      // They are admitted on the primary: the worker persists them, and their status says so.
      const metrics = (await request(api.url, 'GET', '/metrics')).text;
      assert.match(metrics, /couponrush_redis_wait_unconfirmed_total 5\b/);

      // min-replicas-to-write on the primary: it refuses the write itself, so nothing happened.
      const primary = group.client();
      await primary.config('SET', 'min-replicas-to-write', '1');
      const refused = await Promise.all(Array.from({ length: 5 }, issue));
      for (const a of refused) {
        assert.equal(a.status, 503, JSON.stringify(a));
        assert.equal(a.code, 'SERVICE_UNAVAILABLE', JSON.stringify(a));
        assert.ok(a.ms < 3_000, `answered in ${Math.round(a.ms)} ms`);
      }

      await group.restartNode(replicaPort);
      await group.waitForReplicaLink(1);
      await waitFor('202 again with the replica back', async () => (await issue()).status === 202, RECOVERY_BOUND_MS);
      await primary.config('SET', 'min-replicas-to-write', '0');

      await waitFor('the queue drained', async () => {
        const b = await backlog(redis, couponId);
        return b.pending === 0 && b.undelivered === 0;
      });
      const rows = new Set((await rowsOf(suite.databaseUrl(), couponId)).users);
      for (const a of unconfirmed) assert.ok(rows.has(a.user), `${a.user} was admitted on the primary (OUTCOME_UNKNOWN) and, no failover having come, holds the coupon`);
      for (const a of refused) assert.ok(!rows.has(a.user), `${a.user} was refused by the primary (NOREPLICAS) and must hold nothing`);
    });
  });
});
