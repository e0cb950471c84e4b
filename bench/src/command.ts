// The `couponrush bench` command: flags (commander), then the runner, loaded lazily so that
// `serve` never pays for the load generator and the chart renderer.
import { Command, InvalidArgumentError, Option } from 'commander';
import { BenchOptionsError, DEFAULTS, parseArrivals, parseStrategyList, PUBLISHED_DIR, resolveBenchOptions, samplingRatio, type BenchFlags, type BenchOptions } from './options.js';
import { STRATEGY_NAMES, type StrategyName } from '../../src/coupons/strategies/index.js';
import { benchEnvironment } from '../../src/config.js';
import { GENERATORS } from './load.js';
import { ARRIVAL_SHAPES } from './open-loop.js';

function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive whole number');
  return n;
}

function wholeNumber(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be a whole number (0 or more)');
  return n;
}

/** A parser whose BenchOptionsError becomes commander's InvalidArgumentError. */
function asArgument<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (err) {
      if (err instanceof BenchOptionsError) throw new InvalidArgumentError(err.message);
      throw err;
    }
  };
}

const strategyList = asArgument(parseStrategyList);

function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function benchCommand(): Command {
  const cmd = new Command('bench')
    .description(
      'stampede every strategy (or --strategies) with the same requests, verify every issuance against the database, ' +
        'and compare them with a bare node:http ceiling; writes Markdown, JSON and an SVG chart under --out',
    )
    .showHelpAfterError()
    .option('--strategies <list>', `comma-separated strategies (default: all — ${STRATEGY_NAMES.join(', ')})`, strategyList)
    .option('--stock <n>', 'coupons per campaign', positiveInt, DEFAULTS.stock)
    .option('--users <n>', `distinct users; each sends at least once (default: ${DEFAULTS.users}, or the users of --arrivals)`, positiveInt)
    .addOption(new Option('--requests <n>', `requests per strategy (default: ${DEFAULTS.retryFactor} × users)`).argParser(positiveInt).conflicts('duration'))
    .addOption(new Option('--duration <seconds>', 'run each stampede this long instead, cycling through the requests').argParser(positiveInt))
    .option('--connections <n>', 'keep-alive connections, one request in flight each (open loop: opened before the first arrival, more as needed)', positiveInt, DEFAULTS.connections)
    .addOption(
      new Option('--rate <per-second>', 'open loop: requests arrive at this constant rate whatever the answers (--requests of them, or for --duration); latency from the intended send time')
        .argParser(positiveInt)
        .conflicts(['arrivals']),
    )
    .addOption(
      new Option('--arrivals <users@seconds>', 'open loop, a drop: that many users arrive within that window (e.g. 40000@1), each sent at its intended time; sets --requests')
        .argParser(asArgument(parseArrivals))
        .conflicts(['requests', 'duration']),
    )
    .addOption(new Option('--arrival-shape <shape>', `with --arrivals: evenly spaced, or a Poisson process (default: ${DEFAULTS.arrivalShape})`).choices(ARRIVAL_SHAPES))
    .addOption(
      new Option('--max-connections <n>', `open loop: connections opened as needed up to this many; arrivals finding all busy wait and are reported (default: ${DEFAULTS.maxConnections})`).argParser(
        positiveInt,
      ),
    )
    .addOption(
      new Option('--generator <name>', "load generator: the bench's own raw-socket HTTP/1.1 client, or autocannon (costs the shared cores about as much CPU per request as a bare server)")
        .choices(GENERATORS)
        .default(DEFAULTS.generator),
    )
    .option('--url <url>', 'bench a running server instead of starting one (needs --admin-token, --jwt-secret and its DATABASE_URL)')
    .option('--admin-token <token>', 'with --url: the target\'s ADMIN_TOKEN (default: env ADMIN_TOKEN)')
    .option('--jwt-secret <secret>', 'with --url: the target\'s JWT_SECRET (default: env JWT_SECRET)')
    .option('--out <dir>', 'where the report files go (bench-<time>.* and latest.*; the default is git-ignored)', DEFAULTS.out)
    .option('--publish', `also write the report as ${PUBLISHED_DIR}/latest.{md,json,svg}, the committed results the README links (only for a run meant to replace them)`)
    .option('--warmup <n>', 'unmeasured requests to each target first (JIT, connection pools); 0 to skip', wholeNumber, DEFAULTS.warmupRequests)
    .option('--no-ceiling', 'skip the bare node:http ceiling runs before the first strategy and after each (no ratios)')
    .option('--drain-timeout <seconds>', 'how long to wait for admitted issuances to reach the database', positiveInt, DEFAULTS.drainTimeoutSeconds)
    .option('--timeout <seconds>', 'per-request timeout of the load generator', positiveInt, DEFAULTS.requestTimeoutSeconds)
    .option('--cpu-prof', 'write a V8 CPU profile of each API process and ceiling server to <out>/profiles/')
    .option('--watch-console', 'keep a live console (GET /admin/console/stream) open on each campaign while it runs, to measure what one costs')
    .option('--worker-apart', 'with Redis: run the stream worker as its own process instead of inside the API, and report its CPU apart from the API\'s')
    .option('--trace-sampling <ratio>', 'tracing on in the processes the bench starts, sampling this ratio of requests (0.01 = 1 %), exported to an OTLP receiver inside the bench: what tracing costs', asArgument(samplingRatio))
    .option('--keep', 'keep the scratch database, Redis keys and process logs')
    .option('--json', 'print the JSON report on stdout instead of the table')
    .option('--no-progress', 'no live progress bars')
    .addHelpText(
      'after',
      '\nEnvironment:\n' +
        '  DATABASE_URL  PostgreSQL or MySQL/MariaDB server for a scratch database (dropped afterwards unless --keep); with --url, the target\'s database\n' +
        '  REDIS_URL     enables the Redis strategies (keys under a unique prefix, deleted afterwards);\n' +
        '                or REDIS_SENTINELS + REDIS_SENTINEL_MASTER; REDIS_WAIT_REPLICAS is handed on too\n' +
        'Exit status: 0 when every invariant held; 1 when one broke, a strategy failed or a flag is wrong; 130 when interrupted.\n',
    )
    .action(async (flags: BenchFlags) => {
      let options: BenchOptions;
      try {
        const env = benchEnvironment();
        options = resolveBenchOptions(flags, env, {
          commandLine: ['couponrush', ...process.argv.slice(2)].map(shellQuote).join(' '),
          color: process.stdout.isTTY === true && !env.noColor,
          interactive: process.stderr.isTTY === true,
        });
      } catch (err) {
        if (err instanceof BenchOptionsError) cmd.error(`couponrush bench: ${err.message}`);
        throw err;
      }
      const [{ runBench }, { renderTerminal }] = await Promise.all([import('./index.js'), import('./report.js')]);
      const controller = new AbortController();
      const onSigint = () => {
        if (controller.signal.aborted) process.exit(130);
        process.stderr.write('\ninterrupted: stopping the stampede and cleaning up (Ctrl-C again to quit at once)\n');
        controller.abort();
      };
      process.on('SIGINT', onSigint);
      try {
        const run = await runBench(options, { signal: controller.signal });
        if (options.json) process.stdout.write(JSON.stringify(run.report, null, 2) + '\n');
        else {
          process.stdout.write(renderTerminal(run.report, options.color));
          process.stdout.write(`report: ${run.files.markdown}${run.files.chart === undefined ? '' : `, chart: ${run.files.chart}`}, data: ${run.files.json}\n`);
        }
        process.exitCode = run.report.interrupted ? 130 : run.report.ok ? 0 : 1;
      } finally {
        process.removeListener('SIGINT', onSigint);
      }
    });
  return cmd;
}
