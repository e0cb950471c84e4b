// The issuance topic written to by a hostile writer, on a private broker: oversized records in
// every field, forged and unsigned admissions, a key that names another campaign, duplicates, a
// record for a sold-out campaign, dead letters followed by a rebuild and `reconcile`, and a worker
// stopped while a store holds its batch. Every answer the API gives is kept in a ledger and
// audited against the rows: every 202 becomes a row, no forged or invalid record takes a seat or
// becomes a row, and the worker stays up.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { Admin, Producer, stringSerializers } from '@platformatic/kafka';
import { reconcile } from '../src/coupons/reconcile.js';
import { reconciledStrategies } from '../src/coupons/strategies/index.js';
import { ensureTopics, type KafkaHandle } from '../src/kafka/client.js';
import { DEAD, liveDeadLetters } from '../src/kafka/dead-letters.js';
import { AUTH_HEADER, MAX_RECORD_VALUE_BYTES, signRecord } from '../src/kafka/records.js';
import { Ledger } from './fault-helpers.js';
import { issuedRows, request } from './helpers.js';
import { brokerForFile, needKafka, RECORD_SECRET, startKafkaServer, STRATEGY, waitForRows, type KafkaServer } from './kafka-helpers.js';
import { deleteKeys, exited, spawnWorker, usersRange, waitFor } from './redis-helpers.js';

// One broker for the file (the fault tests start private ones of their own).
const broker = brokerForFile();

interface Raw {
  readonly key: string;
  readonly value: string;
  readonly headers?: Map<string, string>;
}

/** Writes records to the topic as anyone with write access could (not through the API). */
async function write(topic: string, records: readonly Raw[]): Promise<void> {
  const producer = new Producer({ clientId: 'hostile', bootstrapBrokers: [broker()!.brokers], serializers: stringSerializers });
  try {
    for (const r of records) await producer.send({ messages: [{ topic, key: r.key, value: r.value, headers: r.headers ?? new Map() }] });
  } finally {
    await producer.close();
  }
}

/** A record signed with `secret` (the suite's own, unless a forger guesses another). */
function signed(key: string, fields: Record<string, string>, secret = RECORD_SECRET): Raw {
  const value = JSON.stringify(fields);
  return { key, value, headers: new Map([[AUTH_HEADER, signRecord(secret, key, value)]]) };
}

/** Issues through the API for each user, recording every answer. */
async function issue(server: KafkaServer, couponId: number, users: readonly string[], ledger: Ledger): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await Promise.all(
    users.map(async (user) => {
      const res = await request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
      ledger.record(user, { status: res.status, code: (res.json as { code?: string } | undefined)?.code ?? '', at: performance.now() });
      out.set(user, res.status);
    }),
  );
  return out;
}

