// Wires the metrics into Fastify: every route gets one onResponse hook with its own pre-created
// recorder (route pattern + status, plus the latency histogram on the issue route).
import type { FastifyInstance, onResponseHookHandler } from 'fastify';
import { ISSUE_ROUTE_URL } from '../coupons/paths.js';
import type { Metrics } from '../metrics/index.js';

/** Call before any route is added: routes registered later are instrumented as they appear. */
export function instrumentRoutes(app: FastifyInstance, metrics: Pick<Metrics, 'routeRecorder'>): void {
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const recorders = new Map(methods.map((m) => [m, metrics.routeRecorder(m, route.url, m === 'POST' && route.url === ISSUE_ROUTE_URL)]));
    const only = methods.length === 1 ? recorders.get(methods[0]!) : undefined;
    const hook: onResponseHookHandler = (request, reply, done) => {
      (only ?? recorders.get(request.method))?.(reply.statusCode, reply.elapsedTime / 1000);
      done();
    };
    const existing = route.onResponse;
    route.onResponse = existing === undefined ? [hook] : Array.isArray(existing) ? [...existing, hook] : [existing, hook];
  });
}
