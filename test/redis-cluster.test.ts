// Redis Cluster, in the middle of a stampede: a private three-master cluster with a replica each
// (fault-helpers.ts, PrivateCluster; cluster-node-timeout 1000), a real `couponrush serve
// --with-worker` on REDIS_CLUSTER_NODES, and the shared PostgreSQL (a database of its own).
// Campaigns are placed one per master; every answer is recorded and compared with the rows once
// the queues have drained (the Ledger):
//   - a stampede over the three campaigns: exact on each, every master used;
//   - kill -9 of one master mid-stampede with REDIS_WAIT_REPLICAS=1: its replica takes over,
//     nothing acknowledged is lost on any campaign, nobody told "no" holds a coupon, no over-issue,
//     202 again within 10 s once the old master is back (as a replica, confirming WAIT 1 again).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { openRedis, type RedisHandle } from '../src/redis/client.js';
import {
  clusterKeySlot,
  createCampaign,
  Ledger,
  PrivateCluster,
  privateRedisSuite,
  RECOVERY_BOUND_MS,
  rowsOf,
  startApi,
  stampedeThroughFault,
  type ApiProcess,
  type Target,
} from './fault-helpers.js';
import { missing, request } from './helpers.js';
import { runCli } from './ops-helpers.js';
import { backlog, FAST_WORKER_ENV, silent, waitFor } from './redis-helpers.js';

const STRATEGY = 'redis-lua-async-cached';

