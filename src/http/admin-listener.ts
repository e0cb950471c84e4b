// Admin routes (and the console) on their own host/port (ADMIN_PORT, ADMIN_HOST): a second HTTP server feeding the
// same Fastify instance, so there is one app, one router, one set of hooks. Admin routes and
// /metrics answer 404 on the public listener; the public routes stay reachable on both.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import { reapIdleConnections } from '../util/drain.js';
import { HttpProblem } from './problem.js';
import { MAX_HEADER_BYTES, MAX_HEADERS_COUNT, RECEIVE_TIMEOUT_MS } from './protection.js';

const adminSockets = new WeakSet<Socket>();

export function isAdminRoute(url: string): boolean {
  return url.startsWith('/admin/') || url === '/metrics' || url === '/console' || url.startsWith('/console/');
}

const adminOnly: onRequestHookHandler = (request, _reply, done) => {
  if (adminSockets.has(request.raw.socket)) return done();
  // Same answer as an unknown route: the public port does not reveal the admin surface.
  done(new HttpProblem('NOT_FOUND', `${request.method} ${request.url.split('?')[0]}`));
};

/** Call before routes are added when ADMIN_PORT is set. */
export function guardAdminRoutes(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    if (!isAdminRoute(route.url)) return;
    const existing = route.onRequest;
    route.onRequest = existing === undefined ? [adminOnly] : Array.isArray(existing) ? [adminOnly, ...existing] : [adminOnly, existing];
  });
}

export interface AdminListener {
  url: string;
  /** Stops accepting, lets in-flight admin requests finish. */
  close(): Promise<void>;
}

export async function startAdminListener(app: FastifyInstance, host: string, port: number): Promise<AdminListener> {
  const server = http.createServer({ maxHeaderSize: MAX_HEADER_BYTES }, (req, res) => app.routing(req, res));
  server.on('connection', (socket: Socket) => adminSockets.add(socket));
  server.requestTimeout = RECEIVE_TIMEOUT_MS;
  server.maxHeadersCount = MAX_HEADERS_COUNT;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        const stopReaping = reapIdleConnections(server);
        server.close(() => {
          stopReaping();
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
