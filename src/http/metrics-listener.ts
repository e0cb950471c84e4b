// A bare HTTP listener for processes without an API (`couponrush worker`): GET /metrics and
// GET /healthz on ADMIN_HOST:ADMIN_PORT, for Prometheus and the container health check.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { METRICS_CONTENT_TYPE, METRICS_PATH } from '../metrics/index.js';
import { reapIdleConnections } from '../util/drain.js';
import { problemBody, PROBLEM_CONTENT_TYPE } from './problem.js';

const NOT_FOUND_JSON = JSON.stringify(problemBody('NOT_FOUND'));

export interface MetricsListener {
  url: string;
  close(): Promise<void>;
}

export async function startMetricsListener(registry: Registry, host: string, port: number): Promise<MetricsListener> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method === 'GET' && path === METRICS_PATH) {
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE }).end(text),
        () => res.writeHead(500).end(),
      );
    } else if (req.method === 'GET' && path === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    } else {
      res.writeHead(404, { 'content-type': PROBLEM_CONTENT_TYPE }).end(NOT_FOUND_JSON);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port: bound, family } = server.address() as AddressInfo;
  return {
    url: `http://${family === 'IPv6' ? `[${address}]` : address}:${bound}`,
    close: () =>
      new Promise<void>((resolve) => {
        const stop = reapIdleConnections(server);
        server.close(() => {
          stop();
          resolve();
        });
      }),
  };
}
