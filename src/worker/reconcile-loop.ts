// The periodic reconcile: every RECONCILE_INTERVAL_S one worker process (whichever takes the
// Redis lock first) runs `reconcile` read-only — no repair, ever: repairing is an operator's
// decision (docs/operations.md, "Runbook: reconcile") — and records each campaign's verdict in
// Redis, where every API and worker process reads it for the `couponrush_reconcile_drift` series
// and the CouponrushReconcileDrift alert. A failed run is logged and tried at the next interval.
import { randomBytes } from 'node:crypto';
import type { WorkerConfig } from '../config.js';
import { reconcile, saveReconcileStatus } from '../coupons/reconcile.js';
import { reconciledStrategies } from '../coupons/strategies/index.js';
import type { Db } from '../db/index.js';
import type { KafkaHandle } from '../kafka/client.js';
import type { RedisHandle } from '../redis/client.js';
import type { Logger } from '../util/logger.js';
import type { LongRunning } from '../util/lifecycle.js';
import { Pause } from '../util/pause.js';

export interface ReconcileLoopDeps {
  readonly db: Db;
  readonly redis: RedisHandle;
  readonly kafka: KafkaHandle | undefined;
  readonly config: Pick<WorkerConfig, 'reconcileIntervalMs'>;
  readonly log: Logger;
}

export class ReconcileLoop implements LongRunning {
  private stopping = false;
  private readonly pause = new Pause();
  private loop: Promise<void> | undefined;
  /** Runs this process made (for tests and logs). */
  runs = 0;

  constructor(private readonly deps: ReconcileLoopDeps) {}

  async start(): Promise<void> {
    if (this.deps.config.reconcileIntervalMs <= 0) return;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.pause.wake();
    await this.loop;
  }

  private async run(): Promise<void> {
    const interval = this.deps.config.reconcileIntervalMs;
    while (!this.stopping) {
      try {
        await this.once(interval);
      } catch (err) {
        this.deps.log.warn({ err }, 'periodic reconcile failed; trying again at the next interval');
      }
      await this.pause.for(interval);
    }
  }

  /** One run if this process wins the interval's lock; returns whether it ran. */
  async once(interval = this.deps.config.reconcileIntervalMs): Promise<boolean> {
    const { redis, db, kafka } = this.deps;
    const token = randomBytes(8).toString('hex');
    // Held for most of the interval: the other workers skip this round.
    const won = await redis.client.set(redis.keys.reconcileLock, token, 'PX', Math.max(1_000, interval - 1_000), 'NX');
    if (won !== 'OK') return false;
    const reports = await reconcile(db, redis, { repair: false, strategies: reconciledStrategies(), kafka });
    await saveReconcileStatus(redis, reports);
    this.runs++;
    const drifted = reports.filter((r) => r.status === 'DRIFT');
    if (drifted.length > 0) this.deps.log.warn({ campaigns: drifted.map((r) => ({ couponId: r.couponId, problems: r.problems })) }, 'periodic reconcile: drift (run `couponrush reconcile` to see it, --repair to fix it)');
    return true;
  }
}
