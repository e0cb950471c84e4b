// The processes and scratch state a bench run owns: the API server it starts per strategy (with
// the stream worker inside when Redis is configured), the bare ceiling server, a scratch PostgreSQL database and a Redis key prefix — each created here
// and removed here. Also the memory and CPU probe of a child process (Linux /proc).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, extname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { RedisTarget } from '../../src/config.js';
import { Cluster } from 'ioredis';
import { connectRedis } from '../../src/redis/client.js';

const READY_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;
const RSS_POLL_MS = 50;
/**
 * Children get their own process group, so a Ctrl-C in the terminal reaches only the bench,
 * which then stops them in order (the API drains before the database is checked and dropped).
 */
const OWN_PROCESS_GROUP = process.platform !== 'win32';

/**
 * How to run the service's CLI and the bench's ceiling server: compiled (this file bundled into
 * bench/dist, the service in dist/) with plain node, or from the sources (tsx, tests).
 */
export interface Entrypoints {
  readonly nodeArgs: readonly string[];
  readonly cli: string;
  readonly ceiling: string;
}

export function entrypoints(): Entrypoints {
  const here = fileURLToPath(import.meta.url);
  const ext = extname(here);
  // bench/src/processes.ts or bench/dist/main.js: the checkout is two levels up.
  const root = join(dirname(here), '..', '..');
  return {
    nodeArgs: ext === '.ts' ? ['--import', 'tsx'] : [],
    cli: ext === '.ts' ? join(root, 'src', 'cli.ts') : join(root, 'dist', 'cli.js'),
    ceiling: join(dirname(here), `ceiling-server${ext}`),
  };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** A child process the bench started; `stop` ends it gracefully (SIGTERM), then forcefully. */
export class Child {
  readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(
    readonly name: string,
    readonly process: ChildProcess,
    readonly logFile: string,
  ) {
    this.exited = new Promise((resolve) => {
      process.once('exit', (code, signal) => {
        this.exitCode = code ?? (signal === null ? null : -1);
        resolve(this.exitCode);
      });
    });
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  logTail(lines?: number): string {
    return tail(this.logFile, lines);
  }

  async stop(): Promise<number | null> {
    if (!this.running) return this.exitCode ?? null;
    this.process.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS);
    });
    const first = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (first !== 'timeout') return first;
    this.process.kill('SIGKILL');
    return this.exited;
  }

  /** Last resort on the way out (process 'exit' handler): no waiting possible. */
  killNow(): void {
    if (this.running) this.process.kill('SIGKILL');
  }
}

export interface ApiSpec {
  readonly entry: Entrypoints;
  readonly env: NodeJS.ProcessEnv;
  readonly port: number;
  readonly args: readonly string[];
  /** Extra node flags (--cpu-prof …). */
  readonly nodeFlags: readonly string[];
  readonly logFile: string;
  /** What answers 200 once the process is ready: /readyz (the API), /healthz (a worker's admin listener). */
  readonly readyPath?: '/readyz' | '/healthz';
  /** The child's name in messages: 'api' unless said. */
  readonly role?: 'api' | 'worker';
}

/** Starts `couponrush <args>` and waits until GET /readyz (or `readyPath`) on `port` answers 200. */
export async function startApi(spec: ApiSpec): Promise<{ child: Child; baseUrl: string }> {
  const log = openSync(spec.logFile, 'a');
  let proc: ChildProcess;
  try {
    proc = spawn(process.execPath, [...spec.nodeFlags, ...spec.entry.nodeArgs, spec.entry.cli, ...spec.args], {
      env: spec.env,
      stdio: ['ignore', log, log],
      detached: OWN_PROCESS_GROUP,
    });
  } finally {
    closeSync(log);
  }
  const role = spec.role ?? 'api';
  const child = new Child(role, proc, spec.logFile);
  const baseUrl = `http://127.0.0.1:${spec.port}`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!child.running) {
      throw new Error(`the ${role === 'api' ? 'API' : 'worker'} process exited during start-up (exit ${await child.exited}); its log (${spec.logFile}):\n${child.logTail()}`);
    }
    try {
      const res = await fetch(`${baseUrl}${spec.readyPath ?? '/readyz'}`, { signal: AbortSignal.timeout(2_000) });
      await res.arrayBuffer();
      if (res.status === 200) return { child, baseUrl };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await child.stop();
  throw new Error(`the ${role === 'api' ? 'API' : 'worker'} did not become ready within ${READY_TIMEOUT_MS / 1000} s; its log (${spec.logFile}):\n${child.logTail()}`);
}

/** Starts the bare node:http ceiling server and waits for the port it prints. */
export async function startCeiling(
  entry: Entrypoints,
  bodyBytes: number,
  logFile: string,
  nodeFlags: readonly string[] = [],
): Promise<{ child: Child; baseUrl: string }> {
  const log = openSync(logFile, 'a');
  let proc: ChildProcess;
  try {
    proc = spawn(process.execPath, [...nodeFlags, ...entry.nodeArgs, entry.ceiling, String(bodyBytes)], {
      stdio: ['ignore', 'pipe', log],
      detached: OWN_PROCESS_GROUP,
    });
  } finally {
    closeSync(log);
  }
  const child = new Child('ceiling', proc, logFile);
  const lines = createInterface({ input: proc.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the ceiling server did not start; its log (${logFile}):\n${child.logTail()}`)), READY_TIMEOUT_MS);
    lines.once('line', (line) => {
      clearTimeout(timer);
      const parsed = JSON.parse(line) as { port?: unknown };
      if (typeof parsed.port === 'number' && parsed.port > 0) resolve(parsed.port);
      else reject(new Error(`the ceiling server printed ${line}`));
    });
    void child.exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the ceiling server exited (${code}); its log (${logFile}):\n${child.logTail()}`));
    });
  });
  lines.close();
  proc.stdout?.resume();
  return { child, baseUrl: `http://127.0.0.1:${port}` };
}

