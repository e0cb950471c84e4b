// Dead letters of the Redis streams through real HTTP, on real PostgreSQL and real Redis: a user
// whose issuance was dead-lettered hears HELD; a replay settles it; a discard gives the seat and
// the admission back (the user may issue again, a cached sold-out flag does not keep refusing)
// and stays listed as discarded; racing replays of one id replay it once; a request with one id
// out of range is refused whole. Every answer is recorded and checked against the rows.
import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { Ledger } from './fault-helpers.js';
import { issuedRows, needDatabase, needServer, refuseInsertsOf, request, type Response } from './helpers.js';
import { REDIS_URL, startRedisTestServer, waitFor, waitForDrain, type RedisTestServer } from './redis-helpers.js';

async function servers(t: TestContext): Promise<boolean> {
  return (await needDatabase(t, 'postgres')) && (await needServer(t, 'Redis', REDIS_URL));
}

interface Letter {
  id: string;
  couponId: number;
  reason: string;
  state: 'held' | 'discarded';
  settledAt?: string;
  entry: Record<string, string>;
}

/** Every answer the test got (for the failure message); the issue answers also go to the shared ledger. */
class Answers {
  readonly all: Array<{ user: string; what: string; status: number; body: unknown }> = [];
  readonly ledger = new Ledger();

  record(user: string, what: string, res: Response): Response {
    this.all.push({ user, what, status: res.status, body: res.json ?? res.text });
    if (what === 'issue') this.ledger.record(user, { status: res.status, code: (res.json as { code?: string } | undefined)?.code, at: performance.now() });
    return res;
  }

  /** Every 202 became a row except those still `held` by a dead letter, no row without one, no 409 without a row. */
  audit(rows: readonly string[], held: readonly string[] = []): void {
    const audit = this.ledger.audit(rows);
    const lost = audit.lost.map((c) => c.user).sort();
    assert.deepEqual({ lost, unexpected: audit.unexpected, falseDuplicates: audit.falseDuplicates }, { lost: [...held].sort(), unexpected: [], falseDuplicates: [] }, `${this}`);
  }

  toString(): string {
    return this.all.map((a) => `${a.user} ${a.what} → ${a.status} ${JSON.stringify(a.body)}`).join('\n');
  }
}

function harness(server: RedisTestServer, couponId: number, answers: Answers) {
  const as = (user: string) => ({ authorization: `Bearer ${server.tokenFor(user)}` });
  return {
    issue: async (user: string) => answers.record(user, 'issue', await request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: as(user) })),
    status: async (user: string) => answers.record(user, 'status', await request(server.url, 'GET', `/coupons/${couponId}/issues/me`, { headers: as(user) })),
    letters: async (query = ''): Promise<Letter[]> => {
      const res = await request(server.url, 'GET', `/admin/dead-letters?couponId=${couponId}${query}`, { headers: server.adminHeaders });
      assert.equal(res.status, 200, res.text);
      return (res.json as { items: Letter[] }).items;
    },
    admin: async (action: 'replay' | 'discard', body: unknown) => answers.record('admin', action, await request(server.url, 'POST', `/admin/dead-letters/${action}`, { headers: server.adminHeaders, json: body })),
  };
}

/** 'victim' is admitted (202) and dead-lettered: the database refuses their row until `fix()`. */
async function deadLetterVictim(server: RedisTestServer, h: ReturnType<typeof harness>): Promise<{ fix: () => Promise<void>; letter: Letter | undefined }> {
  const fix = await refuseInsertsOf(server.db, 'victim', 'refused for the test');
  await server.startWorker('w1');
  assert.equal((await h.issue('victim')).status, 202);
  await waitFor('the victim dead-lettered', async () => (await h.letters()).length === 1);
  const [letter] = await h.letters();
  return { fix, letter };
}

