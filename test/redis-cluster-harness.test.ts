// The Redis Cluster harness (fault-helpers.ts's PrivateCluster) proves itself against the
// machine's redis-server: three masters with a replica each share the slots, hash tags place keys
// on the master we choose, WAIT 1 on the connection that wrote is acknowledged by the replica, a
// script takes keys of one slot and is refused keys of two, a kill -9 of a master is failed over
// to its replica and the ioredis Cluster client follows by itself, the old master restarted from
// its files comes back as a replica, and classic pub/sub reaches subscribers on every node. The
// times it observes are printed: they are the numbers the docs quote for a Cluster failover.
import assert from 'node:assert/strict';
import { after, before, describe, it, type TestContext } from 'node:test';
import { Redis, type Cluster } from 'ioredis';
import { answerWithin, clusterNodes, directRedis, nodeRole, PrivateCluster, redisServerBinary, succeedsWithin } from './fault-helpers.js';
import { missing } from './helpers.js';

const bin = redisServerBinary();

function ready(t: TestContext): boolean {
  if (bin !== undefined) return true;
  missing(t, 'the redis-server binary is not installed: the Redis Cluster harness was not checked (apt-get install redis-server)');
  return false;
}

/** The cluster client's own connection to a master (the one its commands for that master's slots go through). */
function masterConnection(client: Cluster, port: number): Redis {
  const node = client.nodes('master').find((r) => r.options.port === port);
  assert.ok(node !== undefined, `the cluster client has a master connection to :${port}`);
  return node;
}

