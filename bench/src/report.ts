// The bench report: one data structure (written as JSON), rendered as a terminal table
// (cli-table3), as Markdown for bench-results/ and the README, and as a chart (chart.ts).
import { styleText } from 'node:util';
import Table from 'cli-table3';
import type { LatencySummary, SellOutSplit } from './load.js';
import { generatorBehind, MAX_RETRIES, MAX_SESSION_MS, type OpenLoopSummary } from './open-loop.js';
import type { ArrivalOptions } from './options.js';

export type Verdict = 'ok' | 'expected over-issue' | 'FAIL' | 'skipped';

export interface StrategyResult {
  /** Strategy name, or `ceiling` / `ceiling-after` for the bare node:http server's first run and its last (after the strategies). */
  readonly name: string;
  readonly verdict: Verdict;
  /** Why it was skipped or could not run. */
  readonly reason?: string;
  readonly couponId?: number;
  readonly requests?: number;
  readonly durationMs?: number;
  readonly requestsPerSecond?: number;
  /** Rate over `ceilingRequestsPerSecond`. */
  readonly ratioToCeiling?: number;
  /**
   * What `ratioToCeiling` divides by: for a strategy, the mean of the ceiling runs just before and
   * just after it; for a ceiling run, the mean of all of them.
   */
  readonly ceilingRequestsPerSecond?: number;
  readonly latencyMs?: LatencySummary;
  /** HTTP status → responses. */
  readonly statuses?: Readonly<Record<string, number>>;
  readonly errors?: number;
  readonly rows?: number;
  readonly overIssue?: number;
  readonly duplicates?: number;
  /** Null when the rows never caught up within the drain timeout. */
  readonly drainMs?: number | null;
  readonly peakRssBytes?: number;
  /** CPU time of the server process (user + system) per response during the stampede and its drain, µs. */
  readonly cpuUsPerResponse?: number;
  /**
   * The generator-independent ratio: the ceiling's CPU µs per response over this one's (the same
   * bracketing ceiling runs as `ratioToCeiling`). 0.8 means a request costs the server 1.25× what
   * a bare node:http answer costs, whatever the load generator takes of the cores.
   */
  readonly cpuRatioToCeiling?: number;
  /** What `cpuRatioToCeiling` divides: the ceiling's CPU µs per response around this run. */
  readonly ceilingCpuUsPerResponse?: number;
  /** Of `cpuUsPerResponse`, the part spent in the kernel (system time). */
  readonly systemCpuUsPerResponse?: number;
  /**
   * --worker-apart: the stream worker's own CPU per response, µs, over the same window (then
   * `cpuUsPerResponse` and the ratios are the API's alone).
   */
  readonly workerCpuUsPerResponse?: number;
  /** --trace-sampling: the spans the bench's OTLP receiver got from this strategy's processes. */
  readonly spansReceived?: number;
  /** The load generator's own CPU (the bench process) per response, µs. */
  readonly generatorCpuUsPerResponse?: number;
  /** The stampede before and after its first 410 SOLD_OUT (admissions, then refusals). */
  readonly sellOut?: SellOutSplit;
  /** Open loop only (schema 2): offered vs achieved, send lag, retries, time to a final answer per arrival. */
  readonly openLoop?: OpenLoopSummary;
  readonly violations: readonly string[];
  readonly notes: readonly string[];
}

export interface BenchReport {
  /** 2 added the open loop (`config.arrivals`, `openLoop`, `latencyMs.p999`); every field of 1 is still there. */
  readonly schema: 'couponrush-bench/2';
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly command: string;
  readonly machine: {
    readonly cpuModel: string;
    readonly cpus: number;
    readonly memoryBytes: number;
    readonly os: string;
    readonly node: string;
  };
  /** The database server with its version ('PostgreSQL 16.4', 'MariaDB 10.11.19'), and Redis's. */
  readonly services: { readonly database: string; readonly redis: string | null };
  readonly config: {
    readonly target: string;
    readonly stock: number;
    readonly users: number;
    readonly requests: number;
    readonly durationSeconds: number | null;
    readonly connections: number;
    /** The open loop's arrivals; null for the closed loop. */
    readonly arrivals?: ArrivalOptions | null;
    readonly warmupRequests: number;
    /** The load generator: the bench's raw-socket client or autocannon. */
    readonly generator?: string;
    /** --worker-apart: the stream worker ran as a process of its own, its CPU reported apart. */
    readonly workerApart?: boolean;
    /** --trace-sampling: the sampling ratio the servers traced at (absent: tracing off). */
    readonly traceSampling?: number;
  };
  /** The bare node:http server, measured before the strategies (null with --no-ceiling)… */
  readonly ceiling: StrategyResult | null;
  /** …and after the last of them (null when no strategy was measured). */
  readonly ceilingAfter: StrategyResult | null;
  /** Every ceiling run in order, req/s: one before the strategies and one after each measured strategy. */
  readonly ceilingRuns: readonly number[];
  /** The same runs' CPU µs per response (null where the probe could not read it). */
  readonly ceilingCpuRuns?: readonly (number | null)[];
  /** The mean of the ceiling runs (what the ceiling rows' own ratios divide by). */
  readonly ceilingRequestsPerSecond: number | null;
  readonly strategies: readonly StrategyResult[];
  /** False when any invariant broke or a strategy could not run. */
  readonly ok: boolean;
  readonly interrupted: boolean;
}

