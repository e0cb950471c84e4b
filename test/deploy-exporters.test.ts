// The stores dashboard (deploy/grafana/dashboards/stores.json) reads only series its exporters
// really expose. The compose stack pins each exporter to the version Debian 12 packages, so this
// suite runs those packages (prometheus-postgres-exporter, -mysqld-exporter, -redis-exporter)
// against the local PostgreSQL, MariaDB and Redis, scrapes them the way Prometheus does in the
// stack, and looks for every series, with the labels the panels select on. kafka_exporter is not
// packaged: its panels are checked against the names and labels quoted from its source below.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { after, describe, it, type TestContext } from 'node:test';
import { parse } from 'yaml';
import { createTestDatabase, missing, MYSQL_ADMIN_URL, needServer, openTestDb, PG_ADMIN_URL, type TestDatabase } from './helpers.js';
import { freePort } from './ops-helpers.js';

const root = new URL('../', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, root), 'utf8');

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: Array<{ expr?: string }>;
}
const dashboard = JSON.parse(read('deploy/grafana/dashboards/stores.json')) as { panels: Panel[] };
const queries = dashboard.panels.flatMap((p) => (p.targets ?? []).flatMap((t) => (t.expr === undefined ? [] : [{ panel: p.title, expr: t.expr }])));

/** A series a PromQL expression selects: its name and the label values its `=` matchers require. */
interface Selector {
  name: string;
  /** Label → required value (`=`); `=~`, `!=`, `!~` matchers only require the label to exist. */
  equals: Record<string, string>;
  labels: string[];
}

/** Words of PromQL that are neither functions (followed by `(`) nor series. */
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan']);

/**
 * The series selectors of a PromQL expression. A small tokenizer rather than a full parser: it
 * knows what the dashboards use (functions, aggregations with by/without, binary operators,
 * comparisons with numbers, ranges, Grafana's $variables) and throws on a selector it cannot
 * name (a bare `{…}`), so that nothing slips past the check unread.
 */
