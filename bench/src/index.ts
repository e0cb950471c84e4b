// `couponrush bench`: measures every strategy under the same stampede and checks the product's
// promises while it does. Starts the API itself (one fresh process per strategy, on a scratch
// database) or targets --url; runs a bare node:http server under the same load as the ceiling;
// writes the report as Markdown, JSON and an SVG chart.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { REDIS_VARIABLES, type RedisTarget } from '../../src/config.js';
import { connectRedis } from '../../src/redis/client.js';
import { openServerDb, type Db } from '../../src/db/index.js';
import { createScratchDatabase, type ScratchDatabase } from '../../src/db/scratch.js';
import { STRATEGY_NAMES, strategyModules, unavailableReason, type StrategyName } from '../../src/coupons/strategies/index.js';
import { renderChart } from './chart.js';
import { startLoad, type LoadResult, type OpenLoopPlan, type RunningLoad, type SellOutSplit } from './load.js';
import { arrivalOffsets, generatorBehind } from './open-loop.js';
import type { BenchOptions } from './options.js';
import { buildOrder, mintUsers, type RequestPlan } from './plan.js';
import {
  ProcessProbe,
  type ProcessUsage,
  deleteRedisPrefix,
  entrypoints,
  freePort,
  startApi,
  startCeiling,
  type Child,
  type Entrypoints,
} from './processes.js';
import { deleteKafkaTopics } from '../../src/kafka/client.js';
import { watchConsole } from './console-watch.js';
import { startOtlpReceiver, type OtlpReceiver } from './otlp-receiver.js';
import { Progress, type Phase } from './progress.js';
import { relateToCeiling, renderMarkdown, type BenchReport, type CeilingRun, type StrategyResult } from './report.js';
import { verify, waitForDrain } from './verify.js';

/** Sampling interval of --cpu-prof: V8's default (1 ms) gives too few samples over a stampede of seconds. */
const CPU_PROFILE_INTERVAL_US = 200;

export interface BenchRun {
  readonly report: BenchReport;
  /** Written report files (absolute paths). */
  readonly files: { readonly markdown: string; readonly json: string; readonly chart: string | undefined };
}

export interface RunControl {
  /** Abort (Ctrl-C): the current stampede stops, the rest is skipped, scratch state is removed. */
  readonly signal?: AbortSignal;
}

function runStamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

/** 'PostgreSQL 16.4', 'MariaDB 10.11.19', 'MySQL 8.0.36'. */
async function databaseVersion(db: Db): Promise<string> {
  if (db.dialect === 'postgres') {
    const { rows } = await db.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    return `PostgreSQL ${rows[0]?.v.split(' ')[0] ?? 'unknown'}`;
  }
  const { rows } = await db.query<{ v: string }>('SELECT VERSION() AS v');
  const v = rows[0]?.v ?? 'unknown';
  return /mariadb/i.test(v) ? `MariaDB ${v.split('-')[0]}` : `MySQL ${v.split('-')[0]}`;
}

async function redisVersion(target: RedisTarget): Promise<string> {
  const redis = connectRedis(target, { lazyConnect: true, maxRetriesPerRequest: 1, commandTimeout: 5_000 });
  redis.on('error', () => {}); // the command below reports it
  try {
    await redis.connect();
    const info = await redis.info('server');
    return /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  } finally {
    redis.disconnect();
  }
}

interface Target {
  readonly baseUrl: string;
  readonly adminToken: string;
  /** The API process (self-managed mode), for its RSS and a clean stop. */
  readonly api: Child | undefined;
  /** --worker-apart: the stream worker's own process, probed and stopped beside the API. */
  readonly worker?: Child | undefined;
}

type CreateCampaign = { ok: true; id: number } | { ok: false; unavailable: boolean; detail: string };

