// What operators and load balancers ask of the process: is it alive (/healthz), do its stores
// answer (/readyz: the database and Redis, what a load balancer should act on). `storeHealth` is
// also the console's operations view, Kafka included (only some campaigns and the events need it).
import type { FastifyInstance } from 'fastify';
import type { Db } from '../db/index.js';
import { sendProblem } from '../http/problem.js';
import type { KafkaHandle } from '../kafka/client.js';
import type { RedisHandle } from '../redis/client.js';
import { within } from '../util/within.js';

export const READY_TIMEOUT_MS = 2_000;

export type StoreName = 'database' | 'redis' | 'kafka';

/** The stores a process works on (Redis and Kafka when configured). */
export interface StoreHandles {
  readonly db: Db;
  readonly redis: RedisHandle | undefined;
  readonly kafka: KafkaHandle | undefined;
}

/** 'ok', or what went wrong, per configured store among `stores`; each asked at once and bounded. */
export async function storeHealth({ db, redis, kafka }: StoreHandles, stores: readonly StoreName[], timeoutMs = READY_TIMEOUT_MS): Promise<Partial<Record<StoreName, string>>> {
  const probes: Array<[StoreName, (() => Promise<unknown>) | undefined]> = [
    ['database', () => db.query('SELECT 1')],
    ['redis', redis === undefined ? undefined : () => redis.client.ping()],
    ['kafka', kafka === undefined ? undefined : () => kafka.ping()],
  ];
  const checked = await Promise.all(
    probes.filter(([name, probe]) => probe !== undefined && stores.includes(name)).map(async ([name, probe]) => [name, await answers(probe!, timeoutMs)] as const),
  );
  return Object.fromEntries(checked);
}

async function answers(probe: () => Promise<unknown>, timeoutMs: number): Promise<string> {
  try {
    await within(probe(), timeoutMs, 'timed out');
    return 'ok';
  } catch (err) {
    return (err as Error).message;
  }
}

export interface OperationRouteOptions {
  readonly stores: StoreHandles;
}

export async function operationRoutes(app: FastifyInstance, { stores }: OperationRouteOptions): Promise<void> {
  app.get('/healthz', { schema: { tags: ['ops'], summary: 'The process is alive' } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { tags: ['ops'], summary: 'The database (and Redis, when configured) answer' } }, async (_request, reply) => {
    const health = await storeHealth(stores, ['database', 'redis']);
    const failed = Object.entries(health).filter(([, v]) => v !== 'ok');
    if (failed.length > 0) return sendProblem(reply, 'SERVICE_UNAVAILABLE', failed.map(([k, v]) => `${k}: ${v}`).join('; '));
    return { status: 'ready', ...health };
  });
}
