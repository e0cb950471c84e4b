// Graceful close of an HTTP server under keep-alive. `server.close()` closes the connections that
// are idle at that moment, but a connection whose in-flight request finishes afterwards stays
// open until its keep-alive timeout (72 s) and holds the exit back. Reaping idle connections
// until the close completes lets a drain end as soon as the last in-flight response is sent.
import type { Server } from 'node:http';

const REAP_EVERY_MS = 50;

/** Call right before closing; call the returned function once the close has completed. */
export function reapIdleConnections(server: Pick<Server, 'closeIdleConnections'>): () => void {
  const timer = setInterval(() => server.closeIdleConnections(), REAP_EVERY_MS);
  return () => clearInterval(timer);
}
