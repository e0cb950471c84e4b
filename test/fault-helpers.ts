// Fault injection: private PostgreSQL, MariaDB and Redis servers (and a Redis Sentinel group, and a Redis Cluster) started
// from this machine's binaries on free ports in temp directories (never the shared servers, which CI
// and other tests use), the API as a real `couponrush serve` child process, and a stampede that records every answer, lets a
// fault happen in its middle, and audits the answers against the database once it has healed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { openServerDb } from '../src/db/index.js';
import { signUserToken } from '../src/http/auth.js';
import { after, type TestContext } from 'node:test';
import { ADMIN_TOKEN, createTestDatabase, JWT_SECRET, missing, needServer, PG_ADMIN_URL, request, type Response, type TestDatabase } from './helpers.js';
import { freePort, runCli, waitFor, type Child } from './ops-helpers.js';

// ---------------------------------------------------------------------------------------------
// Private servers

/** The directory of PostgreSQL's server binaries (initdb, pg_ctl), or undefined. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'pg_ctl'))).sort((a, b) => Number(b) - Number(a));
    if (versions[0] !== undefined) return join(root, versions[0], 'bin');
  }
  const found = spawnSync('sh', ['-c', 'dirname "$(command -v initdb)"'], { encoding: 'utf8' });
  const dir = found.stdout.trim();
  return found.status === 0 && dir !== '' && existsSync(join(dir, 'pg_ctl')) ? dir : undefined;
}

export function redisServerBinary(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  return found.status === 0 && found.stdout.trim() !== '' ? found.stdout.trim() : undefined;
}

const isRoot = process.getuid?.() === 0;

/** PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user. */
function runPg(bin: string, tool: string, args: string[]): void {
  const cmd = isRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]] as const : [join(bin, tool), args] as const;
  const r = spawnSync(cmd[0], cmd[1], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
}

/** A PostgreSQL cluster of our own: crash it, hang it, restart it without touching anyone else's. */
export class PrivatePostgres implements PrivateDatabase {
  readonly label = 'PostgreSQL';
  private constructor(
    private readonly bin: string,
    readonly dir: string,
    readonly port: number,
  ) {}

