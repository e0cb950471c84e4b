// The live console: its page (built into dist/public/console by scripts/build-console.mjs and
// served from the package, no CDN), the server-sent events that feed it, and the admin reads it
// needs beside the existing API (what this process can run, reconcile status). Every data route
// is behind the admin token, sent as `Authorization: Bearer` by the page (never a cookie, never
// in the URL); the page itself is static and holds no data.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { Type, type Static } from 'typebox';
import { CounterBoard } from '../console/board.js';
import { ConsoleFeed, countersFromExposition, SAMPLE_INTERVAL_MS, type ConsoleSample } from '../console/feed.js';
import { couponIdOf } from '../coupons/ids.js';
import { reconcile } from '../coupons/reconcile.js';
import type { CouponService } from '../coupons/service.js';
import { reconciledStrategies, STRATEGY_NAMES, strategyModules, unavailableReason, type Available } from '../coupons/strategies/index.js';
import type { Dialect } from '../db/index.js';
import { setPageHeaders } from '../http/page-headers.js';
import { HttpProblem } from '../http/problem.js';
import type { Metrics } from '../metrics/index.js';
import { readStreamStats } from '../metrics/redis.js';
import { storeHealth, type StoreHandles } from './operations.js';
import { adminOnly, adminSecurity, couponIdText, type AdminCheck } from './schemas.js';

export const CONSOLE_PATH = '/console/';
export const CONSOLE_ASSETS = fileURLToPath(new URL('../../dist/public/console/', import.meta.url));

const StreamQuery = Type.Object({
  coupon: Type.Optional(couponIdText("the campaign to follow; without it, only the issue route's answers")),
});
const ReconcileQuery = Type.Object({ coupon: Type.Optional(couponIdText()) });

export interface ConsoleRouteOptions {
  readonly service: CouponService;
  readonly metrics: Pick<Metrics, 'issueCounters' | 'render'>;
  readonly stores: StoreHandles;
  /** What this process can run (the strategies' `requires`). */
  readonly available: Available;
  /** The database as the console names it: embedded (PGlite in DATA_DIR), or the dialect of DATABASE_URL's server. */
  readonly database: 'embedded' | Dialect;
  readonly requireAdmin: AdminCheck;
}

