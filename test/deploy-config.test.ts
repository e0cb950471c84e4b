// The deployment files agree with the app and with each other: the compose file parses and every
// couponrush service's environment passes the app's own config validation; nginx and Prometheus
// point at the ports and paths the app serves; the Grafana dashboard queries only series the app
// exports, through the provisioned datasource. Where the real tool is installed (nginx, promtool,
// docker-compose) it checks the file too, and says loudly when it is not.
import assert from 'node:assert/strict';
import { execFile, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { KAFKA_VERSION } from '../scripts/kafka-broker.js';
import { BODY_LIMIT_BYTES } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { Registry } from 'prom-client';
import { METRICS_PATH } from '../src/metrics/index.js';
import { countRedisErrors } from '../src/metrics/redis.js';
import { registerWorkerMetrics } from '../src/metrics/worker.js';
import type { RedisHandle } from '../src/redis/client.js';
import { missing, request, startTestServer } from './helpers.js';

const execFileAsync = promisify(execFile);
const root = new URL('../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');
const DEPLOY = new URL('deploy/', root).pathname;

interface ComposeService {
  image?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  volumes?: string[];
}
const compose = parse(read('deploy/docker-compose.yml'), { merge: true }) as { services: Record<string, ComposeService> };
const services = compose.services;

/** `${VAR:?msg}` / `${VAR}` → a value that passes validation (what .env would hold); `${VAR:-default}` → the default, as compose does with VAR unset. */
const DUMMY: Record<string, string> = {
  DB_PASSWORD: 'pw',
  ADMIN_TOKEN: 'a'.repeat(24),
  JWT_SECRET: 'j'.repeat(48),
  KAFKA_RECORD_SECRET: 'k'.repeat(44),
  GRAFANA_ADMIN_PASSWORD: 'g',
};
const substitute = (value: string) =>
  value.replace(/\$\{(\w+)(?::([?-])([^}]*))?\}/g, (_, name: string, kind?: string, rest?: string) => DUMMY[name] ?? (kind === '-' ? (rest ?? '') : ''));
const envOf = (service: string) => Object.fromEntries(Object.entries(services[service]?.environment ?? {}).map(([k, v]) => [k, substitute(String(v))]));

/** An override file's services, as far as the Redis variants' checks read them. */
interface OverrideFile {
  services: Record<string, { environment?: Record<string, unknown>; command?: string[] }>;
}

/** A service's environment as compose merges it: the base file's, then the override's on top. */
const mergedEnvOf = (override: OverrideFile, service: string): Record<string, string> => ({
  ...envOf(service),
  ...Object.fromEntries(Object.entries(override.services[service]?.environment ?? {}).map(([k, v]) => [k, substitute(String(v))])),
});

/** The shell script an override's service starts with (`sh -ec <script>`). */
const shellScriptOf = (override: OverrideFile, service: string): string => {
  const command = override.services[service]?.command ?? [];
  assert.deepEqual(command.slice(0, 2), ['sh', '-ec'], `${service} starts through a shell script`);
  return command[2] ?? '';
};
const couponrushServices = Object.keys(services).filter((s) => services[s]?.image === 'couponrush:local');

function toolMissing(t: TestContext, tool: string, why: string): void {
  missing(t, `${tool} is not installed: ${why} was not checked (apt-get install ${tool === 'promtool' ? 'prometheus' : tool})`);
}