async function statusOf(server: KafkaServer, couponId: number, user: string): Promise<{ status: number; body: string }> {
  const res = await request(server.url, 'GET', `/coupons/${couponId}/issues/me`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
  return { status: res.status, body: ((res.json as { status?: string; code?: string } | undefined)?.status ?? (res.json as { code?: string } | undefined)?.code) ?? '' };
}

function kafkaOf(server: KafkaServer): KafkaHandle {
  const kafka = server.runtime.kafka;
  if (kafka === undefined) throw new Error('no Kafka');
  return kafka;
}

/** Every 202 of the ledger is a row, nobody refused has one, and the stock holds. */
async function assertExact(server: KafkaServer, couponId: number, ledger: Ledger, stock: number): Promise<string[]> {
  const db = await issuedRows(server.db, couponId);
  const audit = ledger.audit(db.users);
  assert.deepEqual(audit.lost, [], 'every 202 has a row');
  assert.deepEqual(audit.unexpected, [], 'no row for a user who was refused');
  assert.equal(audit.internalErrors, 0);
  assert.ok(db.rows <= stock, `never over the stock: ${db.rows} > ${stock}`);
  assert.equal(db.distinctUsers, db.rows, 'no user twice');
  assert.equal(db.counter, db.rows, 'issued_quantity counts each row once');
  return db.users;
}

const now = () => String(Date.now());

describe('the issuance topic under a hostile writer (private broker, real Redis and PostgreSQL)', () => {
  it('dead-letters oversized records in every field, bounded, and persists every 202 before and after them', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    try {
      const worker = await server.startKafkaWorker('k-big');
      const { id } = await server.createCoupon({ totalQuantity: 200, strategy: STRATEGY });
      const key = String(id);
      const ledger = new Ledger();
      const first = await issue(server, id, usersRange(0, 50), ledger);
      assert.deepEqual([...new Set(first.values())], [202]);
      const huge = 'x'.repeat(700_000);
      const hostile: Raw[] = [
        { key, value: JSON.stringify({ c: key, u: huge, t: now(), r: '' }) }, // user id of 700 KB, unsigned
        signed(key, { c: key, u: huge, t: now(), r: '' }), // the same, signed: still over the size an issuance has
        { key: 'k'.repeat(100_000), value: JSON.stringify({ c: key, u: 'big-key', t: now(), r: '' }) },
        { key, value: 'z'.repeat(900_000) },
        { key, value: JSON.stringify({ c: key, u: 'big-auth', t: now(), r: '' }), headers: new Map([[AUTH_HEADER, `v1.${'a'.repeat(200_000)}`]]) },
        signed(key, { c: key, u: 'big-request-id', t: now(), r: 'r'.repeat(60_000) }),
        signed(key, { c: key, u: 'big-time', t: '9'.repeat(50_000), r: '' }),
      ];
      await write(server.topic, hostile);
      const second = await issue(server, id, usersRange(50, 100), ledger);
      assert.deepEqual([...new Set(second.values())], [202]);
      const started = performance.now();
      await waitForRows(server, id, 100, 30_000);
      t.diagnostic(`the 50 202s after ${hostile.length} oversized records were rows ${Math.round(performance.now() - started)} ms after the last answer`);
      await assertExact(server, id, ledger, 200);
      assert.equal((await statusOf(server, id, 'user-99')).body, 'ISSUED');

      // A batch's dead letters go out after its rows commit: wait for them too.
      let raw: Awaited<ReturnType<KafkaHandle['readAll']>> = [];
      await waitFor('a dead letter per hostile record', async () => (raw = await kafkaOf(server).readAll(kafkaOf(server).topics.dead)).length >= hostile.length, 30_000);
      assert.equal(raw.length, hostile.length, `one dead letter per hostile record: ${raw.length}`);
      for (const r of raw) {
        const value = Buffer.byteLength(r.value ?? '');
        assert.ok(value <= MAX_RECORD_VALUE_BYTES, `a dead letter's value is at most 64 KiB: ${value}`);
        const reason = r.headers.get(DEAD.reason) ?? '';
        assert.ok(reason.length > 0 && reason.length <= 1024, `the reason is at most 1 KiB: ${reason.length}`);
        assert.ok(!reason.includes('x'.repeat(1_000)) && !reason.includes('r'.repeat(1_000)) && !reason.includes('9'.repeat(1_000)), 'the reason never repeats a field whole');
        let headerBytes = 0;
        for (const [k, v] of r.headers) headerBytes += k.length + v.length;
        assert.ok(headerBytes <= 4_096, `the headers are bounded: ${headerBytes} bytes`);
        assert.equal(r.headers.get(DEAD.kind), 'invalid');
      }
      const letters = await liveDeadLetters(kafkaOf(server));
      const cut = letters.filter((d) => d.truncated);
      assert.equal(cut.length, 3, 'the three values over 64 KiB are kept cut, with their digest');
      assert.ok(cut.some((d) => d.digest === createHash('sha256').update('z'.repeat(900_000)).digest('hex')), 'the digest is of the whole source value');
      assert.ok(letters.every((d) => d.couponId === id || d.sourceKey.length <= 256), 'a long source key is kept cut');
      assert.equal(worker.deadLettered, hostile.length);
    } finally {
      await server.close();
    }
  });

  it("sends a dead letter the broker refuses for its size again without the value, and moves on", async (t) => {
    if (!(await needKafka(t))) return;
    // The dead-letter topic takes records of at most 10,000 bytes: a 40 KB value is refused.
    const topic = `crtest-small-${Date.now().toString(36)}`;
    const admin = new Admin({ clientId: 'hostile-admin', bootstrapBrokers: [broker()!.brokers] });
    await admin.createTopics({ topics: [`${topic}.dead`], partitions: 1, replicas: 1, configs: [{ name: 'max.message.bytes', value: '10000' }] });
    await admin.close();
    const server = await startKafkaServer(broker()!, { KAFKA_TOPIC: topic });
    try {
      await server.startKafkaWorker('k-small-dlq');
      const { id } = await server.createCoupon({ totalQuantity: 10, strategy: STRATEGY });
      const ledger = new Ledger();
      const value = JSON.stringify({ c: String(id), u: 'y'.repeat(40_000), t: now(), r: '' });
      await write(server.topic, [{ key: String(id), value }]);
      const answers = await issue(server, id, ['after-refusal'], ledger);
      assert.deepEqual([...answers.values()], [202]);
      await waitForRows(server, id, 1, 30_000);
      await assertExact(server, id, ledger, 10);
      await waitFor('the bare dead letter', async () => (await liveDeadLetters(kafkaOf(server))).length >= 1, 30_000);
      const letters = await liveDeadLetters(kafkaOf(server));
      assert.equal(letters.length, 1);
      assert.equal(letters[0]?.truncated, true, 'the dead letter keeps no value');
      assert.equal(letters[0]?.value, '');
      assert.equal(letters[0]?.digest, createHash('sha256').update(value).digest('hex'));
    } finally {
      await server.close();
    }
  });

  it("persists only the API's records: forged, unsigned, re-keyed and duplicated ones take no seat and no row", async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    try {
      await server.startKafkaWorker('k-forged');
      const { id } = await server.createCoupon({ totalQuantity: 3, strategy: STRATEGY });
      const other = await server.createCoupon({ totalQuantity: 3, strategy: STRATEGY });
      const key = String(id);
      // Written before the real users: if any of them took a seat, a real 202 would be refused by
      // the over-issue CHECK and lost.
      await write(server.topic, [
        { key, value: JSON.stringify({ c: key, u: 'intruder', t: now() }) },
        signed(key, { c: key, u: 'forger', t: now(), r: '' }, 'a-guess-that-is-not-the-secret-0123456789'),
        signed(String(other.id), { c: key, u: 're-keyed', t: now(), r: '' }),
        { key, value: JSON.stringify({ c: key, u: 'stale-auth', t: now(), r: '' }), headers: new Map([[AUTH_HEADER, signRecord(RECORD_SECRET, key, '{}')]]) },
      ]);
      const ledger = new Ledger();
      const real = await issue(server, id, ['alice', 'bob', 'carol'], ledger);
      assert.deepEqual([...real.values()], [202, 202, 202]);
      await waitForRows(server, id, 3, 30_000);
      // A copy of a real record, headers and all, is a duplicate: still one row.
      const copy = (await kafkaOf(server).readAll(server.topic)).find((r) => r.value?.includes('"alice"'));
      assert.ok(copy !== undefined && copy.key !== undefined && copy.value !== undefined);
      await write(server.topic, [{ key: copy.key, value: copy.value, headers: new Map(copy.headers) }]);
      const late = await issue(server, id, ['dave'], ledger);
      assert.deepEqual([...late.values()], [410], 'the stock went to the three real users');
      await waitFor('the four hostile records dead-lettered', async () => (await liveDeadLetters(kafkaOf(server))).length === 4, 30_000);
      const users = await assertExact(server, id, ledger, 3);
      assert.deepEqual(users.sort(), ['alice', 'bob', 'carol']);
      assert.equal((await issuedRows(server.db, other.id)).rows, 0, 're-keyed: the other campaign got nothing either');
      const reasons = (await liveDeadLetters(kafkaOf(server))).map((d) => d.reason).join('\n');
      assert.match(reasons, /unsigned/);
      assert.match(reasons, /forged/);
      assert.match(reasons, /field c is/);
      for (const u of ['alice', 'bob', 'carol']) assert.equal((await statusOf(server, id, u)).body, 'ISSUED');
      assert.equal((await statusOf(server, id, 'intruder')).status, 404, 'the intruder holds nothing');
    } finally {
      await server.close();
    }
  });

  it('never persists a signed record past the stock, and keeps going', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!, { WORKER_MAX_DELIVERIES: '2' });
    try {
      await server.startKafkaWorker('k-soldout');
      const { id } = await server.createCoupon({ totalQuantity: 2, strategy: STRATEGY });
      const ledger = new Ledger();
      assert.deepEqual([...(await issue(server, id, ['s1', 's2'], ledger)).values()], [202, 202]);
      await waitForRows(server, id, 2, 30_000);
      // Signed with the real secret, as if the secret had leaked: the database's CHECK still holds.
      await write(server.topic, [signed(String(id), { c: String(id), u: 'past-stock', t: now(), r: '' })]);
      const next = await server.createCoupon({ totalQuantity: 5, strategy: STRATEGY });
      const nextLedger = new Ledger();
      assert.deepEqual([...(await issue(server, next.id, ['n1'], nextLedger)).values()], [202]);
      await waitForRows(server, next.id, 1, 30_000);
      await waitFor('the record past the stock dead-lettered as refused', async () => (await liveDeadLetters(kafkaOf(server))).some((d) => d.kind === 'refused'), 30_000);
      await assertExact(server, id, ledger, 2);
      await assertExact(server, next.id, nextLedger, 5);
      assert.equal((await issuedRows(server.db, id)).rows, 2);
    } finally {
      await server.close();
    }
  });

  it('counts no invalid dead letter as a seat when the state is rebuilt, in reconcile, or after --repair', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!);
    try {
      await server.startKafkaWorker('k-rebuild');
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: STRATEGY });
      const key = String(id);
      const early = String(Date.now() - 3_600_000);
      // Five signed records admitted before the window opened (and one unsigned): dead letters, no seats.
      await write(server.topic, [...usersRange(0, 5, 'ghost').map((u) => signed(key, { c: key, u, t: early, r: '' })), { key, value: JSON.stringify({ c: key, u: 'ghost-x', t: now(), r: '' }) }]);
      await waitFor('six dead letters', async () => (await liveDeadLetters(kafkaOf(server))).length === 6, 30_000);
      const options = { strategies: reconciledStrategies(), kafka: kafkaOf(server), couponId: id };
      const [report] = await reconcile(server.db, server.redis, { ...options, repair: false });
      assert.equal(report?.status, 'OK', `reconcile lists no dead-lettered user as admitted: ${report?.problems.join('\n')}`);

      // Redis loses the campaign: the rebuilt state counts rows and valid records only.
      assert.ok((await deleteKeys(server.prefix)) > 0);
      const ledger = new Ledger();
      const real = await issue(server, id, usersRange(0, 5, 'real'), ledger);
      assert.deepEqual([...new Set(real.values())], [202], `after the rebuild the five seats are free: ${JSON.stringify([...real])}`);
      await waitForRows(server, id, 5, 30_000);
      await assertExact(server, id, ledger, 5);

      const [repaired] = await reconcile(server.db, server.redis, { ...options, repair: true });
      assert.equal(repaired?.status, 'OK', repaired?.problems.join('\n'));
      assert.equal(await server.redis.client.hget(server.redis.keys.campaign(id).state, 'issued'), '5');
    } finally {
      await server.close();
    }
  });

  it('commits nothing past a batch a store holds when the worker is stopped; after a restart every 202 is a row', async (t) => {
    if (!(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!, { WORKER_LINGER_MS: '1000' });
    const kafka = kafkaOf(server);
    try {
      const { id } = await server.createCoupon({ totalQuantity: 10, strategy: STRATEGY });
      const key = String(id);
      const worker = spawnWorker({ ...server.workerEnv, LOG_LEVEL: 'warn' }, 'k-held');
      try {
        const ledger = new Ledger();
        assert.deepEqual([...(await issue(server, id, ['warm-up'], ledger)).values()], [202]);
        await waitForRows(server, id, 1, 30_000);
        // The dead-letter topic goes away (the worker created it at start-up if absent): a
        // poison record's batch is held until it is back.
        const admin = new Admin({ clientId: 'hostile-admin', bootstrapBrokers: [broker()!.brokers] });
        await admin.deleteTopics({ topics: [kafka.topics.dead] });
        await admin.close();
        // The poison record and A share one batch (linger 1 s); B comes in a later one.
        await write(server.topic, [{ key, value: 'poison' }]);
        assert.deepEqual([...(await issue(server, id, ['held-a'], ledger)).values()], [202]);
        await new Promise((r) => setTimeout(r, 2_500));
        assert.deepEqual([...(await issue(server, id, ['held-b'], ledger)).values()], [202]);
        await new Promise((r) => setTimeout(r, 1_500));
        // A's row is written before its batch's dead letters are sent; B's batch waits behind it.
        assert.deepEqual((await issuedRows(server.db, id)).users.sort(), ['held-a', 'warm-up'], 'the batch is held at its dead letter');
        worker.kill('SIGTERM');
        const exit = await exited(worker);
        assert.equal(exit.code, 0, `the worker drained and exited: ${JSON.stringify(exit)}`);
        const unconsumed = (await kafka.unconsumed()).map((r) => r.value ?? '');
        assert.ok(unconsumed.includes('poison') && unconsumed.some((v) => v.includes('held-a')) && unconsumed.some((v) => v.includes('held-b')), 'no offset past the held batch was committed');

        await ensureTopics(kafka.settings, [kafka.topics.dead]);
        await server.startKafkaWorker('k-after-held');
        await waitForRows(server, id, 3, 30_000);
        await assertExact(server, id, ledger, 10);
        // Had B's offset been committed, the poison record would never be read again.
        await waitFor('the poison record dead-lettered', async () => (await liveDeadLetters(kafka)).length === 1, 30_000);
      } finally {
        if (worker.exitCode === null && worker.signalCode === null) worker.kill('SIGKILL');
      }
    } finally {
      await server.close();
    }
  });
});
