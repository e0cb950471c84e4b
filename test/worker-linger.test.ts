// WORKER_LINGER_MS: after a partial batch the worker waits before reading again, so that entries
// arriving meanwhile are written together; the first entry after a quiet spell is read at once,
// and stop() does not wait out the linger. Real PostgreSQL, real Redis, real HTTP. (Parsing and
// the default: config.test.ts.)
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { needServer, PG_ADMIN_URL } from './helpers.js';
import { issueAll, REDIS_URL, startRedisTestServer, usersRange, waitForDrain, withStatus } from './redis-helpers.js';

const LINGER_MS = 800;

describe('worker linger', () => {
  it('entries admitted one by one during the linger are written as one batch; the first one is not delayed', async (t) => {
    if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL)) || !(await needServer(t, 'Redis', REDIS_URL))) return;
    const server = await startRedisTestServer({ WORKER_LINGER_MS: String(LINGER_MS), WORKER_BATCH_SIZE: '100' });
    try {
      assert.equal(server.config.worker.lingerMs, LINGER_MS);
      const { id } = await server.createCoupon({ totalQuantity: 100, strategy: 'redis-lua-async' });
      const worker = await server.startWorker('linger');
      const batches: number[] = [];
      worker.observe({ batchWritten: (entries) => batches.push(entries) });

      // Quiet worker: the first admission is read by the blocked XREADGROUP and written at once.
      const first = performance.now();
      assert.deepEqual(withStatus(await issueAll(server, id, ['first']), 202), ['first']);
      await waitForDrain(server, id, 1, 10_000);
      const firstMs = performance.now() - first;
      assert.deepEqual(batches, [1]);
      assert.ok(firstMs < LINGER_MS, `the first entry after a quiet spell waited ${Math.round(firstMs)} ms`);

      // Now the worker lingers: ten admissions one after another (each its own XADD) gather.
      const users = usersRange(0, 10);
      for (const user of users) assert.deepEqual(withStatus(await issueAll(server, id, [user]), 202), [user]);
      await waitForDrain(server, id, 11, 10_000);
      assert.deepEqual(batches, [1, 10], 'the ten entries were one batch, one statement');

      // stop() cuts a linger short.
      await issueAll(server, id, ['last']);
      await waitForDrain(server, id, 12, 10_000);
      const stopping = performance.now();
      await worker.stop();
      const stopMs = performance.now() - stopping;
      assert.ok(stopMs < LINGER_MS / 2, `stop() took ${Math.round(stopMs)} ms during a ${LINGER_MS} ms linger`);
    } finally {
      await server.close();
    }
  });
});
