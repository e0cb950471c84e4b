// redis-lua-kafka against a real Apache Kafka broker (scripts/kafka-broker.ts), real Redis and real
// PostgreSQL, through real HTTP: the stampede invariants, a 202 surviving the loss of every Redis
// key, the compensation of a produce that certainly failed, a broker restart mid-stampede, the
// dead-letter topic and its replay, and a worker killed with kill -9 mid-backlog. Every answer is
// recorded and audited against the rows.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Producer, stringSerializers } from '@platformatic/kafka';
import { startKafka } from '../scripts/kafka-broker.js';
import { deleteKafkaTopics } from '../src/kafka/client.js';
import { AUTH_HEADER, signRecord } from '../src/kafka/records.js';
import { reconciledStrategies } from '../src/coupons/strategies/index.js';
import { reconcile } from '../src/coupons/reconcile.js';
import { eventCapture } from '../src/coupons/repository.js';
import { startEventPublisher } from '../src/worker/events.js';
import { Ledger, stampedeThroughFault, type Target } from './fault-helpers.js';
import { brokerForFile, needKafka, RECORD_SECRET, startKafkaServer, STRATEGY, waitForRows, type KafkaServer } from './kafka-helpers.js';
import { holdCouponRow, issuedRows, refuseInsertsOf, request, stampede } from './helpers.js';
import { deleteKeys, exited, issueAll, silent, spawnWorker, usersRange, waitFor, withStatus } from './redis-helpers.js';

// One broker for the file (the fault tests start private ones of their own).
const broker = brokerForFile();

interface ListedLetter {
  id: string;
  state: 'held' | 'discarded';
  settledAt?: string;
  truncated?: boolean;
  reason: string;
  entry: Record<string, string>;
}

/** Issue, status and admin calls on one campaign; every issue answer goes to the ledger. */
function kafkaHarness(server: KafkaServer, couponId: number, ledger: Ledger) {
  const as = (user: string) => ({ authorization: `Bearer ${server.tokenFor(user)}` });
  return {
    issue: async (user: string) => {
      const res = await request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: as(user) });
      ledger.record(user, { status: res.status, code: (res.json as { code?: string } | undefined)?.code, at: performance.now() });
      return res;
    },
    status: (user: string) => request(server.url, 'GET', `/coupons/${couponId}/issues/me`, { headers: as(user) }),
    letters: async (query = ''): Promise<ListedLetter[]> => {
      const res = await request(server.url, 'GET', `/admin/dead-letters?couponId=${couponId}${query}`, { headers: server.adminHeaders });
      assert.equal(res.status, 200, res.text);
      return (res.json as { items: ListedLetter[] }).items;
    },
    admin: (action: 'replay' | 'discard', body: unknown) => request(server.url, 'POST', `/admin/dead-letters/${action}`, { headers: server.adminHeaders, json: body }),
  };
}

function auditLedger(ledger: Ledger, rows: readonly string[]): void {
  const audit = ledger.audit(rows);
  assert.deepEqual({ lost: audit.lost, unexpected: audit.unexpected, falseDuplicates: audit.falseDuplicates }, { lost: [], unexpected: [], falseDuplicates: [] }, JSON.stringify([...audit.statuses]));
}

