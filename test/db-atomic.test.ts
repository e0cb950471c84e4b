// db-atomic's own behaviour, beyond the stampede suites (issue-concurrency.test.ts runs it on every
// database, and with two instances on one): once an instance has seen the sell-out it loads the
// final holders and answers every later attempt itself — 409 to a holder, 410 to the rest — so the
// tail of a stampede costs the database nothing. Shown with the database unreachable.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { issuedRows, needDatabase, request, SERVER_DB_KINDS, SERVER_KINDS, startTestServer } from './helpers.js';
import { TcpProxy } from './ops-helpers.js';

const issue = (url: string, couponId: number, token: string) => request(url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${token}` } });

for (const kind of SERVER_DB_KINDS) {
  describe(`db-atomic after the sell-out (${kind})`, () => {
    it('answers holders 409 and everyone else 410 without the database, on an instance that saw the sell-out', async (t) => {
      if (!(await needDatabase(t, kind))) return;
      const target = new URL(SERVER_KINDS[kind].url);
      const proxy = await new TcpProxy(target.hostname, Number(target.port)).up();
      const viaProxy = (url: string) => {
        const u = new URL(url);
        u.host = proxy.url;
        return u.toString();
      };
      // The other instance writes directly; this one reaches the database through the proxy.
      const direct = await startTestServer({ db: kind });
      const server = await startTestServer({ db: kind, sharing: direct, dbVia: viaProxy });
      try {
        const { id } = await direct.createCoupon({ totalQuantity: 3, strategy: 'db-atomic' });
        for (const u of ['a', 'b']) assert.equal((await issue(direct.url, id, direct.tokenFor(u))).status, 201);
        assert.equal((await issue(server.url, id, server.tokenFor('c'))).status, 201, 'the last unit, through the proxy');
        // The first refusal this instance hears from the database starts loading the holders.
        assert.equal((await issue(server.url, id, server.tokenFor('d'))).status, 410);
        // That is one SELECT of three rows: ample time, with the database still reachable.
        await new Promise((r) => setTimeout(r, 500));
        await proxy.down();
        const answers = await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map(async (u) => [u, (await issue(server.url, id, server.tokenFor(u))).status]));
        assert.deepEqual(Object.fromEntries(answers), { a: 409, b: 409, c: 409, d: 410, e: 410, f: 410 }, 'holders from the other instance too');
        await proxy.up();
        const rows = await issuedRows(direct.db, id);
        assert.deepEqual(rows.users.sort(), ['a', 'b', 'c']);
        assert.equal(rows.counter, 3);
      } finally {
        await proxy.up();
        await server.close();
        await direct.close();
        await proxy.down();
      }
    });
  });
}
