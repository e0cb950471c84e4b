// Which errors mean that a store (the database, Redis) is down, unreachable or overloaded rather
// than a bug: the HTTP layer answers 503 for them, the worker keeps its entries pending instead of
// dead-lettering them. A neutral module, below both.

const UNAVAILABLE_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * mysql2: a connection lost or never made, the server shutting down or full, and the transaction
 * rolled back by the server because of a lock wait bound or a deadlock (nothing was written).
 */
const MYSQL_UNAVAILABLE = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_SEQUENCE_TIMEOUT',
  'PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_CONNECTION_KILLED',
  'ER_QUERY_INTERRUPTED',
  'ER_LOCK_WAIT_TIMEOUT',
  'ER_LOCK_DEADLOCK',
  'ER_STATEMENT_TIMEOUT',
  'POOL_ACQUIRE_TIMEOUT', // src/db/mysql.ts: no pooled connection became free in time
]);

/** Errors that mean a dependency (database, Redis) is down or overloaded, not a bug (or wrap one that does). */
export function isDependencyUnavailable(err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false;
  const { code, message, cause } = err as { code?: unknown; message?: unknown; cause?: unknown };
  if (cause !== undefined && cause !== err && isDependencyUnavailable(cause)) return true;
  if (typeof code === 'string') {
    if (UNAVAILABLE_ERRNOS.has(code) || MYSQL_UNAVAILABLE.has(code)) return true;
    // PostgreSQL: 08xxx connection exceptions, 57P0x shutdown, 53xxx insufficient resources,
    // 57014 statement timeout (query_canceled).
    if (/^(08|53|57P0)/.test(code) || code === '57014') return true;
  }
  // pg: pool/connect timeouts and dropped connections; mysql2: a command on a closed connection;
  // ioredis: a closed connection, a command timeout, retries exhausted, or the offline queue
  // disabled while disconnected.
  return (
    typeof message === 'string' &&
    /timeout exceeded when trying to connect|Connection terminated|connection is closed|connection is in closed state|Command timed out|max retries per request|Stream isn't writeable/i.test(
      message,
    )
  );
}
