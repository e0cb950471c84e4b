// The issued-coupon events' outbox (migrations 000003 on PostgreSQL, 000002 on MySQL) on every
// database: off by default; once on, the trigger records exactly the rows each strategy's insert
// committed (not a duplicate skipped, not a row undone in its own transaction), with the request
// id when the writer passed it; a publisher's claim skips rows another holds; `off` empties it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { claimIssueEvents, clearIssueEvents, deleteIssueEvents, eventCapture, insertIssues, setEventCapture } from '../src/coupons/repository.js';
import { DB_KINDS, issuedRows, needDatabase, request, startTestServer } from './helpers.js';

for (const kind of DB_KINDS) {
  describe(`the issued-coupon outbox (${kind})`, () => {
    it('captures nothing while off, then exactly the committed rows of every strategy, with request ids from the workers', async (t) => {
      if (!(await needDatabase(t, kind))) return;
      const server = await startTestServer({ db: kind });
      try {
        const db = server.db;
        const issue = (couponId: number, user: string) => request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(user)}` } });
        assert.deepEqual(await eventCapture(db), { enabled: false, pending: 0 }, 'off by default');
        const before = await server.createCoupon({ totalQuantity: 5, strategy: 'db-atomic' });
        assert.equal((await issue(before.id, 'early')).status, 201);
        assert.equal((await eventCapture(db)).pending, 0, 'an issuance while off is not captured');

        await setEventCapture(db, true);
        const expected = new Set<string>();
        for (const strategy of ['db-atomic', 'db-batch', 'db-pessimistic']) {
          const { id } = await server.createCoupon({ totalQuantity: 3, strategy });
          const users = Array.from({ length: 8 }, (_, i) => `${strategy}-${i}`);
          await Promise.all([...users, ...users].map((u) => issue(id, u)));
          for (const u of (await issuedRows(db, id)).users) expected.add(`${id}:${u}`);
        }
        // The workers' path: one insert of a batch, a request id each, one pair already there.
        const queued = await server.createCoupon({ totalQuantity: 10, strategy: 'db-atomic' });
        assert.equal((await issue(queued.id, 'holder')).status, 201);
        expected.add(`${queued.id}:holder`);
        const now = new Date();
        await db.transaction((tx) =>
          insertIssues(tx, [
            { couponId: queued.id, userId: 'w1', issuedAt: now, requestId: 'req-w1' },
            { couponId: queued.id, userId: 'w2', issuedAt: now },
            { couponId: queued.id, userId: 'holder', issuedAt: now, requestId: 'req-again' },
          ]),
        );
        expected.add(`${queued.id}:w1`).add(`${queued.id}:w2`);

        const claimed = await db.transaction((tx) => claimIssueEvents(tx, 1_000));
        const live = claimed.filter((e) => e.issuedAt !== undefined);
        assert.deepEqual(new Set(live.map((e) => `${e.couponId}:${e.userId}`)), expected, 'one live event per committed row');
        assert.equal(live.length, expected.size, 'no row twice');
        const byUser = new Map(live.map((e) => [e.userId, e]));
        assert.equal(byUser.get('w1')?.requestId, 'req-w1');
        assert.equal(byUser.get('w2')?.requestId, undefined);
        assert.equal(byUser.get('holder')?.requestId, undefined, "the skipped duplicate's request id is not the holder's");
        // A row db-batch inserted and removed in its own transaction leaves an event without a row.
        for (const e of claimed.filter((c) => c.issuedAt === undefined)) assert.ok(e.userId.startsWith('db-batch-'), `an orphan event only from db-batch: ${e.userId}`);

        // Two publishers: the second skips what the first holds (PGlite is one connection: no second).
        if (kind !== 'pglite') {
          await db.transaction(async (tx) => {
          const first = await claimIssueEvents(tx, 2);
          const second = await db.transaction((other) => claimIssueEvents(other, 1_000));
          assert.equal(second.length, claimed.length - 2, 'rows locked by a round are skipped by another');
          assert.ok(second.every((e) => !first.some((f) => f.id === e.id)));
          await deleteIssueEvents(tx, first.map((e) => e.id));
          });
        } else {
          await db.transaction(async (tx) => deleteIssueEvents(tx, (await claimIssueEvents(tx, 2)).map((e) => e.id)));
        }
        assert.equal((await eventCapture(db)).pending, claimed.length - 2, 'a committed round deletes what it published');

        await setEventCapture(db, false);
        assert.equal(await clearIssueEvents(db), claimed.length - 2);
        assert.equal((await issue(before.id, 'after-off')).status, 201);
        assert.deepEqual(await eventCapture(db), { enabled: false, pending: 0 });
      } finally {
        await server.close();
      }
    });
  });
}
