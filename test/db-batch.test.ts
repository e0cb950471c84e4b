// db-batch's own behaviour, beyond the stampede suites (issue-concurrency.test.ts runs it on every
// database, and with two instances on one): a sold-out campaign is known to every instance and
// answered 410 before the token is read; the same user twice in one batch is issued once.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DB_KINDS, issuedRows, needDatabase, request, SERVER_DB_KINDS, startTestServer } from './helpers.js';
import { waitFor } from './redis-helpers.js';

const issue = (url: string, couponId: number, headers: Record<string, string>) => request(url, 'POST', `/coupons/${couponId}/issues`, { headers });

for (const kind of DB_KINDS) {
  describe(`db-batch (${kind})`, () => {
    it('issues once to a user who asks many times at once, and tells the others 409', async (t) => {
      if (!(await needDatabase(t, kind))) return;
      const server = await startTestServer({ db: kind });
      try {
        const { id } = await server.createCoupon({ totalQuantity: 5, strategy: 'db-batch' });
        const auth = { authorization: `Bearer ${server.tokenFor('eager')}` };
        const answers = await Promise.all(Array.from({ length: 8 }, () => issue(server.url, id, auth)));
        assert.deepEqual(answers.map((r) => r.status).sort(), [201, 409, 409, 409, 409, 409, 409, 409]);
        const rows = await issuedRows(server.db, id);
        assert.deepEqual(rows.users, ['eager']);
        assert.equal(rows.counter, 1);
      } finally {
        await server.close();
      }
    });

    it('a batch larger than the stock left keeps the first arrivals and removes the rest', async (t) => {
      if (!(await needDatabase(t, kind))) return;
      const server = await startTestServer({ db: kind });
      try {
        const { id } = await server.createCoupon({ totalQuantity: 3, strategy: 'db-batch' });
        const users = Array.from({ length: 20 }, (_, i) => `late-${i}`);
        const answers = await Promise.all(users.map((u) => issue(server.url, id, { authorization: `Bearer ${server.tokenFor(u)}` })));
        const won = users.filter((_, i) => answers[i]!.status === 201);
        assert.equal(won.length, 3, JSON.stringify(answers.map((r) => r.status)));
        assert.ok(answers.every((r) => r.status === 201 || r.status === 410));
        const rows = await issuedRows(server.db, id);
        assert.deepEqual(rows.users.sort(), won.sort(), 'the rows are exactly the 201s');
        assert.equal(rows.counter, 3);
      } finally {
        await server.close();
      }
    });
  });
}

for (const kind of SERVER_DB_KINDS) {
  describe(`db-batch with two instances (${kind})`, () => {
    it('a campaign sold out on one instance is known on the other and answered 410 there before the token is read', async (t) => {
      if (!(await needDatabase(t, kind))) return;
      const a = await startTestServer({ db: kind });
      const b = await startTestServer({ db: kind, sharing: a });
      try {
        const { id } = await a.createCoupon({ totalQuantity: 2, strategy: 'db-batch' });
        // b serves the campaign once (it now watches it; one unit is left), then a sells it out.
        assert.equal((await issue(b.url, id, { authorization: `Bearer ${b.tokenFor('first')}` })).status, 201);
        assert.equal((await issue(b.url, id, {})).status, 401, 'b does not know it sold out: the token is read');
        assert.equal((await issue(a.url, id, { authorization: `Bearer ${a.tokenFor('second')}` })).status, 201);
        // No token at all: only an instance that knows the campaign is sold out answers 410 (else 401).
        await waitFor('b knows the campaign is sold out', async () => (await issue(b.url, id, {})).status === 410, 5_000);
        const res = await issue(b.url, id, {});
        assert.equal((res.json as { code?: string }).code, 'SOLD_OUT');
      } finally {
        await b.close();
        await a.close();
      }
    });
  });
}
