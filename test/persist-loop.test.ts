// The one persistence loop of the workers (src/worker/persist-loop.ts) over a source of the
// test's own, once as a `held` source (Kafka's kind) and once as a `pending` one (the streams'):
// the same rules for both — valid ones are rows, invalid and refused ones dead letters, only
// rows and dead letters acknowledged, an outage acknowledges nothing. Needs nothing (PGlite in
// memory); the real sources are in worker-recovery, dead-letters and the Kafka suites.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { WorkerConfig } from '../src/config.js';
import type { Validation } from '../src/coupons/queued-admission.js';
import { insertCoupon } from '../src/coupons/repository.js';
import { createPgliteDb, type Db } from '../src/db/index.js';
import { migrate } from '../src/db/migrate.js';
import { PersistLoop, type DeadLetterKind, type Doomed, type IssuanceSource } from '../src/worker/persist-loop.js';
import { issuedRows, refuseInsertsOf } from './helpers.js';
import { waitFor } from './redis-helpers.js';

const CONFIG: WorkerConfig = { batchSize: 100, lingerMs: 0, claimIdleMs: 300, maxDeliveries: 3, reconcileIntervalMs: 0 };

interface Fake {
  readonly n: number;
  readonly userId: string;
  readonly valid: boolean;
}

/** A queue in memory: a `pending` one delivers again what was neither acknowledged nor dead-lettered. */
class FakeSource implements IssuanceSource<Fake> {
  readonly queue = 'stream';
  readonly noun = 'entry';
  readonly letters: Array<{ userId: string; kind: DeadLetterKind; deliveries: number; reason: string }> = [];
  readonly acknowledged: number[] = [];
  /** The dead-letter queue refuses this many sends (an outage). */
  failDeadLetters = 0;
  recovered = 0;
  private readonly delivered = new Map<number, number>();
  private readonly settled = new Set<number>();
  private readonly seen: Fake[] = [];

  constructor(
    readonly redelivery: 'held' | 'pending',
    private readonly couponId: number,
    private readonly batches: Fake[][],
  ) {}

  async open(): Promise<void> {}

  async *recover(): AsyncGenerator<readonly Fake[], void, undefined> {
    this.recovered++;
  }

  async read(): Promise<readonly Fake[]> {
    await new Promise((r) => setTimeout(r, 5));
    const batch = this.batches.shift() ?? (this.redelivery === 'pending' ? this.unsettled() : []);
    for (const f of batch) this.delivered.set(f.n, (this.delivered.get(f.n) ?? 0) + 1);
    return batch;
  }

  private unsettled(): Fake[] {
    return this.seen.filter((f) => !this.settled.has(f.n));
  }

  async validate(f: Fake): Promise<Validation> {
    if (!this.seen.includes(f)) this.seen.push(f);
    return f.valid ? { ok: true, issue: { couponId: this.couponId, userId: f.userId, issuedAt: new Date(), requestId: undefined } } : { ok: false, reason: 'not one of ours' };
  }

  async deliveries(f: Fake, attempt: number): Promise<number> {
    return this.redelivery === 'held' ? attempt : (this.delivered.get(f.n) ?? 0);
  }

  async deadLetter(doomed: readonly Doomed<Fake>[]): Promise<Array<{ doomed: Doomed<Fake>; letter: string }>> {
    if (this.failDeadLetters > 0) {
      this.failDeadLetters--;
      throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    }
    for (const d of doomed) {
      this.letters.push({ userId: d.delivery.userId, kind: d.kind, deliveries: d.deliveries, reason: d.reason });
      this.settled.add(d.delivery.n);
    }
    return doomed.map((d) => ({ doomed: d, letter: `dead-${d.delivery.n}` }));
  }

  async acknowledge(settled: readonly Fake[]): Promise<void> {
    for (const f of settled) {
      this.acknowledged.push(f.n);
      this.settled.add(f.n);
    }
  }

  describe(f: Fake): Record<string, unknown> {
    return { n: f.n };
  }

  interrupt(): void {}

  async close(): Promise<void> {}
}

const BATCH: Fake[] = [
  { n: 1, userId: 'u-1', valid: true },
  { n: 2, userId: 'bad', valid: false },
  { n: 3, userId: 'poison', valid: true },
  { n: 4, userId: 'u-2', valid: true },
];

