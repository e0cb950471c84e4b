// The stampede test: for every exact strategy, on real PostgreSQL, PGlite and MariaDB, 2,000 concurrent
// HTTP requests from 1,000 users (each twice) against stock 500 issue exactly 500.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { STRATEGY_NAMES, strategyModules } from '../src/coupons/strategies/index.js';
import { DB_KINDS, issuedRows, needDatabase, SERVER_DB_KINDS, stampede, startTestServer } from './helpers.js';

const STOCK = 500;
const USERS = 1_000;
const REQUESTS = 2_000;

const dbStrategies = STRATEGY_NAMES.filter((s) => !strategyModules[s].mayOverIssue && strategyModules[s].requires.length === 0);

for (const dbKind of DB_KINDS) {
  describe(`POST /coupons/:id/issues under a stampede (${dbKind})`, () => {
    for (const strategy of dbStrategies) {
      it(`${strategy}: issues exactly the stock, never twice to one user`, async (t) => {
        if (!(await needDatabase(t, dbKind))) return;
        const server = await startTestServer({ db: dbKind });
        try {
          const { id } = await server.createCoupon({ totalQuantity: STOCK, strategy });
          const result = await stampede(server, id, USERS, REQUESTS);
          const db = await issuedRows(server.db, id);

          assert.equal(db.rows, STOCK, 'rows in the database == stock');
          assert.equal(db.distinctUsers, db.rows, 'no user has two rows');
          assert.equal(db.counter, STOCK, 'issued_quantity matches the rows');
          assert.equal(result.statuses.get(201), STOCK, 'exactly the stock answered 201');
          assert.deepEqual(new Set(result.winners), new Set(db.users), 'every 201 has a row, every row had a 201');
          const refused = (result.statuses.get(409) ?? 0) + (result.statuses.get(410) ?? 0);
          assert.equal(refused, REQUESTS - STOCK, `all others are 409/410, got ${JSON.stringify([...result.statuses])}`);
        } finally {
          await server.close();
        }
      });
    }
  });
}

for (const dbKind of SERVER_DB_KINDS) describe(`db-naive (kept to show the race, ${dbKind})`, () => {
  it('still never issues twice to one user: the primary key holds', async (t) => {
    if (!(await needDatabase(t, dbKind))) return;
    const server = await startTestServer({ db: dbKind });
    try {
      const { id } = await server.createCoupon({ totalQuantity: 50, strategy: 'db-naive' });
      const result = await stampede(server, id, 400, 800, 128);
      const db = await issuedRows(server.db, id);
      assert.equal(db.distinctUsers, db.rows, 'no user has two rows');
      assert.equal(db.counter, db.rows, 'its own counter follows its rows');
      assert.equal(result.statuses.get(201), db.rows, 'every 201 has a row');
      assert.ok(db.rows >= 50, 'it issues at least the stock');
      t.diagnostic(`db-naive issued ${db.rows} rows for a stock of 50 (over-issue: ${db.rows - 50})`);
    } finally {
      await server.close();
    }
  });
});

// The database-only strategies that claim exactness across instances, with two API instances on one
// database and the stampede split between them.
for (const dbKind of SERVER_DB_KINDS) describe(`two API instances on one database (${dbKind})`, () => {
  for (const strategy of ['db-batch', 'db-atomic'] as const) {
    it(`${strategy}: issues exactly the stock across both, never twice to one user`, async (t) => {
      if (!(await needDatabase(t, dbKind))) return;
      const a = await startTestServer({ db: dbKind });
      const b = await startTestServer({ db: dbKind, sharing: a });
      try {
        const { id } = await a.createCoupon({ totalQuantity: STOCK, strategy });
        // Both halves at once; each user may be sent to either instance (and twice).
        const [ra, rb] = await Promise.all([stampede(a, id, USERS, REQUESTS / 2, 128), stampede(b, id, USERS, REQUESTS / 2, 128)]);
        const db = await issuedRows(a.db, id);
        assert.equal(db.rows, STOCK, 'rows in the database == stock');
        assert.equal(db.distinctUsers, db.rows, 'no user has two rows');
        assert.equal(db.counter, STOCK, 'issued_quantity matches the rows');
        const winners = [...ra.winners, ...rb.winners];
        assert.equal(winners.length, STOCK, `exactly the stock answered 201 (${JSON.stringify([...ra.statuses, ...rb.statuses])})`);
        assert.deepEqual(new Set(winners), new Set(db.users), 'every 201 has a row, every row had a 201');
        const others = [...ra.statuses, ...rb.statuses].filter(([status]) => status !== 201 && status !== 409 && status !== 410);
        assert.deepEqual(others, [], 'every other answer is 409 or 410');
      } finally {
        await b.close();
        await a.close();
      }
    });
  }
});