function has(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

describe('deploy/docker-compose.yml', () => {
  it('runs API ×2 behind nginx, a worker, Redis with AOF, PostgreSQL, Prometheus and Grafana', () => {
    for (const s of ['api1', 'api2', 'worker', 'nginx', 'redis', 'database', 'prometheus', 'grafana', 'migrate']) {
      assert.ok(services[s] !== undefined, `service ${s}`);
    }
    assert.deepEqual(services.api1?.command, ['serve']);
    assert.deepEqual(services.worker?.command, ['worker']);
    assert.deepEqual(services.migrate?.command, ['migrate']);
    const redis = (services.redis?.command ?? []).join(' ');
    assert.match(redis, /--appendonly yes/);
    assert.match(redis, /--appendfsync (always|everysec)/);
  });

  it('starts the CLI so that SIGTERM reaches it: the image\'s exec-form node entry point, no shell, npx or npm, a grace period longer than a request', () => {
    const withOverrides = ['docker-compose.yml', 'docker-compose.mysql.yml', 'docker-compose.kafka.yml', 'docker-compose.sentinel.yml', 'docker-compose.cluster.yml'].map(
      (f) => parse(read(`deploy/${f}`), { merge: true }) as { services: Record<string, ComposeService & { entrypoint?: unknown }> },
    );
    for (const file of withOverrides) {
      for (const [name, service] of Object.entries(file.services)) {
        if (!couponrushServices.includes(name)) continue;
        assert.equal(service.entrypoint, undefined, `${name} keeps the image's ENTRYPOINT`);
        for (const arg of service.command ?? []) assert.doesNotMatch(arg, /\b(npx|npm|sh|bash)\b/, `${name}: ${arg}`);
      }
    }
    for (const s of couponrushServices) {
      const grace = /^(\d+)s$/.exec(String((services[s] as { stop_grace_period?: string }).stop_grace_period ?? ''));
      assert.ok(grace !== null, `${s} sets stop_grace_period`);
      assert.ok(Number(grace[1]) * 1000 > loadConfig(envOf(s)).requestTimeoutMs, `${s}: the drain outlasts the longest request`);
    }
    assert.match(read('Dockerfile'), /^ENTRYPOINT \["node", "bin\/couponrush\.js"\]$/m, 'exec form: node is the process docker signals');
  });

  it("gives every couponrush service an environment the app's config accepts", () => {
    for (const s of couponrushServices) {
      const config = loadConfig(envOf(s));
      assert.equal(config.embedded, false, `${s} uses the database service`);
      assert.match(config.databaseUrl ?? '', /^postgres:\/\/couponrush:pw@database:5432\//, `${s} uses PostgreSQL`);
      assert.notEqual(config.redis, undefined, `${s} uses Redis`);
      assert.equal(config.host, '0.0.0.0', `${s} listens beyond the container`);
      assert.equal(config.adminPort, 9091, `${s} serves /metrics on the admin port`);
    }
  });

  it('is accepted by docker-compose', (t) => {
    const res = composeConfig(t, ['docker-compose.yml']);
    if (res !== undefined) assert.equal(res.status, 0, res.stderr);
  });
});

/** `docker-compose config` (v1 or v2) over these files, or undefined (said loudly) when neither is installed. */
function composeConfig(t: TestContext, files: string[], quiet = true): SpawnSyncReturns<string> | undefined {
  const v1 = has('docker-compose');
  const v2 = !v1 && spawnSync('docker', ['compose', 'version']).status === 0;
  if (!v1 && !v2) {
    toolMissing(t, 'docker-compose', files.join(' + '));
    return undefined;
  }
  const [cmd, args] = v1 ? ['docker-compose', [] as string[]] : ['docker', ['compose']];
  const fileArgs = files.flatMap((f) => ['-f', join(DEPLOY, f)]);
  return spawnSync(cmd, [...args, ...fileArgs, 'config', ...(quiet ? ['-q'] : [])], { env: { ...process.env, ...DUMMY }, encoding: 'utf8' });
}

describe('deploy/docker-compose.mysql.yml (the MySQL variant)', () => {
  const override = parse(read('deploy/docker-compose.mysql.yml'), { merge: true }) as { services: Record<string, ComposeService & { healthcheck?: { test?: string[] } }> };
  /** A service's environment as compose merges it: the base file's, then the override's on top. */
  const mergedEnv = (service: string) => ({
    ...envOf(service),
    ...Object.fromEntries(Object.entries(override.services[service]?.environment ?? {}).map(([k, v]) => [k, substitute(String(v))])),
  });

  it('turns the database service into MySQL and points every couponrush service at it', () => {
    assert.match(override.services.database?.image ?? '', /^mysql:8\./);
    assert.match(JSON.stringify(override.services.database?.healthcheck?.test), /mysqladmin ping/);
    for (const s of couponrushServices) {
      const config = loadConfig(mergedEnv(s));
      assert.match(config.databaseUrl ?? '', /^mysql:\/\/couponrush:pw@database:3306\/couponrush$/, `${s} uses MySQL`);
    }
    const unknown = Object.keys(override.services).filter((s) => services[s] === undefined);
    assert.deepEqual(unknown, [], 'the override adds no service: it changes the ones there');
  });

  it('is accepted by docker-compose merged with the base file, and the merge reaches every service', (t) => {
    const res = composeConfig(t, ['docker-compose.yml', 'docker-compose.mysql.yml'], false);
    if (res === undefined) return;
    assert.equal(res.status, 0, res.stderr);
    const merged = parse(res.stdout) as { services: Record<string, ComposeService> };
    assert.match(merged.services.database?.image ?? '', /^mysql:/);
    for (const s of couponrushServices) {
      assert.match(String(merged.services[s]?.environment?.DATABASE_URL), /^mysql:\/\/couponrush:pw@database:3306\//, `${s} after the merge`);
    }
  });
});

describe('deploy/nginx.conf', () => {
  const conf = read('deploy/nginx.conf');
  const upstream = (name: string) => [...(new RegExp(`upstream ${name} \\{([^}]*)\\}`).exec(conf)?.[1] ?? '').matchAll(/server (\S+?):(\d+)/g)].map((m) => `${m[1]}:${m[2]}`);

  it('balances over both API instances on their public port, and the admin listener on their admin port', () => {
    const api = ['api1', 'api2'].map((s) => ({ s, env: envOf(s) }));
    assert.deepEqual(upstream('couponrush_api'), api.map(({ s, env }) => `${s}:${env.PORT}`));
    assert.deepEqual(upstream('couponrush_admin'), api.map(({ s, env }) => `${s}:${env.ADMIN_PORT}`));
  });

  it('passes request ids, keeps upstream connections alive, and refuses bodies above the API limit at the edge', () => {
    assert.match(conf, /proxy_set_header X-Request-Id \$couponrush_request_id;/);
    assert.match(conf, /keepalive \d+;/);
    assert.match(conf, /proxy_set_header Connection "";/);
    const limit = /client_max_body_size (\d+)k;/.exec(conf);
    assert.equal(Number(limit?.[1]) * 1024, BODY_LIMIT_BYTES);
  });

  it("drops a client's traceparent on the public port: the API honours it from nginx (TRUST_PROXY), so a client could pick its trace", () => {
    const publicServer = /listen 80;([\s\S]*?)\n  \}/.exec(conf)?.[1] ?? '';
    assert.match(publicServer, /proxy_set_header traceparent "";/);
    assert.match(publicServer, /proxy_set_header tracestate "";/);
    for (const s of ['api1', 'api2']) assert.ok(envOf(s).TRUST_PROXY !== undefined && envOf(s).TRUST_PROXY !== 'false', `${s} trusts nginx`);
  });

  it('is accepted by nginx -t', (t) => {
    if (!has('nginx')) return toolMissing(t, 'nginx', 'nginx.conf syntax');
    // Compose's service names do not resolve here; nginx -t resolves upstream hosts.
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-nginx-'));
    try {
      const local = conf.replace(/server api(\d):/g, 'server 127.0.0.$1:').replace('/var/log/nginx/access.log', join(dir, 'access.log'));
      writeFileSync(join(dir, 'nginx.conf'), local);
      const res = spawnSync('nginx', ['-t', '-p', dir, '-c', join(dir, 'nginx.conf')], { encoding: 'utf8' });
      assert.equal(res.status, 0, res.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/prometheus.yml', () => {
  const prom = parse(read('deploy/prometheus.yml')) as {
    scrape_configs: Array<{
      job_name: string;
      metrics_path?: string;
      static_configs?: Array<{ targets: string[] }>;
      dns_sd_configs?: Array<{ names: string[]; port: number }>;
    }>;
  };
  const job = (name: string) => prom.scrape_configs.find((j) => j.job_name === name);

  it("scrapes every API instance's and the worker's /metrics on their admin port", () => {
    const api = job('couponrush-api');
    assert.equal(api?.metrics_path, METRICS_PATH);
    assert.deepEqual(api?.static_configs?.[0]?.targets, ['api1', 'api2'].map((s) => `${s}:${envOf(s).ADMIN_PORT}`));
    const worker = job('couponrush-worker');
    assert.equal(worker?.metrics_path, METRICS_PATH);
    assert.deepEqual(worker?.dns_sd_configs?.[0]?.names, ['worker']);
    assert.equal(String(worker?.dns_sd_configs?.[0]?.port), envOf('worker').ADMIN_PORT);
  });

  it('mounts this file where the compose prometheus command reads it', () => {
    assert.ok(services.prometheus?.volumes?.includes('./prometheus.yml:/etc/prometheus/prometheus.yml:ro'));
  });

  it('is accepted by promtool', (t) => {
    if (!has('promtool')) return toolMissing(t, 'promtool', 'prometheus.yml');
    const res = spawnSync('promtool', ['check', 'config', join(DEPLOY, 'prometheus.yml')], { encoding: 'utf8' });
    assert.equal(res.status, 0, res.stdout + res.stderr);
  });
});

describe('deploy/grafana', () => {
  const datasource = parse(read('deploy/grafana/provisioning/datasources/prometheus.yml')) as { datasources: Array<{ uid: string; url: string }> };
  const provider = parse(read('deploy/grafana/provisioning/dashboards/couponrush.yml')) as { providers: Array<{ options: { path: string } }> };
  const dashboard = JSON.parse(read('deploy/grafana/dashboards/couponrush.json')) as {
    uid: string;
    panels: Array<{ type: string; title: string; datasource?: { uid: string }; targets?: Array<{ expr: string; datasource?: { uid: string } }> }>;
  };
  const queryPanels = dashboard.panels.filter((p) => p.type !== 'row');
  const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

  it('provisions the datasource the dashboard uses, and loads dashboards from where compose mounts them', () => {
    const uid = datasource.datasources[0]?.uid;
    assert.equal(datasource.datasources[0]?.url, 'http://prometheus:9090');
    for (const p of queryPanels) {
      assert.equal(p.datasource?.uid, uid, `panel ${p.title}`);
      for (const t of p.targets ?? []) assert.equal(t.datasource?.uid, uid, `panel ${p.title}`);
    }
    assert.ok(services.grafana?.volumes?.includes(`./grafana/dashboards:${provider.providers[0]?.options.path}:ro`));
  });

  it('shows a campaign live: issue rate by result, remaining stock, queue lag, p99 latency, errors', () => {
    const titles = queryPanels.map((p) => p.title);
    for (const t of ['Issue rate by result', 'Remaining stock', 'Queue lag (async strategies)', 'Issue latency', 'Errors']) {
      assert.ok(titles.includes(t), `panel "${t}"`);
    }
    assert.ok(exprs.some((e) => e.includes('histogram_quantile(0.99')), 'a p99');
  });

  it("queries only series the API's /metrics exports (or the worker's)", async () => {
    const server = await startTestServer({ db: 'pglite' });
    let exported: Set<string>;
    try {
      const { id } = await server.createCoupon({ totalQuantity: 5 });
      await request(server.url, 'POST', `/coupons/${id}/issues`, { headers: { authorization: `Bearer ${server.tokenFor('dash')}` } });
      const text = (await request(server.url, 'GET', METRICS_PATH)).text;
      exported = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].flatMap((m) => (m[2] === 'histogram' ? [`${m[1]}_bucket`, `${m[1]}_sum`, `${m[1]}_count`] : [m[1]!])));
    } finally {
      await server.close();
    }
    const workerOnly = new Set(workerSeries());
    const referenced = new Set(exprs.flatMap((e) => [...e.matchAll(/\b((?:couponrush|nodejs|process)_[a-z0-9_]+)/g)].map((m) => m[1]!)));
    const unknown = [...referenced].filter((n) => !exported.has(n) && !workerOnly.has(n));
    assert.deepEqual(unknown, [], 'every queried series is exported');
  });
});

/** Series only the stream worker exports (its /metrics on ADMIN_PORT), from its real registry. */
function workerSeries(): string[] {
  // Names only: nothing is collected, so a stub without a connection is enough.
  const stub = { client: { on: () => undefined } } as unknown as RedisHandle;
  const registry = new Registry();
  const kafka = { topic: 'stub', lag: async () => [], events: { topic: 'stub-events', published: () => 0, pending: async () => 0 } };
  registerWorkerMetrics(registry, stub, kafka);
  countRedisErrors(registry, stub);
  return registry.getMetricsAsArray().flatMap((m) => {
    const { name, type } = m as unknown as { name: string; type: string };
    return type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
  });
}

describe('deploy/alerts.yml', () => {
  interface Rule {
    alert: string;
    expr: string;
    for?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  }
  const rules = (parse(read('deploy/alerts.yml')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules);
  const prom = parse(read('deploy/prometheus.yml')) as { rule_files?: string[]; alerting?: { alertmanagers?: Array<{ static_configs?: Array<{ targets: string[] }> }> } };

  it('is loaded by prometheus.yml (beside it in the container too) and sent to the compose Alertmanager', () => {
    assert.deepEqual(prom.rule_files, ['alerts.yml']);
    assert.ok(services.prometheus?.volumes?.includes('./alerts.yml:/etc/prometheus/alerts.yml:ro'), 'mounted next to prometheus.yml');
    assert.deepEqual(prom.alerting?.alertmanagers?.[0]?.static_configs?.[0]?.targets, ['alertmanager:9093']);
    assert.ok(services.alertmanager?.volumes?.includes('./alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro'));
  });

  it('covers what a drop needs watched, each alert with a severity, a summary and a runbook in docs/operations.md', () => {
    const names = rules.map((r) => r.alert);
    for (const a of ['CouponrushQueueBacklogGrowing', 'CouponrushKafkaLagGrowing', 'CouponrushDeadLetters', 'CouponrushReconcileDrift', 'CouponrushOutcomeUnknown', 'CouponrushServerErrors', 'CouponrushNotReady', 'CouponrushInstanceDown', 'CouponrushDatabasePoolExhausted']) {
      assert.ok(names.includes(a), a);
    }
    const operations = read('docs/operations.md');
    const headings = new Set([...operations.matchAll(/^#{2,3} (.+)$/gm)].map((m) => m[1]!.toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')));
    for (const r of rules) {
      assert.match(r.labels?.severity ?? '', /^(critical|warning)$/, `${r.alert}: severity`);
      assert.ok((r.annotations?.summary ?? '').length > 10, `${r.alert}: summary`);
      const [file, anchor] = (r.annotations?.runbook_url ?? '').split('#');
      assert.equal(file, 'docs/operations.md', `${r.alert}: runbook_url`);
      assert.ok(headings.has(anchor ?? ''), `${r.alert}: docs/operations.md has no heading #${anchor}`);
      assert.ok(operations.includes(`\`${r.alert}\``), `${r.alert}: its threshold is explained in docs/operations.md, "Alerts"`);
    }
  });

  it('fires and stays quiet when it should (promtool test rules, synthetic series)', (t) => {
    if (!has('promtool')) return toolMissing(t, 'promtool', 'the alert rules');
    const check = spawnSync('promtool', ['check', 'rules', join(DEPLOY, 'alerts.yml')], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const res = spawnSync('promtool', ['test', 'rules', join(DEPLOY, 'alerts.test.yml')], { encoding: 'utf8' });
    assert.equal(res.status, 0, res.stdout + res.stderr);
    const tested = new Set([...read('deploy/alerts.test.yml').matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    assert.deepEqual(rules.map((r) => r.alert).filter((a) => !tested.has(a)), [], 'every alert has a unit test');
  });

  it("reads only series couponrush exports (the API's live /metrics, the worker's registry)", async () => {
    const server = await startTestServer({ db: 'pglite' });
    let exported: Set<string>;
    try {
      const text = (await request(server.url, 'GET', METRICS_PATH)).text;
      exported = new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]!));
    } finally {
      await server.close();
    }
    const worker = new Set(workerSeries());
    const referenced = new Set(rules.flatMap((r) => [...r.expr.matchAll(/\b(couponrush_[a-z0-9_]+)/g)].map((m) => m[1]!)));
    assert.deepEqual([...referenced].filter((n) => !exported.has(n) && !worker.has(n)), [], 'every series an alert reads is exported');
  });

  it('has an Alertmanager configuration amtool accepts', (t) => {
    if (!has('amtool')) return missing(t, 'amtool is not installed: deploy/alertmanager.yml was not checked (apt-get install prometheus-alertmanager)');
    const res = spawnSync('amtool', ['check-config', join(DEPLOY, 'alertmanager.yml')], { encoding: 'utf8' });
    assert.equal(res.status, 0, res.stdout + res.stderr);
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  const ci = existsSync(new URL('.ci/run', root)) ? read('.ci/run') : '';

  it('builds with the install steps CI runs, and ships production dependencies only, as a non-root user', () => {
    const stages = dockerfile.split(/^FROM /m).slice(1);
    assert.equal(stages.length, 2, 'a build and a runtime stage');
    const [build = '', runtime = ''] = stages;
    // The service's own install and compile steps: the bench (a workspace of the checkout) stays out.
    assert.match(build, /RUN npm ci --workspaces=false --ignore-scripts --no-audit --no-fund \\\n\s+&& npx tsc -p tsconfig\.build\.json && node scripts\/build-console\.mjs/);
    if (ci !== '') assert.match(ci, /npm ci\b/, 'CI installs with npm ci too');
    assert.match(runtime, /RUN npm ci --omit=dev --workspaces=false --ignore-scripts/);
    assert.doesNotMatch(dockerfile, /COPY bench\b/, 'the bench is not in the image');
    assert.match(runtime, /COPY --from=build \/app\/dist \.\/dist/);
    assert.match(runtime, /^USER node$/m);
    assert.doesNotMatch(runtime, /COPY (src|test)\b/);
    assert.match(runtime, /ENTRYPOINT \["node", "bin\/couponrush\.js"\]/);
  });

  it('copies only paths that exist, and what the runtime reads from disk (migrations, Lua scripts)', () => {
    for (const m of dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)) {
      for (const path of m[1]!.split(/\s+/)) assert.ok(existsSync(new URL(path, root)), `COPY ${path}`);
    }
    assert.match(dockerfile, /COPY migrations \.\/migrations/);
    assert.match(dockerfile, /COPY lua \.\/lua/);
    const ignored = read('.dockerignore').split('\n').filter((l) => l !== '' && !l.startsWith('#'));
    for (const needed of ['src', 'bin', 'migrations', 'lua', 'package.json', 'package-lock.json']) assert.ok(!ignored.includes(needed), `${needed} is in the build context`);
  });
});

describe('deploy/docker-compose.kafka.yml (the Kafka variant)', () => {
  type KafkaService = ComposeService & { depends_on?: Record<string, { condition?: string }>; healthcheck?: { test?: string[] } };
  const override = parse(read('deploy/docker-compose.kafka.yml'), { merge: true }) as { services: Record<string, KafkaService> };
  const brokers = ['kafka1', 'kafka2', 'kafka3'];
  const mergedEnv = (service: string) => ({
    ...envOf(service),
    ...Object.fromEntries(Object.entries(override.services[service]?.environment ?? {}).map(([k, v]) => [k, substitute(String(v))])),
  });

  it('runs three KRaft nodes, each broker and controller, replication 3 and min.insync.replicas 2, on the version the tests run', () => {
    const voters = brokers.map((b, i) => `${i + 1}@${b}:9093`).join(',');
    brokers.forEach((b, i) => {
      const s = override.services[b];
      assert.equal(s?.image, `apache/kafka:${KAFKA_VERSION}`, `${b} runs Kafka ${KAFKA_VERSION}, as scripts/kafka-broker.ts`);
      const env = s?.environment ?? {};
      assert.equal(env.KAFKA_NODE_ID, String(i + 1));
      assert.equal(env.KAFKA_PROCESS_ROLES, 'broker,controller');
      assert.equal(env.KAFKA_CONTROLLER_QUORUM_VOTERS, voters);
      assert.equal(env.KAFKA_ADVERTISED_LISTENERS, `PLAINTEXT://${b}:9092`);
      assert.equal(env.KAFKA_DEFAULT_REPLICATION_FACTOR, '3');
      assert.equal(env.KAFKA_MIN_INSYNC_REPLICAS, '2');
      assert.equal(env.KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR, '3');
      assert.ok(s?.volumes?.some((v) => v.endsWith(':/var/lib/kafka/data')), `${b} keeps its log in a volume`);
      assert.match(JSON.stringify(s?.healthcheck?.test), /kafka-broker-api-versions/);
    });
  });

  it("points the APIs and the worker at all three brokers, with redis-lua-kafka the default, through the app's own config", () => {
    for (const s of ['api1', 'api2', 'worker']) {
      const config = loadConfig(mergedEnv(s));
      assert.deepEqual(config.kafka?.brokers, brokers.map((b) => `${b}:9092`), `${s}: KAFKA_BROKERS`);
      assert.equal(config.defaultStrategy, 'redis-lua-kafka', s);
      assert.equal(config.kafka?.recordSecrets.current, DUMMY.KAFKA_RECORD_SECRET, `${s}: the API and the worker share KAFKA_RECORD_SECRET`);
      for (const b of brokers) assert.equal(override.services[s]?.depends_on?.[b]?.condition, 'service_healthy', `${s} waits for ${b}`);
    }
    const unknown = Object.keys(override.services).filter((s) => services[s] === undefined && !brokers.includes(s) && s !== 'kafka-exporter');
    assert.deepEqual(unknown, [], 'besides the brokers and their exporter, the override changes services that are there');
  });

  it('is accepted by docker-compose merged with the base file, and the merge keeps the base environment', (t) => {
    const res = composeConfig(t, ['docker-compose.yml', 'docker-compose.kafka.yml'], false);
    if (res === undefined) return;
    assert.equal(res.status, 0, res.stderr);
    const merged = parse(res.stdout) as { services: Record<string, ComposeService> };
    for (const s of ['api1', 'api2', 'worker']) {
      assert.equal(merged.services[s]?.environment?.KAFKA_BROKERS, 'kafka1:9092,kafka2:9092,kafka3:9092', s);
      assert.match(String(merged.services[s]?.environment?.DATABASE_URL), /^postgres:\/\//, `${s} keeps the base file's database`);
    }
  });
});

describe('deploy/docker-compose.sentinel.yml (the Sentinel variant)', () => {
  type SentinelService = ComposeService & { depends_on?: Record<string, { condition?: string }>; healthcheck?: { test?: string[] } };
  const override = parse(read('deploy/docker-compose.sentinel.yml'), { merge: true }) as { services: Record<string, SentinelService>; volumes?: Record<string, unknown> };
  const sentinels = ['redis-sentinel-1', 'redis-sentinel-2', 'redis-sentinel-3'];
  const dataNodes = ['redis', 'redis-replica'];
  /** Every service the base file gives REDIS_URL (through its x-couponrush environment). */
  const redisUsers = Object.keys(services).filter((s) => services[s]?.environment?.REDIS_URL !== undefined);
  const mergedEnv = (service: string) => mergedEnvOf(override, service);
  const script = (service: string) => shellScriptOf(override, service);
  /** What a sentinel's start script writes into its sentinel.conf. */
  const sentinelConf = (service: string) => {
    const monitor = /'sentinel monitor (\S+) (\S+) (\d+) (\d+)'/.exec(script(service));
    assert.ok(monitor !== null, `${service}: a sentinel monitor line`);
    const port = /'port (\d+)'/.exec(script(service))?.[1];
    return { master: monitor[1], host: monitor[2], hostPort: monitor[3], quorum: Number(monitor[4]), port };
  };

  it('switches every service that had REDIS_URL to the sentinels, with REDIS_URL blank, which the app reads as unset', () => {
    for (const s of ['api1', 'api2', 'worker']) assert.ok(redisUsers.includes(s), `${s} has REDIS_URL in the base file`);
    const master = sentinelConf('redis-sentinel-1').master;
    for (const s of redisUsers) {
      const env = mergedEnv(s);
      assert.equal(env.REDIS_URL, '', `${s}: REDIS_URL blanked, so the base file's does not survive the merge`);
      assert.equal(env.REDIS_SENTINELS, 'redis-sentinel-1:26379,redis-sentinel-2:26379,redis-sentinel-3:26379', `${s}: REDIS_SENTINELS`);
      assert.equal(env.REDIS_SENTINEL_MASTER, master, `${s}: the master name the sentinels monitor`);
      assert.equal(env.REDIS_WAIT_REPLICAS, '1', `${s}: a 202 waits for the replica`);
      const set = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'].filter((v) => (env[v] ?? '').trim() !== '');
      assert.deepEqual(set, ['REDIS_SENTINELS'], `${s}: exactly one way to reach Redis`);
      assert.deepEqual(loadConfig(env).redis, { kind: 'sentinel', sentinels: [1, 2, 3].map((n) => ({ host: `redis-sentinel-${n}`, port: 26379 })), master, username: undefined, password: undefined, sentinelPassword: undefined }, `${s}: the app reads the blank REDIS_URL as unset and finds the primary through the sentinels`);
      assert.equal(loadConfig(env).databaseUrl, loadConfig(envOf(s)).databaseUrl, `${s} keeps the base file's database`);
    }
  });

  it('runs three sentinels that monitor, with a quorum of 2, the primary and master name the services use, under the names and port the services dial', () => {
    const confs = sentinels.map((s) => ({ s, ...sentinelConf(s) }));
    for (const { s, master, host, hostPort, quorum, port } of confs) {
      const service = override.services[s];
      assert.equal(service?.image, 'redis:7-alpine', s);
      assert.match(script(s), /exec docker-entrypoint\.sh redis-server \/data\/sentinel\.conf --sentinel\n?$/, `${s} runs Sentinel on the conf it wrote`);
      // Sentinel rewrites its conf (the primary after a failover): written on the first start only, in a volume.
      assert.match(script(s), /^\[ -f \/data\/sentinel\.conf \] \|\| printf /, `${s} keeps a rewritten conf`);
      assert.ok(service?.volumes?.includes(`${s}-data:/data`), `${s} keeps its conf in a volume`);
      assert.equal(master, mergedEnv('api1').REDIS_SENTINEL_MASTER, `${s} monitors the master the services ask for`);
      assert.equal(`${host}:${hostPort}`, 'redis:6379', `${s} starts from the base file's redis service`);
      assert.equal(quorum, 2, `${s}: quorum`);
      assert.ok(2 * quorum > sentinels.length && quorum < sentinels.length, `${s}: a majority agrees on a failover, and one sentinel may be lost`);
      assert.match(script(s), new RegExp(`'sentinel down-after-milliseconds ${master} \\d+'`), `${s}: down-after-milliseconds for ${master}`);
      assert.match(script(s), /'sentinel resolve-hostnames yes'/, s);
      assert.match(script(s), /'sentinel announce-hostnames yes'/, s);
      assert.match(script(s), /"sentinel announce-ip \$\$SENTINEL_HOSTNAME"/, `${s} announces its own name`);
      assert.equal(service?.environment?.SENTINEL_HOSTNAME, s, `${s}: SENTINEL_HOSTNAME`);
      assert.deepEqual(service?.healthcheck?.test, ['CMD', 'redis-cli', '-p', port, 'ping'], `${s}: healthcheck on its port`);
    }
    assert.ok(services.redis !== undefined, 'the monitored primary is the base file\'s redis');
    const dialled = (mergedEnv('api1').REDIS_SENTINELS ?? '').split(',');
    assert.deepEqual(dialled, confs.map(({ s, port }) => `${s}:${port}`), 'the services dial each sentinel by its service name and port');
  });

  it('keeps AOF always on both data nodes, which refuse writes without a replica in sync; the replica follows the primary', () => {
    for (const s of dataNodes) {
      const run = script(s);
      assert.match(run, /redis-server \/data\/redis\.conf /, `${s} runs on a conf CONFIG REWRITE can persist its role in`);
      assert.match(run, /^\[ -f \/data\/redis\.conf \] \|\| /, `${s}: the conf is written on the first start only`);
      assert.match(run, /--appendonly yes /, `${s}: AOF`);
      assert.match(run, /--appendfsync always /, `${s}: fsync before the replies`);
      assert.match(run, /--min-replicas-to-write 1 /, `${s}: min-replicas-to-write`);
      assert.match(run, /--min-replicas-max-lag 10\b/, `${s}: min-replicas-max-lag`);
      assert.match(run, new RegExp(`--replica-announce-ip ${s} `), `${s} is known to the primary and the sentinels by its service name`);
      assert.doesNotMatch(run, /--replicaof/, `${s}: a role on the command line would come back after a failover`);
      assert.deepEqual((override.services[s]?.healthcheck ?? (services[s] as SentinelService | undefined)?.healthcheck)?.test, ['CMD', 'redis-cli', 'ping'], `${s}: healthcheck`);
    }
    const { host, hostPort } = sentinelConf('redis-sentinel-1');
    assert.match(script('redis-replica'), new RegExp(`echo 'replicaof ${host} ${hostPort}' > /data/redis.conf`), 'the replica follows the primary the sentinels monitor');
    assert.doesNotMatch(script('redis'), /replicaof/, 'redis starts as the primary');
    assert.equal(override.services.redis?.volumes, undefined, 'the primary keeps the base file\'s volume');
    assert.ok(services.redis?.volumes?.includes('redis-data:/data'));
    assert.deepEqual(override.services['redis-replica']?.volumes, ['redis-replica-data:/data'], 'the replica has a volume of its own');
    assert.equal(override.services['redis-replica']?.image, services.redis?.image, 'the replica runs the primary\'s image');
  });

  it('starts the APIs and the worker after the replica and the sentinels are healthy, and adds no service but those', () => {
    for (const s of ['api1', 'api2', 'worker']) {
      for (const d of ['redis-replica', ...sentinels]) assert.equal(override.services[s]?.depends_on?.[d]?.condition, 'service_healthy', `${s} waits for ${d}`);
    }
    for (const s of sentinels) assert.equal(override.services[s]?.depends_on?.redis?.condition, 'service_healthy', `${s} starts after the primary`);
    const unknown = Object.keys(override.services).filter((s) => services[s] === undefined && !['redis-replica', ...sentinels].includes(s));
    assert.deepEqual(unknown, [], 'besides the replica and the sentinels, the override changes services that are there');
    for (const v of ['redis-replica-data', ...sentinels.map((s) => `${s}-data`)]) assert.ok(override.volumes !== undefined && v in override.volumes, `volume ${v}`);
  });

  it('is accepted by docker-compose merged with the base file, and no REDIS_URL survives the merge', (t) => {
    const res = composeConfig(t, ['docker-compose.yml', 'docker-compose.sentinel.yml'], false);
    if (res === undefined) return;
    assert.equal(res.status, 0, res.stderr);
    const merged = parse(res.stdout) as { services: Record<string, SentinelService> };
    for (const s of redisUsers) {
      const env = merged.services[s]?.environment ?? {};
      assert.equal(env.REDIS_URL, '', `${s}: REDIS_URL blank after the merge`);
      assert.equal(env.REDIS_SENTINELS, 'redis-sentinel-1:26379,redis-sentinel-2:26379,redis-sentinel-3:26379', `${s}: REDIS_SENTINELS after the merge`);
      assert.equal(env.REDIS_SENTINEL_MASTER, 'couponrush', `${s}: REDIS_SENTINEL_MASTER after the merge`);
      assert.match(String(env.DATABASE_URL), /^postgres:\/\//, `${s} keeps the base file's database`);
    }
    for (const s of ['api1', 'api2', 'worker']) {
      const deps = merged.services[s]?.depends_on ?? {};
      for (const d of ['migrate', 'redis', 'redis-replica', ...sentinels]) assert.ok(d in deps, `${s} depends on ${d} after the merge`);
    }
    for (const s of dataNodes) assert.match((merged.services[s]?.command ?? []).join(' '), /--appendfsync always .*--min-replicas-to-write 1/s, `${s} after the merge`);
  });
});

describe('deploy/docker-compose.cluster.yml (the Cluster variant)', () => {
  type ClusterService = ComposeService & {
    depends_on?: Record<string, { condition?: string }>;
    healthcheck?: { test?: string[] };
    restart?: string;
    networks?: string[] | Record<string, { ipv4_address?: string } | null>;
  };
  interface ClusterFile {
    services: Record<string, ClusterService>;
    volumes?: Record<string, unknown>;
    networks?: Record<string, { ipam?: { config?: Array<{ subnet?: string; ip_range?: string }> } }>;
  }
  const override = parse(read('deploy/docker-compose.cluster.yml'), { merge: true }) as ClusterFile;
  const nodes = [1, 2, 3, 4, 5, 6].map((i) => `redis-node-${i}`);
  const init = 'redis-cluster-init';
  const clients = ['api1', 'api2', 'worker'];
  const SEEDS = 'redis-node-1:6379,redis-node-2:6379,redis-node-3:6379';
  /** Every service the base file gives REDIS_URL (through its x-couponrush environment). */
  const redisUsers = Object.keys(services).filter((s) => services[s]?.environment?.REDIS_URL !== undefined);
  const mergedEnv = (service: string) => mergedEnvOf(override, service);
  const script = (service: string) => shellScriptOf(override, service);
  /** The options a node's script starts redis-server with: `--name value…` → name → value (quotes taken off). */
  const serverOptions = (service: string): Map<string, string> => {
    const exec = /^exec docker-entrypoint\.sh redis-server (.*)$/m.exec(script(service).replace(/\\\n\s*/g, ' '));
    assert.ok(exec !== null, `${service} runs redis-server through the image's entry point`);
    const options = new Map<string, string>();
    let name: string | undefined;
    for (const token of exec[1]!.match(/'[^']*'|"[^"]*"|\S+/g) ?? []) {
      if (token.startsWith('--')) options.set((name = token.slice(2)), '');
      else if (name !== undefined) options.set(name, `${options.get(name)} ${token.replace(/^(['"])(.*)\1$/, '$2')}`.trim());
    }
    return options;
  };
  const portOf = (node: string) => serverOptions(node).get('port') ?? '6379';
  const networkNames = (service: ClusterService | undefined) => (Array.isArray(service?.networks) ? service.networks : Object.keys(service?.networks ?? {}));
  const addressOf = (service: ClusterService | undefined) => (Array.isArray(service?.networks) ? undefined : service?.networks?.['redis-cluster']?.ipv4_address);
  const ipv4 = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  const inCidr = (address: string, cidr: string) => {
    const [base = '', bits = '32'] = cidr.split('/');
    const size = 2 ** (32 - Number(bits));
    return Math.floor(ipv4(address) / size) === Math.floor(ipv4(base) / size);
  };

  it('switches every service that had REDIS_URL to the cluster nodes, with REDIS_URL blank and WAIT for one replica', () => {
    for (const s of ['api1', 'api2', 'worker', 'migrate']) assert.ok(redisUsers.includes(s), `${s} has REDIS_URL in the base file`);
    for (const s of redisUsers) {
      const env = mergedEnv(s);
      assert.equal(env.REDIS_URL, '', `${s}: REDIS_URL blanked, so the base file's does not survive the merge`);
      assert.equal(env.REDIS_CLUSTER_NODES, SEEDS, `${s}: REDIS_CLUSTER_NODES`);
      for (const seed of (env.REDIS_CLUSTER_NODES ?? '').split(',')) {
        const [host = '', port] = seed.split(':');
        assert.ok(nodes.includes(host) && override.services[host] !== undefined, `${s}: ${seed} names a node service`);
        assert.equal(port, portOf(host), `${s}: ${seed} is the port ${host} listens on`);
      }
      assert.equal(env.REDIS_WAIT_REPLICAS, '1', `${s}: a 202 waits for the master's replica`);
      const set = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'].filter((v) => (env[v] ?? '').trim() !== '');
      assert.deepEqual(set, ['REDIS_CLUSTER_NODES'], `${s}: exactly one way to reach Redis`);
      assert.equal(env.DATABASE_URL, envOf(s).DATABASE_URL, `${s} keeps the base file's database`);
      const config = loadConfig(env);
      assert.deepEqual(
        config.redis,
        { kind: 'cluster', nodes: SEEDS.split(',').map((seed) => ({ host: seed.split(':')[0], port: Number(seed.split(':')[1]) })), username: undefined, password: undefined },
        `${s}: the app reads the blank REDIS_URL as unset and reaches Redis through the cluster's seed nodes`,
      );
      assert.equal(config.redisWaitReplicas, 1, `${s}: REDIS_WAIT_REPLICAS`);
    }
  });

  it('runs six nodes with cluster-enabled, nodes.conf in their volume, AOF always and min-replicas, announced by their service names at fixed addresses', () => {
    const net = override.networks?.['redis-cluster']?.ipam?.config?.[0] ?? {};
    assert.ok(net.subnet !== undefined && net.ip_range !== undefined, 'the nodes\' network has a subnet, and a range for the other containers');
    const addresses = new Set<string>();
    for (const s of nodes) {
      const service = override.services[s];
      assert.equal(service?.image, 'redis:7-alpine', s);
      assert.equal(service?.restart, 'unless-stopped', s);
      const o = serverOptions(s);
      assert.equal(o.get('cluster-enabled'), 'yes', `${s}: cluster-enabled`);
      assert.equal(o.get('cluster-config-file'), '/data/nodes.conf', `${s}: nodes.conf in /data`);
      assert.ok(service?.volumes?.includes(`${s}-data:/data`), `${s}: /data is its own volume, so nodes.conf outlives the container`);
      assert.ok(override.volumes !== undefined && `${s}-data` in override.volumes, `volume ${s}-data`);
      assert.equal(script(s).match(/nodes\.conf/g)?.length, 1, `${s}: nothing but Redis writes nodes.conf`);
      assert.equal(o.get('cluster-node-timeout'), '5000', `${s}: cluster-node-timeout`);
      assert.equal(o.get('cluster-announce-hostname'), '$$NODE_HOSTNAME', `${s}: announces a name`);
      assert.equal(service?.environment?.NODE_HOSTNAME, s, `${s} announces its own service name`);
      assert.equal(o.get('cluster-preferred-endpoint-type'), 'hostname', `${s}: clients are given names`);
      assert.equal(o.get('appendonly'), 'yes', `${s}: AOF`);
      assert.equal(o.get('appendfsync'), 'always', `${s}: fsync before the replies`);
      assert.equal(o.get('save'), '', `${s}: no RDB snapshots beside the AOF`);
      assert.equal(o.get('min-replicas-to-write'), '1', `${s}: min-replicas-to-write`);
      assert.equal(o.get('min-replicas-max-lag'), '10', `${s}: min-replicas-max-lag`);
      assert.equal(o.get('port'), undefined, `${s} listens on 6379`);
      assert.deepEqual(service?.healthcheck?.test, ['CMD', 'redis-cli', 'ping'], `${s}: healthcheck`);
      const address = addressOf(service) ?? '';
      assert.ok(inCidr(address, net.subnet ?? '') && !inCidr(address, net.ip_range ?? ''), `${s}: a fixed address (${address}) in the subnet, outside the range given out to the others`);
      addresses.add(address);
    }
    assert.equal(addresses.size, nodes.length, 'an address each');
  });

  describe('redis-cluster-init, run against a stand-in redis-cli', () => {
    const initScript = () => script(init).replace(/\$\$/g, '$');
    /**
     * Runs the init's script with a redis-cli that answers CLUSTER INFO and INFO REPLICATION as
     * the given nodes would (members: in a formed cluster; the others know only themselves), and
     * records what it was asked. `syncAfter`: the replicas are in sync from that INFO REPLICATION on.
     */
    function runInit(members: string[], syncAfter = 0) {
      const dir = mkdtempSync(join(tmpdir(), 'couponrush-cluster-init-'));
      try {
        writeFileSync(join(dir, 'members'), members.map((m) => `${m}\n`).join(''));
        writeFileSync(
          join(dir, 'redis-cli'),
          [
            '#!/bin/sh',
            'echo "$*" >> "$FAKE_DIR/calls"',
            'case "$*" in *"--cluster create"*) touch "$FAKE_DIR/created"; exit 0;; esac',
            'if [ -e "$FAKE_DIR/created" ] || grep -qx "$2" "$FAKE_DIR/members"; then state=ok; known=6; slots=16384; else state=fail; known=1; slots=0; fi',
            'case "$*" in',
            '  *"cluster info"*) printf "cluster_state:%s\\r\\ncluster_slots_assigned:%s\\r\\ncluster_known_nodes:%s\\r\\n" $state $slots $known;;',
            '  *"info replication"*) n=$(cat "$FAKE_DIR/asked" 2>/dev/null || echo 0); echo $((n + 1)) > "$FAKE_DIR/asked"',
            `    good=0; [ "$n" -lt ${syncAfter} ] || good=1`,
            '    printf "# Replication\\r\\nrole:master\\r\\nmin_slaves_good_slaves:%s\\r\\n" $good;;',
            'esac',
          ].join('\n'),
          { mode: 0o755 },
        );
        const res = spawnSync('sh', ['-ec', initScript()], { env: { PATH: `${dir}:${process.env.PATH}`, FAKE_DIR: dir }, encoding: 'utf8', timeout: 30_000 });
        const calls = existsSync(join(dir, 'calls')) ? readFileSync(join(dir, 'calls'), 'utf8').trim().split('\n') : [];
        return { status: res.status, out: res.stdout + res.stderr, calls, creates: calls.filter((c) => c.includes('--cluster create')) };
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }

    it('creates the cluster, three masters with one replica each over all six nodes, when no node knows another', () => {
      const { status, out, creates } = runInit([]);
      assert.equal(status, 0, out);
      assert.equal(creates.length, 1, 'one create');
      const args = creates[0]!.split(/\s+/);
      const targets = args.filter((a) => /^[^-].*:\d+$/.test(a));
      assert.deepEqual(targets, nodes.map((n) => `${n}:${portOf(n)}`), 'every node, by service name and port');
      assert.equal(args[args.indexOf('--cluster-replicas') + 1], '1', '--cluster-replicas 1');
      assert.ok(args.includes('--cluster-yes'), 'without asking');
    });

    it('leaves a formed cluster alone, and fails naming a node that knows no other (a lost volume)', () => {
      const formed = runInit(nodes);
      assert.equal(formed.status, 0, formed.out);
      assert.deepEqual(formed.creates, [], 'no create over a formed cluster');
      const lost = runInit(nodes.filter((n) => n !== 'redis-node-4'));
      assert.notEqual(lost.status, 0, 'the services do not start beside a node outside the cluster');
      assert.deepEqual(lost.creates, [], 'no create while some nodes are in a cluster');
      assert.match(lost.out, /but redis-node-4 know\(s\) no other node/, 'the node that knows no other is named');
    });

    it('waits until every master has its replica in sync before it completes', () => {
      const asked = (run: ReturnType<typeof runInit>) => run.calls.filter((c) => c.includes('info replication')).length;
      const inSync = runInit([]);
      const late = runInit([], 2);
      assert.equal(late.status, 0, late.out);
      assert.ok(asked(late) > asked(inSync), `asked again while a replica was not in sync (${asked(late)} times, ${asked(inSync)} when in sync)`);
    });
  });

  it('starts the APIs and the worker after the init has completed, the init after every node is healthy, and runs no standalone Redis', () => {
    for (const s of clients) {
      const deps = override.services[s]?.depends_on ?? {};
      assert.equal(deps[init]?.condition, 'service_completed_successfully', `${s} waits for the cluster to be formed`);
      // Replaces the base file's `redis: service_healthy` (depends_on merges key by key).
      assert.equal(deps.redis?.condition, 'service_completed_successfully', `${s} does not wait for a standalone Redis to be healthy`);
      assert.deepEqual(networkNames(override.services[s]).sort(), ['default', 'redis-cluster'], `${s} reaches the database and the nodes`);
    }
    assert.equal(override.services.migrate?.depends_on, undefined, 'migrate opens the database only: it does not wait for the cluster');
    const initService = override.services[init];
    assert.equal(initService?.image, 'redis:7-alpine');
    assert.equal(initService?.restart, 'no', 'the init runs once per up');
    for (const n of nodes) assert.equal(initService?.depends_on?.[n]?.condition, 'service_healthy', `the init waits for ${n}`);
    assert.deepEqual(networkNames(initService), ['redis-cluster']);
    assert.deepEqual(override.services.redis?.command, ['true'], 'the base file\'s redis runs nothing');
    assert.equal(override.services.redis?.restart, 'no', 'and is not restarted');
    const unknown = Object.keys(override.services).filter((s) => services[s] === undefined && !nodes.includes(s) && s !== init);
    assert.deepEqual(unknown, [], 'besides the nodes and the init, the override changes services that are there');
  });

  it('is accepted by docker-compose merged with the base file: no REDIS_URL survives, nothing waits for a standalone Redis', (t) => {
    const res = composeConfig(t, ['docker-compose.yml', 'docker-compose.cluster.yml'], false);
    if (res === undefined) return;
    assert.equal(res.status, 0, res.stderr);
    const merged = parse(res.stdout) as ClusterFile;
    for (const s of redisUsers) {
      const env = merged.services[s]?.environment ?? {};
      assert.equal(env.REDIS_URL, '', `${s}: REDIS_URL blank after the merge`);
      assert.equal(env.REDIS_CLUSTER_NODES, SEEDS, `${s}: REDIS_CLUSTER_NODES after the merge`);
      assert.equal(env.REDIS_WAIT_REPLICAS, '1', `${s}: REDIS_WAIT_REPLICAS after the merge`);
      assert.match(String(env.DATABASE_URL), /^postgres:\/\//, `${s} keeps the base file's database`);
    }
    for (const s of clients) {
      const deps = merged.services[s]?.depends_on ?? {};
      assert.deepEqual(
        Object.fromEntries(Object.entries(deps).map(([d, c]) => [d, c.condition])),
        { migrate: 'service_completed_successfully', redis: 'service_completed_successfully', [init]: 'service_completed_successfully' },
        `${s}: depends_on after the merge`,
      );
      assert.deepEqual(networkNames(merged.services[s]).sort(), ['default', 'redis-cluster'], `${s}: networks after the merge`);
    }
    assert.deepEqual(merged.services.redis?.command, ['true'], 'the base file\'s redis runs nothing after the merge');
    for (const n of nodes) {
      assert.match((merged.services[n]?.command ?? []).join(' '), /--cluster-enabled yes .*--appendfsync always .*--min-replicas-to-write 1/s, `${n} after the merge`);
    }
    assert.ok(merged.networks?.['redis-cluster']?.ipam?.config?.[0]?.subnet !== undefined, 'the nodes\' network after the merge');
  });
});

/** The compose files of every variant the docs name, and the ones that combine. */
const VARIANTS: string[][] = [
  ['docker-compose.yml'],
  ['docker-compose.yml', 'docker-compose.mysql.yml'],
  ['docker-compose.yml', 'docker-compose.kafka.yml'],
  ['docker-compose.yml', 'docker-compose.sentinel.yml'],
  ['docker-compose.yml', 'docker-compose.cluster.yml'],
  ['docker-compose.yml', 'docker-compose.mysql.yml', 'docker-compose.kafka.yml', 'docker-compose.sentinel.yml'],
];

interface StackService extends ComposeService {
  depends_on?: Record<string, { condition?: string }> | string[];
  networks?: string[] | Record<string, unknown>;
}

/** A volume's container path: `source:target[:mode]`. */
const mountTarget = (volume: string) => volume.split(':')[1] ?? '';

/**
 * The services of compose files merged the way compose merges them, as far as these checks read
 * them: an override's keys replace the base's, `environment` merges key by key, and `volumes`
 * merge by their path in the container (a later file's mount at the same path replaces it).
 */
function mergeStack(files: string[]): Record<string, StackService> {
  const merged: Record<string, StackService> = {};
  for (const f of files) {
    const file = parse(read(`deploy/${f}`), { merge: true }) as { services: Record<string, StackService> };
    for (const [name, service] of Object.entries(file.services)) {
      const base = merged[name] ?? {};
      const volumes = new Map((base.volumes ?? []).map((v) => [mountTarget(v), v]));
      for (const v of service.volumes ?? []) volumes.set(mountTarget(v), v);
      merged[name] = {
        ...base,
        ...service,
        environment: { ...base.environment, ...service.environment },
        ...(volumes.size > 0 ? { volumes: [...volumes.values()] } : {}),
      };
    }
  }
  return merged;
}

/** The Prometheus targets files a merged stack mounts: container file name → the file in deploy/. */
function targetsFiles(stack: Record<string, StackService>): Map<string, string> {
  const files = new Map<string, string>();
  for (const v of stack.prometheus?.volumes ?? []) {
    const [source = '', target = ''] = v.split(':');
    const m = /^\/etc\/prometheus\/targets\/([^/]+\.yml)$/.exec(target);
    if (m !== null) files.set(m[1]!, source.replace(/^\.\//, ''));
  }
  return files;
}

/** The ports the exporters' images listen on (their defaults; the compose file changes none). */
const EXPORTER_PORTS: Array<[RegExp, number]> = [
  [/^quay\.io\/prometheuscommunity\/postgres-exporter:/, 9187],
  [/^prom\/mysqld-exporter:/, 9104],
  [/^oliver006\/redis_exporter:/, 9121],
  [/^danielqsj\/kafka-exporter:/, 9308],
];
const exporterPort = (image: string | undefined) => EXPORTER_PORTS.find(([re]) => re.test(image ?? ''))?.[1];

describe('the stack\'s exporters, OpenTelemetry Collector and Jaeger', () => {
  interface CollectorConfig {
    receivers: Record<string, { protocols?: Record<string, { endpoint?: string }> }>;
    processors: Record<string, unknown>;
    exporters: Record<string, { endpoint?: string; tls?: { insecure?: boolean } }>;
    service: { pipelines: Record<string, { receivers: string[]; processors?: string[]; exporters: string[] }> };
  }
  const collector = parse(read('deploy/otel-collector.yml')) as CollectorConfig;
  const stack = services as Record<string, StackService>;

  it('runs every image at a pinned version', () => {
    for (const files of VARIANTS) {
      for (const [name, service] of Object.entries(mergeStack(files))) {
        if (service.image === 'couponrush:local' || service.image === undefined) continue;
        const tag = /:([^/:]+)$/.exec(service.image)?.[1];
        assert.ok(tag !== undefined && tag !== 'latest', `${files.join(' + ')}: ${name} runs ${service.image}, not a pinned version`);
      }
    }
    for (const s of ['database-exporter', 'redis-exporter', 'otel-collector', 'jaeger']) assert.ok(stack[s] !== undefined, `service ${s}`);
    assert.match(stack['otel-collector']?.image ?? '', /^otel\/opentelemetry-collector(-contrib)?:\d+\.\d+\.\d+$/);
    assert.match(stack.jaeger?.image ?? '', /^jaegertracing\/all-in-one:\d+\.\d+\.\d+$/);
  });

  it('runs the exporters at the versions Debian packages (what test/deploy-exporters.test.ts runs)', () => {
    assert.equal(stack['database-exporter']?.image, 'quay.io/prometheuscommunity/postgres-exporter:v0.11.1');
    assert.equal(stack['redis-exporter']?.image, 'oliver006/redis_exporter:v1.45.0');
    assert.equal(mergeStack(['docker-compose.yml', 'docker-compose.mysql.yml'])['database-exporter']?.image, 'prom/mysqld-exporter:v0.14.0');
  });

  it('points the database exporter at the database service the couponrush services use, on PostgreSQL and on MySQL', () => {
    const pg = new URL(substitute(stack['database-exporter']?.environment?.DATA_SOURCE_NAME ?? ''));
    const app = new URL(envOf('api1').DATABASE_URL ?? '');
    assert.equal(pg.protocol, 'postgresql:');
    assert.deepEqual([pg.username, pg.password, pg.host, pg.pathname], [app.username, app.password, app.host, app.pathname], 'the same server, database and user as the APIs');
    assert.equal(pg.searchParams.get('sslmode'), 'disable', 'the database service has no TLS');
    const mysql = mergeStack(['docker-compose.yml', 'docker-compose.mysql.yml']);
    const dsn = /^(\w+):([^@]*)@\(([^)]+)\)\/(\w*)$/.exec(substitute(mysql['database-exporter']?.environment?.DATA_SOURCE_NAME ?? ''));
    assert.ok(dsn !== null, 'mysqld_exporter 0.14 takes the Go driver\'s DSN: user:password@(host:port)/database');
    const mysqlApp = new URL(substitute(String(mysql.api1?.environment?.DATABASE_URL)));
    assert.deepEqual(dsn.slice(1), [mysqlApp.username, mysqlApp.password, mysqlApp.host, mysqlApp.pathname.slice(1)], 'the same server, database and user as the APIs');
    for (const stackOf of [stack, mysql]) {
      const deps = stackOf['database-exporter']?.depends_on as Record<string, { condition?: string }> | undefined;
      assert.equal(deps?.database?.condition, 'service_healthy', 'the exporter starts once the database answers');
    }
  });

  it('points kafka_exporter at the brokers the couponrush services use, with a protocol Kafka 4 accepts', () => {
    const kafka = mergeStack(['docker-compose.yml', 'docker-compose.kafka.yml']);
    const args = kafka['kafka-exporter']?.command ?? [];
    const servers = args.filter((a) => a.startsWith('--kafka.server=')).map((a) => a.slice('--kafka.server='.length));
    assert.deepEqual(servers, String(kafka.api1?.environment?.KAFKA_BROKERS).split(','), 'every broker the APIs use');
    const version = args.find((a) => a.startsWith('--kafka.version='))?.slice('--kafka.version='.length) ?? '2.0.0';
    const [major = 0, minor = 0] = version.split('.').map(Number);
    assert.ok(major > 2 || (major === 2 && minor >= 1), `--kafka.version ${version}: Kafka 4 refuses requests older than 2.1's`);
  });

  it("sends every couponrush service's traces to the collector, each under its service name, sampled 1 % by default and overridable", () => {
    const nameOf: Record<string, string> = { serve: 'couponrush-api', worker: 'couponrush-worker', migrate: 'couponrush-migrate' };
    const httpReceiver = collector.receivers.otlp?.protocols?.http?.endpoint ?? '';
    for (const s of couponrushServices) {
      const raw = stack[s]?.environment ?? {};
      const env = envOf(s);
      assert.equal(env.OTEL_SERVICE_NAME, nameOf[stack[s]?.command?.[0] ?? ''], `${s}: OTEL_SERVICE_NAME`);
      const endpoint = new URL(env.OTEL_EXPORTER_OTLP_ENDPOINT ?? '');
      assert.equal(endpoint.protocol, 'http:', `${s}: OTLP over HTTP`);
      assert.ok(stack[endpoint.hostname] !== undefined && /opentelemetry-collector/.test(stack[endpoint.hostname]?.image ?? ''), `${s}: ${endpoint.hostname} is the collector service`);
      assert.equal(endpoint.port, httpReceiver.split(':').pop(), `${s}: the collector's OTLP/HTTP port`);
      assert.equal(env.OTEL_TRACES_EXPORTER, 'otlp', s);
      assert.equal(env.OTEL_TRACES_SAMPLER, 'parentbased_traceidratio', s);
      assert.equal(env.OTEL_TRACES_SAMPLER_ARG, '0.01', s);
      for (const v of ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_TRACES_EXPORTER', 'OTEL_TRACES_SAMPLER', 'OTEL_TRACES_SAMPLER_ARG']) {
        assert.equal(raw[v], `\${${v}:-${env[v]}}`, `${s}: ${v} has a default deploy/.env can override`);
      }
    }
    const example = read('deploy/.env.example');
    for (const v of ['OTEL_TRACES_SAMPLER', 'OTEL_TRACES_SAMPLER_ARG']) assert.match(example, new RegExp(`^#\\s*${v}=`, 'm'), `deploy/.env.example shows ${v}`);
  });

  it('keeps the tracing variables through every override', () => {
    for (const files of VARIANTS) {
      const merged = mergeStack(files);
      for (const s of couponrushServices) {
        const env = merged[s]?.environment ?? {};
        assert.equal(env.OTEL_SERVICE_NAME, envOf(s).OTEL_SERVICE_NAME, `${files.join(' + ')}: ${s}`);
        assert.equal(substitute(String(env.OTEL_EXPORTER_OTLP_ENDPOINT)), envOf(s).OTEL_EXPORTER_OTLP_ENDPOINT, `${files.join(' + ')}: ${s}`);
      }
    }
  });

  it('gives the collector a configuration whose pipelines use only components it defines, from OTLP to the jaeger service\'s OTLP port', () => {
    assert.ok(stack['otel-collector']?.volumes?.includes('./otel-collector.yml:/etc/otelcol/config.yaml:ro'), 'mounted where the command reads it');
    assert.deepEqual(stack['otel-collector']?.command, ['--config=/etc/otelcol/config.yaml']);
    const pipelines = Object.entries(collector.service.pipelines);
    assert.deepEqual(pipelines.map(([name]) => name), ['traces']);
    for (const [name, p] of pipelines) {
      for (const r of p.receivers) assert.ok(r in collector.receivers, `${name}: receiver ${r} is defined`);
      for (const r of p.processors ?? []) assert.ok(r in collector.processors, `${name}: processor ${r} is defined`);
      for (const r of p.exporters) assert.ok(r in collector.exporters, `${name}: exporter ${r} is defined`);
      assert.ok(p.processors?.includes('batch'), `${name}: batched`);
    }
    assert.equal(collector.receivers.otlp?.protocols?.grpc?.endpoint, '0.0.0.0:4317', 'OTLP/gRPC, reachable from the other containers');
    assert.equal(collector.receivers.otlp?.protocols?.http?.endpoint, '0.0.0.0:4318', 'OTLP/HTTP, reachable from the other containers');
    const exporters = collector.service.pipelines.traces?.exporters ?? [];
    assert.equal(exporters.length, 1);
    const exporter = collector.exporters[exporters[0]!];
    assert.match(exporters[0]!, /^otlp(\/|$)/, 'OTLP (gRPC) to Jaeger');
    assert.equal(exporter?.endpoint, 'jaeger:4317', 'the jaeger service\'s OTLP/gRPC port');
    assert.equal(exporter?.tls?.insecure, true, 'inside the compose network, without TLS');
    assert.equal(stack.jaeger?.environment?.COLLECTOR_OTLP_ENABLED, 'true', 'Jaeger takes OTLP');
  });

  it('provisions Jaeger as a Grafana data source on the jaeger service\'s UI port, which is published on loopback', () => {
    const ds = parse(read('deploy/grafana/provisioning/datasources/jaeger.yml')) as { datasources: Array<{ uid: string; type: string; url: string }> };
    assert.deepEqual(ds.datasources.map((d) => [d.uid, d.type, d.url]), [['jaeger', 'jaeger', 'http://jaeger:16686']]);
    assert.ok(stack.jaeger?.ports?.includes('127.0.0.1:16686:16686'), 'the UI on 127.0.0.1:16686, like Prometheus on loopback only');
  });
});

describe('deploy/prometheus.yml: the stores\' scrape targets in each variant', () => {
  const prom = parse(read('deploy/prometheus.yml')) as {
    scrape_configs: Array<{ job_name: string; file_sd_configs?: Array<{ files: string[] }>; relabel_configs?: Array<{ replacement?: string; target_label?: string }> }>;
  };
  const storeJobs = ['database', 'redis', 'kafka'];
  /** Which stores a variant runs, by its files. */
  const expected = (files: string[]) => ({
    database: files.includes('docker-compose.mysql.yml') ? 'mysql' : 'postgres',
    redis: files.includes('docker-compose.sentinel.yml') ? 'redis-sentinel' : files.includes('docker-compose.cluster.yml') ? 'redis-cluster' : 'redis',
    kafka: files.includes('docker-compose.kafka.yml'),
  });

  it('reads the store jobs\' targets from targets/ beside itself, and the redis job asks redis-exporter for each node', () => {
    for (const job of storeJobs) {
      const files = prom.scrape_configs.find((j) => j.job_name === job)?.file_sd_configs?.flatMap((c) => c.files) ?? [];
      assert.ok(files.length > 0 && files.every((f) => f.startsWith('targets/')), `${job}: file_sd over targets/`);
    }
    const redis = prom.scrape_configs.find((j) => j.job_name === 'redis');
    const address = redis?.relabel_configs?.find((r) => r.target_label === '__address__')?.replacement ?? '';
    const [host = '', port] = address.split(':');
    assert.equal(exporterPort(services[host]?.image), Number(port), `the redis job scrapes ${address}, the redis-exporter service's port`);
  });

  for (const files of VARIANTS) {
    const label = files.slice(1).join(' + ') || 'the base file';
    it(`${label}: mounts the targets of the stores it runs, each at a service it defines on its exporter's or Redis's port`, () => {
      const stack = mergeStack(files);
      const mounted = targetsFiles(stack);
      const want = expected(files);
      assert.equal(mounted.get('database.yml'), `prometheus/targets/${want.database}.yml`, 'the database job');
      assert.equal(mounted.get('redis.yml'), `prometheus/targets/${want.redis}.yml`, 'the redis job');
      assert.equal(mounted.get('kafka.yml'), want.kafka ? 'prometheus/targets/kafka.yml' : undefined, 'the kafka job');
      for (const [name, source] of mounted) {
        const groups = parse(read(`deploy/${source}`)) as Array<{ targets: string[]; labels?: Record<string, string> }>;
        assert.ok(Array.isArray(groups) && groups.length > 0, `${source}: a list of target groups`);
        for (const target of groups.flatMap((g) => g.targets)) {
          if (name === 'redis.yml') {
            const u = new URL(target);
            const node = stack[u.hostname];
            assert.equal(u.protocol, 'redis:', `${source}: ${target}`);
            assert.match(node?.image ?? '', /^redis:/, `${source}: ${u.hostname} is a Redis service of ${label}`);
            assert.notDeepEqual(node?.command, ['true'], `${source}: ${u.hostname} runs a Redis (not the Cluster variant's placeholder)`);
            assert.equal(u.port || '6379', '6379', `${source}: ${target} is the port Redis listens on`);
          } else {
            const [host = '', port] = target.split(':');
            assert.equal(exporterPort(stack[host]?.image), Number(port), `${source}: ${target} is an exporter service of ${label}, on its port`);
          }
        }
      }
      if (files.includes('docker-compose.cluster.yml')) {
        const nodes = [1, 2, 3, 4, 5, 6].map((i) => `redis-node-${i}`);
        assert.deepEqual(networkNamesOf(stack['redis-exporter']).sort(), ['default', 'redis-cluster'], 'redis-exporter reaches the nodes on their network');
        const listed = (parse(read('deploy/prometheus/targets/redis-cluster.yml')) as Array<{ targets: string[] }>).flatMap((g) => g.targets).map((t) => new URL(t).hostname);
        assert.deepEqual(listed, nodes, 'every node is scraped');
      }
      if (files.includes('docker-compose.sentinel.yml')) {
        const listed = (parse(read('deploy/prometheus/targets/redis-sentinel.yml')) as Array<{ targets: string[] }>).flatMap((g) => g.targets).map((t) => new URL(t).hostname);
        assert.deepEqual(listed, ['redis', 'redis-replica'], 'both data nodes are scraped');
      }
    });

    it(`${label}: promtool accepts the configuration with those targets in place, and discovers them`, async (t) => {
      if (!has('promtool')) return toolMissing(t, 'promtool', `prometheus.yml with ${label}'s targets`);
      const dir = mkdtempSync(join(tmpdir(), 'couponrush-prometheus-'));
      try {
        // The container's layout: prometheus.yml, alerts.yml and targets/ side by side.
        writeFileSync(join(dir, 'prometheus.yml'), read('deploy/prometheus.yml'));
        writeFileSync(join(dir, 'alerts.yml'), read('deploy/alerts.yml'));
        const targets = join(dir, 'targets');
        mkdirSync(targets);
        for (const [name, source] of targetsFiles(mergeStack(files))) writeFileSync(join(targets, name), read(`deploy/${source}`));
        const check = spawnSync('promtool', ['check', 'config', join(dir, 'prometheus.yml')], { encoding: 'utf8' });
        assert.equal(check.status, 0, check.stdout + check.stderr);
        const stack = mergeStack(files);
        // File discovery reads its files as it starts; promtool then waits out --timeout (30 s by
        // default) for other mechanisms, so a short one, and the jobs side by side.
        const runs = await Promise.all(
          storeJobs.map((job) => execFileAsync('promtool', ['check', 'service-discovery', '--timeout=1s', join(dir, 'prometheus.yml'), job], { encoding: 'utf8' })),
        );
        for (const [i, job] of storeJobs.entries()) {
          const discovered = JSON.parse(runs[i]!.stdout) as Array<{ labels: Record<string, string> }>;
          if (job === 'kafka' && !files.includes('docker-compose.kafka.yml')) {
            assert.deepEqual(discovered, [], 'no Kafka, no kafka targets');
            continue;
          }
          assert.ok(discovered.length > 0, `${job}: targets discovered`);
          for (const { labels } of discovered) {
            const [host = '', port] = (labels.__address__ ?? '').split(':');
            assert.equal(exporterPort(stack[host]?.image), Number(port), `${job}: Prometheus scrapes ${labels.__address__}, an exporter of ${label}`);
            if (job === 'redis') {
              const node = new URL(labels.__param_target ?? '');
              assert.match(stack[node.hostname]?.image ?? '', /^redis:/, `redis: ?target=${labels.__param_target} is a Redis service`);
              assert.equal(labels.instance, node.host, 'redis: each node is an instance of its own');
            }
          }
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    if (files.length > 1) {
      it(`${label}: docker-compose merges the prometheus mounts as these checks do`, (t) => {
        const res = composeConfig(t, files, false);
        if (res === undefined) return;
        assert.equal(res.status, 0, res.stderr);
        const merged = parse(res.stdout) as { services: Record<string, StackService> };
        const theirs = new Map(
          (merged.services.prometheus?.volumes ?? []).flatMap((v) => {
            const [source = '', target = ''] = typeof v === 'string' ? v.split(':') : [(v as { source: string }).source, (v as { target: string }).target];
            return target.startsWith('/etc/prometheus/targets/') ? [[target.slice('/etc/prometheus/targets/'.length), source.slice(DEPLOY.length)] as const] : [];
          }),
        );
        assert.deepEqual(Object.fromEntries(theirs), Object.fromEntries(targetsFiles(mergeStack(files))));
      });
    }
  }
});

function networkNamesOf(service: StackService | undefined): string[] {
  return Array.isArray(service?.networks) ? service.networks : Object.keys(service?.networks ?? {});
}

describe('deploy/grafana: every dashboard', () => {
  interface DashboardPanel {
    id?: number;
    type: string;
    title: string;
    gridPos?: { x: number; y: number; w: number; h: number };
    datasource?: { type?: string; uid?: string };
    targets?: Array<{ datasource?: { type?: string; uid?: string } }>;
    panels?: DashboardPanel[];
  }
  const dir = new URL('deploy/grafana/dashboards/', root);
  const names = readdirSync(dir).filter((f) => f.endsWith('.json'));
  const provisioned = new Map(
    readdirSync(new URL('deploy/grafana/provisioning/datasources/', root)).flatMap((f) =>
      (parse(read(`deploy/grafana/provisioning/datasources/${f}`)) as { datasources: Array<{ uid: string; type: string }> }).datasources.map((d) => [d.uid, d.type] as const),
    ),
  );

  it('has the stores dashboard beside the campaign one', () => {
    assert.deepEqual(names.sort(), ['couponrush.json', 'stores.json']);
  });

  for (const name of names) {
    it(`${name}: valid JSON, a unique uid, unique panel ids, every query on a provisioned data source of its type`, () => {
      const dashboard = JSON.parse(read(`deploy/grafana/dashboards/${name}`)) as { uid?: string; title?: string; panels: DashboardPanel[] };
      assert.ok((dashboard.uid ?? '') !== '' && (dashboard.title ?? '') !== '', 'uid and title');
      const others = names.filter((n) => n !== name).map((n) => (JSON.parse(read(`deploy/grafana/dashboards/${n}`)) as { uid?: string }).uid);
      assert.ok(!others.includes(dashboard.uid), `uid ${dashboard.uid} is this dashboard's alone`);
      const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
      const ids = panels.map((p) => p.id);
      assert.ok(ids.every((id) => Number.isInteger(id)), 'every panel has an id');
      assert.equal(new Set(ids).size, ids.length, `panel ids are unique: ${ids.join(', ')}`);
      for (const p of panels.filter((x) => x.type !== 'row')) {
        assert.ok(p.gridPos !== undefined && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: placed within the grid`);
        for (const ds of [p.datasource, ...(p.targets ?? []).map((q) => q.datasource)]) {
          assert.ok(ds?.uid !== undefined && provisioned.has(ds.uid), `${p.title}: data source ${ds?.uid} is provisioned`);
          assert.equal(ds.type, provisioned.get(ds.uid), `${p.title}: data source ${ds.uid} is of type ${provisioned.get(ds.uid)}`);
        }
      }
    });
  }

  it('stores.json shows what an operator watches during a drop', () => {
    interface Query {
      expr?: string;
      service?: string;
      datasource?: { uid?: string };
    }
    const dashboard = JSON.parse(read('deploy/grafana/dashboards/stores.json')) as { panels: Array<{ targets?: Query[] }> };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((q) => q.expr ?? ''));
    for (const series of ['pg_stat_activity_count', 'pg_locks_count', 'pg_stat_database_xact_commit', 'mysql_global_status_threads_connected', 'mysql_global_status_innodb_row_lock_current_waits', 'mysql_global_status_commands_total{command="commit"}', 'redis_commands_processed_total', 'redis_memory_used_bytes', 'redis_master_repl_offset', 'kafka_consumergroup_lag']) {
      assert.ok(exprs.some((e) => e.includes(series)), `a panel reads ${series}`);
    }
    const traces = dashboard.panels.flatMap((p) => p.targets ?? []).filter((q) => q.datasource?.uid === 'jaeger');
    assert.deepEqual(traces.map((q) => q.service), [envOf('api1').OTEL_SERVICE_NAME], 'a traces panel for the service name the APIs trace under');
  });
});