/** The ceiling rows: its first run, before the strategies, and its last, after them. */
export type CeilingRun = 'ceiling' | 'ceiling-after';

/** Above this relative difference between two ceiling runs, the report warns that a ratio is uncertain. */
export const CEILING_DRIFT_WARNING = 0.15;

/** A strategy's result and the ceiling runs (req/s, and CPU µs/req) measured just before and just after it. */
export interface Bracketed {
  readonly result: StrategyResult;
  readonly ceilingBefore?: number | undefined;
  readonly ceilingAfter?: number | undefined;
  readonly ceilingCpuBefore?: number | undefined;
  readonly ceilingCpuAfter?: number | undefined;
}

/**
 * Every measured strategy's rate over the ceiling measured around it: the mean of the ceiling run
 * just before it and the one just after it (or the one there is). A shared machine's speed drifts
 * over minutes; runs seconds apart see the same machine. A strategy whose two ceilings differ by
 * more than CEILING_DRIFT_WARNING gets a note. Ceiling runs get a ratio to the mean of all runs.
 */
export function relateToCeiling(
  before: StrategyResult | null,
  after: StrategyResult | null,
  runs: readonly number[],
  strategies: readonly Bracketed[],
): { before: StrategyResult | null; after: StrategyResult | null; requestsPerSecond: number | null; strategies: StrategyResult[] } {
  const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const overall = runs.length === 0 ? null : mean(runs);
  const ceilingRow = (r: StrategyResult | null) =>
    r === null || r.requestsPerSecond === undefined || overall === null ? r : { ...r, ratioToCeiling: r.requestsPerSecond / overall, ceilingRequestsPerSecond: overall };
  const related = strategies.map(({ result, ceilingBefore, ceilingAfter, ceilingCpuBefore, ceilingCpuAfter }) => {
    const around = [ceilingBefore, ceilingAfter].filter((x): x is number => x !== undefined);
    if (result.requestsPerSecond === undefined || around.length === 0) return result;
    const ceiling = mean(around);
    const cpuAround = [ceilingCpuBefore, ceilingCpuAfter].filter((x): x is number => x !== undefined && x > 0);
    const ceilingCpu = cpuAround.length === 0 ? undefined : mean(cpuAround);
    const cpu =
      ceilingCpu === undefined || result.cpuUsPerResponse === undefined || result.cpuUsPerResponse <= 0
        ? {}
        : { cpuRatioToCeiling: ceilingCpu / result.cpuUsPerResponse, ceilingCpuUsPerResponse: ceilingCpu };
    const notes = [...result.notes];
    if (ceilingBefore !== undefined && ceilingAfter !== undefined) {
      const drift = Math.abs(ceilingAfter - ceilingBefore) / ceiling;
      if (drift > CEILING_DRIFT_WARNING) {
        notes.push(
          `the ceiling moved ${Math.round(drift * 100)}% between the runs just before and after it ` +
            `(${Math.round(ceilingBefore)} → ${Math.round(ceilingAfter)} req/s): the machine's speed changed meanwhile, ` +
            'so its × ceiling ratio is uncertain — run again on a quieter machine',
        );
      }
    }
    return { ...result, ratioToCeiling: result.requestsPerSecond / ceiling, ceilingRequestsPerSecond: ceiling, ...cpu, notes };
  });
  return { before: ceilingRow(before), after: ceilingRow(after), requestsPerSecond: overall, strategies: related };
}

type Style = Parameters<typeof styleText>[0];

