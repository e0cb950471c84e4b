// The bench's own load generator: keep-alive HTTP/1.1 connections on raw TCP sockets, one
// request in flight per connection, no framework; here the closed loop (N connections, each sending
// the next request as soon as it is answered), open-loop.ts drives the same connections by the clock. It parses just what it needs of a response
// (status line, Content-Length or chunked body, Connection: close) so that the generator costs
// clearly less CPU per request than the servers it measures — autocannon, on the same two cores,
// cost about as much as the bare server did and held the ceiling down (docs/performance.md).
import net from 'node:net';

export interface SocketLoadSpec {
  readonly host: string;
  readonly port: number;
  readonly connections: number;
  /** Requests per connection before the generator stops sending (amount mode), or Infinity. */
  readonly total: number;
  /** Stop sending after this instant (performance.now()), or Infinity. */
  readonly sendUntil: number;
  readonly timeoutMs: number;
  /** The next request's bytes, and a token handed back with its answer (the user index). */
  next(): { readonly bytes: Buffer; readonly user: number };
  /** One complete response: its status and its latency in microseconds. */
  onResponse(user: number, status: number, latencyUs: number): void;
}

export interface SocketLoad {
  /** Resolves once nothing is in flight and nothing more will be sent. */
  readonly done: Promise<{ readonly sent: number; readonly errors: number; readonly timeouts: number }>;
  /** Sends nothing more and drops the requests in flight (they count as unanswered). */
  stop(): void;
}

const CRLF_CRLF = Buffer.from('\r\n\r\n');
const RECONNECT_DELAY_MS = 50;
/** Each connection reads into one buffer of its own (net's `onread`): no allocation per response. */
const READ_BUFFER_BYTES = 64 * 1024;
const TIMEOUT_SWEEP_MS = 250;

/** A response head: status, body length (-1: chunked), whether the server closes afterwards. */
export interface Head {
  readonly status: number;
  readonly headBytes: number;
  readonly contentLength: number;
  readonly close: boolean;
  /** A 429's or 503's Retry-After, in ms (delay-seconds or an HTTP date); undefined otherwise. */
  readonly retryAfterMs: number | undefined;
}

/** Parses a response head at the start of `buf`; undefined until it is complete. Throws on garbage. */
export function parseHead(buf: Buffer): Head | undefined {
  const end = buf.indexOf(CRLF_CRLF);
  if (end === -1) return undefined;
  const text = buf.toString('latin1', 0, end);
  if (!text.startsWith('HTTP/1.')) throw new Error(`not an HTTP/1.x response: ${JSON.stringify(text.slice(0, 40))}`);
  const status = Number(text.slice(9, 12));
  if (!Number.isInteger(status)) throw new Error(`bad status line: ${JSON.stringify(text.split('\r\n')[0])}`);
  const lower = text.toLowerCase();
  const length = /\r\ncontent-length:[ \t]*(\d+)/.exec(lower);
  const chunked = /\r\ntransfer-encoding:[ \t]*chunked/.test(lower);
  const close = /\r\nconnection:[ \t]*close/.test(lower) || text.startsWith('HTTP/1.0');
  // A 204 or 304 has no body; anything else without a length or chunking ends at close, which a
  // keep-alive load generator cannot use.
  const noBody = status === 204 || status === 304 || (status >= 100 && status < 200);
  if (!noBody && length === null && !chunked) throw new Error(`response ${status} has neither Content-Length nor chunked encoding`);
  const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(lower) : undefined;
  return { status, headBytes: end + 4, contentLength: noBody ? 0 : chunked ? -1 : Number(length![1]), close, retryAfterMs };
}