describe('redis-lua-kafka (real Kafka broker, Redis, PostgreSQL)', () => {
  it('issues exactly the stock under a stampede, never twice to one user; the worker persists every 202', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    try {
      await server.startKafkaWorker('k1');
      const { id } = await server.createCoupon({ totalQuantity: 500, strategy: STRATEGY });
      const result = await stampede(server, id, 1_000, 2_000);
      await waitForRows(server, id, 500);
      const db = await issuedRows(server.db, id);
      assert.equal(result.statuses.get(202), 500, `exactly the stock answered 202: ${JSON.stringify([...result.statuses])}`);
      assert.equal(db.rows, 500);
      assert.equal(db.distinctUsers, 500, 'no user has two rows');
      assert.equal(db.counter, 500, 'issued_quantity matches the rows');
      assert.deepEqual(new Set(result.winners), new Set(db.users), 'every 202 has a row, every row had a 202');
      const refused = (result.statuses.get(409) ?? 0) + (result.statuses.get(410) ?? 0);
      assert.equal(refused, 1_500, 'all others are 409/410');
      const keys = server.redis.keys.campaign(id);
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '500', 'Redis agrees with the database');
      await waitFor('every producing mark dropped', async () => (await server.redis.client.zcard(keys.producing)) === 0, 5_000);
      const me = await request(server.url, 'GET', `/coupons/${id}/issues/me`, { headers: { authorization: `Bearer ${server.tokenFor(db.users[0]!)}` } });
      assert.equal((me.json as { status?: string }).status, 'ISSUED');
      // The console's operations view asks each store, Kafka included.
      const health = await request(server.url, 'GET', '/admin/console/health', { headers: server.adminHeaders });
      assert.deepEqual(health.json, { database: 'ok', redis: 'ok', kafka: 'ok' });
    } finally {
      await server.close();
    }
  });

  it('keeps every 202 when Redis loses every key before the worker ran, and the rebuilt state stays exact', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    try {
      const { id } = await server.createCoupon({ totalQuantity: 30, strategy: STRATEGY });
      const first = await issueAll(server, id, usersRange(0, 40), 16);
      const accepted = withStatus(first, 202);
      assert.equal(accepted.length, 30, 'the stock answered 202');
      assert.equal((await issuedRows(server.db, id)).rows, 0, 'nothing persisted yet: no worker runs');
      assert.ok((await deleteKeys(server.prefix)) > 0, 'Redis lost every key of the campaign');

      // New users after the loss: the state is rebuilt from the database (empty) and the topic's
      // unconsumed records (the 30), so none of them gets a seat.
      const second = await issueAll(server, id, usersRange(40, 60), 8);
      assert.deepEqual(new Set(second.values()), new Set([410]), `after the rebuild the stock is still gone: ${JSON.stringify([...second])}`);
      const again = await issueAll(server, id, accepted.slice(0, 5), 5);
      assert.deepEqual(new Set(again.values()), new Set([409]), 'a 202 holder is still a holder');

      await server.startKafkaWorker('k-after-flush');
      await waitForRows(server, id, 30);
      const db = await issuedRows(server.db, id);
      assert.deepEqual(new Set(db.users), new Set(accepted), 'exactly the 202s were persisted, from Kafka');
      assert.equal(db.counter, 30);
    } finally {
      await server.close();
    }
  });

  it('releases the seat when the produce certainly failed (no broker), says nothing was issued, and issues again once the broker is back', async (t) => {
    if (!(await needKafka(t))) return;
    const own = await startKafka();
    const server = await startKafkaServer(own);
    try {
      await server.startKafkaWorker('k-down');
      const { id } = await server.createCoupon({ totalQuantity: 10, strategy: STRATEGY });
      const before = await issueAll(server, id, usersRange(0, 3), 3);
      assert.deepEqual([...new Set(before.values())], [202]);
      await own.stop({ keepData: true });

      const ledger = new Ledger();
      const down = usersRange(3, 6);
      for (const user of down) {
        const res = await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
        ledger.record(user, { status: res.status, code: (res.json as { code?: string }).code ?? '', at: performance.now() });
        assert.equal(res.status, 503, res.text);
        assert.notEqual((res.json as { code?: string }).code, 'OUTCOME_UNKNOWN', 'no broker was reachable: the record was never sent');
      }
      const keys = server.redis.keys.campaign(id);
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '3', 'the three seats were given back');
      assert.equal(await server.redis.client.zcard(keys.producing), 0);
      for (const user of down) assert.equal(await server.redis.client.sismember(keys.users, user), 0);

      await own.restart();
      const later = await issueAll(server, id, down, 3);
      for (const [user, status] of later) ledger.record(user, { status, at: performance.now() });
      assert.deepEqual([...new Set(later.values())], [202], 'the same users get a seat once Kafka is back');
      await waitForRows(server, id, 6);
      const audit = ledger.audit((await issuedRows(server.db, id)).users);
      assert.deepEqual(audit.lost, []);
      assert.deepEqual(audit.unexpected, []);
    } finally {
      await server.close();
      await own.stop();
    }
  });

  it('loses no 202 and issues nobody it refused when the broker restarts mid-stampede, and catches up within 10 s of the broker answering', async (t) => {
    if (!(await needKafka(t))) return;
    const own = await startKafka();
    const server = await startKafkaServer(own);
    try {
      await server.startKafkaWorker('k-restart');
      const { id } = await server.createCoupon({ totalQuantity: 3_000, strategy: STRATEGY });
      const target: Target = { strategy: STRATEGY, couponId: id, users: 6_000, ledger: new Ledger() };
      // Rows over time, to see how the worker catches up once the broker is back.
      const samples: Array<{ at: number; rows: number }> = [];
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const { rows } = await server.db.query<{ n: string }>(`SELECT count(*) AS n FROM coupon_issues WHERE coupon_id = ${id}`);
          samples.push({ at: performance.now(), rows: Number(rows[0]?.n ?? 0) });
          await new Promise((r) => setTimeout(r, 100));
        }
      })();
      // The database holds the worker's first batch until the broker is back, so that a backlog
      // of thousands of acknowledged records waits through the outage.
      const releaseRow = await holdCouponRow(server.db, id);
      let run: Awaited<ReturnType<typeof stampedeThroughFault>>;
      try {
        run = await stampedeThroughFault(() => server.url, [target], {
          concurrency: 32,
          faultAfterAnswers: 2_000,
          inject: () => own.kill(),
          // Long enough for a reconnect backoff to grow: the catch-up must not wait on it.
          holdMs: 8_000,
          heal: async () => {
            await own.restart();
            await releaseRow();
          },
          afterHealMs: 3_000,
          maxRequests: 8_000,
        });
      } finally {
        await releaseRow();
      }
      const keys = server.redis.keys.campaign(id);
      // Settle what the restart left open: every seat is persisted or still marked producing. A
      // seat can be both: a produce whose outcome was unknown keeps its mark (reconcile's to
      // settle) though its record may have landed and been persisted.
      let seen = '';
      try {
        await waitFor('the worker caught up with every acknowledged record', async () => {
          const rows = (await issuedRows(server.db, id)).users;
          const marked = await server.redis.client.zrange(keys.producing, 0, -1);
          const seats = Number(await server.redis.client.hget(keys.state, 'issued'));
          const settled = new Set([...rows, ...marked]).size;
          seen = `${rows.length} rows, ${marked.length} marked (${marked.filter((u) => rows.includes(u)).length} of them persisted too), ${seats} seats`;
          return settled === seats;
        }, 60_000).catch((err: Error) => assert.fail(`${err.message}: ${seen}`));
      } finally {
        sampling = false;
        await sampler;
      }
      t.diagnostic(seen);
      const db = await issuedRows(server.db, id);
      // The sampler may have stopped just before the last rows landed: the settle itself is a sample.
      samples.push({ at: performance.now(), rows: db.rows });
      const audit = target.ledger.audit(db.users);
      assert.deepEqual(audit.lost, [], 'every 202 has a row');
      assert.deepEqual(audit.unexpected, [], 'no row for a user told nothing was issued');
      assert.equal(audit.internalErrors, 0);
      assert.ok(db.rows <= 3_000, `never over the stock: ${db.rows}`);
      assert.equal(db.distinctUsers, db.rows);
      assert.ok(audit.acknowledged > 0);

      // Catch-up: from the broker answering again until every row is there, and the longest
      // stretch without a new row while acknowledged records waited.
      const acked = target.ledger.acknowledgedTimes().sort((a, b) => a - b);
      const after = samples.filter((s) => s.at >= run.healedAt);
      const caughtUp = after.find((s) => s.rows >= db.rows);
      assert.ok(caughtUp !== undefined, 'the sampler saw the last row');
      let stall = 0;
      let since: { at: number; rows: number } | undefined;
      for (const s of after) {
        const waiting = acked.filter((a) => a <= s.at).length - s.rows;
        if (since === undefined || s.rows !== since.rows || waiting <= 0) since = s;
        else stall = Math.max(stall, s.at - since.at);
      }
      const backlog = acked.filter((a) => a <= run.healedAt).length - (after[0]?.rows ?? 0);
      const catchUpMs = caughtUp.at - run.healedAt;
      t.diagnostic(`catch-up: ${backlog} acknowledged records waiting at the heal, ${audit.acknowledged} acknowledged in all; every row there ${Math.round(catchUpMs)} ms after the broker answered (the stampede went on 3,000 ms after it); longest stall with records waiting ${Math.round(stall)} ms`);
      assert.ok(catchUpMs <= 10_000, `caught up within 10 s of the broker answering: ${Math.round(catchUpMs)} ms`);
      assert.ok(stall <= 2_000, `no stretch over 2 s without progress while records waited: ${Math.round(stall)} ms`);
    } finally {
      await server.close();
      await own.stop();
    }
  });

  it('sends a poison record and a refused one to the dead-letter topic, lists them, and replays them', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    try {
      const { id } = await server.createCoupon({ totalQuantity: 10, strategy: STRATEGY });
      const dropTrigger = await refuseInsertsOf(server.db, 'victim', 'refused for the test');
      let dropped = false;
      const unrefuse = async () => {
        if (!dropped) await dropTrigger();
        dropped = true;
      };
      try {
        await server.startKafkaWorker('k-poison');
        const ok = await issueAll(server, id, ['victim', 'fine'], 2);
        assert.deepEqual([...ok.values()], [202, 202]);
        const producer = new Producer({ clientId: 'poison', bootstrapBrokers: [broker()!.brokers], serializers: stringSerializers });
        await producer.send({ messages: [{ topic: server.topic, key: String(id), value: 'not json' }] });
        await producer.close();
        await waitForRows(server, id, 1);
        let items: Array<{ id: string; reason: string; queue: string; entry: Record<string, string> }> = [];
        await waitFor('two dead letters', async () => {
          const res = await request(server.url, 'GET', `/admin/dead-letters?couponId=${id}`, { headers: server.adminHeaders });
          items = (res.json as { items: typeof items }).items;
          return items.length === 2;
        });
        assert.ok(items.every((d) => d.queue === 'kafka'));
        assert.ok(items.some((d) => d.reason.includes('unsigned')), JSON.stringify(items));
        const refused = items.find((d) => d.entry.u === 'victim');
        assert.ok(refused !== undefined && refused.reason.includes('refused for the test'), JSON.stringify(items));
        await unrefuse();
        const replay = await request(server.url, 'POST', '/admin/dead-letters/replay', { headers: server.adminHeaders, json: { couponId: id, ids: [refused.id] } });
        assert.equal(replay.status, 200, replay.text);
        assert.equal((replay.json as { replayed: unknown[] }).replayed.length, 1);
        await waitForRows(server, id, 2);
        const left = await request(server.url, 'GET', `/admin/dead-letters?couponId=${id}`, { headers: server.adminHeaders });
        assert.equal((left.json as { items: unknown[] }).items.length, 1, 'the replayed one is gone, the poison one stays');
      } finally {
        await unrefuse();
      }
    } finally {
      await server.close();
    }
  });

  it('tells a refused admission HELD; ten racing replays of its dead letter put one copy back on the topic', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    const ledger = new Ledger();
    const kafka = server.runtime.kafka!;
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: STRATEGY });
      const h = kafkaHarness(server, id, ledger);
      const unrefuse = await refuseInsertsOf(server.db, 'victim', 'refused for the test');
      try {
        await server.startKafkaWorker('k-held');
        assert.equal((await h.issue('victim')).status, 202);
        assert.equal((await h.issue('fine')).status, 202);
        await waitForRows(server, id, 1);
        await waitFor('the victim HELD', async () => ((await h.status('victim')).json as { status?: string } | undefined)?.status === 'HELD');
        const [letter] = await h.letters();
        assert.equal(letter?.entry.u, 'victim');
        assert.equal(letter?.state, 'held');
      } finally {
        await unrefuse();
      }
      const [letter] = await h.letters();
      const replays = await Promise.all(Array.from({ length: 10 }, () => h.admin('replay', { couponId: id, ids: [letter!.id] })));
      const bodies = replays.map((r) => {
        assert.equal(r.status, 200, r.text);
        return r.json as { replayed: unknown[]; notFound: string[]; refused: Array<{ reason: string }> };
      });
      t.diagnostic(`racing replays: ${bodies.filter((b) => b.notFound.length === 1).length} found it settled, ${bodies.filter((b) => b.refused.length === 1).length} found it in progress`);
      assert.equal(bodies.filter((b) => b.replayed.length === 1).length, 1, `exactly one replay: ${JSON.stringify(bodies)}`);
      assert.ok(bodies.every((b) => b.replayed.length === 1 || b.notFound.length === 1 || b.refused[0]?.reason === 'in-progress'), JSON.stringify(bodies));
      await waitForRows(server, id, 2);
      assert.deepEqual((await h.status('victim')).json, { status: 'ISSUED' }, 'HELD is settled');
      assert.equal(await server.redis.client.hexists(server.redis.keys.campaign(id).held, 'victim'), 0);
      const copies = (await kafka.readAll(kafka.topics.issuances)).filter((r) => r.key === String(id) && r.value?.includes('"victim"'));
      assert.equal(copies.length, 2, 'the original record and one replay');
      assert.deepEqual(await h.letters(), [], 'a replayed dead letter is never listed again');
      const again = await h.admin('replay', { couponId: id, ids: [letter!.id] });
      assert.deepEqual(again.json, { replayed: [], notFound: [letter!.id], refused: [] });
      auditLedger(ledger, (await issuedRows(server.db, id)).users);
    } finally {
      await server.close();
    }
  });

  it('discards dead letters: a refused admission gives its seat back (the user issues again), a truncated one is refused for replay, both listed as discarded', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    const ledger = new Ledger();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 2, strategy: STRATEGY });
      const h = kafkaHarness(server, id, ledger);
      const keys = server.redis.keys.campaign(id);
      const unrefuse = await refuseInsertsOf(server.db, 'victim', 'refused for the test');
      try {
        await server.startKafkaWorker('k-discard');
        assert.equal((await h.issue('victim')).status, 202);
        assert.equal((await h.issue('fine')).status, 202);
        assert.equal((await h.issue('late')).status, 410);
        // A record too large to keep whole: its dead letter keeps only the first 64 KiB.
        const producer = new Producer({ clientId: 'oversized', bootstrapBrokers: [broker()!.brokers], serializers: stringSerializers });
        await producer.send({ messages: [{ topic: server.topic, key: String(id), value: JSON.stringify({ c: String(id), u: 'x'.repeat(70_000), t: String(Date.now()) }) }] });
        await producer.close();
        await waitForRows(server, id, 1);
        await waitFor('two dead letters', async () => (await h.letters()).length === 2);
        await waitFor('the victim HELD', async () => ((await h.status('victim')).json as { status?: string } | undefined)?.status === 'HELD');
        const letters = await h.letters();
        const refused = letters.find((d) => d.entry.u === 'victim');
        const truncated = letters.find((d) => d.truncated === true);
        assert.ok(refused !== undefined && truncated !== undefined, JSON.stringify(letters.map((d) => ({ ...d, entry: {} }))));

        const replay = await h.admin('replay', { couponId: id, ids: [truncated.id] });
        assert.deepEqual(replay.json, { replayed: [], notFound: [], refused: [{ id: truncated.id, reason: 'truncated' }] }, replay.text);
        assert.equal((await h.letters('&state=held')).length, 2, 'a refused replay changes nothing');
        assert.equal(await server.redis.client.hget(keys.state, 'issued'), '2');

        const discard = await h.admin('discard', { couponId: id, ids: [refused.id, truncated.id] });
        assert.equal(discard.status, 200, discard.text);
        assert.deepEqual((discard.json as { discarded: unknown[] }).discarded, [
          { id: refused.id, released: true },
          { id: truncated.id, released: false },
        ], 'the refused admission held a seat; the invalid record none');
        assert.equal(await server.redis.client.hget(keys.state, 'issued'), '1', 'one seat given back');
        assert.equal((await h.status('victim')).status, 404, 'no longer HELD: NOT_ISSUED');
        assert.deepEqual(await h.letters('&state=held'), [], 'never listed as live again');
        const listed = await h.letters();
        assert.deepEqual(listed.map((d) => [d.id, d.state]).sort(), [[refused.id, 'discarded'], [truncated.id, 'discarded']].sort());
        assert.ok(listed.every((d) => d.settledAt !== undefined && Date.parse(d.settledAt) > 0), JSON.stringify(listed.map((d) => d.settledAt)));
        const twice = await h.admin('discard', { couponId: id, ids: [refused.id] });
        assert.deepEqual(twice.json, { discarded: [], notFound: [refused.id], refused: [] });
        assert.equal(await server.redis.client.hget(keys.state, 'issued'), '1', 'a second discard releases nothing');
      } finally {
        await unrefuse();
      }
      assert.equal((await h.issue('victim')).status, 202, 'the released seat is issuable again');
      assert.equal((await h.issue('late')).status, 410);
      await waitForRows(server, id, 2);
      assert.deepEqual((await h.status('victim')).json, { status: 'ISSUED' });
      auditLedger(ledger, (await issuedRows(server.db, id)).users);
    } finally {
      await server.close();
    }
  });

  it('persists a backlog exactly once when a worker process is killed with kill -9 mid-batch', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!, { WORKER_BATCH_SIZE: '50', WORKER_LINGER_MS: '0' });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 400, strategy: STRATEGY });
      const answers = await issueAll(server, id, usersRange(0, 400), 32);
      assert.equal(withStatus(answers, 202).length, 400);
      const env = { ...server.workerEnv, KAFKA_BROKERS: broker()!.brokers, KAFKA_TOPIC: server.topic, KAFKA_RECORD_SECRET: RECORD_SECRET, WORKER_BATCH_SIZE: '50', WORKER_LINGER_MS: '0', LOG_LEVEL: 'warn' };
      const victim = spawnWorker(env, 'victim');
      await waitFor('the victim wrote part of the backlog', async () => (await issuedRows(server.db, id)).rows > 0, 60_000, );
      victim.kill('SIGKILL');
      await exited(victim);
      const partial = (await issuedRows(server.db, id)).rows;
      const heir = spawnWorker(env, 'heir');
      try {
        await waitForRows(server, id, 400, 90_000);
      } finally {
        heir.kill('SIGTERM');
        await exited(heir);
      }
      const db = await issuedRows(server.db, id);
      assert.equal(db.distinctUsers, 400, `no user twice (victim had written ${partial})`);
      assert.equal(db.counter, 400, 'issued_quantity counts each row once');
      assert.deepEqual(new Set(db.users), new Set(withStatus(answers, 202)));
    } finally {
      await server.close();
    }
  });
});

