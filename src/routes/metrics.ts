// GET /metrics: this process's Prometheus exposition (under `serve --workers N`, the cluster's sum).
import type { FastifyInstance } from 'fastify';
import { METRICS_CONTENT_TYPE, METRICS_PATH, type Metrics } from '../metrics/index.js';

export interface MetricsRouteOptions {
  readonly metrics: Pick<Metrics, 'render'>;
}

export async function metricsRoutes(app: FastifyInstance, { metrics }: MetricsRouteOptions): Promise<void> {
  app.get(METRICS_PATH, { schema: { hide: true } }, async (_request, reply) => reply.type(METRICS_CONTENT_TYPE).send(await metrics.render()));
}