export function painter(color: boolean): (style: Style, text: string) => string {
  return color ? (style, text) => styleText(style, text) : (_style, text) => text;
}

const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

export function fmtInt(n: number): string {
  return int.format(n);
}

export function fmtMs(ms: number): string {
  if (ms < 10) return ms.toFixed(2);
  if (ms < 100) return ms.toFixed(1);
  return int.format(ms);
}

export function fmtDrain(ms: number | null | undefined): string {
  if (ms === undefined) return '—';
  if (ms === null) return 'timeout';
  return ms < 1000 ? `${int.format(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export function fmtBytes(bytes: number | undefined): string {
  return bytes === undefined ? 'n/a' : `${int.format(bytes / 2 ** 20)} MiB`;
}

export function fmtStatuses(statuses: Readonly<Record<string, number>> | undefined): string {
  if (statuses === undefined) return '—';
  return Object.entries(statuses)
    .sort(([a], [b]) => Number(a) - Number(b))
    .map(([status, n]) => `${status}:${int.format(n)}`)
    .join(' ');
}

const HEADERS = ['strategy', 'req/s', '× ceiling', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'responses', 'issued rows', 'over-issue', 'duplicates', 'drain', 'peak RSS', 'CPU µs/req', 'CPU × ceiling', 'generator µs/req', 'verdict'];

function cells(r: StrategyResult): string[] {
  if (r.verdict === 'skipped' || r.requestsPerSecond === undefined) {
    return [r.name, ...HEADERS.slice(1, -1).map(() => '—'), r.verdict];
  }
  const l = r.latencyMs;
  const isCeiling = isCeilingRun(r);
  return [
    displayName(r),
    fmtInt(r.requestsPerSecond),
    r.ratioToCeiling === undefined ? (isCeiling ? '1.00' : '—') : r.ratioToCeiling.toFixed(2),
    l === undefined ? '—' : fmtMs(l.p50),
    l === undefined ? '—' : fmtMs(l.p95),
    l === undefined ? '—' : fmtMs(l.p99),
    l === undefined ? '—' : fmtMs(l.max),
    fmtStatuses(r.statuses),
    isCeiling ? '—' : fmtInt(r.rows ?? 0),
    isCeiling ? '—' : fmtInt(r.overIssue ?? 0),
    isCeiling ? '—' : fmtInt(r.duplicates ?? 0),
    isCeiling ? '—' : fmtDrain(r.drainMs),
    fmtBytes(r.peakRssBytes),
    r.cpuUsPerResponse === undefined ? '—' : fmtInt(r.cpuUsPerResponse),
    r.cpuRatioToCeiling === undefined ? (isCeiling && r.cpuUsPerResponse !== undefined ? '1.00' : '—') : r.cpuRatioToCeiling.toFixed(2),
    r.generatorCpuUsPerResponse === undefined ? '—' : fmtInt(r.generatorCpuUsPerResponse),
    isCeiling ? '' : r.verdict,
  ];
}

function displayName(r: StrategyResult): string {
  return r.name === 'ceiling' ? 'ceiling (bare node:http)' : r.name === 'ceiling-after' ? 'ceiling, after the strategies' : r.name;
}

const OPEN_HEADERS = [
  'strategy', 'offered/s', 'achieved/s', 'send lag p99 ms', 'waited for a connection', 'peak connections',
  'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms',
  'final answer p50 ms', 'p99 ms', 'p99.9 ms', 'max ms',
  'retries', 'gave up', 'no answer', 'sold out at', 'last told after', 'generator',
];

function openLoopCells(r: StrategyResult & { openLoop: OpenLoopSummary }): string[] {
  const o = r.openLoop;
  const l = r.latencyMs;
  const f = o.timeToFinalAnswerMs;
  const ms = (x: number | undefined) => (x === undefined ? '—' : fmtMs(x));
  return [
    displayName(r),
    fmtInt(o.offeredPerSecond),
    fmtInt(o.achievedPerSecond),
    fmtMs(o.sendLagMs.p99),
    fmtInt(o.waitedForConnection),
    fmtInt(o.peakConnections),
    ms(l?.p50),
    ms(l?.p99),
    ms(l?.p999),
    ms(l?.max),
    fmtMs(f.p50),
    fmtMs(f.p99),
    fmtMs(f.p999),
    fmtMs(f.max),
    fmtInt(o.retries),
    fmtInt(o.gaveUp),
    fmtInt(o.unanswered),
    o.soldOutAtMs === null ? '—' : fmtDrain(Math.round(o.soldOutAtMs)),
    o.lastLearnedSoldOutAfterMs === null ? '—' : fmtDrain(Math.round(o.lastLearnedSoldOutAfterMs)),
    generatorBehind(o).length === 0 ? 'kept up' : 'BEHIND',
  ];
}

function openLoopRows(report: BenchReport): (StrategyResult & { openLoop: OpenLoopSummary })[] {
  return allRows(report).filter((r): r is StrategyResult & { openLoop: OpenLoopSummary } => r.openLoop !== undefined);
}

const OPEN_LOOP_LEGEND =
  '_Open loop_: every request left at its intended time whatever the answers. _offered/s_: arrivals over their window; ' +
  '_achieved/s_: first attempts sent over the time the generator took to send them. _send lag_: actual − intended send time. ' +
  '_waited for a connection_: attempts that found every connection busy at the cap (the generator\'s shortfall, not the server\'s). ' +
  '_p50…max_: every answer\'s latency from its intended send time (a retry\'s from the moment its Retry-After ended). ' +
  `_final answer_: per arrival, from its intended send time to its final answer, retries included (a 429/503 with Retry-After is retried after it, at most ${MAX_RETRIES} times, within ${MAX_SESSION_MS / 1000} s; _gave up_: still refused then). ` +
  '_sold out at_: the first 410 after the start; _last told after_: from then to the last arrival\'s final 410. ' +
  '_generator_: BEHIND when it achieved under 95 % of the offered rate, its p99 send lag was over 10 ms, or arrivals waited for a connection (the notes say which).';

/** The open loop's own table (terminal), under the main one; nothing for a closed-loop run. */
function renderOpenLoopTerminal(report: BenchReport, color: boolean): string[] {
  const rows = openLoopRows(report);
  if (rows.length === 0) return [];
  const table = new Table({
    head: OPEN_HEADERS,
    style: { head: color ? ['cyan'] : [], border: color ? ['grey'] : [] },
    colAligns: OPEN_HEADERS.map((h) => (h === 'strategy' || h === 'generator' ? 'left' : 'right')),
  });
  for (const r of rows) table.push(openLoopCells(r));
  return ['open loop — latencies from the intended send time; final answer per arrival, retries included:', table.toString()];
}

/** The open loop's table (Markdown) and what its columns mean; nothing for a closed-loop run. */
export function renderOpenLoopTable(report: BenchReport): string[] {
  const rows = openLoopRows(report);
  if (rows.length === 0) return [];
  const left = new Set(['strategy', 'generator']);
  return [
    `| ${OPEN_HEADERS.join(' | ')} |`,
    `|${OPEN_HEADERS.map((h) => (left.has(h) ? ' --- ' : ' ---: ')).join('|')}|`,
    ...rows.map((r) => `| ${openLoopCells(r).map(mdEscape).join(' | ')} |`),
    '',
    OPEN_LOOP_LEGEND,
    '',
  ];
}

export function isCeilingRun(r: StrategyResult): boolean {
  return r.name === 'ceiling' || r.name === 'ceiling-after';
}

/** Ceiling runs first, then the strategies. */
export function allRows(report: BenchReport): StrategyResult[] {
  return [report.ceiling, report.ceilingAfter].filter((r): r is StrategyResult => r !== null).concat(report.strategies);
}

export function renderTerminal(report: BenchReport, color: boolean): string {
  const paint = painter(color);
  const table = new Table({
    head: HEADERS,
    style: { head: color ? ['cyan'] : [], border: color ? ['grey'] : [] },
    colAligns: HEADERS.map((h) => (h === 'strategy' || h === 'responses' || h === 'verdict' ? 'left' : 'right')),
  });
  for (const r of allRows(report)) {
    const row = cells(r);
    const verdictStyle: Style = r.verdict === 'ok' ? 'green' : r.verdict === 'FAIL' ? 'red' : r.verdict === 'skipped' ? 'dim' : 'yellow';
    row[row.length - 1] = paint(verdictStyle, row[row.length - 1]!);
    table.push(row);
  }
  const lines = [table.toString(), ...renderOpenLoopTerminal(report, color)];
  for (const r of allRows(report)) {
    if (r.verdict === 'skipped') lines.push(paint('dim', `skipped ${r.name}: ${r.reason ?? ''}`));
    for (const v of r.violations) lines.push(paint('red', `✗ ${r.name}: ${v}`));
    for (const n of r.notes) lines.push(paint('yellow', `• ${r.name}: ${n}`));
  }
  const failed = report.strategies.some((r) => r.verdict === 'FAIL');
  if (report.ok) lines.push(paint('green', '✓ every invariant held for every strategy that ran'));
  else if (failed) lines.push(paint(['red', 'bold'], '✗ invariants broken or strategies failed — see above'));
  else if (report.interrupted) lines.push(paint('yellow', 'interrupted: the strategies above that ran held every invariant'));
  else lines.push(paint('yellow', 'no strategy ran'));
  return lines.join('\n') + '\n';
}

/**
 * Markdown: each strategy's stampede before and after its first 410 — admissions, then refusals —
 * with the ratio of each phase's rate to the ceiling. Nothing when no strategy sold out.
 */
export function renderSellOutTable(report: BenchReport): string[] {
  const split = report.strategies.filter((r) => r.sellOut !== undefined);
  if (split.length === 0) return [];
  const ratio = (x: number | undefined, ceiling: number | undefined) => (ceiling === undefined || x === undefined ? '—' : (x / ceiling).toFixed(2));
  const cpuRatio = (us: number | undefined, ceiling: number | undefined) => (ceiling === undefined || us === undefined || us <= 0 ? '—' : (ceiling / us).toFixed(2));
  const us = (x: number | undefined) => (x === undefined ? '—' : fmtInt(x));
  const out = [
    '**Before and after the sell-out.** A stampede is two loads: until the stock is gone most requests are admissions ' +
      '(token, Redis or the database, a row), after it they are refusals. Split at the first 410 ' +
      '(_CPU × ceiling_: the ceiling\'s CPU µs per response over the phase\'s):',
    '',
    '| strategy | responses until the sell-out | req/s | × ceiling | CPU µs/req | CPU × ceiling | responses after it | req/s | × ceiling | CPU µs/req | CPU × ceiling |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of split) {
    const { before, after } = r.sellOut!;
    const c = r.ceilingRequestsPerSecond;
    const cc = r.ceilingCpuUsPerResponse;
    out.push(
      `| ${r.name} | ${fmtInt(before.responses)} | ${fmtInt(before.requestsPerSecond)} | ${ratio(before.requestsPerSecond, c)} | ${us(before.cpuUsPerResponse)} | ${cpuRatio(before.cpuUsPerResponse, cc)} | ` +
        `${fmtInt(after.responses)} | ${fmtInt(after.requestsPerSecond)} | ${ratio(after.requestsPerSecond, c)} | ${us(after.cpuUsPerResponse)} | ${cpuRatio(after.cpuUsPerResponse, cc)} |`,
    );
  }
  out.push('');
  return out;
}

function mdEscape(text: string): string {
  return text.replace(/\|/g, '\\|');
}

export function describeLoad(report: BenchReport): string {
  const c = report.config;
  if (c.arrivals !== undefined && c.arrivals !== null) return describeOpenLoop(report, c.arrivals);
  const retries = c.requests - c.users;
  const length = c.durationSeconds === null ? `${fmtInt(c.requests)} requests` : `${c.durationSeconds} s per strategy, cycling a plan of ${fmtInt(c.requests)} requests`;
  const warm = c.warmupRequests > 0 ? `; each target warmed up with ${fmtInt(c.warmupRequests)} unmeasured requests first` : '';
  const generator = c.generator === 'autocannon' ? 'autocannon' : "the bench's raw-socket HTTP/1.1 client";
  return `${length} from ${fmtInt(c.users)} users (each once, plus ${fmtInt(retries)} retries by random users, shuffled) over ${c.connections} keep-alive connections of ${generator}; stock ${fmtInt(c.stock)} per campaign${warm}`;
}

function describeOpenLoop(report: BenchReport, a: ArrivalOptions): string {
  const c = report.config;
  const when =
    a.kind === 'drop'
      ? `${fmtInt(a.count)} arrivals within ${a.windowSeconds} s (${a.shape === 'poisson' ? 'a Poisson process' : 'evenly spaced'})`
      : `${fmtInt(a.count)} arrivals at ${fmtInt(a.count / a.windowSeconds)}/s (evenly spaced, ${a.windowSeconds.toFixed(1)} s)`;
  const presses = a.count - c.users;
  const who = presses > 0 ? `${fmtInt(c.users)} users (each once, plus ${fmtInt(presses)} second presses by random users, shuffled)` : `${fmtInt(c.users)} users, each once`;
  const warm = c.warmupRequests > 0 ? `; each target warmed up with ${fmtInt(c.warmupRequests)} unmeasured requests over ${c.connections} connections first` : '';
  return (
    `open loop: ${when} from ${who}, each sent at its intended time whatever the answers, over connections opened as needed up to ${fmtInt(a.maxConnections)} ` +
    `(the bench's raw-socket HTTP/1.1 client); a 429/503 with Retry-After is retried after it; stock ${fmtInt(c.stock)} per campaign${warm}`
  );
}