/** Retry-After of a lower-cased head: delay-seconds, or an HTTP date (RFC 9110 §10.2.3). */
function parseRetryAfter(lowerHead: string): number | undefined {
  const value = /\r\nretry-after:[ \t]*([^\r]*)/.exec(lowerHead)?.[1]?.trim();
  if (value === undefined || value === '') return undefined;
  if (/^\d+$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Length of a complete chunked body at `from`, or -1 while incomplete (trailers not supported). */
export function chunkedLength(buf: Buffer, from: number): number {
  let at = from;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', at, 'latin1');
    if (lineEnd === -1) return -1;
    const size = parseInt(buf.toString('latin1', at, lineEnd), 16);
    if (!Number.isFinite(size)) throw new Error('bad chunk size');
    const next = lineEnd + 2 + size + 2;
    if (buf.length < next) return -1;
    at = next;
    if (size === 0) return at - from;
  }
}

export function startSocketLoad(spec: SocketLoadSpec): SocketLoad {
  const run = new ClosedLoopRun(spec);
  for (let i = 0; i < spec.connections; i++) {
    const c = new Connection(run);
    run.connections.add(c);
    c.connect();
  }
  return { done: run.done, stop: () => run.stop() };
}

/**
 * Whoever drives connections: the closed loop below (the next request as soon as one is answered)
 * or the open loop (open-loop.ts: requests at their intended times). A connection only sends what
 * it is given, parses the answer and says what happened; `token` names the request in flight.
 */
export interface ConnectionOwner {
  readonly host: string;
  readonly port: number;
  /** Open and with nothing in flight: `send` it a request or leave it idle. */
  idle(c: Connection): void;
  /** The complete answer to the request sent with `token` at `sentAt` (performance.now()). */
  answered(token: number, head: Head, sentAt: number): void;
  /** The request sent with `token` (-1: an answer nobody asked for) will get no answer. */
  lost(token: number, timedOut: boolean): void;
  /** The socket closed (after `lost` when a request was in flight). */
  closed(c: Connection): void;
}

/** Expires the requests in flight longer than `timeoutMs`. */
export function sweepTimeouts(connections: Iterable<Connection>, timeoutMs: number): void {
  const now = performance.now();
  for (const c of connections) {
    const since = c.inFlightSince;
    if (since !== 0 && now - since > timeoutMs) c.expire();
  }
}

/** The closed loop: N connections, each sending the next request of the plan as soon as it is answered. */
class ClosedLoopRun implements ConnectionOwner {
  sent = 0;
  errors = 0;
  timeouts = 0;
  private stopped = false;
  readonly host: string;
  readonly port: number;
  readonly connections = new Set<Connection>();
  readonly done: Promise<{ sent: number; errors: number; timeouts: number }>;
  private finish: () => void = () => {};
  private readonly sweep: NodeJS.Timeout;

  constructor(readonly spec: SocketLoadSpec) {
    this.host = spec.host;
    this.port = spec.port;
    this.done = new Promise((resolve) => {
      this.finish = () => resolve({ sent: this.sent, errors: this.errors, timeouts: this.timeouts });
    });
    this.sweep = setInterval(() => sweepTimeouts(this.connections, spec.timeoutMs), TIMEOUT_SWEEP_MS);
  }

  private mayStillSend(): boolean {
    return !this.stopped && this.sent < this.spec.total && performance.now() < this.spec.sendUntil;
  }

  idle(c: Connection): void {
    if (!this.mayStillSend()) return this.end(c);
    const { bytes, user } = this.spec.next();
    this.sent++;
    c.send(bytes, user);
  }

  answered(user: number, head: Head, sentAt: number): void {
    this.spec.onResponse(user, head.status, Math.max(1, Math.round((performance.now() - sentAt) * 1000)));
  }

  lost(_user: number, timedOut: boolean): void {
    if (timedOut) this.timeouts++;
    else this.errors++;
  }

  /** Reopened while there is more to send (after a short pause once errors happened). */
  closed(c: Connection): void {
    if (!this.connections.has(c)) return;
    if (!this.mayStillSend()) return this.end(c);
    setTimeout(() => (this.mayStillSend() ? c.connect() : this.end(c)), this.errors > 0 ? RECONNECT_DELAY_MS : 0);
  }

  /** A connection leaves `connections`; the load is done once none is left. */
  private end(c: Connection): void {
    if (!this.connections.delete(c)) return;
    c.close();
    if (this.connections.size === 0) {
      clearInterval(this.sweep);
      this.finish();
    }
  }

  stop(): void {
    this.stopped = true;
    for (const c of this.connections) c.close();
  }
}

/** One keep-alive connection: sends what its owner gives it, one request at a time, and parses the answers. */
export class Connection {
  private socket: net.Socket | undefined;
  private pending: Buffer | undefined;
  private token = -1;
  private sentAt = 0;
  private head: Head | undefined;
  private readonly readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

  constructor(private readonly owner: ConnectionOwner) {}

  get inFlightSince(): number {
    return this.token === -1 ? 0 : this.sentAt;
  }

  /** Opens the socket (again); the owner hears `idle` once it is connected. */
  connect(): void {
    const socket = net.connect({
      host: this.owner.host,
      port: this.owner.port,
      noDelay: true,
      onread: {
        buffer: this.readBuffer,
        callback: (bytes: number, buf: Uint8Array) => {
          this.onData(Buffer.from(buf.buffer, buf.byteOffset, bytes));
          return true;
        },
      },
    });
    this.socket = socket;
    socket.on('connect', () => this.owner.idle(this));
    socket.on('error', () => {}); // 'close' follows and decides
    socket.on('close', () => this.onClose(socket));
  }

  send(bytes: Buffer, token: number): void {
    this.token = token;
    this.sentAt = performance.now();
    this.socket!.write(bytes);
  }

  /** `chunk` is a view of the read buffer, overwritten by the next read: what is kept is copied. */
  private onData(chunk: Buffer): void {
    let buf = this.pending === undefined ? chunk : Buffer.concat([this.pending, chunk]);
    this.pending = undefined;
    try {
      for (;;) {
        this.head ??= parseHead(buf);
        const head = this.head;
        if (head === undefined) break;
        const bodyBytes = head.contentLength >= 0 ? head.contentLength : chunkedLength(buf, head.headBytes);
        if (bodyBytes < 0 || buf.length < head.headBytes + bodyBytes) break;
        this.head = undefined;
        buf = buf.subarray(head.headBytes + bodyBytes);
        this.complete(head);
        if (head.close) {
          this.socket?.destroy();
          return;
        }
        if (buf.length === 0) return;
      }
    } catch {
      // Garbage from the server: this connection's answer is lost.
      this.loseInFlight(false);
      this.socket?.destroy();
      return;
    }
    this.pending = Buffer.from(buf);
  }

  private complete(head: Head): void {
    const token = this.token;
    if (token === -1) throw new Error('a response nobody asked for');
    this.token = -1;
    this.owner.answered(token, head, this.sentAt);
    if (!head.close) this.owner.idle(this);
  }

  private loseInFlight(timedOut: boolean): void {
    const token = this.token;
    this.token = -1;
    this.owner.lost(token, timedOut);
  }

  /** A request timed out: the owner hears it, the connection is dropped. */
  expire(): void {
    this.loseInFlight(true);
    this.socket?.destroy();
  }

  private onClose(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.pending = undefined;
    this.head = undefined;
    if (this.token !== -1) this.loseInFlight(false); // closed with a request in flight: sent, never answered
    this.owner.closed(this);
  }

  close(): void {
    this.socket?.destroy();
  }
}