describe('couponrush reconcile on redis-lua-kafka campaigns', () => {
  it('frees an old seat no record backs, keeps one whose record landed, and leaves a young one alone', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    try {
      const { id } = await server.createCoupon({ totalQuantity: 10, strategy: STRATEGY });
      const keys = server.redis.keys.campaign(id);
      const now = Date.now();
      // Three admissions that were never acknowledged: 'died' (the API died before producing),
      // 'landed' (the produce timed out but its record is in the log), 'young' (still in flight).
      assert.deepEqual(
        (await server.redis.scripts.admitProduce(keys, ['died', 'landed', 'young'].map((userId) => ({ userId, nowMs: now, requestId: '' })))).map((o) => (typeof o === 'string' ? o : o.kind)),
        ['ACCEPTED', 'ACCEPTED', 'ACCEPTED'],
      );
      const old = now - 10 * 60_000;
      await server.redis.client.zadd(keys.producing, old, 'died', old, 'landed');
      const producer = new Producer({ clientId: 'landed', bootstrapBrokers: [broker()!.brokers], serializers: stringSerializers });
      const value = JSON.stringify({ c: String(id), u: 'landed', t: String(now), r: '' });
      await producer.send({ messages: [{ topic: server.topic, key: String(id), value, headers: new Map([[AUTH_HEADER, signRecord(RECORD_SECRET, String(id), value)]]) }] });
      await producer.close();

      const status = (user: string) => request(server.url, 'GET', `/coupons/${id}/issues/me`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
      const unconfirmed = await status('young');
      assert.equal(unconfirmed.status, 503, 'a seat Kafka has not confirmed is not called PENDING');
      assert.equal((unconfirmed.json as { code?: string }).code, 'OUTCOME_UNKNOWN');
      const strategies = reconciledStrategies();
      const options = { strategies, kafka: server.runtime.kafka, couponId: id };
      const [drift] = await reconcile(server.db, server.redis, { ...options, repair: false });
      assert.equal(drift?.status, 'DRIFT');
      assert.ok(drift.problems.some((p) => p.includes('never produced') && p.includes('died')), drift.problems.join('\n'));
      assert.equal(drift.producing, 3);

      const [repaired] = await reconcile(server.db, server.redis, { ...options, repair: true });
      assert.equal(repaired?.repaired, true);
      assert.equal(await server.redis.client.sismember(keys.users, 'died'), 0, 'the seat no record backs is free');
      assert.equal(await server.redis.client.sismember(keys.users, 'landed'), 1, 'the landed one keeps its seat');
      assert.equal(await server.redis.client.sismember(keys.users, 'young'), 1, 'a produce still in flight keeps its seat');
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '2');
      assert.deepEqual((await server.redis.client.zrange(keys.producing, 0, -1)).sort(), ['young'], 'the landed mark is settled');
      assert.equal((await status('landed')).json && ((await status('landed')).json as { status?: string }).status, 'PENDING', 'its record is on the topic');
      assert.equal((await status('died')).status, 404, 'the freed seat holds nothing');

      const [ok] = await reconcile(server.db, server.redis, { ...options, repair: false });
      assert.equal(ok?.status, 'OK', ok?.problems.join('\n'));

      await server.startKafkaWorker('k-reconcile');
      await waitForRows(server, id, 1);
      assert.deepEqual((await issuedRows(server.db, id)).users, ['landed']);
    } finally {
      await server.close();
    }
  });
});