export function describeMachine(report: BenchReport): string {
  const m = report.machine;
  return `${m.cpus} × ${m.cpuModel}, ${(m.memoryBytes / 2 ** 30).toFixed(0)} GiB, ${m.os}, Node ${m.node}`;
}

/** The Markdown report; `chartFile` is linked as an image when given. */
export function renderMarkdown(report: BenchReport, chartFile: string | undefined): string {
  const out: string[] = [];
  out.push(`# couponrush bench — ${report.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}`, '');
  out.push(`- **Machine:** ${describeMachine(report)} — load generator, API, ${report.services.database.split(' ')[0]}${report.services.redis === null ? '' : ' and Redis'} all on it`);
  out.push(`- **Services:** ${report.services.database}${report.services.redis === null ? ', no Redis' : `, Redis ${report.services.redis}`}`);
  out.push(`- **Target:** ${report.config.target}`);
  out.push(`- **Command:** \`${report.command}\``);
  out.push(`- **Load:** ${describeLoad(report)}`);
  out.push(`- **Verdict:** ${report.ok ? 'every invariant held for every strategy that ran' : '**FAILED** — invariants broken or strategies failed (below)'}${report.interrupted ? ' (interrupted)' : ''}`);
  out.push('');
  out.push(`| ${HEADERS.join(' | ')} |`);
  // Left-aligned: the names, the status breakdown and the verdict; numbers to the right.
  const leftAligned = new Set(['strategy', 'responses', 'verdict']);
  out.push(`|${HEADERS.map((h) => (leftAligned.has(h) ? ' --- ' : ' ---: ')).join('|')}|`);
  for (const r of allRows(report)) out.push(`| ${cells(r).map(mdEscape).join(' | ')} |`);
  out.push('');
  out.push(...renderOpenLoopTable(report));
  if (chartFile !== undefined) out.push(`![Throughput and p99 latency per strategy](${chartFile})`, '');
  const details: string[] = [];
  for (const r of allRows(report)) {
    if (r.verdict === 'skipped') details.push(`- skipped **${r.name}**: ${mdEscape(r.reason ?? '')}`);
    for (const v of r.violations) details.push(`- ❌ **${r.name}**: ${mdEscape(v)}`);
    for (const n of r.notes) details.push(`- **${r.name}**: ${mdEscape(n)}`);
  }
  if (details.length > 0) out.push(...details, '');
  out.push(...renderSellOutTable(report));
  if (report.ceilingRuns.length > 2) {
    const cpu = report.ceilingCpuRuns?.every((x) => x !== null) === true ? `; CPU µs/req: ${report.ceilingCpuRuns.map((x) => fmtInt(x!)).join(' · ')}` : '';
    out.push(`Ceiling runs in order, req/s: ${report.ceilingRuns.map(fmtInt).join(' · ')}${cpu}.`, '');
  }
  out.push(
    '_req/s_: responses per second from the first request to the last response. _× ceiling_: that rate over the rate of a bare ' +
      '`node:http` server answering the same requests in the same run. The ceiling runs before the first strategy and again after each ' +
      'one; a strategy\'s ratio divides by the mean of the two runs around it, seconds apart, so a machine whose speed drifts over the ' +
      'run (a shared VM) is compared with itself. The two ceiling rows are the first and the last run, each over the mean of all runs. ' +
      'Latencies from an HDR histogram of every response. ' +
      '_drain_: from the last response until every 201/202 had its row in the database. _peak RSS_: the API process during the stampede. ' +
      '_CPU µs/req_: CPU time (user + system) of the API process during the stampede and its drain over its responses — the cost of one request, ' +
      'whatever else competes for the cores (with Redis it includes the in-process stream worker). _CPU × ceiling_: the ceiling\'s CPU µs/req ' +
      '(the same bracketing runs) over the strategy\'s — a ratio that does not depend on how much of the cores the load generator takes. ' +
      `_generator µs/req_: the load generator's own CPU (${report.config.generator ?? 'autocannon'}, in the bench process) per response.`,
    '',
  );
  return out.join('\n');
}
