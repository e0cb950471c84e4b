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
  // disabled while disconnected; Redis: a primary without the replicas min-replicas-to-write asks
  // for (NOREPLICAS: the write was refused, nothing done), a replica where the primary was
  // (READONLY); a Cluster mid-failover or mid-move (CLUSTERDOWN, TRYAGAIN, MOVED/ASK to a node
  // that is gone: ioredis gives up after its redirections; its slot map could not be fetched).
  return (
    typeof message === 'string' &&
    /timeout exceeded when trying to connect|Connection terminated|connection is closed|connection is in closed state|Command timed out|max retries per request|Stream isn't writeable|^NOREPLICAS |^READONLY |^CLUSTERDOWN |^TRYAGAIN |^MOVED |^ASK |Too many Cluster redirections|Failed to refresh slots cache|None of startup nodes is available|Cluster isn't ready/i.test(
      message,
    )
  );
}

/**
 * A store a process could not open, said in one line that names the variable to look at:
 * `DATABASE_URL: connection refused at 127.0.0.1:5432 (PostgreSQL)`. The start-up of every
 * command throws it, and the CLI prints its message as is.
 */
export class StoreOpenError extends Error {
  constructor(
    readonly variable: string,
    readonly store: string,
    cause: unknown,
  ) {
    super(`${variable}: ${describeOpenFailure(cause)} (${store})`, { cause });
    this.name = 'StoreOpenError';
  }
}

/** What went wrong reaching a store, without the client library's advice or a stack. */
function describeOpenFailure(err: unknown): string {
  const leaves = leafErrors(err);
  const refused = leaves.filter((e) => e.code === 'ECONNREFUSED');
  if (refused.length > 0 && refused.length === leaves.length) {
    return `connection refused at ${refused.map(addressOf).filter((a) => a !== '').join(', ') || 'the address given'}`;
  }
  const notFound = leaves.find((e) => e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN');
  if (notFound !== undefined) return typeof notFound.hostname === 'string' ? `host ${notFound.hostname} not found` : 'host not found';
  const first = leaves[0];
  const message = first?.message ?? String(err);
  return message.split('\n')[0] ?? message;
}

interface ErrnoLike {
  readonly code?: unknown;
  readonly message?: string;
  readonly address?: unknown;
  readonly port?: unknown;
  readonly hostname?: unknown;
}

/** A connect to several addresses (localhost: ::1 and 127.0.0.1) fails as an AggregateError of each. */
function leafErrors(err: unknown): ErrnoLike[] {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.flatMap((e: unknown) => leafErrors(e));
  return err !== null && typeof err === 'object' ? [err as ErrnoLike] : [{ message: String(err) }];
}

function addressOf(e: ErrnoLike): string {
  if (typeof e.address !== 'string') return '';
  const host = e.address.includes(':') ? `[${e.address}]` : e.address;
  return typeof e.port === 'number' ? `${host}:${e.port}` : host;
}