async function createCampaign(target: Target, strategy: StrategyName, stock: number, runId: string): Promise<CreateCampaign> {
  const now = Date.now();
  const res = await fetch(`${target.baseUrl}/admin/coupons`, {
    method: 'POST',
    headers: { authorization: `Bearer ${target.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      name: `bench ${runId} ${strategy}`,
      totalQuantity: stock,
      issueStartsAt: new Date(now - 60_000).toISOString(),
      issueEndsAt: new Date(now + 24 * 3600_000).toISOString(),
      strategy,
    }),
  });
  const body = (await res.json().catch(() => ({}))) as { id?: unknown; code?: unknown; detail?: unknown };
  if (res.status === 201 && typeof body.id === 'number') return { ok: true, id: body.id };
  const detail = typeof body.detail === 'string' ? body.detail : `HTTP ${res.status}`;
  return { ok: false, unavailable: body.code === 'STRATEGY_UNAVAILABLE', detail };
}

function statusRecord(statuses: ReadonlyMap<number, number>): Record<string, number> {
  return Object.fromEntries([...statuses].sort(([a], [b]) => a - b).map(([s, n]) => [String(s), n]));
}

/** Users with at least one 201/202: the rows the database must end up with. */
function countAcknowledged(ackedByUser: Uint32Array): number {
  let n = 0;
  for (const acks of ackedByUser) if (acks > 0) n++;
  return n;
}

export async function runBench(options: BenchOptions, control: RunControl = {}): Promise<BenchRun> {
  const run = new Run(options, control.signal);
  try {
    await run.measureAll();
  } finally {
    await run.cleanUp();
  }
  const report = run.report();
  const publishDir = options.publish === undefined ? undefined : resolve(options.publish);
  return { report, files: await writeReport(report, run.outDir, `bench-${run.runId}`, publishDir) };
}

/** What every stampede of a run shares once the run is set up. */
interface Fixtures {
  /** The database the drain and the checks read (the scratch one in self-managed mode). */
  readonly db: Db;
  readonly plan: RequestPlan;
  /** The open loop's arrivals (the same for every target), or undefined for the closed loop. */
  readonly openLoop: OpenLoopPlan | undefined;
  readonly adminToken: string;
  readonly jwtSecret: string;
  /** Size of the ceiling server's answer: that of an issuance's. */
  readonly ceilingBodyBytes: number;
}

/**
 * One bench run: what it started and must stop (child processes, the scratch database, Redis keys,
 * a Kafka topic, the work directory), the stampede in progress (which an abort stops), and the
 * results and ceiling runs the report is built from.
 */
class Run {
  readonly startedAt = new Date();
  readonly runId = `${runStamp(this.startedAt)}-${randomBytes(2).toString('hex')}`;
  readonly outDir: string;
  private readonly options: BenchOptions;
  private readonly signal: AbortSignal | undefined;
  private readonly progress: Progress;
  private readonly workDir: string;
  private readonly entry: Entrypoints = entrypoints();
  private readonly selfManaged: boolean;
  private readonly children = new Set<Child>();
  private current: RunningLoad | undefined;
  private scratch: ScratchDatabase | undefined;
  private verifyDb: Db | undefined;
  private readonly redisPrefix: string | undefined;
  private readonly kafkaTopic: string;
  // The run's API and worker sign and verify the topic's records with a secret of its own.
  private readonly kafkaRecordSecret = randomBytes(32).toString('base64url');
  private keepWorkDir: boolean;
  private services: BenchReport['services'] = { database: 'unknown', redis: null };
  private readonly results: StrategyResult[] = [];
  private ceiling: StrategyResult | null = null;
  private ceilingAfter: StrategyResult | null = null;
  private lastCeiling: StrategyResult | undefined;
  /** Every ceiling run's rate, in order, and the runs just before and after each strategy. */
  private readonly ceilingRuns: number[] = [];
  private readonly ceilingCpuRuns: (number | null)[] = [];
  private readonly around = new Map<string, { before?: StrategyResult | undefined; after?: StrategyResult | undefined }>();

  constructor(options: BenchOptions, signal: AbortSignal | undefined) {
    this.options = options;
    this.signal = signal;
    this.progress = new Progress(options.progress, false);
    this.outDir = resolve(options.out);
    mkdirSync(this.outDir, { recursive: true });
    this.workDir = mkdtempSync(join(os.tmpdir(), 'couponrush-bench-'));
    this.selfManaged = options.url === undefined;
    process.once('exit', this.killAll);
    signal?.addEventListener('abort', this.onAbort);
    this.redisPrefix = this.selfManaged && options.redis !== undefined ? `couponrush-bench-${this.runId}:` : undefined;
    this.kafkaTopic = `couponrush-bench-${this.runId}`;
    this.keepWorkDir = options.keep;
  }

  /** --trace-sampling: where the processes the bench starts send their spans. */
  private receiver: OtlpReceiver | undefined;

  private readonly killAll = () => this.children.forEach((c) => c.killNow());
  private readonly onAbort = () => this.current?.stop();

  private aborted(): boolean {
    return this.signal?.aborted === true;
  }

  /** Sets the run up, then measures the ceiling and each strategy in turn, the ceiling again after each. */
  async measureAll(): Promise<void> {
    const options = this.options;
    const adminToken = options.adminToken ?? randomBytes(24).toString('base64url');
    const jwtSecret = options.jwtSecret ?? randomBytes(32).toString('base64url');
    const db = await this.openDatabase();
    const runnable = this.runnableStrategies();
    const plan = this.mintPlan(jwtSecret);
    const ceilingBodyBytes = Buffer.byteLength(JSON.stringify({ couponId: 1, userId: plan.users[0]!.id, status: 'ISSUED' }));
    const fx: Fixtures = { db, plan, openLoop: this.arrivalPlan(), adminToken, jwtSecret, ceilingBodyBytes };
    if (options.traceSampling !== undefined && this.selfManaged) {
      this.receiver = await startOtlpReceiver();
      this.progress.say(`tracing on at ${options.traceSampling * 100} % sampling, spans to the bench's OTLP receiver at ${this.receiver.endpoint}`);
    }

    this.ceiling = await this.measureCeiling(fx, 'ceiling', 'ceiling', 'ceiling (node:http)');
    const sharedTarget: Target | undefined =
      this.selfManaged ? undefined : { baseUrl: options.url!.replace(/\/+$/, ''), adminToken, api: undefined };
    for (const name of runnable) {
      if (this.aborted()) {
        this.skip(name, 'interrupted');
        continue;
      }
      await this.measureStrategy(fx, name, sharedTarget);
      if (this.ceiling !== null && this.results.at(-1)?.requestsPerSecond !== undefined) {
        const before = this.lastCeiling;
        const next = await this.measureCeiling(fx, 'ceiling-after', `ceiling-after-${name}`, `ceiling after ${name} (node:http)`);
        if (next !== null) this.ceilingAfter = next;
        this.around.set(name, { before, after: next ?? undefined });
      }
    }
  }

  /** The scratch database (self-managed mode), the connection the checks use, the services' versions. */
  private async openDatabase(): Promise<Db> {
    const options = this.options;
    if (this.selfManaged) {
      this.scratch = await createScratchDatabase(options.databaseUrl, `couponrush_bench_${this.runId.replace(/-/g, '_')}`);
      this.progress.say(`scratch database ${this.scratch.name} created${options.keep ? ' (kept: --keep)' : ' (dropped at the end)'}`);
    }
    // Idle connections stay open through a stampede, so the first drain poll costs no connect.
    const db = openServerDb(this.scratch?.url ?? options.databaseUrl, { poolSize: 2, connectionTimeoutMs: 5_000 });
    this.verifyDb = db;
    this.services = {
      database: await databaseVersion(db),
      redis: options.redis === undefined ? null : await redisVersion(options.redis.target).catch(() => 'unreachable'),
    };
    return db;
  }

  /** Which strategies can run here; the others are reported as skipped, with the reason. */
  private runnableStrategies(): StrategyName[] {
    const options = this.options;
    const runnable: StrategyName[] = [];
    for (const name of options.strategies) {
      let reason: string | undefined;
      if (this.selfManaged) {
        reason = unavailableReason(name, { redis: options.redis !== undefined, kafka: options.kafkaBrokers !== undefined && options.redis !== undefined });
        if (reason !== undefined) reason += ' (not set in the environment)';
      }
      if (reason === undefined) runnable.push(name);
      else {
        this.skip(name, reason);
        this.progress.say(`skipping ${name}: ${reason}`);
      }
    }
    return runnable;
  }

  /** The users and the one request plan every target gets. */
  private mintPlan(jwtSecret: string): RequestPlan {
    const options = this.options;
    const mint = this.progress.phase('minting user tokens', options.users, 'users');
    const t0 = performance.now();
    const users = mintUsers(jwtSecret, options.users, (n) => mint.update(n));
    const plan: RequestPlan = { users, order: buildOrder(options.users, options.requests) };
    mint.done(`${options.users} JWTs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return plan;
  }

  /** The open loop's intended send times, drawn once so that every target gets the same drop. */
  private arrivalPlan(): OpenLoopPlan | undefined {
    const a = this.options.arrivals;
    if (a === undefined) return undefined;
    const windowMs = a.windowSeconds * 1000;
    return { offsetsMs: arrivalOffsets(a.count, windowMs, a.shape), windowMs, maxConnections: a.maxConnections };
  }

  private skip(name: string, reason: string): void {
    this.results.push({ name, verdict: 'skipped', reason, violations: [], notes: [] });
  }

  /** One strategy on its own target: warm-up, a campaign, the stampede, the drain and the checks. */
  private async measureStrategy(fx: Fixtures, name: StrategyName, sharedTarget: Target | undefined): Promise<void> {
    const started: Child[] = [];
    try {
      const target = sharedTarget ?? (await this.startTarget(fx, name));
      if (target.api !== undefined) started.push(target.api);
      if (target.worker !== undefined) started.push(target.worker);
      if (this.options.warmupRequests > 0) await this.warmUpStrategy(fx, target, name);
      if (this.aborted()) return this.skip(name, 'interrupted');
      const campaign = await createCampaign(target, name, this.options.stock, this.runId);
      if (!campaign.ok) {
        if (campaign.unavailable) {
          this.skip(name, campaign.detail);
          this.progress.say(`skipping ${name}: ${campaign.detail}`);
        } else {
          this.results.push({ name, verdict: 'FAIL', reason: `could not create the campaign: ${campaign.detail}`, violations: [`could not create the campaign: ${campaign.detail}`], notes: [] });
        }
        return;
      }
      this.results.push(await this.measureCampaign(fx, target, name, campaign.id));
    } catch (err) {
      this.keepWorkDir = true;
      const message = (err as Error).message;
      this.results.push({ name, verdict: 'FAIL', reason: message, violations: [`the run failed: ${message}`], notes: [] });
    } finally {
      for (const c of started) {
        await c.stop();
        this.children.delete(c);
      }
    }
  }

  /** A fresh API process for one strategy, on the scratch database and a free port. */
  private async startTarget(fx: Fixtures, name: StrategyName): Promise<Target> {
    const port = await freePort();
    const env = this.apiEnvironment(fx, port);
    const nodeFlags = this.profileFlags(name);
    const logFile = join(this.workDir, `${name}.log`);
    // With Redis the stream worker runs inside the API process, so its drain is measured
    // and its memory and CPU count in the API's; --worker-apart runs it as a process of its own.
    const apart = this.options.workerApart && this.options.redis !== undefined;
    const withWorker = this.options.redis !== undefined && !apart ? ['--with-worker'] : [];
    const api = await startApi({ entry: this.entry, env, port, args: ['serve', '--migrate', ...withWorker], nodeFlags, logFile });
    this.children.add(api.child);
    if (!apart) return { baseUrl: api.baseUrl, adminToken: fx.adminToken, api: api.child };
    // After the API: its --migrate has made the schema the worker reads.
    const workerPort = await freePort();
    try {
      const worker = await startApi({
        entry: this.entry,
        env: { ...env, ADMIN_HOST: '127.0.0.1', ADMIN_PORT: String(workerPort) },
        port: workerPort,
        args: ['worker'],
        nodeFlags: this.profileFlags(`${name}-worker`),
        logFile: join(this.workDir, `${name}-worker.log`),
        readyPath: '/healthz',
        role: 'worker',
      });
      this.children.add(worker.child);
      return { baseUrl: api.baseUrl, adminToken: fx.adminToken, api: api.child, worker: worker.child };
    } catch (err) {
      await api.child.stop();
      this.children.delete(api.child);
      throw err;
    }
  }

  private apiEnvironment(fx: Fixtures, port: number): NodeJS.ProcessEnv {
    const options = this.options;
    const env: NodeJS.ProcessEnv = {
      ...options.env,
      DATABASE_URL: this.scratch!.url,
      PORT: String(port),
      HOST: '127.0.0.1',
      ADMIN_TOKEN: fx.adminToken,
      JWT_SECRET: fx.jwtSecret,
      AUTH_MODE: 'jwt',
      LOG_LEVEL: options.env.LOG_LEVEL ?? 'warn',
      // The per-user limit protects production from scripted retries; the bench measures
      // the strategies (set RATE_LIMIT_USER to measure with a limit).
      RATE_LIMIT_USER: options.env.RATE_LIMIT_USER ?? 'off',
    };
    // The bench talks to admin routes on PORT.
    delete env.ADMIN_PORT;
    // Tracing only as --trace-sampling says (the environment handed on names no OTEL_* variable).
    if (this.receiver !== undefined) {
      env.OTEL_EXPORTER_OTLP_ENDPOINT = this.receiver.endpoint;
      env.OTEL_TRACES_SAMPLER = 'parentbased_traceidratio';
      env.OTEL_TRACES_SAMPLER_ARG = String(options.traceSampling);
      env.OTEL_SERVICE_NAME = 'couponrush-bench';
    }
    for (const name of REDIS_VARIABLES) delete env[name];
    delete env.REDIS_PREFIX;
    delete env.KAFKA_BROKERS;
    delete env.KAFKA_TOPIC;
    delete env.KAFKA_RECORD_SECRET;
    delete env.KAFKA_RECORD_SECRET_PREVIOUS;
    if (options.redis !== undefined) {
      Object.assign(env, options.redis.env);
      env.REDIS_PREFIX = this.redisPrefix;
      if (options.kafkaBrokers !== undefined) {
        env.KAFKA_BROKERS = options.kafkaBrokers;
        env.KAFKA_TOPIC = this.kafkaTopic;
        env.KAFKA_RECORD_SECRET = this.kafkaRecordSecret;
      }
    }
    return env;
  }

  /** A throwaway campaign of the same strategy; its queue must be empty before measuring. */
  private async warmUpStrategy(fx: Fixtures, target: Target, name: StrategyName): Promise<void> {
    const warm = await createCampaign(target, name, Math.max(1, Math.floor(this.options.warmupRequests / 4)), `${this.runId} warm-up`);
    if (!warm.ok) return;
    const load = await this.warmUp(fx.plan, name, target.baseUrl, warm.id);
    if (load !== undefined) {
      await waitForDrain(fx.db, warm.id, countAcknowledged(load.ackedByUser), performance.now(), this.options.drainTimeoutMs);
    }
  }

  /** The stampede on one campaign, the drain to the database, then the checks against what was answered. */
  private async measureCampaign(fx: Fixtures, target: Target, name: StrategyName, couponId: number): Promise<StrategyResult> {
    const options = this.options;
    let acknowledgedUsers = 0;
    let drainPhase: Phase | undefined;
    let rowsSoFar = 0;
    // --watch-console: a console follows the campaign from before the first request to the drain.
    const consoleWatch = options.watchConsole ? await watchConsole(target.baseUrl, target.adminToken, couponId) : undefined;
    const spansBefore = this.receiver?.count();
    const { load, usage, workerUsage, after } = await this.stampede(fx, name, target.baseUrl, couponId, { api: target.api?.pid, worker: target.worker?.pid }, (running) => {
      acknowledgedUsers = countAcknowledged(running.ackedByUser);
      return waitForDrain(fx.db, couponId, acknowledgedUsers, running.lastResponseAt(), options.drainTimeoutMs, (n) => {
        rowsSoFar = n;
        drainPhase?.update(n);
      });
    });
    drainPhase = this.progress.phase(`${name}: drain to the database`, acknowledgedUsers, 'rows');
    drainPhase.update(rowsSoFar);
    const drain = await after;
    consoleWatch?.close();
    drainPhase.done(drain.drainMs === undefined ? 'TIMEOUT' : `${Math.round(drain.drainMs)} ms after the last response`);

    // Stop the API before judging: a graceful stop flushes queues, so a late row shows up. A worker
    // of its own goes after it, once nothing more can be queued.
    const stopNotes = target.api === undefined ? [] : await this.stopApi(target.api);
    if (target.worker !== undefined) stopNotes.push(...(await this.stopApi(target.worker)));
    const workerCpu = workerUsage?.cpuMs === undefined || load.completed === 0 ? undefined : (workerUsage.cpuMs * 1000) / load.completed;
    // The processes have stopped, and a stop sends the spans still queued.
    const spans = spansBefore === undefined ? undefined : this.receiver!.count() - spansBefore;

    const v = await verify({
      db: fx.db,
      couponId,
      stock: options.stock,
      overIssueExpected: strategyModules[name].mayOverIssue,
      users: fx.plan.users,
      load,
      drain,
      drainTimeoutMs: options.drainTimeoutMs,
    });
    const verdict = v.violations.length > 0 ? 'FAIL' : v.overIssue > 0 ? 'expected over-issue' : 'ok';
    if (verdict === 'FAIL') this.keepWorkDir = true;
    return {
      name,
      verdict,
      couponId,
      ...measured(load, usage),
      ...(workerCpu === undefined ? {} : { workerCpuUsPerResponse: workerCpu }),
      ...(spans === undefined ? {} : { spansReceived: spans }),
      rows: v.rows,
      overIssue: v.overIssue,
      duplicates: v.duplicates,
      drainMs: drain.drainMs === undefined ? null : Math.round(drain.drainMs),
      violations: v.violations,
      notes: [
        ...generatorNotes(load),
        ...v.notes,
        ...stopNotes,
        ...(workerCpu === undefined ? [] : [`the stream worker ran as a process of its own (--worker-apart): ${workerCpu.toFixed(1)} µs of CPU per response, not in the API's CPU µs/req`]),
        ...(spans === undefined ? [] : [`traced at ${options.traceSampling! * 100} % sampling (--trace-sampling): ${spans} spans received, ${((spans * 1000) / Math.max(1, load.completed)).toFixed(1)} per 1,000 responses`]),
        ...(consoleWatch === undefined ? [] : [`a console was open: ${consoleWatch.samples.length} samples received`])],
    };
  }

  /** Stops the API (or a worker of its own) gracefully; notes (and keeps the logs) when it did not exit cleanly. */
  private async stopApi(api: Child): Promise<string[]> {
    const code = await api.stop();
    this.children.delete(api);
    if (code === 0) return [];
    this.keepWorkDir = true;
    return [`the ${api.name === 'worker' ? 'worker' : 'API'} process exited with ${code === null ? 'a signal' : `code ${code}`} on SIGTERM; its log: ${api.logFile}`];
  }

  /**
   * Fires the plan at one target. `afterLastResponse` starts the moment the last response is
   * in (the drain clock), while the generator is still wrapping up; the target's CPU is probed
   * until it settles too (an async strategy's worker persists the last admissions then), and
   * split at the first 410 into admissions and refusals.
   */
  private async stampede<T>(
    fx: Fixtures,
    label: string,
    baseUrl: string,
    couponId: number,
    probed: { readonly api: number | undefined; readonly worker?: number | undefined },
    afterLastResponse: (running: RunningLoad) => Promise<T>,
  ): Promise<{ load: LoadResult; usage: ProcessUsage | undefined; workerUsage: ProcessUsage | undefined; after: Promise<T> }> {
    const options = this.options;
    const seconds = options.arrivals === undefined ? options.durationSeconds : undefined;
    const phase =
      seconds === undefined ? this.progress.phase(`${label}: stampede`, options.requests, 'responses') : this.progress.phase(`${label}: stampede`, seconds, 's');
    const startedAt = performance.now();
    const probe = probed.api === undefined ? undefined : new ProcessProbe(probed.api);
    const workerProbe = probed.worker === undefined ? undefined : new ProcessProbe(probed.worker);
    probe?.start();
    workerProbe?.start();
    const running = startLoad({
      baseUrl,
      path: `/coupons/${couponId}/issues`,
      plan: fx.plan,
      connections: options.connections,
      durationSeconds: options.durationSeconds,
      ...(fx.openLoop === undefined ? {} : { openLoop: fx.openLoop }),
      timeoutSeconds: options.requestTimeoutSeconds,
      generator: options.generator,
      onProgress: (n) => phase.update(seconds === undefined ? n : Math.min(seconds, Math.floor((performance.now() - startedAt) / 1000))),
      onSellOut: () => probe?.mark(),
    });
    this.current = running;
    if (this.aborted()) running.stop();
    try {
      await running.finished;
      const after = afterLastResponse(running);
      // Awaited by the caller; keep an early rejection from being reported as unhandled.
      after.catch(() => {});
      const load = await running.done;
      await after.catch(() => {});
      const usage = probe?.stop();
      const workerUsage = workerProbe?.stop();
      phase.done(stampedeSummary(load));
      return { load, usage, workerUsage, after };
    } finally {
      probe?.stop();
      workerProbe?.stop();
      this.current = undefined;
    }
  }

  /** Unmeasured requests first, so JIT, connection pools and caches are warm when measuring. */
  private async warmUp(plan: RequestPlan, label: string, baseUrl: string, couponId: number): Promise<LoadResult | undefined> {
    const options = this.options;
    if (options.warmupRequests === 0 || this.aborted()) return undefined;
    const phase = this.progress.phase(`${label}: warm-up`, options.warmupRequests, 'responses');
    const running = startLoad({
      baseUrl,
      path: `/coupons/${couponId}/issues`,
      plan: { users: plan.users, order: plan.order.subarray(0, options.warmupRequests) },
      connections: Math.min(options.connections, options.warmupRequests),
      durationSeconds: undefined,
      timeoutSeconds: options.requestTimeoutSeconds,
      generator: options.generator,
      onProgress: (n) => phase.update(n),
    });
    this.current = running;
    try {
      const load = await running.done;
      phase.done(`${Math.round(load.requestsPerSecond)} req/s (not measured)`);
      return load;
    } finally {
      this.current = undefined;
    }
  }

  /** --cpu-prof: one V8 profile per process the bench starts (API processes and ceiling servers). */
  private profileFlags(name: string): string[] {
    return this.options.cpuProf
      ? ['--cpu-prof', '--cpu-prof-interval', String(CPU_PROFILE_INTERVAL_US), '--cpu-prof-dir', join(this.outDir, 'profiles'), '--cpu-prof-name', `${this.runId}-${name}.cpuprofile`]
      : [];
  }

  /**
   * The ceiling: same plan, same connections, a server that does nothing but answer. Measured
   * before the first strategy and again after each one: a strategy's ratio divides by the mean
   * of the two runs around it, seconds apart, because a shared machine's speed drifts over the
   * minutes a full run takes. `file` names its log and profile.
   */
  private async measureCeiling(fx: Fixtures, name: CeilingRun, file: string, label: string): Promise<StrategyResult | null> {
    if (!this.options.ceiling || this.aborted()) return null;
    const { child, baseUrl } = await startCeiling(this.entry, fx.ceilingBodyBytes, join(this.workDir, `${file}.log`), this.profileFlags(file));
    this.children.add(child);
    try {
      await this.warmUp(fx.plan, label, baseUrl, 1);
      const { load, usage } = await this.stampede(fx, label, baseUrl, 1, { api: child.pid }, async () => undefined);
      const row: StrategyResult = { name, verdict: 'ok', ...measured(load, usage), violations: [], notes: generatorNotes(load) };
      this.ceilingRuns.push(load.requestsPerSecond);
      this.ceilingCpuRuns.push(row.cpuUsPerResponse ?? null);
      this.lastCeiling = row;
      return row;
    } finally {
      await child.stop();
      this.children.delete(child);
    }
  }

  /**
   * Stops whatever still runs, then removes the run's scratch state (unless --keep): the API has
   * drained and stopped before the database is closed and dropped.
   */
  async cleanUp(): Promise<void> {
    const options = this.options;
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const c of this.children) await c.stop();
    process.removeListener('exit', this.killAll);
    await this.verifyDb?.close();
    await this.receiver?.close();
    if (!options.keep) {
      const scratch = this.scratch;
      await scratch?.drop().catch((err: unknown) => this.progress.say(`could not drop ${scratch?.name}: ${(err as Error).message}`));
      if (this.selfManaged && options.kafkaBrokers !== undefined && options.redis !== undefined) {
        const topic = this.kafkaTopic;
        await deleteKafkaTopics(options.kafkaBrokers, [topic, `${topic}.dead`]).catch((err: unknown) => this.progress.say(`could not delete Kafka topic ${topic}: ${(err as Error).message}`));
      }
      const prefix = this.redisPrefix;
      if (prefix !== undefined && options.redis !== undefined) {
        await deleteRedisPrefix(options.redis.target, prefix).catch((err: unknown) => this.progress.say(`could not delete Redis keys ${prefix}*: ${(err as Error).message}`));
      }
    }
    if (this.keepWorkDir) this.progress.say(`process logs kept in ${this.workDir}`);
    else rmSync(this.workDir, { recursive: true, force: true });
  }

  /** The report of what was measured, in the catalog's order whatever order the flags gave. */
  report(): BenchReport {
    const options = this.options;
    const results = this.results;
    results.sort((a, b) => STRATEGY_NAMES.indexOf(a.name as StrategyName) - STRATEGY_NAMES.indexOf(b.name as StrategyName));
    const ceilings = relateToCeiling(
      this.ceiling,
      this.ceilingAfter,
      this.ceilingRuns,
      results.map((result) => {
        const { before, after } = this.around.get(result.name) ?? {};
        return {
          result,
          ceilingBefore: before?.requestsPerSecond,
          ceilingAfter: after?.requestsPerSecond,
          ceilingCpuBefore: before?.cpuUsPerResponse,
          ceilingCpuAfter: after?.cpuUsPerResponse,
        };
      }),
    );
    const cpus = os.cpus();
    return {
      schema: 'couponrush-bench/2',
      startedAt: this.startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      command: options.commandLine,
      machine: {
        cpuModel: cpus[0]?.model.trim() ?? 'unknown CPU',
        cpus: cpus.length,
        memoryBytes: os.totalmem(),
        os: `${os.type()} ${os.release()}`,
        node: process.version,
      },
      services: this.services,
      config: {
        target: this.selfManaged ? 'API started by the bench (one fresh process per strategy, scratch database)' : options.url!,
        stock: options.stock,
        users: options.users,
        requests: options.requests,
        durationSeconds: options.durationSeconds ?? null,
        connections: options.connections,
        arrivals: options.arrivals ?? null,
        warmupRequests: options.warmupRequests,
        generator: options.generator,
        ...(options.workerApart ? { workerApart: true } : {}),
        ...(options.traceSampling === undefined ? {} : { traceSampling: options.traceSampling }),
      },
      ceiling: ceilings.before,
      ceilingAfter: ceilings.after,
      ceilingRuns: this.ceilingRuns,
      ceilingCpuRuns: this.ceilingCpuRuns,
      ceilingRequestsPerSecond: ceilings.requestsPerSecond,
      strategies: ceilings.strategies,
      ok: results.every((r) => r.verdict !== 'FAIL') && results.some((r) => r.verdict !== 'skipped') && !this.aborted(),
      interrupted: this.aborted(),
    };
  }
}

