// Series for the alerts that watch a process's health rather than its traffic: whether each store
// answers it (`couponrush_ready`, what /readyz asks, Kafka included) and the last periodic
// reconcile's verdict per campaign (`couponrush_reconcile_drift`). Both are read at scrape time,
// bounded, from probes the caller passes in, so this module knows no store.
import { Gauge, type Registry } from 'prom-client';
import { within } from '../util/within.js';

/** Per configured store: 'ok', or what went wrong (the /readyz probe). */
export type StoreProbe = () => Promise<Partial<Record<string, string>>>;

/** How long a verdict counts: older than this, the reconcile loop has stopped and says nothing. */
const VERDICT_MAX_AGE_MS = 10 * 60_000;
/**
 * A scrape must answer well within the request deadline even when a store hangs: the probes get
 * this long each (a store that does not answer in it counts as not ready).
 */
export const SCRAPE_PROBE_TIMEOUT_MS = 900;
const SCRAPE_TIMEOUT_MS = 1_000;

export function registerReadiness(registry: Registry, probe: StoreProbe): void {
  new Gauge({
    name: 'couponrush_ready',
    help: 'Whether this process reaches each store it uses right now (1) or not (0): the /readyz probe, Kafka included',
    labelNames: ['store'],
    registers: [registry],
    aggregator: 'min',
    async collect() {
      const health = await within(probe(), SCRAPE_TIMEOUT_MS, 'store probe timed out').catch(() => undefined);
      this.reset();
      for (const [store, answer] of Object.entries(health ?? {})) this.set({ store }, answer === 'ok' ? 1 : 0);
    },
  });
}

export interface DriftVerdicts {
  readonly drift: ReadonlyMap<number, boolean>;
  readonly at: number | undefined;
}

export function registerReconcileDrift(registry: Registry, read: () => Promise<DriftVerdicts>): void {
  new Gauge({
    name: 'couponrush_reconcile_drift',
    help: "The last periodic reconcile's verdict per campaign: 1 when Redis's admissions and the database (and the queue) disagree, 0 when they agree (RECONCILE_INTERVAL_S; absent when no verdict is recent)",
    labelNames: ['coupon'],
    registers: [registry],
    aggregator: 'max',
    async collect() {
      const verdicts = await within(read(), SCRAPE_TIMEOUT_MS, 'reconcile status timed out').catch(() => undefined);
      this.reset();
      if (verdicts?.at === undefined || Date.now() - verdicts.at > VERDICT_MAX_AGE_MS) return;
      for (const [coupon, drift] of verdicts.drift) this.set({ coupon: String(coupon) }, drift ? 1 : 0);
    },
  });
}
