// The Redis Sentinel harness (fault-helpers.ts's PrivateSentinelGroup) proves itself against the
// machine's redis-server: writes replicate, a kill -9 of the primary is failed over and an ioredis
// sentinel client follows by itself, a restarted old primary is demoted into a replica, and
// min-replicas-to-write refuses writes (a script's too) while the replica is down. The times it
// observes are printed: they are the numbers the docs quote for a Sentinel failover.
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { answerWithin, directRedis, nodeRole, PrivateSentinelGroup, redisServerBinary, succeedsWithin } from './fault-helpers.js';
import { missing } from './helpers.js';

const bin = redisServerBinary();

function ready(t: TestContext): boolean {
  if (bin !== undefined) return true;
  missing(t, 'the redis-server binary is not installed: the Redis Sentinel harness was not checked (apt-get install redis-server)');
  return false;
}

const portOf = async (r: Redis) => Number(((await r.config('GET', 'port')) as string[])[1]);

describe('PrivateSentinelGroup: a primary, a replica and 3 sentinels of our own', () => {
  let group: PrivateSentinelGroup | undefined;
  let client: Redis | undefined;
  let oldPrimary = 0;

  before(async () => {
    if (bin === undefined) return;
    group = await PrivateSentinelGroup.create(bin, { downAfterMs: 1_000 });
    client = group.client();
  });

  after(async () => {
    await group?.destroy();
  });

  it('writes through a sentinel client land on the primary and reach the replica (WAIT 1 → 1)', async (t) => {
    if (!ready(t)) return;
    const g = group!;
    assert.equal(g.sentinels.split(',').length, 3);
    assert.deepEqual(g.env(), { REDIS_SENTINELS: g.sentinels, REDIS_SENTINEL_MASTER: g.masterName });
    const primary = await g.primary();
    assert.equal(await portOf(client!), primary.port, 'the sentinel client is connected to the primary');
    assert.equal(await client!.set('harness:before', 'v1'), 'OK');
    assert.equal(await client!.wait(1, 1_000), 1);
    const replicaPort = g.dataPorts.find((p) => p !== primary.port)!;
    assert.deepEqual(await nodeRole(replicaPort), { role: 'slave', masterPort: primary.port, state: 'connected' });
    const replica = directRedis(replicaPort);
    try {
      assert.equal(await replica.get('harness:before'), 'v1');
    } finally {
      replica.disconnect();
    }
  });

  it('kill -9 of the primary: the sentinels promote the replica and the same client follows by itself', async (t) => {
    if (!ready(t)) return;
    const g = group!;
    const before = await g.primary();
    // A plain client on the replica: does its promotion cut it off? (Sentinel sends CLIENT KILL TYPE normal.)
    const onReplica = directRedis(g.dataPorts.find((p) => p !== before.port)!);
    let replicaClientClosed = false;
    let failoverMs = 0;
    let followedMs = 0;
    try {
      await onReplica.ping();
      onReplica.once('close', () => (replicaClientClosed = true));
      oldPrimary = await g.kill9Primary();
      assert.equal(oldPrimary, before.port);
      const killedAt = performance.now();
      failoverMs = await g.waitForFailover(oldPrimary, 15_000);
      const now = await g.primary();
      assert.notEqual(now.port, oldPrimary);
      assert.ok(failoverMs < 10_000, `failover took ${failoverMs} ms`);
      const followed = await succeedsWithin(10_000, 'SET through the sentinel client after the failover', () => client!.set('harness:after', 'v2'));
      followedMs = performance.now() - killedAt;
      assert.equal(followed.value, 'OK');
      assert.equal(await portOf(client!), now.port, 'the sentinel client is on the new primary');
      assert.equal(await client!.get('harness:before'), 'v1', 'what WAIT 1 acknowledged survived the failover');
    } finally {
      onReplica.disconnect();
    }
    console.log(
      `Sentinel failover (down-after 1000 ms): every sentinel names the promoted replica ${failoverMs.toFixed(0)} ms after the kill -9; ` +
        `the ioredis sentinel client wrote again ${followedMs.toFixed(0)} ms after the kill; ` +
        `a plain client on the promoted replica was ${replicaClientClosed ? 'disconnected' : 'left connected'} by the promotion`,
    );
  });

  it('the old primary, restarted from its files, is demoted by Sentinel into a replica of the new one', async (t) => {
    if (!ready(t)) return;
    const g = group!;
    assert.ok(oldPrimary !== 0, 'the failover test ran');
    // A plain client on the old primary's port, writing while it comes back: until Sentinel demotes
    // it, it believes it is a primary — what does it accept, and does the demotion cut it off?
    const watcher = new Redis({ host: '127.0.0.1', port: oldPrimary, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => 50 });
    watcher.on('error', () => {});
    let everReady = false;
    let closedAfterReady = 0;
    watcher.on('ready', () => (everReady = true));
    watcher.on('close', () => everReady && closedAfterReady++);
    const staleKeys: string[] = [];
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        if (watcher.status === 'ready') await watcher.set(`harness:stale:${i}`, 'x').then(() => staleKeys.push(`harness:stale:${i}`), () => undefined);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    let restartMs = 0;
    let closedByDemotion = 0;
    try {
      restartMs = await g.restartNode(oldPrimary, 40_000);
    } finally {
      writing = false;
      await writer;
      closedByDemotion = closedAfterReady;
      watcher.disconnect(); // it would retry forever, and keep the test process alive
    }
    const primary = await g.primary();
    assert.notEqual(primary.port, oldPrimary);
    assert.deepEqual(await nodeRole(oldPrimary), { role: 'slave', masterPort: primary.port, state: 'connected' });
    assert.equal(await client!.set('harness:again', 'v3'), 'OK');
    assert.equal(await client!.wait(1, 1_000), 1);
    const restarted = directRedis(oldPrimary);
    try {
      assert.equal(await restarted.get('harness:after'), 'v2', 'the demoted node has what was written while it was down');
      assert.equal(await restarted.get('harness:again'), 'v3');
      // Writes it took as a primary of its own are gone: the resync replaced its data set, and the new primary never had them.
      if (staleKeys.length > 0) {
        assert.equal(await restarted.exists(...staleKeys), 0);
        assert.equal(await client!.exists(...staleKeys), 0);
      }
    } finally {
      restarted.disconnect();
    }
    console.log(
      `Sentinel: the restarted old primary was a synced replica of the new one ${restartMs.toFixed(0)} ms after its start; ` +
        `meanwhile it took ${staleKeys.length} plain-client writes as a primary (all lost), and its demotion closed that client's connection ${closedByDemotion} time(s)`,
    );
  });
});