/**
 * Writes <base>.md/.json/.svg and the same as latest.* in `outDir`; with `publishDir` (--publish)
 * latest.* there too: the committed results the README links, changed only on purpose.
 */
export async function writeReport(report: BenchReport, outDir: string, base: string, publishDir?: string): Promise<BenchRun['files']> {
  const svg = await renderChart(report);
  const write = (dir: string, name: string) => {
    const chart = svg === undefined ? undefined : `${name}.svg`;
    if (svg !== undefined) writeFileSync(join(dir, `${name}.svg`), svg);
    writeFileSync(join(dir, `${name}.md`), renderMarkdown(report, chart));
    writeFileSync(join(dir, `${name}.json`), JSON.stringify(report, null, 2) + '\n');
  };
  write(outDir, base);
  write(outDir, 'latest');
  if (publishDir !== undefined) {
    mkdirSync(publishDir, { recursive: true });
    write(publishDir, 'latest');
  }
  return {
    markdown: join(outDir, `${base}.md`),
    json: join(outDir, `${base}.json`),
    chart: svg === undefined ? undefined : join(outDir, `${base}.svg`),
  };
}

/** What every measured target reports from its stampede. */
function measured(load: LoadResult, usage: ProcessUsage | undefined) {
  return {
    requests: load.completed,
    durationMs: Math.round(load.durationMs),
    requestsPerSecond: load.requestsPerSecond,
    latencyMs: load.latencyMs,
    statuses: statusRecord(load.statuses),
    errors: load.errors,
    ...(load.sellOut === undefined ? {} : { sellOut: phaseCpu(load.sellOut, usage) }),
    ...usageFields(usage, load.completed),
    ...(load.completed === 0 ? {} : { generatorCpuUsPerResponse: (load.generatorCpuMs * 1000) / load.completed }),
    ...(load.openLoop === undefined ? {} : { openLoop: load.openLoop }),
  };
}