async function withCoupon(run: (db: Db, couponId: number) => Promise<void>): Promise<void> {
  const db = await createPgliteDb(undefined);
  try {
    await migrate(db);
    const now = Date.now();
    const coupon = await insertCoupon(db, {
      name: 'loop',
      totalQuantity: 100,
      issueStartsAt: new Date(now - 3600_000),
      issueEndsAt: new Date(now + 3600_000),
      strategy: 'redis-lua-async',
      discountType: null,
      discountValue: null,
      minOrderAmount: null,
    });
    await run(db, coupon.id);
  } finally {
    await db.close();
  }
}

for (const redelivery of ['held', 'pending'] as const) {
  describe(`the persistence loop over a ${redelivery} source`, () => {
    it('writes the valid ones, dead-letters an invalid one at once and a refused one on its WORKER_MAX_DELIVERIES-th delivery, acknowledges each once', async () => {
      await withCoupon(async (db, couponId) => {
        await refuseInsertsOf(db, 'poison', 'refused for the test');
        const source = new FakeSource(redelivery, couponId, [[...BATCH]]);
        const written: number[] = [];
        const dead: DeadLetterKind[] = [];
        const loop = new PersistLoop(source, { db, config: CONFIG, log: pino({ level: 'silent' }), observer: { batchWritten: (n) => written.push(n), deadLettered: (k) => dead.push(k) } });
        await loop.start();
        try {
          await waitFor('every entry acknowledged', async () => source.acknowledged.length === BATCH.length, 10_000);
        } finally {
          await loop.stop();
        }
        assert.deepEqual((await issuedRows(db, couponId)).users.sort(), ['u-1', 'u-2']);
        assert.deepEqual([...source.acknowledged].sort(), [1, 2, 3, 4], 'each once: rows and dead letters');
        assert.deepEqual(
          source.letters.map((l) => [l.userId, l.kind, l.deliveries]).sort(),
          [
            ['bad', 'invalid', 1],
            ['poison', 'refused', CONFIG.maxDeliveries],
          ],
        );
        assert.match(source.letters.find((l) => l.kind === 'invalid')!.reason, /^invalid entry: not one of ours$/);
        assert.match(source.letters.find((l) => l.kind === 'refused')!.reason, /refused for the test/);
        assert.equal(written.reduce((a, b) => a + b, 0), 2);
        assert.deepEqual(dead.sort(), ['invalid', 'refused']);
        assert.equal(loop.written, 2);
        assert.equal(loop.deadLettered, 2);
      });
    });

    it('acknowledges nothing while a store is away, and everything once it is back', async () => {
      await withCoupon(async (db, couponId) => {
        const source = new FakeSource(redelivery, couponId, [[...BATCH.filter((f) => f.userId !== 'poison')]]);
        source.failDeadLetters = 2;
        const loop = new PersistLoop(source, { db, config: CONFIG, log: pino({ level: 'silent' }) });
        await loop.start();
        try {
          await waitFor('every entry acknowledged', async () => source.acknowledged.length === 3, 10_000);
        } finally {
          await loop.stop();
        }
        assert.deepEqual([...source.acknowledged].sort(), [1, 2, 4], 'once each, after the outage');
        assert.deepEqual(source.letters.map((l) => l.userId), ['bad']);
        // held: the batch in hand was retried; pending: what was delivered is read again first.
        assert.equal(source.recovered, redelivery === 'held' ? 1 : 3);
        assert.deepEqual((await issuedRows(db, couponId)).users.sort(), ['u-1', 'u-2']);
      });
    });
  });
}

describe('the persistence loop over a held source, stopped during an outage', () => {
  it('acknowledges nothing of the held batch, and stop() does not wait for the store', async () => {
    await withCoupon(async (db, couponId) => {
      const source = new FakeSource('held', couponId, [[...BATCH.filter((f) => f.userId !== 'poison')], [{ n: 5, userId: 'after', valid: true }]]);
      source.failDeadLetters = Number.MAX_SAFE_INTEGER;
      const loop = new PersistLoop(source, { db, config: CONFIG, log: pino({ level: 'silent' }) });
      await loop.start();
      await waitFor('the batch written and held at its dead letter', async () => (await issuedRows(db, couponId)).rows === 2, 10_000);
      const stopping = performance.now();
      await loop.stop();
      assert.ok(performance.now() - stopping < 2_000, 'stopped without waiting out the outage');
      assert.deepEqual(source.acknowledged, [], 'nothing acknowledged: the held batch and what follows come again');
      assert.deepEqual((await issuedRows(db, couponId)).users.sort(), ['u-1', 'u-2'], 'the batch after it was not read');
    });
  });
});