describe('PrivateSentinelGroup with min-replicas-to-write 1', () => {
  let group: PrivateSentinelGroup | undefined;

  before(async () => {
    if (bin === undefined) return;
    group = await PrivateSentinelGroup.create(bin, { masterName: 'guarded', minReplicasToWrite: 1 });
  });

  after(async () => {
    await group?.destroy();
  });

  it('refuses writes (a script’s too) with NOREPLICAS while the replica is down, and takes them again once it is back', async (t) => {
    if (!ready(t)) return;
    const g = group!;
    const client = g.client();
    const script = "redis.call('SET', KEYS[1], 'x') return 1";
    assert.equal(await client.set('guarded:a', '1'), 'OK');
    assert.equal(await client.eval(script, 1, 'guarded:s'), 1);
    const killed = await g.killReplica();
    const refused = await succeedsWithin(10_000, 'NOREPLICAS on a SET', async () => {
      const err = await client.set('guarded:b', '2').then(
        () => undefined,
        (e: Error) => e,
      );
      if (err === undefined) throw new Error('the SET was accepted');
      return err;
    });
    assert.match(refused.value.message, /^NOREPLICAS/);
    await assert.rejects(client.eval(script, 1, 'guarded:s2'), (err: Error) => /^NOREPLICAS/.test(err.message));
    assert.equal(await client.get('guarded:s2'), null, 'the refused script wrote nothing');
    await g.restartNode(killed);
    await g.waitForReplicaLink();
    assert.equal(await client.set('guarded:c', '3'), 'OK');
    assert.equal(await client.eval(script, 1, 'guarded:s3'), 1);
    assert.equal(await client.wait(1, 1_000), 1);
    // A killed replica's connection closes at once: the primary drops it then, not after max-lag.
    console.log(`min-replicas-to-write 1, max-lag 1 s: the first SET refused with NOREPLICAS came ${refused.ms.toFixed(0)} ms after the replica's kill -9`);
  });

  it('a hung replica (SIGSTOP: its connection stays open) is dropped from the good ones after min-replicas-max-lag', async (t) => {
    if (!ready(t)) return;
    const g = group!;
    const client = g.client();
    const primary = (await g.primary()).port;
    const replica = g.liveDataPorts.find((p) => p !== primary)!;
    assert.equal(await client.set('guarded:d', '4'), 'OK');
    g.hangNode(replica);
    const hungAt = performance.now();
    let resumed = false;
    try {
      const refused = await succeedsWithin(10_000, 'NOREPLICAS on a SET', async () => {
        const err = await client.set('guarded:e', '5').then(
          () => undefined,
          (e: Error) => e,
        );
        if (err === undefined) throw new Error('the SET was accepted');
        return err;
      });
      assert.match(refused.value.message, /^NOREPLICAS/);
      const refusedMs = performance.now() - hungAt;
      // The lag is whole seconds since the replica's last REPLCONF ACK (one a second), checked once a
      // second: more than max-lag (1 s) is reached 0–3 s after the hang, depending on where in the second it fell.
      assert.ok(refusedMs < 5_000, `refused only after ${refusedMs} ms`);
      g.resumeNode(replica);
      resumed = true;
      const accepted = await succeedsWithin(10_000, 'a SET once the replica is back', () => client.set('guarded:f', '6'));
      assert.equal(accepted.value, 'OK');
      console.log(`min-replicas-to-write 1, max-lag 1 s: a SIGSTOPped replica made the primary refuse writes ${refusedMs.toFixed(0)} ms after the hang; writes were accepted again ${accepted.ms.toFixed(0)} ms after SIGCONT`);
    } finally {
      if (!resumed) g.resumeNode(replica);
    }
  });
});
