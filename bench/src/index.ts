// `couponrush bench`: measures every strategy under the same stampede and checks the product's
// promises while it does. Starts the API itself (one fresh process per strategy, on a scratch
// database) or targets --url; runs a bare node:http server under the same load as the ceiling;
// writes the report as Markdown, JSON and an SVG chart.
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { Redis } from 'ioredis';
import { openServerDb, type Db } from '../../src/db/index.js';
import { createScratchDatabase, type ScratchDatabase } from '../../src/db/scratch.js';
import { STRATEGY_NAMES, strategyModules, unavailableReason, type StrategyName } from '../../src/coupons/strategies/index.js';
import { renderChart } from './chart.js';
import { startLoad, type LoadResult, type RunningLoad, type SellOutSplit } from './load.js';
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

/** The only strategy expected to over-issue; the catalog keeps it to show the race. */

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

async function redisVersion(url: string): Promise<string> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, commandTimeout: 5_000 });
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
  const startedAt = new Date();
  const runId = `${runStamp(startedAt)}-${randomBytes(2).toString('hex')}`;
  const progress = new Progress(options.progress, false);
  const outDir = resolve(options.out);
  mkdirSync(outDir, { recursive: true });
  const workDir = mkdtempSync(join(os.tmpdir(), 'couponrush-bench-'));
  const entry: Entrypoints = entrypoints();
  const selfManaged = options.url === undefined;
  const children = new Set<Child>();
  const killAll = () => children.forEach((c) => c.killNow());
  process.once('exit', killAll);

  let current: RunningLoad | undefined;
  const onAbort = () => current?.stop();
  control.signal?.addEventListener('abort', onAbort);
  const aborted = () => control.signal?.aborted === true;

  let scratch: ScratchDatabase | undefined;
  let verifyDb: Db | undefined;
  const redisPrefix = selfManaged && options.redisUrl !== undefined ? `couponrush-bench-${runId}:` : undefined;
  const kafkaTopic = `couponrush-bench-${runId}`;
  // The run's API and worker sign and verify the topic's records with a secret of its own.
  const kafkaRecordSecret = randomBytes(32).toString('base64url');
  let keepWorkDir = options.keep;
  const results: StrategyResult[] = [];
  let ceiling: StrategyResult | null = null;
  let ceilingAfter: StrategyResult | null = null;
  let lastCeiling: StrategyResult | undefined;
  /** Every ceiling run's rate, in order, and the runs just before and after each strategy. */
  const ceilingRuns: number[] = [];
  const ceilingCpuRuns: (number | null)[] = [];
  const around = new Map<string, { before?: StrategyResult | undefined; after?: StrategyResult | undefined }>();
  let services: BenchReport['services'] = { database: 'unknown', redis: null };

  try {
    const adminToken = options.adminToken ?? randomBytes(24).toString('base64url');
    const jwtSecret = options.jwtSecret ?? randomBytes(32).toString('base64url');
    if (selfManaged) {
      scratch = await createScratchDatabase(options.databaseUrl, `couponrush_bench_${runId.replace(/-/g, '_')}`);
      progress.say(`scratch database ${scratch.name} created${options.keep ? ' (kept: --keep)' : ' (dropped at the end)'}`);
    }
    // Idle connections stay open through a stampede, so the first drain poll costs no connect.
    verifyDb = openServerDb(scratch?.url ?? options.databaseUrl, { poolSize: 2, connectionTimeoutMs: 5_000 });
    services = {
      database: await databaseVersion(verifyDb),
      redis: options.redisUrl === undefined ? null : await redisVersion(options.redisUrl).catch(() => 'unreachable'),
    };

    // Which strategies can run here, and why the others cannot.
    const runnable: StrategyName[] = [];
    for (const name of options.strategies) {
      let reason: string | undefined;
      if (selfManaged) {
        reason = unavailableReason(name, { redis: options.redisUrl !== undefined, kafka: options.kafkaBrokers !== undefined && options.redisUrl !== undefined });
        if (reason !== undefined) reason += ' (not set in the environment)';
      }
      if (reason === undefined) runnable.push(name);
      else {
        results.push({ name, verdict: 'skipped', reason, violations: [], notes: [] });
        progress.say(`skipping ${name}: ${reason}`);
      }
    }

    // Users and the one request plan every target gets.
    const mint = progress.phase('minting user tokens', options.users, 'users');
    const t0 = performance.now();
    const users = mintUsers(jwtSecret, options.users, (n) => mint.update(n));
    const plan: RequestPlan = { users, order: buildOrder(options.users, options.requests) };
    mint.done(`${options.users} JWTs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    /**
     * Fires the plan at one target. `afterLastResponse` starts the moment the last response is
     * in (the drain clock), while the generator is still wrapping up; the target's CPU is probed
     * until it settles too (an async strategy's worker persists the last admissions then), and
     * split at the first 410 into admissions and refusals.
     */
    const stampede = async <T>(
      label: string,
      baseUrl: string,
      couponId: number,
      probedPid: number | undefined,
      afterLastResponse: (running: RunningLoad) => Promise<T>,
    ): Promise<{ load: LoadResult; usage: ProcessUsage | undefined; after: Promise<T> }> => {
      const seconds = options.durationSeconds;
      const phase =
        seconds === undefined ? progress.phase(`${label}: stampede`, options.requests, 'responses') : progress.phase(`${label}: stampede`, seconds, 's');
      const startedAt = performance.now();
      const probe = probedPid === undefined ? undefined : new ProcessProbe(probedPid);
      probe?.start();
      const running = startLoad({
        baseUrl,
        path: `/coupons/${couponId}/issues`,
        plan,
        connections: options.connections,
        durationSeconds: options.durationSeconds,
        timeoutSeconds: options.requestTimeoutSeconds,
        generator: options.generator,
        onProgress: (n) => phase.update(seconds === undefined ? n : Math.min(seconds, Math.floor((performance.now() - startedAt) / 1000))),
        onSellOut: () => probe?.mark(),
      });
      current = running;
      if (aborted()) running.stop();
      try {
        await running.finished;
        const after = afterLastResponse(running);
        // Awaited by the caller; keep an early rejection from being reported as unhandled.
        after.catch(() => {});
        const load = await running.done;
        await after.catch(() => {});
        const usage = probe?.stop();
        phase.done(`${Math.round(load.requestsPerSecond)} req/s, p99 ${load.latencyMs.p99.toFixed(1)} ms`);
        return { load, usage, after };
      } finally {
        probe?.stop();
        current = undefined;
      }
    };

    /** Unmeasured requests first, so JIT, connection pools and caches are warm when measuring. */
    const warmUp = async (label: string, baseUrl: string, couponId: number): Promise<LoadResult | undefined> => {
      if (options.warmupRequests === 0 || aborted()) return undefined;
      const phase = progress.phase(`${label}: warm-up`, options.warmupRequests, 'responses');
      current = startLoad({
        baseUrl,
        path: `/coupons/${couponId}/issues`,
        plan: { users: plan.users, order: plan.order.subarray(0, options.warmupRequests) },
        connections: Math.min(options.connections, options.warmupRequests),
        durationSeconds: undefined,
        timeoutSeconds: options.requestTimeoutSeconds,
        generator: options.generator,
        onProgress: (n) => phase.update(n),
      });
      try {
        const load = await current.done;
        phase.done(`${Math.round(load.requestsPerSecond)} req/s (not measured)`);
        return load;
      } finally {
        current = undefined;
      }
    };

    // --cpu-prof: one V8 profile per process the bench starts (API processes and ceiling servers).
    const profileFlags = (name: string): string[] =>
      options.cpuProf
        ? ['--cpu-prof', '--cpu-prof-interval', String(CPU_PROFILE_INTERVAL_US), '--cpu-prof-dir', join(outDir, 'profiles'), '--cpu-prof-name', `${runId}-${name}.cpuprofile`]
        : [];

    // The ceiling: same plan, same connections, a server that does nothing but answer. Measured
    // before the first strategy and again after each one: a strategy's ratio divides by the mean
    // of the two runs around it, seconds apart, because a shared machine's speed drifts over the
    // minutes a full run takes. `file` names its log and profile.
    const bodyBytes = Buffer.byteLength(JSON.stringify({ couponId: 1, userId: users[0]!.id, status: 'ISSUED' }));
    const measureCeiling = async (name: CeilingRun, file: string, label: string): Promise<StrategyResult | null> => {
      if (!options.ceiling || aborted()) return null;
      const { child, baseUrl } = await startCeiling(entry, bodyBytes, join(workDir, `${file}.log`), profileFlags(file));
      children.add(child);
      try {
        await warmUp(label, baseUrl, 1);
        const { load, usage } = await stampede(label, baseUrl, 1, child.pid, async () => undefined);
        const row: StrategyResult = { name, verdict: 'ok', ...measured(load, usage), violations: [], notes: [] };
        ceilingRuns.push(load.requestsPerSecond);
        ceilingCpuRuns.push(row.cpuUsPerResponse ?? null);
        lastCeiling = row;
        return row;
      } finally {
        await child.stop();
        children.delete(child);
      }
    };
    ceiling = await measureCeiling('ceiling', 'ceiling', 'ceiling (node:http)');

    const sharedTarget: Target | undefined =
      selfManaged ? undefined : { baseUrl: options.url!.replace(/\/+$/, ''), adminToken, api: undefined };

    for (const name of runnable) {
      if (aborted()) {
        results.push({ name, verdict: 'skipped', reason: 'interrupted', violations: [], notes: [] });
        continue;
      }
      let target: Target | undefined = sharedTarget;
      const started: Child[] = [];
      try {
        if (selfManaged) {
          const port = await freePort();
          const env: NodeJS.ProcessEnv = {
            ...options.env,
            DATABASE_URL: scratch!.url,
            PORT: String(port),
            HOST: '127.0.0.1',
            ADMIN_TOKEN: adminToken,
            JWT_SECRET: jwtSecret,
            AUTH_MODE: 'jwt',
            LOG_LEVEL: options.env.LOG_LEVEL ?? 'warn',
            // The per-user limit protects production from scripted retries; the bench measures
            // the strategies (set RATE_LIMIT_USER to measure with a limit).
            RATE_LIMIT_USER: options.env.RATE_LIMIT_USER ?? 'off',
          };
          // The bench talks to admin routes on PORT.
          delete env.ADMIN_PORT;
          delete env.REDIS_URL;
          delete env.REDIS_PREFIX;
          delete env.KAFKA_BROKERS;
          delete env.KAFKA_TOPIC;
          delete env.KAFKA_RECORD_SECRET;
          delete env.KAFKA_RECORD_SECRET_PREVIOUS;
          if (options.redisUrl !== undefined) {
            env.REDIS_URL = options.redisUrl;
            env.REDIS_PREFIX = redisPrefix;
            if (options.kafkaBrokers !== undefined) {
              env.KAFKA_BROKERS = options.kafkaBrokers;
              env.KAFKA_TOPIC = kafkaTopic;
              env.KAFKA_RECORD_SECRET = kafkaRecordSecret;
            }
          }
          const nodeFlags = profileFlags(name);
          const logFile = join(workDir, `${name}.log`);
          // With Redis the stream worker runs inside the API process, so its drain is measured
          // and its memory counts in the peak RSS.
          const withWorker = options.redisUrl !== undefined ? ['--with-worker'] : [];
          const api = await startApi({ entry, env, port, args: ['serve', '--migrate', ...withWorker], nodeFlags, logFile });
          started.push(api.child);
          children.add(api.child);
          target = { baseUrl: api.baseUrl, adminToken, api: api.child };
        }
        const t = target!;
        if (options.warmupRequests > 0) {
          // A throwaway campaign of the same strategy; its queue must be empty before measuring.
          const warm = await createCampaign(t, name, Math.max(1, Math.floor(options.warmupRequests / 4)), `${runId} warm-up`);
          if (warm.ok) {
            const load = await warmUp(name, t.baseUrl, warm.id);
            if (load !== undefined) {
              await waitForDrain(verifyDb, warm.id, countAcknowledged(load.ackedByUser), performance.now(), options.drainTimeoutMs);
            }
          }
        }
        if (aborted()) {
          results.push({ name, verdict: 'skipped', reason: 'interrupted', violations: [], notes: [] });
          continue;
        }
        const campaign = await createCampaign(t, name, options.stock, runId);
        if (!campaign.ok) {
          if (campaign.unavailable) {
            results.push({ name, verdict: 'skipped', reason: campaign.detail, violations: [], notes: [] });
            progress.say(`skipping ${name}: ${campaign.detail}`);
          } else {
            results.push({ name, verdict: 'FAIL', reason: `could not create the campaign: ${campaign.detail}`, violations: [`could not create the campaign: ${campaign.detail}`], notes: [] });
          }
          continue;
        }

        let acknowledgedUsers = 0;
        let drainPhase: Phase | undefined;
        let rowsSoFar = 0;
        const db = verifyDb;
        // --watch-console: a console follows the campaign from before the first request to the drain.
        const consoleWatch = options.watchConsole ? await watchConsole(t.baseUrl, t.adminToken, campaign.id) : undefined;
        const { load, usage, after } = await stampede(name, t.baseUrl, campaign.id, t.api?.pid, (running) => {
          acknowledgedUsers = countAcknowledged(running.ackedByUser);
          return waitForDrain(db, campaign.id, acknowledgedUsers, running.lastResponseAt(), options.drainTimeoutMs, (n) => {
            rowsSoFar = n;
            drainPhase?.update(n);
          });
        });
        drainPhase = progress.phase(`${name}: drain to the database`, acknowledgedUsers, 'rows');
        drainPhase.update(rowsSoFar);
        const drain = await after;
        consoleWatch?.close();
        drainPhase.done(drain.drainMs === undefined ? 'TIMEOUT' : `${Math.round(drain.drainMs)} ms after the last response`);

        // Stop the API before judging: a graceful stop flushes queues, so a late row shows up.
        const stopNotes: string[] = [];
        const api = t.api;
        if (api !== undefined) {
          const code = await api.stop();
          children.delete(api);
          if (code !== 0) {
            keepWorkDir = true;
            stopNotes.push(`the API process exited with ${code === null ? 'a signal' : `code ${code}`} on SIGTERM; its log: ${api.logFile}`);
          }
        }

        const v = await verify({
          db: verifyDb,
          couponId: campaign.id,
          stock: options.stock,
          overIssueExpected: strategyModules[name].mayOverIssue,
          users,
          load,
          drain,
          drainTimeoutMs: options.drainTimeoutMs,
        });
        const verdict = v.violations.length > 0 ? 'FAIL' : v.overIssue > 0 ? 'expected over-issue' : 'ok';
        if (verdict === 'FAIL') keepWorkDir = true;
        results.push({
          name,
          verdict,
          couponId: campaign.id,
          ...measured(load, usage),
          rows: v.rows,
          overIssue: v.overIssue,
          duplicates: v.duplicates,
          drainMs: drain.drainMs === undefined ? null : Math.round(drain.drainMs),
          violations: v.violations,
          notes: [...v.notes, ...stopNotes, ...(consoleWatch === undefined ? [] : [`a console was open: ${consoleWatch.samples.length} samples received`])],
        });
      } catch (err) {
        keepWorkDir = true;
        const message = (err as Error).message;
        results.push({ name, verdict: 'FAIL', reason: message, violations: [`the run failed: ${message}`], notes: [] });
      } finally {
        for (const c of started) {
          await c.stop();
          children.delete(c);
        }
      }
      if (ceiling !== null && results.at(-1)?.requestsPerSecond !== undefined) {
        const before = lastCeiling;
        const next = await measureCeiling('ceiling-after', `ceiling-after-${name}`, `ceiling after ${name} (node:http)`);
        if (next !== null) ceilingAfter = next;
        around.set(name, { before, after: next ?? undefined });
      }
    }
  } finally {
    control.signal?.removeEventListener('abort', onAbort);
    for (const c of children) await c.stop();
    process.removeListener('exit', killAll);
    await verifyDb?.close();
    if (!options.keep) {
      await scratch?.drop().catch((err: unknown) => progress.say(`could not drop ${scratch?.name}: ${(err as Error).message}`));
      if (selfManaged && options.kafkaBrokers !== undefined && options.redisUrl !== undefined) {
        await deleteKafkaTopics(options.kafkaBrokers, [kafkaTopic, `${kafkaTopic}.dead`]).catch((err: unknown) => progress.say(`could not delete Kafka topic ${kafkaTopic}: ${(err as Error).message}`));
      }
      if (redisPrefix !== undefined && options.redisUrl !== undefined) {
        await deleteRedisPrefix(options.redisUrl, redisPrefix).catch((err: unknown) => progress.say(`could not delete Redis keys ${redisPrefix}*: ${(err as Error).message}`));
      }
    }
    if (keepWorkDir) progress.say(`process logs kept in ${workDir}`);
    else rmSync(workDir, { recursive: true, force: true });
  }

  // Report order follows the catalog, whatever order the flags gave.
  results.sort((a, b) => STRATEGY_NAMES.indexOf(a.name as StrategyName) - STRATEGY_NAMES.indexOf(b.name as StrategyName));
  const ceilings = relateToCeiling(
    ceiling,
    ceilingAfter,
    ceilingRuns,
    results.map((result) => {
      const { before, after } = around.get(result.name) ?? {};
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
  const report: BenchReport = {
    schema: 'couponrush-bench/1',
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    command: options.commandLine,
    machine: {
      cpuModel: cpus[0]?.model.trim() ?? 'unknown CPU',
      cpus: cpus.length,
      memoryBytes: os.totalmem(),
      os: `${os.type()} ${os.release()}`,
      node: process.version,
    },
    services,
    config: {
      target: selfManaged ? 'API started by the bench (one fresh process per strategy, scratch database)' : options.url!,
      stock: options.stock,
      users: options.users,
      requests: options.requests,
      durationSeconds: options.durationSeconds ?? null,
      connections: options.connections,
      warmupRequests: options.warmupRequests,
      generator: options.generator,
    },
    ceiling: ceilings.before,
    ceilingAfter: ceilings.after,
    ceilingRuns,
    ceilingCpuRuns,
    ceilingRequestsPerSecond: ceilings.requestsPerSecond,
    strategies: ceilings.strategies,
    ok: results.every((r) => r.verdict !== 'FAIL') && results.some((r) => r.verdict !== 'skipped') && !aborted(),
    interrupted: aborted(),
  };
  return { report, files: await writeReport(report, outDir, `bench-${runId}`, options.publish === undefined ? undefined : resolve(options.publish)) };
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
  };
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
