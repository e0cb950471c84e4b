// A real Apache Kafka broker for the tests and the bench: single node, KRaft (no ZooKeeper), on a
// free local port, from the jars Maven Central serves (scripts/kafka/pom.xml), fetched once into a
// cache directory. Not a mock: the broker Apache ships, run with plain `java -cp`.
//
//   npx couponrush-kafka fetch                # the jars, once (CI does this)
//   npx couponrush-kafka run [--port 9092]    # a broker until Ctrl-C; prints KAFKA_BROKERS=…
//
// `npm run build` bundles this file into dist/tools/kafka-broker.js for the `couponrush-kafka` bin
// (no tsx needed); the tests import it directly.
//
// Needs a JDK 17+ (`java`) and Maven (`mvn`) on PATH. KAFKA_LIBS names a directory of jars to use
// instead (nothing is fetched); COUPONRUSH_CACHE the cache directory (default ~/.cache/couponrush).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const run = promisify(execFile);
const here = dirname(fileURLToPath(import.meta.url));
// Beside this file in scripts/, and copied beside the bundle in dist/tools/ by the build.
const POM = join(here, 'kafka', 'pom.xml');
/** Bump with the version in pom.xml: the cache directory is per version. */
export const KAFKA_VERSION = '4.4.0';
const READY_TIMEOUT_MS = 60_000;

function cacheDir(): string {
  return resolve(process.env.COUPONRUSH_CACHE ?? join(os.homedir(), '.cache', 'couponrush'));
}

/** The directory of the broker's jars, fetched from Maven Central on first use. */
export async function kafkaLibs(): Promise<string> {
  const given = process.env.KAFKA_LIBS;
  if (given !== undefined && given !== '') return resolve(given);
  const dir = join(cacheDir(), `kafka-${KAFKA_VERSION}`, 'libs');
  const done = join(dir, '.complete');
  if (existsSync(done)) return dir;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  try {
    await run('mvn', ['-q', '-B', '-f', POM, 'dependency:copy-dependencies', `-DoutputDirectory=${dir}`, '-DincludeScope=runtime'], { maxBuffer: 16 * 2 ** 20 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`could not fetch Kafka ${KAFKA_VERSION}'s jars with Maven: ${e.message}\n${(e.stdout ?? '') + (e.stderr ?? '')}`.trim());
  }
  if (!readdirSync(dir).some((f) => f.startsWith('kafka_2.13-'))) throw new Error(`Maven finished but ${dir} has no kafka_2.13 jar`);
  writeFileSync(done, `${new Date().toISOString()}\n`);
  return dir;
}

export interface KafkaBroker {
  /** host:port, as KAFKA_BROKERS takes it. */
  readonly brokers: string;
  readonly port: number;
  readonly dataDir: string;
  readonly pid: number;
  /** Graceful stop (SIGTERM, then SIGKILL after 20 s); removes the data unless `keepData`. */
  stop(options?: { keepData?: boolean }): Promise<void>;
  /** kill -9: for fault tests. The data stays, so `restart()` finds the log. */
  kill(): Promise<void>;
  /** Starts it again on the same port and data (after stop({ keepData: true }) or kill()). */
  restart(): Promise<void>;
}

/** A TCP port free on 127.0.0.1 right now. */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface BrokerOptions {
  /** The client port (default: a free one). */
  readonly port?: number;
  /** Extra server.properties lines (key → value). */
  readonly config?: Readonly<Record<string, string>>;
  /** Where the broker's own log goes (default: a file in the data directory). */
  readonly logFile?: string;
}

/** Starts a single-node KRaft broker on free local ports; resolves once it answers the Kafka protocol. */
export async function startKafka(options: BrokerOptions = {}): Promise<KafkaBroker> {
  const libs = await kafkaLibs();
  const classpath = `${libs}/*`;
  const root = mkdtempSync(join(os.tmpdir(), 'couponrush-kafka-'));
  const dataDir = join(root, 'data');
  const [port, controllerPort] = [options.port ?? (await freePort()), await freePort()];
  const properties: Record<string, string> = {
    'process.roles': 'broker,controller',
    'node.id': '1',
    'controller.quorum.bootstrap.servers': `127.0.0.1:${controllerPort}`,
    listeners: `PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names': 'CONTROLLER',
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name': 'PLAINTEXT',
    'log.dirs': dataDir,
    'num.partitions': '1',
    // One node: the internal topics cannot have more replicas.
    'offsets.topic.replication.factor': '1',
    'transaction.state.log.replication.factor': '1',
    'transaction.state.log.min.isr': '1',
    'share.coordinator.state.topic.replication.factor': '1',
    'share.coordinator.state.topic.min.isr': '1',
    'group.initial.rebalance.delay.ms': '0',
    'auto.create.topics.enable': 'false',
    ...options.config,
  };
  const serverProperties = join(root, 'server.properties');
  writeFileSync(serverProperties, Object.entries(properties).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
  const log4j = join(root, 'log4j2.properties');
  writeFileSync(
    log4j,
    [
      'rootLogger.level=WARN',
      'rootLogger.appenderRef.stderr.ref=STDERR',
      'appender.stderr.type=Console',
      'appender.stderr.name=STDERR',
      'appender.stderr.target=SYSTEM_ERR',
      'appender.stderr.layout.type=PatternLayout',
      'appender.stderr.layout.pattern=[%d] %p %m (%c)%n',
      'logger.started.name=kafka.server.KafkaRaftServer',
      'logger.started.level=INFO',
    ].join('\n') + '\n',
  );
  const java = ['-Xms128m', '-Xmx512m', '-XX:+UseSerialGC', `-Dlog4j2.configurationFile=${log4j}`, '-cp', classpath];
  try {
    await run('java', [...java, 'kafka.tools.StorageTool', 'format', '--standalone', `--cluster-id=${clusterId()}`, '-c', serverProperties]);
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  const logFile = options.logFile ?? join(root, 'broker.log');

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const launch = async () => {
    const out = openSync(logFile, 'a');
    try {
      child = spawn('java', [...java, 'kafka.Kafka', serverProperties], { stdio: ['ignore', out, out], detached: process.platform !== 'win32' });
    } finally {
      closeSync(out);
    }
    const proc = child;
    exited = new Promise((r) => proc.once('exit', () => r()));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`the Kafka broker exited during start-up; its log:\n${logTail(logFile)}`);
      if (await answersKafka(port)) return;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`the Kafka broker did not answer on ${port} within ${READY_TIMEOUT_MS / 1000} s; its log:\n${logTail(logFile)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const end = async (signal: NodeJS.Signals) => {
    const proc = child;
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await launch();
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return {
    brokers: `127.0.0.1:${port}`,
    port,
    dataDir,
    get pid() {
      return child?.pid ?? -1;
    },
    async stop({ keepData = false } = {}) {
      await end('SIGTERM');
      if (!keepData) rmSync(root, { recursive: true, force: true });
    },
    kill: () => end('SIGKILL'),
    restart: launch,
  };
}

/** The last lines of the broker's log, for an error message (the log itself goes with its directory). */
function logTail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what `random-uuid` prints),
 * never starting with '-' (Kafka's own generator avoids it too: the command line would read it as
 * an option).
 */
function clusterId(): string {
  for (;;) {
    const id = Buffer.from(randomUUID().replace(/-/g, ''), 'hex').toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

/**
 * Whether a Kafka broker answers on the port: an ApiVersions request (key 18, version 0) and a
 * response with error code 0 that lists the Produce API. The broker's own protocol, no client library.
 */
export function answersKafka(port: number, timeoutMs = 2_000): Promise<boolean> {
  return new Promise((resolveAnswer) => {
    const clientId = Buffer.from('couponrush-probe');
    const body = Buffer.alloc(2 + 2 + 4 + 2 + clientId.length);
    let o = 0;
    o = body.writeInt16BE(18, o); // api key: ApiVersions
    o = body.writeInt16BE(0, o); // api version 0
    o = body.writeInt32BE(42, o); // correlation id
    o = body.writeInt16BE(clientId.length, o);
    clientId.copy(body, o);
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0]), body]);
    frame.writeInt32BE(body.length, 0);
    const socket = net.connect({ host: '127.0.0.1', port });
    let got = Buffer.alloc(0);
    const finish = (ok: boolean) => {
      socket.destroy();
      resolveAnswer(ok);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.on('error', () => finish(false));
    socket.on('connect', () => socket.write(frame));
    socket.on('data', (chunk) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < 4 || got.length < 4 + got.readInt32BE(0)) return;
      // size, correlation id, error code, [api key, min, max]…
      const ok = got.readInt32BE(4) === 42 && got.readInt16BE(8) === 0 && got.readInt32BE(10) > 0 && got.readInt16BE(14) === 0;
      finish(ok);
    });
  });
}