function selectorsOf(expr: string): Selector[] {
  const tokens = expr
    .replace(/\$\{\w+\}|\$\w+/g, '')
    .match(/"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|[a-zA-Z_:][a-zA-Z0-9_:]*|\d+(?:\.\d+)?(?:e[+-]?\d+)?[a-z]*|\S/g);
  const out: Selector[] = [];
  const list: string[] = [...(tokens ?? [])];
  for (let i = 0; i < list.length; i++) {
    const token = list[i]!;
    if (token.startsWith('{')) throw new Error(`a selector without a series name in ${expr}`);
    if (!/^[a-zA-Z_:]/.test(token)) continue;
    const next = list[i + 1];
    // An aggregation with its grouping first: `sum by (…) (…)`.
    if (next === 'by' || next === 'without') continue;
    if (next === '(') {
      // A function or aggregation; `by (…)` / `without (…)` lists label names, skipped with it.
      if (['by', 'without', 'on', 'ignoring', 'group_left', 'group_right'].includes(token)) i = list.indexOf(')', i);
      continue;
    }
    if (KEYWORDS.has(token.toLowerCase())) continue;
    const block = next?.startsWith('{') === true ? next : undefined;
    const equals: Record<string, string> = {};
    const labels: string[] = [];
    for (const m of (block ?? '').matchAll(/([a-zA-Z_]\w*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"/g)) {
      labels.push(m[1]!);
      if (m[2] === '=') equals[m[1]!] = m[3]!;
    }
    out.push({ name: token, equals, labels });
    if (block !== undefined) i++;
  }
  return out;
}

/** Which exporter serves a series, by its name's prefix; `up` is Prometheus's own. */
const EXPORTER_OF: Array<[RegExp, string]> = [
  [/^pg_/, 'postgres'],
  [/^mysql_/, 'mysqld'],
  [/^redis_/, 'redis'],
  [/^kafka_/, 'kafka'],
  [/^up$/, 'prometheus'],
];
const exporterOf = (name: string) => EXPORTER_OF.find(([re]) => re.test(name))?.[1];
/** The labels an expression groups by (`by (…)`, `without (…)`): every series in it must carry them. */
const groupingOf = (expr: string) => [...expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((l) => l.trim()));
/** This exporter's selectors in the dashboard, with the labels each must carry (its matchers' and its expression's grouping). */
const selectorsFor = (exporter: string) =>
  queries.flatMap((q) =>
    selectorsOf(q.expr)
      .filter((s) => exporterOf(s.name) === exporter)
      .map((s) => ({ ...q, ...s, labels: [...new Set([...s.labels, ...groupingOf(q.expr)])] })),
  );

/** A scrape: its text, and series name → the label sets of its samples. */
interface Scrape {
  text: string;
  series: Map<string, Array<Record<string, string>>>;
}

function parseScrape(text: string): Scrape {
  const series: Scrape['series'] = new Map();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+/.exec(line);
    if (m === null) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    series.set(m[1]!, [...(series.get(m[1]!) ?? []), labels]);
  }
  return { text, series };
}

/**
 * What the scrape lacks for each selector of this exporter's panels: the series, a label a
 * matcher reads, or (for `=`) a sample with that value. `values` rewrites a required value the
 * stack names and this machine does not have (the stack's database is `couponrush`; here, the
 * test's own scratch database).
 */
function lacking(exporter: string, scrape: Scrape, values: Record<string, Record<string, string>> = {}): string[] {
  const selectors = selectorsFor(exporter);
  assert.ok(selectors.length > 0, `the dashboard has panels for ${exporter}`);
  return selectors.flatMap(({ panel, name, labels, equals }) => {
    const samples = scrape.series.get(name);
    if (samples === undefined) return [`${panel}: ${name} is not exposed`];
    const absent = labels.filter((l) => !samples.some((s) => l in s));
    if (absent.length > 0) return [`${panel}: ${name} has no label ${absent.join(', ')}`];
    const wanted = Object.entries(equals).map(([l, v]) => [l, values[l]?.[v] ?? v] as const);
    if (!samples.some((s) => wanted.every(([l, v]) => s[l] === v))) return [`${panel}: no ${name} sample with ${wanted.map(([l, v]) => `${l}="${v}"`).join(', ')}`];
    return [];
  });
}

const running: ChildProcess[] = [];

/** Starts an exporter on a free loopback port and waits until `path` answers; its stderr goes into failures. */
async function startExporter(binary: string, args: (port: number) => string[], env: Record<string, string>, path = '/metrics'): Promise<{ scrape: () => Promise<Scrape> }> {
  const port = await freePort();
  const child = spawn(binary, args(port), { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  running.push(child);
  let log = '';
  child.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  const url = `http://127.0.0.1:${port}${path}`;
  const get = async () => {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: ${res.status}`);
    return res.text();
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${binary} exited (${child.exitCode}):\n${log}`);
    try {
      await get();
      break;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`${binary} did not answer on ${url}: ${String(e)}\n${log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { scrape: async () => parseScrape(await get()) };
}

after(() => {
  for (const child of running) if (child.exitCode === null) child.kill('SIGTERM');
});

/** The exporter's Debian binary, or undefined after `missing` (skip loudly, fail under CI). */
function binary(t: TestContext, name: string): string | undefined {
  const path = `/usr/bin/${name}`;
  if (existsSync(path)) return path;
  missing(t, `${path} is not installed: the stores dashboard's ${name.replace(/^prometheus-|-exporter$/g, '')} panels were not checked (apt-get install ${name})`);
  return undefined;
}

describe('deploy/grafana/dashboards/stores.json', () => {
  it('reads series of one of the exporters the stack runs (or Prometheus\'s up), each selector named', () => {
    assert.ok(queries.length > 0, 'the stores dashboard has queries');
    const unknown = queries.flatMap((q) => selectorsOf(q.expr).filter((s) => exporterOf(s.name) === undefined).map((s) => `${q.panel}: ${s.name}`));
    assert.deepEqual(unknown, []);
    for (const exporter of ['postgres', 'mysqld', 'redis', 'kafka']) assert.ok(selectorsFor(exporter).length > 0, `panels for ${exporter}`);
  });

  it('reads selectors as PromQL does (the extractor this suite relies on)', () => {
    assert.deepEqual(
      selectorsOf('sum by (state, x) (rate(pg_a{datname="couponrush", mode=~"x.*"}[$__rate_interval])) / on(instance) group_left max(pg_b) > 0 and mysql_c offset 5m'),
      [
        { name: 'pg_a', equals: { datname: 'couponrush' }, labels: ['datname', 'mode'] },
        { name: 'pg_b', equals: {}, labels: [] },
        { name: 'mysql_c', equals: {}, labels: [] },
      ],
    );
    assert.throws(() => selectorsOf('sum({__name__="x"})'), /without a series name/);
  });

  it('reads up only for the store jobs prometheus.yml defines', () => {
    const jobs = (parse(read('deploy/prometheus.yml')) as { scrape_configs: Array<{ job_name: string }> }).scrape_configs.map((j) => j.job_name);
    for (const q of queries) {
      for (const s of selectorsOf(q.expr).filter((x) => x.name === 'up')) {
        const re = /job=~"([^"]*)"/.exec(q.expr)?.[1];
        assert.ok(re !== undefined, `${q.panel}: up selects the store jobs by name`);
        for (const job of re.split('|')) assert.ok(jobs.includes(job), `${q.panel}: ${s.name} of job ${job}, which prometheus.yml defines`);
      }
    }
  });
});

describe('the exporters Debian packages, run against the local stores', () => {
  it('prometheus-postgres-exporter (0.11.1, as the compose image) exposes every PostgreSQL series the dashboard reads', async (t) => {
    const bin = binary(t, 'prometheus-postgres-exporter');
    if (bin === undefined || !(await needServer(t, 'PostgreSQL', PG_ADMIN_URL))) return;
    // A scratch database of the test's own stands for the stack's `couponrush`, with a transaction
    // committed and one open, holding a lock, while the exporter is scraped: its datname then has
    // connections, locks and commits to show.
    const scratch: TestDatabase = await createTestDatabase('postgres');
    const db = openTestDb('postgres', scratch.url, 2);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const open = db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock(29)');
      locked();
      await held;
    });
    try {
      await db.transaction(async (tx) => void (await tx.query('CREATE TABLE exporter_probe (id int PRIMARY KEY)')));
      await isLocked;
      const admin = new URL(PG_ADMIN_URL);
      const dsn = `postgresql://${admin.username || 'postgres'}${admin.password === '' ? '' : `:${admin.password}`}@${admin.host}${admin.pathname}?sslmode=disable`;
      const exporter = await startExporter(bin, (port) => [`--web.listen-address=127.0.0.1:${port}`], { DATA_SOURCE_NAME: dsn });
      const scrape = await exporter.scrape();
      assert.match(scrape.text, /^pg_up 1$/m, 'the exporter reached PostgreSQL');
      assert.deepEqual(lacking('postgres', scrape, { datname: { couponrush: scratch.name } }), []);
    } finally {
      release();
      await open;
      await db.close();
      await scratch.drop();
    }
  });

  it('prometheus-mysqld-exporter (0.14.0, as the compose image, with its flags) exposes every MySQL series the dashboard reads', async (t) => {
    const bin = binary(t, 'prometheus-mysqld-exporter');
    if (bin === undefined || !(await needServer(t, 'MariaDB', MYSQL_ADMIN_URL))) return;
    // The Go driver's DSN, as DATA_SOURCE_NAME in docker-compose.mysql.yml. The counters the
    // panels read (Com_commit, Innodb_row_lock_waits …) are server-wide: no transaction needed.
    const u = new URL(MYSQL_ADMIN_URL);
    const dsn = `${decodeURIComponent(u.username || 'root')}${u.password === '' ? '' : `:${decodeURIComponent(u.password)}`}@(${u.hostname}:${u.port || '3306'})/`;
    const flags = composeMysqlExporterFlags();
    const exporter = await startExporter(bin, (port) => [`--web.listen-address=127.0.0.1:${port}`, ...flags], { DATA_SOURCE_NAME: dsn });
    const scrape = await exporter.scrape();
    assert.match(scrape.text, /^mysql_up 1$/m, 'the exporter reached MariaDB');
    assert.deepEqual(lacking('mysqld', scrape), []);
  });

  it('prometheus-redis-exporter (1.45.0, as the compose image) exposes every Redis series the dashboard reads, through /scrape?target= as Prometheus asks it', async (t) => {
    const bin = binary(t, 'prometheus-redis-exporter');
    const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
    if (bin === undefined || !(await needServer(t, 'Redis', redisUrl))) return;
    const target = new URL(redisUrl);
    const exporter = await startExporter(bin, (port) => [`-web.listen-address=127.0.0.1:${port}`], {}, `/scrape?target=${encodeURIComponent(`redis://${target.host}`)}`);
    const scrape = await exporter.scrape();
    assert.match(scrape.text, /^redis_up 1$/m, 'the exporter reached Redis');
    assert.deepEqual(lacking('redis', scrape), []);
  });
});

describe('kafka_exporter (not packaged: names from its source)', () => {
  /**
   * Every series kafka_exporter v1.9.0 defines, with its labels: quoted from kafka_exporter.go at
   * tag v1.9.0 of github.com/danielqsj/kafka_exporter (the prometheus.NewDesc calls in main,
   * namespace "kafka"). A change of the image's version in docker-compose.kafka.yml fails the
   * test below until this list is read again at the new tag.
   */
  const KAFKA_EXPORTER_VERSION = 'v1.9.0';
  const KAFKA_EXPORTER_SERIES: Record<string, string[]> = {
    kafka_brokers: [],
    kafka_broker_info: ['id', 'address'],
    kafka_topic_partitions: ['topic'],
    kafka_topic_partition_current_offset: ['topic', 'partition'],
    kafka_topic_partition_oldest_offset: ['topic', 'partition'],
    kafka_topic_partition_leader: ['topic', 'partition'],
    kafka_topic_partition_replicas: ['topic', 'partition'],
    kafka_topic_partition_in_sync_replica: ['topic', 'partition'],
    kafka_topic_partition_leader_is_preferred: ['topic', 'partition'],
    kafka_topic_partition_under_replicated_partition: ['topic', 'partition'],
    kafka_consumergroup_current_offset: ['consumergroup', 'topic', 'partition'],
    kafka_consumergroup_current_offset_sum: ['consumergroup', 'topic'],
    kafka_consumergroup_lag: ['consumergroup', 'topic', 'partition'],
    kafka_consumergroupzookeeper_lag_zookeeper: ['consumergroup', 'topic', 'partition'],
    kafka_consumergroup_lag_sum: ['consumergroup', 'topic'],
    kafka_consumergroup_members: ['consumergroup'],
  };

  it('the compose image is the version the names were quoted from', () => {
    const kafka = parse(read('deploy/docker-compose.kafka.yml'), { merge: true }) as { services: Record<string, { image?: string }> };
    assert.equal(kafka.services['kafka-exporter']?.image, `danielqsj/kafka-exporter:${KAFKA_EXPORTER_VERSION}`);
  });

  it('every Kafka series the dashboard reads is one kafka_exporter defines, with the labels it selects and groups by', () => {
    const selectors = selectorsFor('kafka');
    assert.ok(selectors.length > 0, 'the dashboard has panels for Kafka');
    const wrong = selectors.flatMap(({ panel, name, labels }) => {
      const defined = KAFKA_EXPORTER_SERIES[name];
      if (defined === undefined) return [`${panel}: ${name} is not a kafka_exporter series`];
      return labels.filter((l) => !defined.includes(l)).map((l) => `${panel}: ${name} has no label ${l}`);
    });
    assert.deepEqual(wrong, []);
  });
});

/** The flags docker-compose.mysql.yml starts mysqld_exporter with, so that the test runs the same collectors. */
function composeMysqlExporterFlags(): string[] {
  const mysql = parse(read('deploy/docker-compose.mysql.yml'), { merge: true }) as { services: Record<string, { command?: string[] }> };
  const command = mysql.services['database-exporter']?.command ?? [];
  assert.ok(command.length > 0, 'docker-compose.mysql.yml sets the mysqld exporter\'s flags');
  return command;
}