export async function consoleRoutes(app: FastifyInstance, { service, metrics, stores, available, database, requireAdmin }: ConsoleRouteOptions): Promise<void> {
  const onRequest = adminOnly(requireAdmin);
  const security = adminSecurity;
  // With Redis the processes share their counters through it (instances behind a load balancer
  // included); without, the cluster's /metrics sum covers the workers of `serve --workers N`.
  const { redis } = stores;
  const board = redis === undefined ? undefined : new CounterBoard(redis, () => metrics.issueCounters());
  board?.start();
  const feed = new ConsoleFeed({
    service,
    counters: board === undefined ? countersFromExposition(() => metrics.render()) : () => board.read(),
    ...(redis === undefined ? {} : { streams: async () => new Map((await readStreamStats(redis)).map((s) => [s.coupon, { length: s.length, lag: s.lag ?? null, pending: s.pending, dead: s.dead }])) }),
  });
  const open = new Set<FastifyReply>();
  app.addHook('preClose', async () => {
    feed.stop();
    for (const reply of open) reply.raw.end();
  });
  app.addHook('onClose', async () => board?.stop());

  if (existsSync(CONSOLE_ASSETS)) {
    await app.register(async (files) => {
      // A path the file server refuses (a traversal such as `..\`, a NUL byte) names no file of the
      // console: 404 NOT_FOUND, as the `../` forms (resolved before routing) already get.
      files.setErrorHandler((error: FastifyError, request) => {
        const status = error.statusCode ?? 500;
        if (status === 400 || status === 403) throw new HttpProblem('NOT_FOUND', `${request.method} ${request.url.split('?')[0]}`);
        throw error; // the app's handler answers the rest
      });
      await files.register(fastifyStatic, {
        root: CONSOLE_ASSETS,
        prefix: CONSOLE_PATH,
        decorateReply: false,
        schemaHide: true,
        setHeaders: setPageHeaders,
      });
    });
  } else {
    app.get(`${CONSOLE_PATH}*`, { schema: { hide: true } }, async () => {
      throw new HttpProblem('SERVICE_UNAVAILABLE', 'the console is not built: run `npm run build` (it writes dist/public/console)');
    });
  }
  app.get('/console', { schema: { hide: true } }, async (_request, reply) => reply.redirect(CONSOLE_PATH));

  app.get<{ Querystring: Static<typeof StreamQuery> }>(
    '/admin/console/stream',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        summary: 'Live numbers for the console (server-sent events, one `sample` a second)',
        description:
          'text/event-stream of `event: sample` whose data is a JSON ConsoleSample: the issue route\'s answers by status (cumulative and per second) and ' +
          'p50/p99 over the last second, summed over every API process sharing this Redis (without Redis: the workers of this `serve`), and the followed ' +
          'campaign\'s stock, rows, admissions, status and queue.',
        security,
        querystring: StreamQuery,
      },
    },
    async (request, reply) => {
      const asked = request.query.coupon;
      const couponId = asked === undefined ? undefined : couponIdOf(asked);
      if (asked !== undefined && couponId === undefined) throw new HttpProblem('COUPON_NOT_FOUND');
      reply.hijack();
      const raw = reply.raw;
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-accel-buffering': 'no', // nginx passes each event on at once
        'x-request-id': request.id,
      });
      raw.write(`retry: ${SAMPLE_INTERVAL_MS * 2}\n\n`);
      const send = (sample: ConsoleSample) => {
        // A console that cannot keep up misses samples instead of queueing them.
        if (raw.writableNeedDrain) return;
        raw.write(`event: sample\ndata: ${JSON.stringify(sample)}\n\n`);
      };
      open.add(reply);
      const unsubscribe = feed.subscribe(couponId, send);
      raw.on('close', () => {
        unsubscribe();
        open.delete(reply);
      });
    },
  );

  app.get(
    '/admin/console/info',
    {
      onRequest,
      schema: { tags: ['admin'], summary: 'What this process runs: the strategies a campaign may pick, the default, the stores', security },
    },
    async () => {
      return {
        defaultStrategy: service.defaultStrategy,
        strategies: STRATEGY_NAMES.map((name) => ({ name, summary: strategyModules[name].summary, unavailable: unavailableReason(name, available) ?? null })),
        stores: {
          database,
          redis: stores.redis !== undefined,
          kafka: stores.kafka !== undefined,
        },
        sampleIntervalMs: SAMPLE_INTERVAL_MS,
      };
    },
  );

  app.get(
    '/admin/console/health',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        summary: "Each configured store's answer: 'ok' or what went wrong (within 2 s each); Kafka too, which /readyz leaves out",
        security,
      },
    },
    async () => storeHealth(stores, ['database', 'redis', 'kafka']),
  );

  app.get<{ Querystring: Static<typeof ReconcileQuery> }>(
    '/admin/reconcile',
    {
      onRequest,
      schema: {
        tags: ['admin'],
        summary: 'Reconcile status per campaign (read-only: what `couponrush reconcile` reports, without --repair)',
        security,
        querystring: ReconcileQuery,
      },
    },
    async (request) => {
      const { redis, kafka, db } = stores;
      if (redis === undefined) return { applies: false, reason: 'without Redis every campaign is decided in the database: there is no second copy to drift', campaigns: [] };
      const couponId = request.query.coupon === undefined ? undefined : Number(request.query.coupon);
      const campaigns = await reconcile(db, redis, { repair: false, strategies: reconciledStrategies(), kafka, couponId });
      return { applies: true, campaigns };
    },
  );
}