describe('dead letters of the Redis streams (admin routes, status HELD)', () => {
  it('says HELD for a dead-lettered issuance; a discard releases its seat (the user gets 202 again, past a cached sold-out) and stays listed as discarded', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    const answers = new Answers();
    let fix: (() => Promise<void>) | undefined;
    try {
      const { id } = await server.createCoupon({ totalQuantity: 2, strategy: 'redis-lua-async-cached' });
      const h = harness(server, id, answers);
      fix = await refuseInsertsOf(server.db, 'victim', 'refused for the test');
      await server.startWorker('w1');
      assert.equal((await h.issue('victim')).status, 202);
      assert.equal((await h.issue('fine')).status, 202);
      assert.equal((await h.issue('late')).status, 410, 'the stock is gone: the cached variant now knows it');
      await waitFor('the victim dead-lettered', async () => (await h.letters()).length === 1);
      await waitForDrain(server, id, 1);
      const [letter] = await h.letters();
      assert.equal(letter?.state, 'held');
      assert.equal(letter?.entry.u, 'victim');
      assert.deepEqual((await h.status('victim')).json, { status: 'HELD' }, 'told the truth, not PENDING');
      assert.deepEqual((await h.status('fine')).json, { status: 'ISSUED' });
      const keys = server.redis.keys.campaign(id);
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '2');

      const discard = await h.admin('discard', { couponId: id, ids: [letter!.id] });
      assert.equal(discard.status, 200, discard.text);
      assert.deepEqual(discard.json, { discarded: [{ id: letter!.id, released: true }], notFound: [], refused: [] });
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '1', 'the seat is given back');
      assert.equal(await server.redis.client.sismember(keys.users, 'victim'), 0, 'and the admission');
      assert.equal((await h.status('victim')).status, 404, 'no longer HELD: NOT_ISSUED');
      const listed = await h.letters();
      assert.equal(listed.length, 1);
      assert.equal(listed[0]!.state, 'discarded');
      assert.equal(listed[0]!.id, letter!.id);
      assert.ok(listed[0]!.settledAt !== undefined && Date.parse(listed[0]!.settledAt) > 0, JSON.stringify(listed));
      assert.deepEqual(await h.letters('&state=held'), []);
      assert.equal((await h.admin('discard', { couponId: id, ids: [letter!.id] })).json !== undefined, true);
      assert.deepEqual(answers.all.at(-1)?.body, { discarded: [], notFound: [letter!.id], refused: [] }, 'a second discard finds nothing');
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '1', 'and releases nothing');

      // The released seat is issuable again: by the refused user (once the cause is gone) and not
      // refused by the instance's cached sold-out flag (the discard invalidated it).
      await fix();
      fix = undefined;
      await waitFor('the victim issues again', async () => (await h.issue('victim')).status === 202, 5_000);
      assert.equal((await h.issue('late')).status, 410, 'one seat was released, and it is taken');
      await waitForDrain(server, id, 2);
      assert.deepEqual((await h.status('victim')).json, { status: 'ISSUED' });

      const db = await issuedRows(server.db, id);
      answers.audit(db.users);
      assert.equal(db.counter, 2);
    } finally {
      await fix?.();
      await server.close();
    }
  });

  it('a replay settles HELD; ten racing replays of one id replay it once', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    const answers = new Answers();
    let fix: (() => Promise<void>) | undefined;
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
      const h = harness(server, id, answers);
      let letter: Letter | undefined;
      ({ fix, letter } = await deadLetterVictim(server, h));
      assert.deepEqual((await h.status('victim')).json, { status: 'HELD' });
      await fix();
      fix = undefined;

      const keys = server.redis.keys.campaign(id);
      const before = await server.redis.client.xlen(keys.stream);
      const replays = await Promise.all(Array.from({ length: 10 }, () => h.admin('replay', { couponId: id, ids: [letter!.id] })));
      assert.ok(replays.every((r) => r.status === 200), `${answers}`);
      const bodies = replays.map((r) => r.json as { replayed: Array<{ id: string }>; notFound: string[] });
      assert.equal(bodies.filter((b) => b.replayed.length === 1).length, 1, `exactly one replay:\n${answers}`);
      assert.equal(bodies.filter((b) => b.notFound.length === 1).length, 9, 'the others find nothing');
      assert.ok((await server.redis.client.xlen(keys.stream)) <= before + 1, 'one entry went back on the stream');
      await waitForDrain(server, id, 1);
      assert.deepEqual((await h.status('victim')).json, { status: 'ISSUED' }, 'HELD is settled');
      assert.equal(await server.redis.client.hexists(keys.held, 'victim'), 0);
      assert.deepEqual(await h.letters(), [], 'a replayed one is not listed');
      const db = await issuedRows(server.db, id);
      answers.audit(db.users);
      assert.equal(db.counter, 1);
    } finally {
      await fix?.();
      await server.close();
    }
  });

  it('refuses a request with one id out of range (400 naming it) and replays or discards none of its ids', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    const answers = new Answers();
    let fix: (() => Promise<void>) | undefined;
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
      const h = harness(server, id, answers);
      let letter: Letter | undefined;
      ({ fix, letter } = await deadLetterVictim(server, h));
      await fix();
      fix = undefined;

      for (const action of ['replay', 'discard'] as const) {
        const res = await h.admin(action, { couponId: id, ids: [letter!.id, '99999999999999999999-0'] });
        assert.equal(res.status, 400, res.text);
        const problem = res.json as { code: string; errors?: Array<{ pointer: string }> };
        assert.equal(problem.code, 'VALIDATION_FAILED');
        assert.deepEqual(problem.errors?.map((e) => e.pointer), ['#/ids/1'], res.text);
        assert.equal(res.headers['content-type'], 'application/problem+json; charset=utf-8');
        const malformed = await h.admin(action, { couponId: id, ids: [letter!.id, '1-x'] });
        assert.equal(malformed.status, 400, malformed.text);
        assert.equal((malformed.json as { code: string }).code, 'VALIDATION_FAILED');
      }
      // In range at its edge: a valid id, simply not found.
      const edge = await h.admin('replay', { couponId: id, ids: ['18446744073709551615-18446744073709551615'] });
      assert.deepEqual(edge.json, { replayed: [], notFound: ['18446744073709551615-18446744073709551615'], refused: [] }, edge.text);

      const [still] = await h.letters();
      assert.equal(still?.id, letter!.id, 'the good id was neither replayed nor discarded');
      assert.equal(still?.state, 'held');
      assert.deepEqual((await h.status('victim')).json, { status: 'HELD' });
      answers.audit((await issuedRows(server.db, id)).users, ['victim']);
    } finally {
      await fix?.();
      await server.close();
    }
  });

  it('a discard keeps the seat of a user who has a row (the row is the seat)', async (t) => {
    if (!(await servers(t))) return;
    const server = await startRedisTestServer();
    const answers = new Answers();
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'redis-lua-async' });
      const h = harness(server, id, answers);
      await server.startWorker('w1');
      assert.equal((await h.issue('holder')).status, 202);
      await waitForDrain(server, id, 1);
      // A dead letter for a user who already has a row (a duplicate entry, as a hand-edited stream makes).
      const keys = server.redis.keys.campaign(id);
      const deadId = await server.redis.client.xadd(keys.dead, '*', '_source', '1-1', '_reason', 'duplicate', '_deliveries', '1', '_failed', String(Date.now()), 'c', String(id), 'u', 'holder', 't', String(Date.now()), 'r', '');
      const res = await h.admin('discard', { couponId: id });
      assert.deepEqual(res.json, { discarded: [{ id: deadId, released: false }], notFound: [], refused: [] }, res.text);
      assert.equal(await server.redis.client.sismember(keys.users, 'holder'), 1);
      assert.equal(await server.redis.client.hget(keys.state, 'issued'), '1');
      assert.deepEqual((await h.status('holder')).json, { status: 'ISSUED' });
      assert.equal((await h.issue('holder')).status, 409, 'still holds it');
      const db = await issuedRows(server.db, id);
      assert.deepEqual(db.users, ['holder']);
      answers.audit(db.users);
    } finally {
      await server.close();
    }
  });
});
