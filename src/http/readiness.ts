// Whether each store answers, each asked at once and bounded: `/readyz` (the database and Redis:
// what a load balancer should act on) and the console's operations view (Kafka too, which only
// some campaigns and the events need).
import type { Runtime } from '../runtime.js';
import { within } from '../util/within.js';

export const READY_TIMEOUT_MS = 2_000;

export type StoreName = 'database' | 'redis' | 'kafka';

/** 'ok', or what went wrong, per configured store among `stores`. */
export async function storeHealth(runtime: Pick<Runtime, 'db' | 'redis' | 'kafka'>, stores: readonly StoreName[]): Promise<Partial<Record<StoreName, string>>> {
  const { db, redis, kafka } = runtime;
  const probes: Array<[StoreName, (() => Promise<unknown>) | undefined]> = [
    ['database', () => db.query('SELECT 1')],
    ['redis', redis === undefined ? undefined : () => redis.client.ping()],
    ['kafka', kafka === undefined ? undefined : () => kafka.ping()],
  ];
  const checked = await Promise.all(
    probes.filter(([name, probe]) => probe !== undefined && stores.includes(name)).map(async ([name, probe]) => [name, await answers(probe!)] as const),
  );
  return Object.fromEntries(checked);
}

async function answers(probe: () => Promise<unknown>): Promise<string> {
  try {
    await within(probe(), READY_TIMEOUT_MS, 'timed out');
    return 'ok';
  } catch (err) {
    return (err as Error).message;
  }
}