describe('Redis Cluster: campaigns over three masters, a master killed mid-stampede (private cluster, real API process)', () => {
  const suite = privateRedisSuite();
  const { bin, ready } = suite;

  /** Creates campaigns until there is one on every master; returns them by master port. */
  async function oneCampaignPerMaster(api: ApiProcess, cluster: PrivateCluster, stock: number): Promise<Map<number, number>> {
    const byMaster = new Map<number, number>();
    const masters = await cluster.masters();
    for (let tries = 0; byMaster.size < masters.length && tries < 60; tries++) {
      const id = await createCampaign(api.url, STRATEGY, stock);
      const master = await cluster.masterOfSlot(clusterKeySlot(`{cpn:${id}}`));
      if (!byMaster.has(master)) byMaster.set(master, id);
    }
    assert.equal(byMaster.size, masters.length, 'a campaign on every master');
    return byMaster;
  }

  async function drained(redis: RedisHandle, couponId: number): Promise<void> {
    await waitFor(`the queue of campaign ${couponId} drained`, async () => {
      const b = await backlog(redis, couponId);
      return b.pending === 0 && b.undelivered === 0;
    });
  }

  it('a stampede over campaigns on three masters is exact on each; kill -9 of a master with REDIS_WAIT_REPLICAS=1 loses nothing', async (t) => {
    if (!(await ready(t))) return;
    const cluster = await PrivateCluster.create(bin!, { masters: 3, replicasPerMaster: 1 });
    let api: ApiProcess | undefined;
    let redis: RedisHandle | undefined;
    const prefix = `cluster-${Date.now().toString(36)}:`;
    try {
      api = await startApi(['--migrate', '--with-worker'], { DATABASE_URL: suite.databaseUrl(), ...cluster.env(), REDIS_PREFIX: prefix, REDIS_WAIT_REPLICAS: '1', REQUEST_TIMEOUT_MS: '5000', ...FAST_WORKER_ENV });
      redis = await openRedis({ kind: 'cluster', nodes: cluster.ports.map((port) => ({ host: '127.0.0.1', port })), username: undefined, password: undefined }, prefix, silent);
      const placed = await oneCampaignPerMaster(api, cluster, 6_000);
      const targets: Target[] = [...placed.values()].map((couponId) => ({ strategy: STRATEGY, couponId, users: 9_000, ledger: new Ledger() }));
      const [victimMaster, victimCampaign] = [...placed][0]!;
      let failoverMs = 0;
      const live = api;
      const { healedAt } = await stampedeThroughFault(() => live.url, targets, {
        concurrency: 4,
        faultAfterAnswers: 300,
        afterHealMs: 4_000,
        holdMs: 0,
        inject: async () => {
          await cluster.kill9Node(victimMaster);
          failoverMs = await cluster.waitForFailover(victimMaster, 30_000);
        },
        // The old master comes back as the new one's replica: WAIT 1 on its slots is confirmed again.
        heal: async () => {
          await cluster.restartNode(victimMaster);
        },
      });
      assert.ok(api.alive(), `the API process exited during the failover:\n${api.child.output()}`);
      for (const target of targets) {
        await drained(redis, target.couponId);
        const rows = await rowsOf(suite.databaseUrl(), target.couponId);
        const audit = target.ledger.audit(rows.users);
        const where = target.couponId === victimCampaign ? 'on the killed master' : 'on a master that stayed up';
        const what = `campaign ${target.couponId} ${where}: ${JSON.stringify(Object.fromEntries(audit.statuses))}; failover took ${failoverMs} ms`;
        t.diagnostic(what);
        assert.deepEqual(audit.lost, [], `${what}: acknowledged and absent`);
        assert.deepEqual(audit.falseDuplicates, [], `${what}: told 409 without a coupon`);
        assert.deepEqual(audit.unexpected, [], `${what}: holds a coupon though every answer said no`);
        assert.equal(audit.internalErrors, 0, `${what}: 500s\n${api.child.output().slice(-3_000)}`);
        assert.ok(audit.acknowledged > 0, `${what}: nothing was issued`);
        assert.ok(rows.users.length <= rows.total, `${what}: over-issued ${rows.users.length} > ${rows.total}`);
        assert.equal(rows.counter, rows.users.length, `${what}: issued_quantity disagrees with the rows`);
        assert.ok(target.recoveredAfterMs !== undefined && target.recoveredAfterMs <= RECOVERY_BOUND_MS, `${what}: answering again after ${target.recoveredAfterMs} ms (healed at ${Math.round(healedAt)})\n${api.child.output().slice(-40_000)}`);
      }
      const metrics = (await request(api.url, 'GET', '/metrics')).text;
      assert.match(metrics, /^couponrush_redis_settles_total [1-9]/m, 'the API settled the campaign on the promoted master before admitting there');
      t.diagnostic(metrics.split('\n').filter((l) => l.startsWith('couponrush_redis_')).join('; '));

      // `couponrush reconcile` on the cluster: every campaign's state agrees with its rows.
      const cli = runCli(['reconcile'], { DATABASE_URL: suite.databaseUrl(), ...cluster.env(), REDIS_PREFIX: prefix, LOG_LEVEL: 'warn' });
      const code = await cli.exited;
      assert.equal(code, 0, `reconcile on the cluster:\n${cli.output()}`);
      for (const target of targets) assert.match(cli.output(), new RegExp(`coupon ${target.couponId} \\(${STRATEGY}\\): OK`), `campaign ${target.couponId} reconciled:\n${cli.output()}`);
    } finally {
      await api?.stop();
      await redis?.close();
      await cluster.destroy();
    }
  });

  it('cache invalidations reach every process, whichever node each is connected to (classic pub/sub is cluster-wide)', async (t) => {
    if (bin === undefined) return missing(t, 'the redis-server binary is not installed');
    const cluster = await PrivateCluster.create(bin, { masters: 3, replicasPerMaster: 0 });
    const target = { kind: 'cluster' as const, nodes: cluster.ports.map((port) => ({ host: '127.0.0.1', port })), username: undefined, password: undefined };
    const handles: RedisHandle[] = [];
    try {
      for (let i = 0; i < 3; i++) handles.push(await openRedis(target, 'pubsub:', silent));
      const heard = handles.map(() => [] as Array<number | undefined>);
      handles.forEach((h, i) => h.onInvalidate((id) => heard[i]!.push(id)));
      // Subscribed when every subscriber has heard a first message.
      await waitFor('every subscriber hears the channel', async () => {
        await handles[0]!.invalidate(0);
        return heard.every((h) => h.includes(0));
      });
      for (const [i, h] of handles.entries()) await h.invalidate(100 + i);
      await waitFor('every process heard every invalidation', async () => heard.every((h) => [100, 101, 102].every((id) => h.includes(id))));
    } finally {
      for (const h of handles) await h.close();
      await cluster.destroy();
    }
  });
});