describe('PrivateCluster: 3 masters with a replica each, cluster-node-timeout 1000 ms', () => {
  let cluster: PrivateCluster | undefined;
  let client: Cluster | undefined;
  let createMs = 0;

  before(async () => {
    if (bin === undefined) return;
    const started = performance.now();
    cluster = await PrivateCluster.create(bin);
    createMs = performance.now() - started;
    client = cluster.client();
  });

  after(async () => {
    await cluster?.destroy();
  });

  it('forms a cluster; keys with different hash tags land on different masters, and the Cluster client SETs and GETs them', async (t) => {
    if (!ready(t)) return;
    const c = cluster!;
    console.log(`Redis Cluster: 6 nodes started, formed by redis-cli --cluster create and healthy in ${createMs.toFixed(0)} ms`);
    assert.equal(c.nodes.split(',').length, 6);
    assert.deepEqual(c.env(), { REDIS_CLUSTER_NODES: c.nodes });
    for (const address of c.nodes.split(',')) assert.match(address, /^127\.0\.0\.1:\d+$/);
    for (const port of c.ports) assert.ok(port <= 55_535, `:${port} leaves room for its bus port +10000`);
    const masters = await c.masters();
    assert.equal(masters.length, 3);
    const replicas = c.ports.filter((p) => !masters.includes(p));
    assert.equal(replicas.length, 3);
    for (const m of masters) {
      const of = await c.replicasOf(m);
      assert.equal(of.length, 1, `:${m} has one replica`);
      assert.deepEqual(await nodeRole(of[0]!), { role: 'slave', masterPort: m, state: 'connected' });
    }

    // The slot function is Redis's: the spec's test vector, hash-tag edge cases, and the server's CLUSTER KEYSLOT.
    assert.equal(c.slotOf('123456789'), 0x31c3 % 16384);
    const probe = directRedis(masters[0]!);
    try {
      const keys = ['foo', '{user1000}.following', '{user1000}.followers', 'foo{}{bar}', 'foo{{bar}}zap', 'foo{bar}{zap}', '{', '}{', '{}', 'ключ{é}', 'a{b'];
      for (let i = 0; i < 30; i++) keys.push(`couponrush:${Math.random().toString(36).slice(2)}`);
      for (const key of keys) assert.equal(c.slotOf(key), await probe.call('CLUSTER', 'KEYSLOT', key), `slot of ${key}`);
      assert.equal(c.slotOf('{user1000}.following'), c.slotOf('{user1000}.followers'));
      assert.equal(c.slotOf('foo{bar}{zap}'), c.slotOf('bar'));
    } finally {
      probe.disconnect();
    }

    // A tag per master, found by keyOnMaster; CLUSTER NODES says the same master owns its slot.
    const lines = await clusterNodes(replicas[0]!);
    const tags = new Map<number, string>();
    for (const m of masters) {
      const tag = await c.keyOnMaster(m, 'harness-');
      assert.match(tag, /^\{harness-\d+\}$/);
      const slot = c.slotOf(`${tag}:k`);
      assert.equal(slot, c.slotOf(tag));
      assert.equal(await c.masterOfSlot(slot), m);
      const owner = lines.find((l) => l.slots.some((s) => {
        const [a, b] = s.split('-').map(Number);
        return a! <= slot && slot <= (b ?? a!);
      }));
      assert.equal(owner?.port, m, `CLUSTER NODES: :${m} owns slot ${slot}`);
      tags.set(m, tag);
    }
    assert.equal(new Set(tags.values()).size, 3);
    assert.equal(new Set([...tags.values()].map((tag) => c.slotOf(tag))).size, 3);

    // The client's connections to the masters are lazy: made when a command first goes to that node.
    if (client!.status !== 'ready') await new Promise((resolve) => client!.once('ready', resolve));
    const statuses = () => client!.nodes('master').map((r) => `:${r.options.port} ${r.status}`).join(', ');
    const beforeAny = statuses();
    let afterOne = '';
    for (const [m, tag] of tags) {
      assert.equal(await client!.set(`${tag}:k`, `on ${m}`), 'OK');
      if (afterOne === '') afterOne = statuses();
      assert.equal(await client!.get(`${tag}:k`), `on ${m}`);
      // The key lives on that master: a plain connection to it reads it; another master answers MOVED.
      const there = directRedis(m);
      const elsewhere = directRedis(masters.find((x) => x !== m)!);
      try {
        assert.equal(await there.get(`${tag}:k`), `on ${m}`);
        await assert.rejects(elsewhere.get(`${tag}:k`), (err: Error) => new RegExp(`^MOVED ${c.slotOf(tag)} 127\\.0\\.0\\.1:${m}$`).test(err.message));
      } finally {
        there.disconnect();
        elsewhere.disconnect();
      }
    }
    assert.equal(client!.nodes('master').length, 3);
    assert.ok(client!.nodes('master').every((r) => r.status === 'ready'), 'a connection to each master once each had a command');
    console.log(`Redis Cluster: the Cluster client's master connections once it is ready: ${beforeAny}; after one SET: ${afterOne}`);
  });

  it('WAIT 1 1000 on the master connection that wrote a key returns 1 (and in a pipeline after the write)', async (t) => {
    if (!ready(t)) return;
    const c = cluster!;
    const master = (await c.masters())[1]!;
    const tag = await c.keyOnMaster(master, 'wait-');
    const slot = c.slotOf(tag);
    assert.equal(await client!.set(`${tag}:w`, 'v'), 'OK');
    // The client's slot table names node keys, the master first.
    assert.equal(client!.slots[slot]?.[0], `127.0.0.1:${master}`);
    const conn = masterConnection(client!, master);
    assert.equal(conn.status, 'ready', 'the connection that wrote is up');
    assert.equal(await conn.wait(1, 1_000), 1);
    // A pipeline goes to its keys' slot's node on one connection: a keyless WAIT in it follows the write.
    const results = await client!.pipeline().set(`${tag}:p`, 'v').wait(1, 1_000).exec();
    assert.deepEqual(results, [[null, 'OK'], [null, 1]]);
    const replica = directRedis((await c.replicasOf(master))[0]!);
    try {
      await replica.call('READONLY');
      assert.equal(await replica.get(`${tag}:w`), 'v');
      assert.equal(await replica.get(`${tag}:p`), 'v');
    } finally {
      replica.disconnect();
    }
  });

  it('a Lua EVAL takes two keys of one hash tag through the Cluster client; keys of two slots fail with CROSSSLOT', async (t) => {
    if (!ready(t)) return;
    const c = cluster!;
    const [m0, m1] = await c.masters();
    const script = "redis.call('SET', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], ARGV[1]) return redis.call('MGET', KEYS[1], KEYS[2])";
    const tag = await c.keyOnMaster(m0!, 'lua-');
    assert.deepEqual(await client!.eval(script, 2, `${tag}:a`, `${tag}:b`, 'x'), ['x', 'x']);
    assert.deepEqual(await client!.mget(`${tag}:a`, `${tag}:b`), ['x', 'x']);
    // Two slots of one master: refused all the same (a slot, not a node, is what a script may span).
    let sameMaster = await c.keyOnMaster(m0!, 'lua-other-');
    for (let i = 0; c.slotOf(sameMaster) === c.slotOf(tag); i++) sameMaster = await c.keyOnMaster(m0!, `lua-other-${i}-`);
    await assert.rejects(client!.eval(script, 2, `${tag}:c`, `${sameMaster}:c`, 'y'), (err: Error) => /^CROSSSLOT/.test(err.message));
    // Two masters.
    const elsewhere = await c.keyOnMaster(m1!, 'lua-');
    await assert.rejects(client!.eval(script, 2, `${tag}:d`, `${elsewhere}:d`, 'y'), (err: Error) => /^CROSSSLOT/.test(err.message));
    assert.deepEqual(await client!.mget(`${tag}:c`, `${tag}:d`), [null, null], 'a refused script wrote nothing');
  });

  it('kill -9 of a master: its replica takes over, the Cluster client follows, a WAIT 1 write survives, the old master returns as a replica', async (t) => {
    if (!ready(t)) return;
    const c = cluster!;
    const victim = (await c.masters())[2]!;
    const [replica] = await c.replicasOf(victim);
    const tag = await c.keyOnMaster(victim, 'failover-');
    const slot = c.slotOf(tag);
    const written = await client!.pipeline().set(`${tag}:durable`, 'kept').wait(1, 1_000).exec();
    assert.deepEqual(written, [[null, 'OK'], [null, 1]], 'the replica acknowledged the write before the kill');

    // A writer on that slot all along: what does the Cluster client answer while the master is gone?
    const outcomes: Array<{ at: number; done: number; error?: string }> = [];
    let writing = true;
    let killedAt = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const at = performance.now();
        const error = await answerWithin(3_000, 'SET', client!.set(`${tag}:probe`, String(i))).then(
          () => undefined,
          (e: Error) => e.message,
        );
        const done = performance.now();
        outcomes.push(error === undefined ? { at, done } : { at, done, error });
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    let failoverMs = 0;
    let followedMs = 0;
    try {
      await new Promise((r) => setTimeout(r, 200));
      const killed = await c.kill9MasterOf(slot);
      killedAt = performance.now();
      assert.equal(killed, victim);
      failoverMs = await c.waitForFailover(victim, 15_000);
      assert.equal(await c.masterOfSlot(slot), replica, 'the replica owns the slot now');
      assert.ok(failoverMs < 5_000, `the failover took ${failoverMs.toFixed(0)} ms`);
      // The writer's first SET begun after the kill that succeeded (no write can before the replica takes over).
      const first = await succeedsWithin(10_000 - (performance.now() - killedAt), 'a SET of the writer after the kill', async () => {
        const o = outcomes.find((x) => x.at > killedAt && x.error === undefined);
        if (o === undefined) throw new Error('none yet');
        return o;
      });
      followedMs = first.value.done - killedAt;
      assert.ok(followedMs < 10_000, `the Cluster client wrote again ${followedMs.toFixed(0)} ms after the kill`);
      assert.equal(await client!.set(`${tag}:after`, 'v2'), 'OK');
      assert.equal(client!.slots[slot]?.[0], `127.0.0.1:${replica}`, 'the client has the new owner in its slot table');
      assert.equal(await client!.get(`${tag}:durable`), 'kept', 'what WAIT 1 acknowledged survived the failover');
    } finally {
      writing = false;
      await writer;
    }
    const failed = outcomes.filter((o) => o.at >= killedAt && o.error !== undefined);
    const kinds = new Map<string, { count: number; first: number; last: number }>();
    for (const o of failed) {
      const kind = o.error!.replace(/\d+/g, 'N');
      const k = kinds.get(kind) ?? { count: 0, first: o.at - killedAt, last: o.at - killedAt };
      k.count++;
      k.last = o.at - killedAt;
      kinds.set(kind, k);
    }

    const restartMs = await c.restartNode(victim, 30_000);
    assert.ok(!(await c.masters()).includes(victim), 'the old master does not own slots any more');
    assert.deepEqual(await c.replicasOf(replica!), [victim]);
    assert.deepEqual(await nodeRole(victim), { role: 'slave', masterPort: replica, state: 'connected' });
    assert.deepEqual(await client!.pipeline().set(`${tag}:again`, 'v3').wait(1, 1_000).exec(), [[null, 'OK'], [null, 1]]);
    const back = directRedis(victim);
    try {
      await back.call('READONLY');
      assert.equal(await back.get(`${tag}:durable`), 'kept');
      assert.equal(await back.get(`${tag}:after`), 'v2', 'the old master has what was written while it was down');
      assert.equal(await back.get(`${tag}:again`), 'v3');
    } finally {
      back.disconnect();
    }
    console.log(
      `Redis Cluster failover (cluster-node-timeout 1000 ms): the replica :${replica} owned the slots of the killed :${victim} and every node said cluster_state:ok ` +
        `${failoverMs.toFixed(0)} ms after the kill -9; a SET every 50 ms through the Cluster client to that slot succeeded again ${followedMs.toFixed(0)} ms after the kill ` +
        `(${failed.length} failed in between); ` +
        `the old master, restarted from its files, was a synced replica ${restartMs.toFixed(0)} ms after its start`,
    );
    for (const [kind, k] of kinds) console.log(`  meanwhile the Cluster client failed ${k.count} SET(s) with "${kind}" (begun ${k.first.toFixed(0)}–${k.last.toFixed(0)} ms after the kill)`);
  });

  it('PUBLISH on one node reaches SUBSCRIBErs connected to every other node (the cluster bus carries classic pub/sub)', async (t) => {
    if (!ready(t)) return;
    const c = cluster!;
    const channel = `couponrush:harness:${Date.now()}`;
    const subscribers = c.livePorts.map((port) => ({ port, r: directRedis(port) }));
    try {
      const received = subscribers.map(
        ({ r }) =>
          new Promise<string>((resolve) => {
            r.on('message', (ch: string, message: string) => ch === channel && resolve(message));
          }),
      );
      await Promise.all(subscribers.map(({ r }) => r.subscribe(channel)));
      const publisherPort = (await c.masters())[0]!;
      const publisher = directRedis(publisherPort);
      try {
        // The reply counts the publishing node's own subscribers only: here the one connected to it.
        assert.equal(await publisher.publish(channel, 'hello'), 1);
      } finally {
        publisher.disconnect();
      }
      const messages = await answerWithin(5_000, 'the message on every node', Promise.all(received));
      assert.deepEqual(messages, subscribers.map(() => 'hello'), `a subscriber on each of ${subscribers.length} nodes got it`);
    } finally {
      for (const { r } of subscribers) r.disconnect();
    }
  });
});