/** What a child process used over a window (Linux /proc; undefined elsewhere). */
export interface ProcessUsage {
  /** Peak resident memory, bytes. */
  readonly peakRssBytes: number | undefined;
  /** CPU time (user + system) spent in the window, ms. */
  readonly cpuMs: number | undefined;
  /** Of which before `mark()` was called (undefined without a mark). */
  readonly cpuMsBeforeMark: number | undefined;
  /** Of which in the kernel (stime): on loopback, every send also runs the receiver's TCP path. */
  readonly systemCpuMs: number | undefined;
}

/** /proc reports CPU times in USER_HZ ticks, which Linux fixes at 100 per second for user space. */
const USER_HZ = 100;

/**
 * Peak resident memory and CPU time of a child over a window. On Linux, writing 5 to clear_refs
 * resets the kernel's high-water mark (VmHWM) so it covers only this window; VmRSS is also polled
 * in case the reset is refused. CPU is utime + stime from /proc/<pid>/stat at both ends (10 ms
 * resolution: ample over a stampede of seconds). Elsewhere there is no /proc: both are undefined.
 */
export class ProcessProbe {
  private polled = 0;
  private resetWorked = false;
  private cpuAtStart: number | undefined;
  private cpuAtMark: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly pid: number) {}

  private readKb(field: 'VmRSS' | 'VmHWM'): number | undefined {
    try {
      const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
      const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
      return match === null ? undefined : Number(match[1]);
    } catch {
      return undefined;
    }
  }

  private systemAtStart: number | undefined;

  /** utime + stime, or stime alone, in ms. */
  private readCpuMs(which: 'all' | 'system' = 'all'): number | undefined {
    try {
      const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
      // The command name (field 2) may hold spaces: count fields from its closing parenthesis.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ticks = (which === 'all' ? Number(fields[11]) : 0) + Number(fields[12]); // utime, stime (fields 14 and 15)
      return Number.isFinite(ticks) ? (ticks * 1000) / USER_HZ : undefined;
    } catch {
      return undefined;
    }
  }

  start(): void {
    try {
      writeFileSync(`/proc/${this.pid}/clear_refs`, '5');
      this.resetWorked = true;
    } catch {
      this.resetWorked = false;
    }
    this.cpuAtStart = this.readCpuMs();
    this.systemAtStart = this.readCpuMs('system');
    const poll = () => {
      const kb = this.readKb('VmRSS');
      if (kb !== undefined && kb > this.polled) this.polled = kb;
    };
    poll();
    this.timer = setInterval(poll, RSS_POLL_MS);
  }

  /** Splits the window here (the sell-out): CPU before and after it are reported apart. */
  mark(): void {
    this.cpuAtMark ??= this.readCpuMs();
  }

  stop(): ProcessUsage {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    const hwm = this.resetWorked ? this.readKb('VmHWM') : undefined;
    const kb = Math.max(hwm ?? 0, this.polled);
    const cpuAtEnd = this.readCpuMs();
    const systemAtEnd = this.readCpuMs('system');
    return {
      peakRssBytes: kb === 0 ? undefined : kb * 1024,
      cpuMs: this.cpuAtStart === undefined || cpuAtEnd === undefined ? undefined : cpuAtEnd - this.cpuAtStart,
      cpuMsBeforeMark: this.cpuAtStart === undefined || this.cpuAtMark === undefined ? undefined : this.cpuAtMark - this.cpuAtStart,
      systemCpuMs: this.systemAtStart === undefined || systemAtEnd === undefined ? undefined : systemAtEnd - this.systemAtStart,
    };
  }
}

/** Deletes every key under a prefix the bench gave its API processes. */
export async function deleteRedisPrefix(target: RedisTarget | string, prefix: string): Promise<number> {
  if (prefix.length < 8) throw new Error(`refusing to delete a short Redis prefix "${prefix}"`);
  const where: RedisTarget = typeof target === 'string' ? { kind: 'node', url: target } : target;
  const redis = connectRedis(where, { lazyConnect: true, maxRetriesPerRequest: 2, commandTimeout: 10_000 });
  redis.on('error', () => {}); // the commands below report it
  let deleted = 0;
  try {
    await redis.connect();
    // A Cluster's keys are spread over its masters: scan each, and delete key by key (one
    // UNLINK cannot span slots; the Cluster client routes each to its master).
    const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
    for (const node of nodes) {
      let cursor = '0';
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        if (keys.length === 0) continue;
        if (redis instanceof Cluster) deleted += (await Promise.all(keys.map((k) => redis.unlink(k)))).reduce((a, b) => a + b, 0);
        else deleted += await redis.unlink(...keys);
      } while (cursor !== '0');
    }
  } finally {
    redis.disconnect();
  }
  return deleted;
}