const USAGE = 'usage: couponrush-kafka fetch | run [--port <port>]';

/** As a command: fetch the jars, or run a broker until interrupted. Returns the exit code when done. */
export async function main(argv: readonly string[]): Promise<number | undefined> {
  let parsed: ReturnType<typeof parseCommand>;
  try {
    parsed = parseCommand(argv);
  } catch (err) {
    process.stderr.write(`couponrush-kafka: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (parsed.command === 'fetch') {
    process.stdout.write(`${await kafkaLibs()}\n`);
    return 0;
  }
  const broker = await startKafka({ port: parsed.port });
  process.stdout.write(`KAFKA_BROKERS=${broker.brokers}\n`);
  const stop = () => void broker.stop().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return undefined;
}

function parseCommand(argv: readonly string[]): { command: 'fetch' | 'run'; port?: number | undefined } {
  const { positionals, values } = parseArgs({ args: [...argv], allowPositionals: true, options: { port: { type: 'string' } } });
  const [command, ...rest] = positionals;
  if ((command !== 'fetch' && command !== 'run') || rest.length > 0) throw new Error(command === undefined ? 'a command is required' : `unknown command: ${positionals.join(' ')}`);
  if (values.port === undefined) return { command };
  if (command !== 'run') throw new Error('--port is for run');
  const port = /^\d{1,5}$/.test(values.port) ? Number(values.port) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new Error(`--port must be 1-65535, got "${values.port}"`);
  return { command, port };
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const code = await main(process.argv.slice(2));
  if (code !== undefined) process.exit(code);
}
