// Helpers of the operability suites: a TCP proxy that can cut, black-hole or slow down the path
// to PostgreSQL/Redis (to test outages without touching the shared servers), child `couponrush`
// processes, and small HTTP utilities.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export type ProxyMode = 'forward' | 'blackhole';

/** A loopback TCP proxy to `target`. `down()` refuses connections, `blackhole()` accepts and ignores them. */
export class TcpProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private mode: ProxyMode = 'forward';
  port = 0;
  /** Added to every chunk coming back from the target. */
  delayMs = 0;
  private lose: { pattern: string; serverGetsIt: boolean; then?: () => void } | undefined;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  async up(): Promise<this> {
    if (this.mode === 'blackhole') this.cutAll(); // pending connects fail now instead of at their timeout
    this.mode = 'forward';
    if (this.server !== undefined) return this;
    const server = net.createServer((client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    return this;
  }

  /** Connections are refused (the port is closed) and open ones are cut. */
  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.cutAll();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * Once: the next request whose bytes contain `pattern` loses its answer. With `serverGetsIt` the
   * request reaches the target and the connection is cut before any reply comes back (the command
   * ran, the client cannot know); without, the connection is cut before the request is forwarded.
   * `then` runs right after the cut (e.g. to black-hole the proxy so the client cannot ask again).
   */
  loseAnswerTo(pattern: string, serverGetsIt: boolean, then?: () => void): void {
    this.lose = { pattern, serverGetsIt, ...(then === undefined ? {} : { then }) };
  }

  /** Open connections are cut (both ends see a reset); new ones go through as before. */
  resetConnections(): void {
    this.cutAll();
  }

  /** Open connections are cut; new ones are accepted and never answered. */
  blackhole(): void {
    this.mode = 'blackhole';
    this.cutAll();
  }

  get url(): string {
    return `127.0.0.1:${this.port}`;
  }

  private cutAll(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  private accept(client: net.Socket): void {
    this.sockets.add(client);
    client.on('close', () => this.sockets.delete(client));
    client.on('error', () => {});
    if (this.mode === 'blackhole') return;
    const upstream = net.connect(this.targetPort, this.targetHost);
    this.sockets.add(upstream);
    upstream.on('close', () => {
      this.sockets.delete(upstream);
      client.destroy();
    });
    client.on('close', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    let deaf = false; // replies are dropped from now on: this connection is about to be cut
    client.on('data', (chunk: Buffer) => {
      const lose = this.lose;
      if (lose !== undefined && chunk.includes(lose.pattern)) {
        this.lose = undefined;
        deaf = true;
        const cut = () => {
          client.destroy();
          upstream.destroy();
          lose.then?.();
        };
        if (!lose.serverGetsIt) return cut();
        upstream.write(chunk);
        setTimeout(cut, 100); // the target has long run it; its reply is dropped meanwhile
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (deaf) return;
      if (this.delayMs === 0) client.write(chunk);
      else setTimeout(() => client.writable && client.write(chunk), this.delayMs);
    });
  }
}

export const CLI = fileURLToPath(new URL('../src/cli.ts', import.meta.url));

export interface Child {
  proc: ChildProcess;
  output(): string;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
}

/** Runs `couponrush <args>` from source in a child process. */
export function runCli(args: string[], env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (c: Buffer) => (out += c.toString('utf8')));
  proc.stderr?.on('data', (c: Buffer) => (out += c.toString('utf8')));
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return { proc, output: () => out, exited };
}

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Polls `fn` until it returns true or the deadline passes. */
export async function waitFor(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 20_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Parses one sample value out of Prometheus text, e.g. sample(text, 'x_total', {a: 'b'}). */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[4]);
  }
  return undefined;
}