  static async create(bin: string): Promise<PrivatePostgres> {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-pg-'));
    if (isRoot) chownSync(dir, Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim()), Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim()));
    runPg(bin, 'initdb', ['-D', join(dir, 'data'), '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync']);
    const server = new PrivatePostgres(bin, dir, await freePort());
    await server.start();
    return server;
  }

  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  async start(): Promise<void> {
    const options = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c max_connections=200`;
    runPg(this.bin, 'pg_ctl', ['-D', join(this.dir, 'data'), '-o', options, '-l', join(this.dir, 'log'), '-w', '-t', '30', 'start']);
  }

  /** A crash: every process ends at once, nothing is flushed but the WAL already written. */
  async crash(): Promise<void> {
    runPg(this.bin, 'pg_ctl', ['-D', join(this.dir, 'data'), '-m', 'immediate', '-w', 'stop']);
  }

  /** The postmaster and every backend: SIGSTOP them all for a hang (connections accepted, no answer). */
  private pids(): number[] {
    const postmaster = Number(readFileSync(join(this.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    const children = spawnSync('pgrep', ['-P', String(postmaster)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
    return [postmaster, ...children];
  }

  hang(): void {
    for (const pid of this.pids()) process.kill(pid, 'SIGSTOP');
  }

  resume(): void {
    for (const pid of this.pids()) process.kill(pid, 'SIGCONT');
  }

  async createDatabase(): Promise<string> {
    const name = `faults_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
    const c = new pg.Client({ connectionString: this.url() });
    await c.connect();
    try {
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    return this.url(name);
  }

  async destroy(): Promise<void> {
    try {
      runPg(this.bin, 'pg_ctl', ['-D', join(this.dir, 'data'), '-m', 'immediate', '-w', 'stop']);
    } catch {
      // already stopped
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** SIGKILL a child server process and wait until it is gone (nothing when it already is). */
async function kill9(proc: ChildProcess | undefined): Promise<void> {
  if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    proc.once('exit', () => resolve());
    proc.kill('SIGKILL');
  });
}

/** The first of these programs on the PATH or in /usr/sbin (where Debian puts server binaries). */
function program(...names: string[]): string | undefined {
  for (const name of names) {
    const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim();
    if (found !== '') return found;
    if (existsSync(join('/usr/sbin', name))) return join('/usr/sbin', name);
  }
  return undefined;
}

/** The MariaDB server binaries (mariadbd, mariadb-install-db), or undefined. */
export function mariadbBinaries(): { server: string; install: string } | undefined {
  const server = program('mariadbd', 'mysqld');
  const install = program('mariadb-install-db', 'mysql_install_db');
  return server === undefined || install === undefined ? undefined : { server, install };
}

/** What the fault suite does to its private database server, whichever it is. */
export interface PrivateDatabase {
  readonly label: string;
  start(): Promise<void>;
  crash(): Promise<void>;
  hang(): void;
  resume(): void;
  /** A fresh database on it; its URL. */
  createDatabase(): Promise<string>;
  destroy(): Promise<void>;
}

/**
 * A MariaDB server of our own, in a temp directory on a free port: kill -9 it (InnoDB recovers
 * from its redo log on the next start), hang it, restart it. No grant tables: it listens on
 * 127.0.0.1 only and lives as long as the suite.
 */
export class PrivateMariaDb implements PrivateDatabase {
  readonly label = 'MariaDB';
  private proc: ChildProcess | undefined;

  private constructor(
    private readonly bins: { server: string; install: string },
    readonly dir: string,
    readonly port: number,
  ) {}

  static async create(bins: { server: string; install: string }): Promise<PrivateMariaDb> {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-mariadb-'));
    const user = isRoot ? ['--user=root'] : [];
    const r = spawnSync(bins.install, ['--no-defaults', `--datadir=${join(dir, 'data')}`, ...user, '--skip-test-db', '--auth-root-authentication-method=normal'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${bins.install} failed (${r.status}): ${r.stderr}${r.stdout}`);
    const server = new PrivateMariaDb(bins, dir, await freePort());
    await server.start();
    return server;
  }

  url(database = 'mysql'): string {
    return `mysql://root@127.0.0.1:${this.port}/${database}`;
  }

  private async query(sql: string): Promise<void> {
    const c = await mysql.createConnection({ uri: this.url(), connectTimeout: 1_000 });
    try {
      await c.query(sql);
    } finally {
      c.destroy();
    }
  }

  async start(): Promise<void> {
    const args = [
      '--no-defaults',
      ...(isRoot ? ['--user=root'] : []),
      `--datadir=${join(this.dir, 'data')}`,
      `--port=${this.port}`,
      '--bind-address=127.0.0.1',
      `--socket=${join(this.dir, 'sock')}`,
      `--pid-file=${join(this.dir, 'pid')}`,
      '--skip-grant-tables',
      '--max-connections=300',
      '--innodb-buffer-pool-size=64M',
    ];
    const proc = spawn(this.bins.server, args, { stdio: 'ignore' });
    this.proc = proc;
    await waitFor(`private MariaDB on :${this.port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`mariadbd exited with ${proc.exitCode}`);
      return this.query('SELECT 1').then(
        () => true,
        () => false,
      );
    }, 30_000);
  }

  /** kill -9: what InnoDB had not written to its redo log is gone; the rest is recovered on start. */
  async crash(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    await kill9(proc);
  }

  /** SIGSTOP: the port still accepts connections, nothing answers. */
  hang(): void {
    this.proc?.kill('SIGSTOP');
  }

  resume(): void {
    this.proc?.kill('SIGCONT');
  }

  async createDatabase(): Promise<string> {
    const name = `faults_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
    await this.query(`CREATE DATABASE ${name}`);
    return this.url(name);
  }

  async destroy(): Promise<void> {
    this.resume();
    await this.crash();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export type RedisPersistence = 'aof-always' | 'none';

/** A Redis of our own: kill -9 it and start it again from its files (or from nothing). */
export class PrivateRedis {
  private proc: ChildProcess | undefined;

  private constructor(
    private readonly bin: string,
    readonly dir: string,
    readonly port: number,
    readonly persistence: RedisPersistence,
  ) {}

  static async create(bin: string, persistence: RedisPersistence): Promise<PrivateRedis> {
    const server = new PrivateRedis(bin, mkdtempSync(join(tmpdir(), 'couponrush-redis-')), await freePort(), persistence);
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const persistence = this.persistence === 'aof-always' ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    const proc = spawn(this.bin, ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--save', '', ...persistence], { stdio: 'ignore' });
    this.proc = proc;
    await waitFor(`private redis on :${this.port}`, async () => {
      const r = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on('error', () => {});
      try {
        await r.connect();
        return (await r.ping()) === 'PONG';
      } finally {
        r.disconnect();
      }
    });
  }

  /** SIGSTOP: the port still accepts connections, nothing answers. */
  hang(): void {
    this.proc?.kill('SIGSTOP');
  }

  resume(): void {
    this.proc?.kill('SIGCONT');
  }

  /** Forgets everything on disk (for a restart without persistence). */
  wipe(): void {
    for (const f of readdirSync(this.dir)) rmSync(join(this.dir, f), { recursive: true, force: true });
  }

  /** kill -9: what Redis had not written to its files is gone. */
  async kill9(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    await kill9(proc);
  }

  async destroy(): Promise<void> {
    await this.kill9();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Redis Sentinel: a primary, its replicas and the sentinels that fail it over

export interface SentinelGroupOptions {
  masterName?: string;
  /** down-after-milliseconds: how long a silent primary takes to count as down (default 1000). */
  downAfterMs?: number;
  /** failover-timeout: small (default 3000) so one suite can fail over again soon after a failover. */
  failoverTimeoutMs?: number;
  /** min-replicas-to-write on every data node, since each may be the primary after a failover (default 0: off). */
  minReplicasToWrite?: number;
  /** min-replicas-max-lag in seconds (default 1), with minReplicasToWrite. */
  minReplicasMaxLagS?: number;
  /** Replicas of the primary (default 1). */
  replicas?: number;
  /** Sentinels; the quorum is their majority (default 3). */
  sentinels?: number;
}

/** A process of the group: its port names it, its directory keeps its files across kill and restart. */
interface GroupProcess {
  readonly port: number;
  readonly dir: string;
  readonly conf: string;
  proc: ChildProcess | undefined;
}

const HOST = '127.0.0.1';

/** A command on a fresh connection that gives up fast: a node that does not answer is an answer too. */
async function askNode<T>(port: number, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    connectTimeout: 1_000,
    commandTimeout: 2_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableReadyCheck: false,
    enableOfflineQueue: false,
  });
  r.on('error', () => {});
  try {
    await r.connect();
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

/** ROLE, parsed: a primary's replicas, or a replica's primary and link state. */
export type NodeRole = { role: 'master'; replicaPorts: number[] } | { role: 'slave'; masterPort: number; state: string } | { role: string };

export function nodeRole(port: number): Promise<NodeRole> {
  return askNode(port, async (r) => {
    const reply = (await r.call('ROLE')) as unknown[];
    if (reply[0] === 'master') return { role: 'master', replicaPorts: (reply[2] as string[][]).map((x) => Number(x[1])) };
    if (reply[0] === 'slave') return { role: 'slave', masterPort: Number(reply[2]), state: String(reply[3]) };
    return { role: String(reply[0]) };
  });
}

/** `INFO replication` as field → value. */
function infoReplication(port: number): Promise<Map<string, string>> {
  return askNode(port, async (r) => {
    const text = await r.info('replication');
    return new Map(text.split('\r\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]));
  });
}

/** A master's INFO replication: each replica's port → state (online once it has synced). */
async function replicaStatesOf(primaryPort: number): Promise<Map<number, string>> {
  const info = await infoReplication(primaryPort);
  const states = new Map<number, string>();
  for (const [k, v] of info) {
    if (!/^slave\d+$/.test(k)) continue;
    const fields = new Map(v.split(',').map((kv) => kv.split('=') as [string, string]));
    states.set(Number(fields.get('port')), fields.get('state') ?? '');
  }
  if (Number(info.get('connected_slaves')) !== states.size) throw new Error('INFO replication disagrees with itself');
  return states;
}

/**
 * A Redis Sentinel deployment of our own on free ports in one temp directory: a primary, replicas
 * and sentinels, every process named by its port. Kill -9 the primary and watch the sentinels
 * promote a replica; restart a node from its own files (its AOF, and its conf as Sentinel last
 * rewrote it) and watch Sentinel make it a replica of whoever is primary now. Data nodes run from
 * a conf file too (not argv) so Sentinel's CONFIG REWRITE after a promotion or a demotion sticks,
 * as in a real deployment.
 */
export class PrivateSentinelGroup {
  /** Every client handed out: destroy() closes them, so a failed test leaves no socket behind. */
  private readonly clients = new Set<Redis>();
  private readonly dataNodes = new Map<number, GroupProcess>();
  private readonly sentinelNodes = new Map<number, GroupProcess>();

  private constructor(
    private readonly bin: string,
    readonly dir: string,
    readonly masterName: string,
  ) {}

  static async create(bin: string, options: SentinelGroupOptions = {}): Promise<PrivateSentinelGroup> {
    const masterName = options.masterName ?? 'couponrush';
    const downAfterMs = options.downAfterMs ?? 1_000;
    const failoverTimeoutMs = options.failoverTimeoutMs ?? 3_000;
    const minReplicas = options.minReplicasToWrite ?? 0;
    const replicas = options.replicas ?? 1;
    const sentinels = options.sentinels ?? 3;
    const group = new PrivateSentinelGroup(bin, mkdtempSync(join(tmpdir(), 'couponrush-sentinel-')), masterName);
    try {
      const primaryPort = await freePort();
      const dataNode = (port: number, replicaOf?: number) => [
        `port ${port}`,
        `bind ${HOST}`,
        'save ""',
        'appendonly yes',
        'appendfsync always',
        // 7.0 waits 5 s by default for more replicas before a diskless full sync: every (re)sync would.
        'repl-diskless-sync-delay 0',
        ...(replicaOf === undefined ? [] : [`replicaof ${HOST} ${replicaOf}`]),
        ...(minReplicas > 0 ? [`min-replicas-to-write ${minReplicas}`, `min-replicas-max-lag ${options.minReplicasMaxLagS ?? 1}`] : []),
      ];
      await group.startNode(group.addNode('redis', primaryPort, dataNode(primaryPort)));
      for (let i = 0; i < replicas; i++) {
        const port = await freePort();
        await group.startNode(group.addNode('redis', port, dataNode(port, primaryPort)));
      }
      await group.waitForReplicaLink(replicas);
      for (let i = 0; i < sentinels; i++) {
        const port = await freePort();
        const conf = [
          `port ${port}`,
          `bind ${HOST}`,
          `sentinel monitor ${masterName} ${HOST} ${primaryPort} ${Math.floor(sentinels / 2) + 1}`,
          `sentinel down-after-milliseconds ${masterName} ${downAfterMs}`,
          `sentinel failover-timeout ${masterName} ${failoverTimeoutMs}`,
          `sentinel parallel-syncs ${masterName} 1`,
        ];
        await group.startNode(group.addNode('sentinel', port, conf));
      }
      // Sentinels find the replicas through the primary's INFO and one another through its hello channel.
      await waitFor(`${sentinels} sentinels that know the primary, ${replicas} replica(s) and each other`, async () => {
        for (const port of group.sentinelPorts) {
          const master = await askNode(port, async (r) => (await r.call('SENTINEL', 'MASTER', masterName)) as string[]);
          const field = (name: string) => master[master.indexOf(name) + 1];
          if (field('flags') !== 'master' || Number(field('num-other-sentinels')) !== sentinels - 1 || Number(field('num-slaves')) !== replicas) return false;
        }
        return true;
      }, 30_000);
      return group;
    } catch (err) {
      await group.destroy();
      throw err;
    }
  }

  /** Writes the process's conf into its own directory (Sentinel rewrites it: it must be writable). */
  private addNode(kind: 'redis' | 'sentinel', port: number, conf: string[]): GroupProcess {
    const dir = join(this.dir, `${kind}-${port}`);
    mkdirSync(dir);
    const file = join(dir, `${kind}.conf`);
    writeFileSync(file, [...conf, `dir ${dir}`, `logfile ${join(dir, `${kind}.log`)}`, ''].join('\n'));
    const node = { port, dir, conf: file, proc: undefined };
    (kind === 'redis' ? this.dataNodes : this.sentinelNodes).set(port, node);
    return node;
  }

  private async startNode(node: GroupProcess): Promise<void> {
    if (node.proc !== undefined) throw new Error(`:${node.port} is running already`);
    const sentinel = this.sentinelNodes.has(node.port);
    const proc = spawn(this.bin, sentinel ? [node.conf, '--sentinel'] : [node.conf], { stdio: 'ignore' });
    node.proc = proc;
    await waitFor(`private ${sentinel ? 'sentinel' : 'redis'} on :${node.port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: see ${node.dir}`);
      return (await askNode(node.port, (r) => r.ping())) === 'PONG';
    });
  }

  private node(port: number): GroupProcess {
    const node = this.dataNodes.get(port);
    if (node === undefined) throw new Error(`:${port} is no data node of this group`);
    return node;
  }

  /** The `host:port,host:port,…` list the service's REDIS_SENTINELS takes. */
  get sentinels(): string {
    return this.sentinelPorts.map((p) => `${HOST}:${p}`).join(',');
  }

  get sentinelPorts(): number[] {
    return [...this.sentinelNodes.keys()];
  }

  /** The primary and the replicas as started (a failover changes which is which: ask primary()). */
  get dataPorts(): number[] {
    return [...this.dataNodes.keys()];
  }

  /** Data nodes whose process runs. */
  get liveDataPorts(): number[] {
    return this.dataPorts.filter((p) => this.dataNodes.get(p)!.proc !== undefined);
  }

  env(): Record<string, string> {
    return { REDIS_SENTINELS: this.sentinels, REDIS_SENTINEL_MASTER: this.masterName };
  }

  /** The primary as the first sentinel that answers sees it. */
  async primary(): Promise<{ host: string; port: number }> {
    for (const port of this.sentinelPorts) {
      if (this.sentinelNodes.get(port)!.proc === undefined) continue;
      try {
        const [host, p] = await askNode(port, async (r) => (await r.call('SENTINEL', 'get-master-addr-by-name', this.masterName)) as [string, string]);
        return { host, port: Number(p) };
      } catch {
        // the next sentinel
      }
    }
    throw new Error('no sentinel answered get-master-addr-by-name');
  }

  /** What every running sentinel answers to get-master-addr-by-name (undefined: no answer). */
  private async primaryPorts(): Promise<Array<number | undefined>> {
    return Promise.all(
      this.sentinelPorts
        .filter((p) => this.sentinelNodes.get(p)!.proc !== undefined)
        .map((p) =>
          askNode(p, async (r) => Number(((await r.call('SENTINEL', 'get-master-addr-by-name', this.masterName)) as string[])[1])).catch(() => undefined),
        ),
    );
  }

  /** kill -9 a data node: what it had not written to its AOF is gone. */
  async kill9Node(port: number): Promise<void> {
    const node = this.node(port);
    const proc = node.proc;
    node.proc = undefined;
    await kill9(proc);
  }

  /** SIGSTOP a data node: its port still accepts connections, nothing answers, no replication ACK goes out. */
  hangNode(port: number): void {
    this.node(port).proc?.kill('SIGSTOP');
  }

  resumeNode(port: number): void {
    this.node(port).proc?.kill('SIGCONT');
  }

  /** kill -9 the current primary; its port. */
  async kill9Primary(): Promise<number> {
    const { port } = await this.primary();
    await this.kill9Node(port);
    return port;
  }

  /** kill -9 a running replica (the first, unless `port` says which); its port. */
  async killReplica(port?: number): Promise<number> {
    const primary = (await this.primary()).port;
    const victim = port ?? this.liveDataPorts.find((p) => p !== primary);
    if (victim === undefined || victim === primary) throw new Error('no running replica to kill');
    await this.kill9Node(victim);
    return victim;
  }

  /**
   * Until every running sentinel names a primary other than `fromPort` and that node answers ROLE
   * as a master; the ms it took from this call.
   */
  async waitForFailover(fromPort: number, timeoutMs = 30_000): Promise<number> {
    const started = performance.now();
    await waitFor(`a failover away from :${fromPort}`, async () => {
      const ports = await this.primaryPorts();
      const to = ports[0];
      if (to === undefined || to === fromPort || ports.some((p) => p !== to)) return false;
      return (await nodeRole(to)).role === 'master';
    }, timeoutMs, 50);
    return performance.now() - started;
  }

  /**
   * Starts a killed data node again from its own files (AOF, conf) and waits until it is back in
   * the group: the primary if the sentinels still say so, else a replica of the current primary
   * with its link up and seen online by the primary. A restarted old primary comes back believing
   * it is a primary; it is Sentinel that demotes it. The ms from the start until then.
   */
  async restartNode(port: number, timeoutMs = 30_000): Promise<number> {
    const started = performance.now();
    await this.startNode(this.node(port));
    await waitFor(`:${port} back in the group`, async () => {
      const primary = (await this.primary()).port;
      const role = await nodeRole(port);
      if (primary === port) return role.role === 'master';
      if (!('masterPort' in role) || role.masterPort !== primary || role.state !== 'connected') return false;
      return (await replicaStatesOf(primary)).get(port) === 'online';
    }, timeoutMs, 50);
    return performance.now() - started;
  }

  /**
   * Until the primary (the sentinels' one, or the first data node before there are sentinels) has
   * `replicas` replicas online (default: every other running data node) and each reports
   * master_link_status:up.
   */
  async waitForReplicaLink(replicas?: number, timeoutMs = 20_000): Promise<void> {
    await waitFor(`${replicas ?? 'every'} replica(s) linked to the primary`, async () => {
      const primary = this.sentinelNodes.size > 0 ? (await this.primary()).port : this.dataPorts[0]!;
      const expected = replicas ?? this.liveDataPorts.length - 1;
      const states = await replicaStatesOf(primary);
      if (states.size !== expected || [...states.values()].some((s) => s !== 'online')) return false;
      for (const port of states.keys()) if ((await infoReplication(port)).get('master_link_status') !== 'up') return false;
      return true;
    }, timeoutMs, 50);
  }

  /** An ioredis client that finds the primary through the sentinels (and finds it again after a failover). */
  client(options: RedisOptions = {}): Redis {
    const client = new Redis({ sentinels: this.sentinelPorts.map((port) => ({ host: HOST, port })), name: this.masterName, ...options });
    client.on('error', () => {}); // reconnecting through a failover is expected; commands still reject
    this.clients.add(client);
    return client;
  }

  async destroy(): Promise<void> {
    for (const c of this.clients) c.disconnect();
    // Sentinels first: else they would fail over the primary as it goes.
    for (const node of [...this.sentinelNodes.values(), ...this.dataNodes.values()]) {
      const proc = node.proc;
      node.proc = undefined;
      await kill9(proc);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster: masters owning the 16384 slots, a replica (or more) each, failing over by themselves

export interface PrivateClusterOptions {
  /** Masters sharing the slots (default 3: a failover needs a majority of masters to agree). */
  masters?: number;
  /** Replicas of each master (default 1). */
  replicasPerMaster?: number;
  /** cluster-node-timeout: how long a silent node takes to be suspected (default 1000). */
  nodeTimeoutMs?: number;
  /** min-replicas-to-write on every node, since a replica may be a master after a failover (default 0: off). */
  minReplicasToWrite?: number;
  /** min-replicas-max-lag in seconds (default 1), with minReplicasToWrite. */
  minReplicasMaxLagS?: number;
}

/** A range of slots: the port of the master that owns it, and of that master's replicas (except those flagged `fail`). */
export interface SlotRange {
  readonly start: number;
  readonly end: number;
  readonly master: number;
  readonly replicas: readonly number[];
}

/** One line of CLUSTER NODES. */
export interface ClusterNodeLine {
  readonly id: string;
  readonly port: number;
  /** myself, master, slave, fail?, fail, handshake, noaddr, nofailover. */
  readonly flags: readonly string[];
  /** The master's id for a replica; undefined for a master. */
  readonly masterId: string | undefined;
  readonly linkState: string;
  /** Slots and ranges as written ("0-5460"); migrating/importing ones ("[…]") are left out. */
  readonly slots: readonly string[];
}

/** CRC16 (XMODEM: polynomial 0x1021, initial 0) of bytes, as Redis Cluster's key hash uses it. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/**
 * The slot of a key, per the Redis Cluster spec: CRC16 of the key mod 16384, or of its hash tag —
 * the bytes between the first `{` and the first `}` after it, when there are any.
 */
export function clusterKeySlot(key: string | Uint8Array): number {
  const bytes = typeof key === 'string' ? Buffer.from(key, 'utf8') : key;
  const open = bytes.indexOf(0x7b);
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(bytes.subarray(open + 1, close)) % 16384;
  }
  return crc16(bytes) % 16384;
}

/** `CLUSTER INFO` as field → value. */
function clusterInfo(port: number): Promise<Map<string, string>> {
  return askNode(port, async (r) => {
    const text = (await r.call('CLUSTER', 'INFO')) as string;
    return new Map(text.split('\r\n').filter((l) => l.includes(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1)]));
  });
}

/** `CLUSTER NODES` as a node sees the cluster. */
export function clusterNodes(port: number): Promise<ClusterNodeLine[]> {
  return askNode(port, async (r) => {
    const text = (await r.call('CLUSTER', 'NODES')) as string;
    return text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((line) => {
        const [id, address, flags, master, , , , linkState, ...slots] = line.split(' ');
        return {
          id: id!,
          port: Number(address!.split('@')[0]!.split(':').at(-1)),
          flags: flags!.split(','),
          masterId: master === '-' ? undefined : master,
          linkState: linkState!,
          slots: slots.filter((s) => !s.startsWith('[')),
        };
      });
  });
}

/**
 * The slot map as a node's CLUSTER NODES has it, in slot order: each range's master, and the
 * replicas of that master not flagged `fail`. Not CLUSTER SLOTS: 7.0 leaves out of it every replica
 * whose replication offset it has not heard to be above 0 — on a fresh cluster with no writes, for
 * the first repl-ping-replica-period (10 s), all of them.
 */
async function slotMapOf(port: number): Promise<SlotRange[]> {
  const lines = await clusterNodes(port);
  const ranges: SlotRange[] = [];
  for (const master of lines) {
    if (master.slots.length === 0) continue;
    const replicas = lines.filter((n) => n.masterId === master.id && !n.flags.includes('fail')).map((n) => n.port).sort((a, b) => a - b);
    for (const slots of master.slots) {
      const [start, end] = slots.split('-').map(Number);
      ranges.push({ start: start!, end: end ?? start!, master: master.port, replicas });
    }
  }
  return ranges.sort((a, b) => a.start - b.start);
}

/** A free port whose cluster bus port (+10000) is free too, neither already `taken` (both are added to it). */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = await freePort();
    if (port > 55_535 || taken.has(port) || taken.has(port + 10_000)) continue;
    const bus = net.createServer();
    const busFree = await new Promise<boolean>((resolve) => {
      bus.once('error', () => resolve(false));
      bus.listen(port + 10_000, HOST, () => resolve(true));
    });
    if (!busFree) continue;
    await new Promise<void>((resolve) => bus.close(() => resolve()));
    taken.add(port);
    taken.add(port + 10_000);
    return port;
  }
  throw new Error('no free port with a free port+10000 for a cluster node');
}

/** redis-cli next to redis-server (else on the PATH). */
function redisCliNextTo(serverBin: string): string {
  const beside = join(dirname(serverBin), 'redis-cli');
  return existsSync(beside) ? beside : 'redis-cli';
}

/** Runs a program to its end; its output, or a rejection with it. */
function run(program: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    proc.stderr.on('data', (c: Buffer) => (out += c.toString('utf8')));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`${program} ${args.join(' ')} failed (${code ?? signal}): ${out}`));
    });
  });
}

/**
 * A Redis Cluster of our own on free ports in one temp directory (each node's port and its bus
 * port, +10000, free): masters sharing the 16384 slots, replicas of each, formed by
 * `redis-cli --cluster create`. Every node runs from a conf file in its own directory, with its
 * AOF (always fsynced) and its nodes.conf there: kill -9 a master and watch its replica take its
 * slots over; restart the node from its files and watch the cluster make it a replica of whoever
 * owns its old slots now. Nodes are named by their port.
 */
export class PrivateCluster {
  /** Every client handed out: destroy() closes them, so a failed test leaves no socket behind. */
  private readonly clients = new Set<Cluster>();
  private readonly nodeProcs = new Map<number, GroupProcess>();
  private readonly nodeIds = new Map<number, string>();
  /** What a killed master owned when it was killed, and its replicas then: what waitForFailover waits on. */
  private readonly killedMasters = new Map<number, SlotRange[]>();

  private constructor(
    private readonly bin: string,
    readonly dir: string,
  ) {}

  static async create(bin: string, options: PrivateClusterOptions = {}): Promise<PrivateCluster> {
    const masters = options.masters ?? 3;
    const replicasPerMaster = options.replicasPerMaster ?? 1;
    const nodeTimeoutMs = options.nodeTimeoutMs ?? 1_000;
    const minReplicas = options.minReplicasToWrite ?? 0;
    const cluster = new PrivateCluster(bin, mkdtempSync(join(tmpdir(), 'couponrush-cluster-')));
    try {
      const taken = new Set<number>();
      const ports: number[] = [];
      for (let i = 0; i < masters * (1 + replicasPerMaster); i++) ports.push(await freeClusterPort(taken));
      const nodes = ports.map((port) => {
        const dir = join(cluster.dir, `node-${port}`);
        mkdirSync(dir);
        const conf = join(dir, 'redis.conf');
        const lines = [
          `port ${port}`,
          `bind ${HOST}`,
          'cluster-enabled yes',
          `cluster-config-file ${join(dir, 'nodes.conf')}`,
          `cluster-node-timeout ${nodeTimeoutMs}`,
          'save ""',
          'appendonly yes',
          'appendfsync always',
          // 7.0 waits 5 s by default for more replicas before a diskless full sync: every (re)sync would.
          'repl-diskless-sync-delay 0',
          ...(minReplicas > 0 ? [`min-replicas-to-write ${minReplicas}`, `min-replicas-max-lag ${options.minReplicasMaxLagS ?? 1}`] : []),
          `dir ${dir}`,
          `logfile ${join(dir, 'redis.log')}`,
          '',
        ];
        writeFileSync(conf, lines.join('\n'));
        const node: GroupProcess = { port, dir, conf, proc: undefined };
        cluster.nodeProcs.set(port, node);
        return node;
      });
      await Promise.all(nodes.map((n) => cluster.startNode(n)));
      for (const port of ports) cluster.nodeIds.set(port, (await askNode(port, (r) => r.call('CLUSTER', 'MYID'))) as string);
      await run(
        redisCliNextTo(bin),
        ['--cluster', 'create', ...ports.map((p) => `${HOST}:${p}`), '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'],
        60_000,
      );
      await cluster.waitForHealthy(`a cluster of ${masters} masters with ${replicasPerMaster} replica(s) each`, 30_000, (view) =>
        view.length >= masters && new Set(view.map((r) => r.master)).size === masters && view.every((r) => r.replicas.length === replicasPerMaster),
      );
      return cluster;
    } catch (err) {
      await cluster.destroy();
      throw err;
    }
  }

  private async startNode(node: GroupProcess): Promise<void> {
    if (node.proc !== undefined) throw new Error(`:${node.port} is running already`);
    const proc = spawn(this.bin, [node.conf], { stdio: 'ignore' });
    node.proc = proc;
    await waitFor(`private cluster node on :${node.port}`, async () => {
      if (proc.exitCode !== null) throw new Error(`redis-server exited with ${proc.exitCode}: see ${node.dir}`);
      return (await askNode(node.port, (r) => r.ping())) === 'PONG';
    });
  }

  private node(port: number): GroupProcess {
    const node = this.nodeProcs.get(port);
    if (node === undefined) throw new Error(`:${port} is no node of this cluster`);
    return node;
  }

  /** Every node as started, masters and replicas (a failover changes which is which: ask masters()). */
  get ports(): number[] {
    return [...this.nodeProcs.keys()];
  }

  /** Nodes whose process runs. */
  get livePorts(): number[] {
    return this.ports.filter((p) => this.nodeProcs.get(p)!.proc !== undefined);
  }

  /** The `host:port,host:port,…` list of every node, as the service's REDIS_CLUSTER_NODES takes it. */
  get nodes(): string {
    return this.ports.map((p) => `${HOST}:${p}`).join(',');
  }

  env(): Record<string, string> {
    return { REDIS_CLUSTER_NODES: this.nodes };
  }

  /** A node's cluster id (CLUSTER MYID; it keeps it across restarts in its nodes.conf). */
  nodeId(port: number): string {
    const id = this.nodeIds.get(port);
    if (id === undefined) throw new Error(`:${port} is no node of this cluster`);
    return id;
  }

  /** The slot of a key (CRC16 of the key or of its hash tag, mod 16384). */
  slotOf(key: string): number {
    return clusterKeySlot(key);
  }

  /**
   * The slot map (from CLUSTER NODES) every running node agrees on; rejects when they disagree (in the
   * middle of a failover) or a node does not answer. A killed master keeps its slots in it until
   * a replica takes them over.
   */
  async slotMap(): Promise<SlotRange[]> {
    const views = await Promise.all(this.livePorts.map((p) => slotMapOf(p)));
    const first = JSON.stringify(views[0]);
    if (views.length === 0 || views.some((v) => JSON.stringify(v) !== first)) throw new Error(`the running nodes disagree on the slot map: ${views.map((v) => JSON.stringify(v)).join(' / ')}`);
    return views[0]!;
  }

  /** The port of the master that owns a slot, as every running node agrees (see slotMap). */
  async masterOfSlot(slot: number): Promise<number> {
    if (!Number.isInteger(slot) || slot < 0 || slot > 16_383) throw new Error(`no slot ${slot}`);
    const range = (await this.slotMap()).find((r) => r.start <= slot && slot <= r.end);
    if (range === undefined) throw new Error(`slot ${slot} is not served`);
    return range.master;
  }

  /** The ports of the masters that own slots, ascending. */
  async masters(): Promise<number[]> {
    return [...new Set((await this.slotMap()).map((r) => r.master))].sort((a, b) => a - b);
  }

  /** The replicas of a master (except those flagged `fail`), ascending. */
  async replicasOf(masterPort: number): Promise<number[]> {
    const range = (await this.slotMap()).find((r) => r.master === masterPort);
    if (range === undefined) throw new Error(`:${masterPort} owns no slot`);
    return [...range.replicas];
  }

  /**
   * A hash tag `{<prefix><n>}` whose slot `masterPort` owns: keys containing it land on that
   * master (and all on one slot, so a script may take several of them).
   */
  async keyOnMaster(masterPort: number, prefix: string): Promise<string> {
    const ranges = (await this.slotMap()).filter((r) => r.master === masterPort);
    if (ranges.length === 0) throw new Error(`:${masterPort} owns no slot`);
    for (let n = 0; n < 100_000; n++) {
      const tag = `{${prefix}${n}}`;
      const slot = clusterKeySlot(tag);
      if (ranges.some((r) => r.start <= slot && slot <= r.end)) return tag;
    }
    throw new Error(`no hash tag with prefix ${prefix} falls on :${masterPort}`);
  }

  /** kill -9 a node: what it had not written to its AOF is gone. A master's slots stay its own until a replica takes them over. */
  async kill9Node(port: number): Promise<void> {
    const node = this.node(port);
    if (node.proc === undefined) return;
    // What the nodes agree on; if they do not (a node just back), what the victim itself says.
    const view = await this.slotMap().catch(() => slotMapOf(port).catch(() => [] as SlotRange[]));
    const owned = view.filter((r) => r.master === port);
    if (owned.length > 0) this.killedMasters.set(port, owned);
    const proc = node.proc;
    node.proc = undefined;
    await kill9(proc);
  }

  /** kill -9 the master that owns a slot; its port. */
  async kill9MasterOf(slot: number): Promise<number> {
    const port = await this.masterOfSlot(slot);
    await this.kill9Node(port);
    return port;
  }

  /** SIGSTOP a node: its ports still accept connections, nothing answers, no cluster bus ping goes out. */
  hangNode(port: number): void {
    this.node(port).proc?.kill('SIGSTOP');
  }

  resumeNode(port: number): void {
    this.node(port).proc?.kill('SIGCONT');
  }

  /**
   * Until a replica the killed master had (kill9Node/kill9MasterOf must have killed it) is master
   * of every slot it owned, as every running node agrees, answers ROLE as a master, and every
   * running node reports cluster_state:ok; the ms it took from this call.
   */
  async waitForFailover(oldMasterPort: number, timeoutMs = 30_000): Promise<number> {
    const owned = this.killedMasters.get(oldMasterPort);
    if (owned === undefined) throw new Error(`:${oldMasterPort} was not a master killed through this harness`);
    const started = performance.now();
    await waitFor(`a failover away from :${oldMasterPort}`, async () => {
      const view = await this.slotMap();
      const takers = new Set<number>();
      for (const before of owned) {
        for (const now of view.filter((r) => r.end >= before.start && r.start <= before.end)) {
          if (!before.replicas.includes(now.master)) return false;
          takers.add(now.master);
        }
      }
      if (takers.size === 0) return false;
      for (const port of takers) if ((await nodeRole(port)).role !== 'master') return false;
      return (await Promise.all(this.livePorts.map((p) => clusterInfo(p)))).every((info) => info.get('cluster_state') === 'ok');
    }, timeoutMs, 50);
    return performance.now() - started;
  }

  /**
   * Starts a killed node again from its own files (AOF, nodes.conf) and waits until it is back in
   * the cluster: every running node sees it without a fail flag and reports cluster_state:ok, and
   * it is a replica with its link up and online at its master — or, if no failover took its
   * slots meanwhile, their master again. A restarted old master comes back believing it owns its
   * slots; the newer config epoch of the replica that took them over makes it that one's replica.
   * The ms from the start until then.
   */
  async restartNode(port: number, timeoutMs = 30_000): Promise<number> {
    const started = performance.now();
    await this.startNode(this.node(port));
    const id = this.nodeId(port);
    await waitFor(`:${port} back in the cluster`, async () => {
      for (const p of this.livePorts) {
        const line = (await clusterNodes(p)).find((n) => n.id === id);
        if (line === undefined || line.flags.some((f) => f.startsWith('fail') || f === 'handshake' || f === 'noaddr') || line.linkState !== 'connected') return false;
        if ((await clusterInfo(p)).get('cluster_state') !== 'ok') return false;
      }
      const view = await this.slotMap();
      if (view.some((r) => r.master === port)) return (await nodeRole(port)).role === 'master';
      const role = await nodeRole(port);
      if (!('masterPort' in role) || role.state !== 'connected') return false;
      if ((await infoReplication(port)).get('master_link_status') !== 'up') return false;
      return view.some((r) => r.master === role.masterPort && r.replicas.includes(port)) && (await replicaStatesOf(role.masterPort)).get(port) === 'online';
    }, timeoutMs, 50);
    this.killedMasters.delete(port);
    return performance.now() - started;
  }

  /**
   * Until every running node reports cluster_state:ok with all 16384 slots ok and knows every
   * running node, they agree on the slot map (and `check` accepts it), and every replica's link
   * is up (master_link_status:up).
   */
  async waitForHealthy(what = 'a healthy cluster', timeoutMs = 30_000, check: (view: SlotRange[]) => boolean = () => true): Promise<void> {
    await waitFor(what, async () => {
      const live = this.livePorts;
      for (const port of live) {
        const info = await clusterInfo(port);
        if (info.get('cluster_state') !== 'ok' || info.get('cluster_slots_ok') !== '16384' || Number(info.get('cluster_known_nodes')) < live.length) return false;
      }
      const view = await this.slotMap();
      if (!check(view)) return false;
      for (const port of view.flatMap((r) => r.replicas)) if ((await infoReplication(port)).get('master_link_status') !== 'up') return false;
      return true;
    }, timeoutMs, 50);
  }

  /** An ioredis Cluster client over every node (closed by destroy()). */
  client(options: ClusterOptions = {}): Cluster {
    const client = new Cluster(this.ports.map((port) => ({ host: HOST, port })), options);
    client.on('error', () => {}); // a node lost in a failover is expected; commands still reject
    this.clients.add(client);
    return client;
  }

  async destroy(): Promise<void> {
    for (const c of this.clients) c.disconnect();
    for (const node of this.nodeProcs.values()) {
      const proc = node.proc;
      node.proc = undefined;
      await kill9(proc);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** The bound the fault suites hold the service to: answering again this soon after the store is back. */
export const RECOVERY_BOUND_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// Every answer, and what the database says afterwards

/**
 * What one request got: an HTTP answer, or none — `sent` false when the connection was refused
 * (the request never reached the server), true when it broke after the request went out.
 * `at` is performance.now().
 */
export type Answer = ({ readonly status: number; readonly code?: string } | { readonly error: string; readonly sent: boolean }) & { readonly at: number };

/** Answers that say the user holds the coupon (issued, queued, or already held). */
const HOLDS = new Set([201, 202, 409]);

function mayHaveIssued(a: Answer): boolean {
  if ('error' in a) return a.sent; // no answer to a request that went out: the client cannot know
  return a.status === 504 || (a.status === 503 && a.code === 'OUTCOME_UNKNOWN');
}

/** A user the service told they hold the coupon, and when it last said so (performance.now()). */
export interface Claim {
  readonly user: string;
  readonly at: number;
}

export interface Audit {
  /** Users told 201/202. */
  readonly acknowledged: number;
  /** Told 201/202, no row: an acknowledged issuance was lost (`at`: the last such answer). */
  readonly lost: readonly Claim[];
  /** A row, though every answer the user got was a refusal or a "nothing was issued". */
  readonly unexpected: readonly string[];
  /** Told 409 ALREADY_ISSUED, no row (`at`: the last such answer). */
  readonly falseDuplicates: readonly Claim[];
  /** Users whose outcome was left open to them (OUTCOME_UNKNOWN, 504, no answer) and nothing firmer. */
  readonly undetermined: number;
  /** Answers that were not a decision: 503, 504, no answer at all. */
  readonly notDecided: number;
  /** 500s: the service failed without saying what happened. */
  readonly internalErrors: number;
  readonly statuses: ReadonlyMap<string, number>;
}

/** Records every answer of a test, per user, and compares them with the rows afterwards. */
export class Ledger {
  private readonly answers = new Map<string, Answer[]>();

  record(user: string, answer: Answer): void {
    const list = this.answers.get(user);
    if (list === undefined) this.answers.set(user, [answer]);
    else list.push(answer);
  }

  /** When each acknowledged user first heard 201/202 (performance.now()), in no order. */
  acknowledgedTimes(): number[] {
    const out: number[] = [];
    for (const answers of this.answers.values()) {
      const first = answers.find((a) => !('error' in a) && (a.status === 201 || a.status === 202));
      if (first !== undefined) out.push(first.at);
    }
    return out;
  }

  get count(): number {
    let n = 0;
    for (const list of this.answers.values()) n += list.length;
    return n;
  }

  audit(rowUsers: Iterable<string>): Audit {
    const rows = new Set(rowUsers);
    const lost: Claim[] = [];
    const unexpected: string[] = [];
    const falseDuplicates: Claim[] = [];
    const statuses = new Map<string, number>();
    let acknowledged = 0;
    let undetermined = 0;
    let internalErrors = 0;
    let notDecided = 0;
    for (const [user, answers] of this.answers) {
      let ackedAt = -1;
      let duplicateAt = -1;
      let holds = false;
      let maybe = false;
      for (const a of answers) {
        const key = 'error' in a ? (a.sent ? 'no answer' : 'refused connection') : a.code === undefined ? String(a.status) : `${a.status} ${a.code}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
        if ('error' in a) {
          if (a.sent) maybe = true;
          notDecided++;
          continue;
        }
        if (a.status === 503 || a.status === 504) notDecided++;
        if (a.status === 201 || a.status === 202) ackedAt = Math.max(ackedAt, a.at);
        if (a.status === 409) duplicateAt = Math.max(duplicateAt, a.at);
        if (HOLDS.has(a.status)) holds = true;
        if (a.status === 500) internalErrors++;
        if (mayHaveIssued(a)) maybe = true;
      }
      if (ackedAt >= 0) acknowledged++;
      if (ackedAt >= 0 && !rows.has(user)) lost.push({ user, at: ackedAt });
      if (duplicateAt >= 0 && !rows.has(user)) falseDuplicates.push({ user, at: duplicateAt });
      if (rows.has(user) && !holds && !maybe) unexpected.push(user);
      if (maybe && !holds) undetermined++;
    }
    return { acknowledged, lost, unexpected, falseDuplicates, undetermined, notDecided, internalErrors, statuses };
  }
}

// ---------------------------------------------------------------------------------------------
// The API as a real process

export interface ApiProcess {
  readonly url: string;
  readonly child: Child;
  /** True while the process runs. */
  alive(): boolean;
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `couponrush serve <args>` on a free port and waits until it answers /healthz. */
export async function startApi(args: string[], env: Record<string, string>, port?: number): Promise<ApiProcess> {
  const p = port ?? (await freePort());
  const child = runCli(['serve', ...args], { ADMIN_TOKEN, JWT_SECRET, HOST: '127.0.0.1', PORT: String(p), LOG_LEVEL: 'warn', ...env });
  const url = `http://127.0.0.1:${p}`;
  let exited = false;
  void child.exited.then(() => (exited = true));
  await waitFor(
    `couponrush serve on ${url}`,
    async () => {
      if (exited) throw new Error(`serve exited:\n${child.output()}`);
      return (await request(url, 'GET', '/healthz')).status === 200;
    },
    30_000,
  ).catch((err: Error) => {
    child.proc.kill('SIGKILL');
    throw new Error(`${err.message}\n${child.output()}`);
  });
  return {
    url,
    child,
    alive: () => !exited,
    async kill9() {
      if (exited) return;
      child.proc.kill('SIGKILL');
      await child.exited;
    },
    async stop() {
      if (exited) return;
      child.proc.kill('SIGTERM');
      const timer = setTimeout(() => child.proc.kill('SIGKILL'), 15_000);
      await child.exited;
      clearTimeout(timer);
    },
  };
}

export async function createCampaign(url: string, strategy: string, totalQuantity: number): Promise<number> {
  const res = await request(url, 'POST', '/admin/coupons', {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    json: {
      name: `faults ${strategy}`,
      totalQuantity,
      issueStartsAt: new Date(Date.now() - 1000).toISOString(),
      issueEndsAt: new Date(Date.now() + 3600_000).toISOString(),
      strategy,
    },
  });
  if (res.status !== 201) throw new Error(`creating a ${strategy} campaign: ${res.status} ${res.text}`);
  return (res.json as { id: number }).id;
}

// ---------------------------------------------------------------------------------------------
// A stampede with a fault in its middle

export interface Target {
  readonly strategy: string;
  readonly couponId: number;
  /** Users `<prefix>-0 … <prefix>-(users-1)` ask for this campaign, again and again. */
  readonly users: number;
  readonly ledger: Ledger;
  /** ms from the heal to this campaign's first decided answer (2xx, 409, 410), if any came. */
  recoveredAfterMs?: number;
}

export interface FaultPlan {
  /** Concurrent clients per campaign. */
  readonly concurrency: number;
  /** Answers per campaign before the fault is injected. */
  readonly faultAfterAnswers: number;
  /** Injects the fault; resolves when it has happened. */
  readonly inject: () => Promise<void>;
  /** How long the fault lasts. */
  readonly holdMs: number;
  /** Ends the fault; resolves when the store is back. */
  readonly heal: () => Promise<void>;
  /** How long the stampede goes on after the heal. */
  readonly afterHealMs: number;
  /** Upper bound on the whole stampede's requests per campaign (the loop stops by itself). */
  readonly maxRequests?: number;
}

export interface FaultRun {
  readonly targets: readonly Target[];
  /** performance.now() at the heal. */
  readonly healedAt: number;
}

const DECIDED = new Set([201, 202, 409, 410]);

/**
 * Stampedes every target's campaign at once through `baseUrl()` (it may change: an API restart),
 * injects the fault after `faultAfterAnswers` answers on the first target, holds it, heals it, and
 * goes on for `afterHealMs`. Every answer is recorded in the target's ledger.
 */
export async function stampedeThroughFault(baseUrl: () => string, targets: Target[], plan: FaultPlan, prefix = 'u'): Promise<FaultRun> {
  const most = Math.max(...targets.map((t) => t.users));
  const tokens = Array.from({ length: most }, (_, i) => ({ user: `${prefix}-${i}`, token: signUserToken(JWT_SECRET, `${prefix}-${i}`) }));
  const maxRequests = plan.maxRequests ?? 20_000;
  let stopAt = Infinity;
  let healedAt = Infinity;
  const first = targets[0]!;
  const fault = (async () => {
    await waitFor('answers before the fault', () => first.ledger.count >= plan.faultAfterAnswers, 60_000, 5);
    await plan.inject();
    await new Promise((r) => setTimeout(r, plan.holdMs));
    await plan.heal();
    healedAt = performance.now();
    stopAt = healedAt + plan.afterHealMs;
  })();
  const client = (target: Target, sent: { n: number }) => async () => {
    while (performance.now() < stopAt && sent.n < maxRequests) {
      sent.n++;
      const { user, token } = tokens[Math.floor(Math.random() * target.users)]!;
      let res: Response;
      try {
        res = await request(baseUrl(), 'POST', `/coupons/${target.couponId}/issues`, { headers: { authorization: `Bearer ${token}` } });
      } catch (err) {
        const sent = (err as { code?: unknown }).code !== 'ECONNREFUSED';
        target.ledger.record(user, { error: (err as Error).message, sent, at: performance.now() });
        await new Promise((r) => setTimeout(r, 20)); // the API is away: do not spin
        continue;
      }
      const code = (res.json as { code?: unknown } | undefined)?.code;
      const at = performance.now();
      target.ledger.record(user, typeof code === 'string' ? { status: res.status, code, at } : { status: res.status, at });
      if (target.recoveredAfterMs === undefined && DECIDED.has(res.status) && performance.now() > healedAt) {
        target.recoveredAfterMs = performance.now() - healedAt;
      }
      if (res.status === 503 || res.status === 504 || res.status === 429) await new Promise((r) => setTimeout(r, 10));
    }
  };
  const clients = targets.flatMap((t) => {
    const sent = { n: 0 };
    return Array.from({ length: plan.concurrency }, client(t, sent));
  });
  await Promise.all([fault, ...clients]);
  return { targets, healedAt };
}

/** Rows of a coupon in the database (PostgreSQL or MariaDB): the users, the counter, whether they agree. */
export async function rowsOf(databaseUrl: string, couponId: number): Promise<{ users: string[]; counter: number; total: number }> {
  const db = openServerDb(databaseUrl, { poolSize: 1 });
  const id = Math.trunc(couponId); // portable SQL: the id inlined, no placeholders
  try {
    const rows = await db.query<{ user_id: string }>(`SELECT user_id FROM coupon_issues WHERE coupon_id = ${id}`);
    const coupon = await db.query<{ issued_quantity: number; total_quantity: number }>(`SELECT issued_quantity, total_quantity FROM coupons WHERE id = ${id}`);
    return { users: rows.rows.map((r) => r.user_id), counter: coupon.rows[0]?.issued_quantity ?? -1, total: coupon.rows[0]?.total_quantity ?? -1 };
  } finally {
    await db.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The guarantees table

export interface GuaranteeRow {
  readonly fault: string;
  readonly strategy: string;
  readonly acknowledged: number;
  readonly lost: number;
  readonly wronglyRefused: number;
  readonly notDecided: number;
  readonly undetermined: number;
  readonly recoveredAfterMs: number | undefined;
}

const table: GuaranteeRow[] = [];

export function reportGuarantee(row: GuaranteeRow): void {
  table.push(row);
}

/** One row of the table from an audit: what a fault did to one strategy's campaign. */
export function reportAudit(fault: string, strategy: string, audit: Audit, recoveredAfterMs: number | undefined): void {
  reportGuarantee({
    fault,
    strategy,
    acknowledged: audit.acknowledged,
    lost: audit.lost.length,
    wronglyRefused: audit.unexpected.length,
    notDecided: audit.notDecided,
    undetermined: audit.undetermined,
    recoveredAfterMs,
  });
}

const seconds = (ms: number | undefined) => (ms === undefined ? '—' : `${(ms / 1000).toFixed(1)} s`);

/**
 * The compact form (the README's): a row per fault, a column per strategy, each cell
 * "lost / wrongly refused · answering again after the heal".
 */
export function guaranteesPivot(): string {
  const faults = [...new Set(table.map((r) => r.fault))];
  const strategies = [...new Set(table.map((r) => r.strategy))];
  const cell = (fault: string, strategy: string) => {
    const r = table.find((x) => x.fault === fault && x.strategy === strategy);
    return r === undefined ? '' : `${r.lost} / ${r.wronglyRefused} · ${seconds(r.recoveredAfterMs)}`;
  };
  return [
    `| fault | ${strategies.map((s) => `\`${s}\``).join(' | ')} |`,
    `|---|${strategies.map(() => '---').join('|')}|`,
    ...faults.map((f) => `| ${f} | ${strategies.map((s) => cell(f, s)).join(' | ')} |`),
  ].join('\n');
}

/** The rows reported so far as a Markdown table (printed by each fault suite at its end). */
export function guaranteesMarkdown(): string {
  const lines = [
    '| fault | strategy | acknowledged | lost | wrongly refused | answers not decided (503, 504, none) | users left not knowing | answering again after |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...table.map(
      (r) =>
        `| ${r.fault} | \`${r.strategy}\` | ${r.acknowledged} | ${r.lost} | ${r.wronglyRefused} | ${r.notDecided} | ${r.undetermined} | ${seconds(r.recoveredAfterMs)} |`,
    ),
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Asking private Redis servers directly (the harnesses' own tests)

/** A plain connection to one node (not through sentinels or a cluster client); the caller disconnects it. */
export function directRedis(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on('error', () => {});
  return r;
}

/** The promise's value, or a rejection after `ms` (a command queued while ioredis reconnects waits for it). */
export function answerWithin<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Retries `fn` until it resolves or `ms` pass; its value and when it came (ms from the call). */
export async function succeedsWithin<T>(ms: number, what: string, fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  let last: unknown;
  while (performance.now() - started < ms) {
    try {
      const value = await answerWithin(Math.max(1, ms - (performance.now() - started)), what, fn());
      return { value, ms: performance.now() - started };
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`${what}: still failing after ${ms} ms (${(last as Error | undefined)?.message})`);
}

/**
 * A suite of private Redis servers over the shared PostgreSQL: the redis-server binary, and one
 * scratch database for the whole suite, dropped after it. Call it inside the suite's describe().
 */
export function privateRedisSuite(): { readonly bin: string | undefined; ready(t: TestContext): Promise<boolean>; databaseUrl(): string } {
  const bin = redisServerBinary();
  let db: TestDatabase | undefined;
  after(async () => {
    await db?.drop();
  });
  return {
    bin,
    async ready(t) {
      if (bin === undefined) {
        missing(t, 'the redis-server binary is not installed');
        return false;
      }
      if (!(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return false;
      db ??= await createTestDatabase();
      return true;
    },
    databaseUrl() {
      if (db === undefined) throw new Error('privateRedisSuite: ready() first');
      return db.url;
    },
  };
}