/** The stampede's line in the progress output. */
function stampedeSummary(load: LoadResult): string {
  const o = load.openLoop;
  if (o === undefined) return `${Math.round(load.requestsPerSecond)} req/s, p99 ${load.latencyMs.p99.toFixed(1)} ms`;
  return `${Math.round(o.achievedPerSecond)}/s of ${Math.round(o.offeredPerSecond)}/s offered, p99 ${load.latencyMs.p99.toFixed(1)} ms from the intended send time`;
}

/** A generator that did not offer the load asked for makes the run's figures about something else: said in the notes. */
function generatorNotes(load: LoadResult): string[] {
  const behind = load.openLoop === undefined ? [] : generatorBehind(load.openLoop);
  return behind.length === 0 ? [] : [`the load generator fell behind (${behind.join('; ')}): the server did not get the load as asked`];
}

/** The server's CPU per response within each phase, when the probe marked the sell-out. */
function phaseCpu(split: SellOutSplit, usage: ProcessUsage | undefined): SellOutSplit {
  if (usage?.cpuMs === undefined || usage.cpuMsBeforeMark === undefined) return split;
  return {
    before: { ...split.before, cpuUsPerResponse: (usage.cpuMsBeforeMark * 1000) / split.before.responses },
    after: { ...split.after, cpuUsPerResponse: ((usage.cpuMs - usage.cpuMsBeforeMark) * 1000) / split.after.responses },
  };
}

/** The report's per-process fields: what the probe could read, CPU per answered request. */
function usageFields(usage: ProcessUsage | undefined, responses: number): { peakRssBytes?: number; cpuUsPerResponse?: number; systemCpuUsPerResponse?: number } {
  return {
    ...(usage?.peakRssBytes === undefined ? {} : { peakRssBytes: usage.peakRssBytes }),
    ...(usage?.cpuMs === undefined || responses === 0 ? {} : { cpuUsPerResponse: (usage.cpuMs * 1000) / responses }),
    ...(usage?.systemCpuMs === undefined || responses === 0 ? {} : { systemCpuUsPerResponse: (usage.systemCpuMs * 1000) / responses }),
  };
}
