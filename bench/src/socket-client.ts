// The bench's own load generator: N keep-alive HTTP/1.1 connections on raw TCP sockets, one
// request in flight per connection, no framework. It parses just what it needs of a response
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
interface Head {
  readonly status: number;
  readonly headBytes: number;
  readonly contentLength: number;
  readonly close: boolean;
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
  return { status, headBytes: end + 4, contentLength: noBody ? 0 : chunked ? -1 : Number(length![1]), close };
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
  const run = new SocketRun(spec);
  for (let i = 0; i < spec.connections; i++) new Connection(run);
  return { done: run.done, stop: () => run.stop() };
}

/** What the connections of one load share: the spec, the counters, the open connections. */
class SocketRun {
  sent = 0;
  errors = 0;
  timeouts = 0;
  private stopped = false;
  readonly connections = new Set<Connection>();
  readonly done: Promise<{ sent: number; errors: number; timeouts: number }>;
  private finish: () => void = () => {};
  private readonly sweep: NodeJS.Timeout;

  constructor(readonly spec: SocketLoadSpec) {
    this.done = new Promise((resolve) => {
      this.finish = () => resolve({ sent: this.sent, errors: this.errors, timeouts: this.timeouts });
    });
    this.sweep = setInterval(() => {
      const now = performance.now();
      for (const c of this.connections) {
        const since = c.inFlightSince;
        if (since !== 0 && now - since > spec.timeoutMs) c.expire();
      }
    }, TIMEOUT_SWEEP_MS);
  }

  mayStillSend(): boolean {
    return !this.stopped && this.sent < this.spec.total && performance.now() < this.spec.sendUntil;
  }

  /** A connection has left `connections`; the load is done once none is left. */
  ended(): void {
    if (this.connections.size === 0) {
      clearInterval(this.sweep);
      this.finish();
    }
  }

  stop(): void {
    this.stopped = true;
    for (const c of this.connections) c.abort();
  }
}

/** One keep-alive connection, reopened when the server closes it while there is more to send. */
class Connection {
  private socket: net.Socket | undefined;
  private pending: Buffer | undefined;
  private user = -1;
  private sentAt = 0;
  private head: Head | undefined;
  private readonly readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

  constructor(private readonly run: SocketRun) {
    run.connections.add(this);
    this.connect();
  }

  get inFlightSince(): number {
    return this.user === -1 ? 0 : this.sentAt;
  }

  private connect(): void {
    const socket = net.connect({
      host: this.run.spec.host,
      port: this.run.spec.port,
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
    socket.on('connect', () => this.send());
    socket.on('error', () => {}); // 'close' follows and decides
    socket.on('close', () => this.onClose(socket));
  }

  private send(): void {
    if (!this.run.mayStillSend()) return this.end();
    const { bytes, user } = this.run.spec.next();
    this.run.sent++;
    this.user = user;
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
      this.run.errors++;
      this.socket?.destroy();
      return;
    }
    this.pending = Buffer.from(buf);
  }

  private complete(head: Head): void {
    const user = this.user;
    if (user === -1) throw new Error('a response nobody asked for');
    this.user = -1;
    this.run.spec.onResponse(user, head.status, Math.max(1, Math.round((performance.now() - this.sentAt) * 1000)));
    if (!head.close) this.send();
  }

  /** A request timed out: count it, drop the connection, open another. */
  expire(): void {
    this.run.timeouts++;
    this.user = -1;
    this.socket?.destroy();
  }

  private onClose(socket: net.Socket): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.pending = undefined;
    this.head = undefined;
    if (this.user !== -1) {
      this.run.errors++; // closed with a request in flight: sent, never answered
      this.user = -1;
    }
    if (!this.run.mayStillSend()) return this.end();
    setTimeout(() => (this.run.mayStillSend() ? this.connect() : this.end()), this.run.errors > 0 ? RECONNECT_DELAY_MS : 0);
  }

  private end(): void {
    if (!this.run.connections.delete(this)) return;
    this.socket?.destroy();
    this.run.ended();
  }

  abort(): void {
    this.socket?.destroy();
  }
}