describe('issued-coupon events (KAFKA_EVENTS=on, real Kafka broker)', () => {
  it('publishes exactly the persisted rows of every strategy, keyed couponId:userId, after the commit', async (t) => {
    if (!(await needKafka(t))) return;
    const eventsTopic = `crtest-events-${randomBytes(4).toString('hex')}`;
    const server = await startKafkaServer(broker()!, { KAFKA_EVENTS: 'on', KAFKA_EVENTS_TOPIC: eventsTopic });
    const kafka = server.runtime.kafka!;
    const publisher = await startEventPublisher({ db: server.db, kafka, topic: eventsTopic, log: silent });
    try {
      await server.startWorker('w-events');
      await server.startKafkaWorker('k-events');
      const campaigns: Array<{ id: number; strategy: string; queued: boolean }> = [];
      for (const [strategy, queued] of [['db-atomic', false], ['db-batch', false], ['redis-lua-async', true], [STRATEGY, true]] as const) {
        const { id } = await server.createCoupon({ totalQuantity: 40, strategy });
        campaigns.push({ id, strategy, queued });
        await stampede(server, id, 80, 160, 32);
        await waitForRows(server, id, 40);
      }
      await waitFor('the outbox is empty', async () => (await eventCapture(server.db)).pending === 0, 30_000);
      const records = await kafka.readAll(eventsTopic);
      for (const c of campaigns) {
        const rows = await server.db.query<{ user_id: string; issued_at: Date }>(`SELECT user_id, issued_at FROM coupon_issues WHERE coupon_id = ${c.id}`);
        const issuedAt = new Map(rows.rows.map((r) => [r.user_id, new Date(r.issued_at).toISOString()]));
        const events = records.filter((r) => r.key?.startsWith(`${c.id}:`));
        const keys = new Set(events.map((r) => r.key));
        assert.deepEqual(keys, new Set([...issuedAt.keys()].map((u) => `${c.id}:${u}`)), `${c.strategy}: one key per persisted row, none for a refusal`);
        for (const r of events) {
          const e = JSON.parse(r.value ?? '') as { couponId: number; userId: string; issuedAt: string; requestId: string | null };
          assert.equal(r.key, `${e.couponId}:${e.userId}`);
          assert.equal(e.issuedAt, issuedAt.get(e.userId), `${c.strategy}: issuedAt is the row's`);
          if (c.queued) assert.match(e.requestId ?? '', /.+/, `${c.strategy}: the request id travelled through the queue`);
        }
      }
      assert.equal(publisher.published, records.length, 'what the publisher counted is on the topic');
    } finally {
      await publisher.stop();
      await server.close();
      await deleteKafkaTopics(broker()!.brokers, [eventsTopic]).catch(() => undefined);
    }
  });
});
