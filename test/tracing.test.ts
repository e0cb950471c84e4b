// Traces (src/tracing/, docs/operations.md "Following one issuance"), received by an in-process
// OTLP/HTTP receiver (bench/src/otlp-receiver.ts): one issuance through redis-lua-async and one
// through redis-lua-kafka each yield spans from the API and from a `couponrush worker` process in
// one trace, linked to the batches that served them, with the attributes the docs promise; an
// incoming traceparent is honoured only from a TRUST_PROXY address; an early answer has no span;
// and with tracing off no span is sent and the SDK is never loaded.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../bench/src/otlp-receiver.js';
import { ADMIN_TOKEN, JWT_SECRET, needDatabase, needServer, request, startTestServer, type TestServer } from './helpers.js';
import { brokerForFile, needKafka, startKafkaServer, STRATEGY as KAFKA_STRATEGY, waitForRows } from './kafka-helpers.js';
import { freePort, waitFor as waitUntil } from './ops-helpers.js';
import { exited, REDIS_URL, spawnWorker, startRedisTestServer, waitForDrain } from './redis-helpers.js';
import { signUserToken } from '../src/http/auth.js';
import { otelTracing } from '../src/tracing/sdk.js';
import type { SamplerName, TracingSettings } from '../src/tracing/tracing.js';

/** OTLP's SpanKind numbers (the JSON encoding's, not the API's). */
const OTLP_KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 } as const;
const REQUEST_SPAN = 'POST /coupons/{id}/issues';

const broker = brokerForFile();

const needStores = async (t: Parameters<typeof needServer>[0]) => (await needDatabase(t, 'postgres')) && (await needServer(t, 'Redis', REDIS_URL));
let receiver: OtlpReceiver;

before(async () => {
  receiver = await startOtlpReceiver({ keep: true });
});
after(async () => {
  await receiver.close();
});

function tracingEnv(service: string): Record<string, string> {
  // Sent every 200 ms rather than the SDK's 5 s: the tests wait for them.
  return { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_SERVICE_NAME: service, OTEL_BSP_SCHEDULE_DELAY: '200' };
}

/** The spans received so far that match. */
function spans(match: (s: ReceivedSpan) => boolean): ReceivedSpan[] {
  return receiver.spans.filter(match);
}

function one(what: string, match: (s: ReceivedSpan) => boolean): ReceivedSpan {
  const found = spans(match);
  assert.equal(found.length, 1, `exactly one ${what}; got ${found.length}: ${JSON.stringify(found)}`);
  return found[0]!;
}

const linksTo = (s: ReceivedSpan, target: ReceivedSpan) => s.links.some((l) => l.traceId === target.traceId && l.spanId === target.spanId);

/** Waits until a span matching `match` has arrived (exporters send every second). */
async function arrived(what: string, match: (s: ReceivedSpan) => boolean, timeoutMs = 20_000): Promise<void> {
  await waitUntil(what, () => spans(match).length > 0, timeoutMs);
}

async function issue(server: Pick<TestServer, 'url' | 'tokenFor'>, couponId: number, user: string, headers: Record<string, string> = {}) {
  const res = await request(server.url, 'POST', `/coupons/${couponId}/issues`, { headers: { authorization: `Bearer ${server.tokenFor(user)}`, ...headers } });
  return { status: res.status, requestId: String(res.headers['x-request-id']) };
}

/**
 * What every traced issuance shows in the API: the request span (SERVER, with the request id, the
 * coupon, the user and the status), its `coupon.admit` child with the strategy and the outcome,
 * and the batch span named `batch` linked to the admission and back.
 */
function apiSpans(requestId: string, couponId: number, user: string, strategy: string, batch: string) {
  const req = one('request span', (s) => s.name === REQUEST_SPAN && s.attributes['couponrush.request_id'] === requestId);
  assert.equal(req.service, 'couponrush-api');
  assert.equal(req.kind, OTLP_KIND.server);
  assert.equal(req.parentSpanId, '', 'a new trace: the client sent no traceparent');
  assert.equal(req.attributes['http.route'], '/coupons/{id}/issues');
  assert.equal(req.attributes['http.response.status_code'], 202);
  assert.equal(req.attributes['couponrush.coupon_id'], couponId);
  assert.equal(req.attributes['couponrush.user_id'], user);
  const admit = one('admission span', (s) => s.name === 'coupon.admit' && s.traceId === req.traceId);
  assert.equal(admit.parentSpanId, req.spanId);
  assert.equal(admit.attributes['couponrush.strategy'], strategy);
  assert.equal(admit.attributes['couponrush.outcome'], 'ACCEPTED');
  // Within the request (a span's clock is anchored when it starts: allow a millisecond either way).
  assert.ok(admit.startMs >= req.startMs - 1 && admit.endMs <= req.endMs + 1, `the admission (${admit.startMs}–${admit.endMs}) is within the request (${req.startMs}–${req.endMs})`);
  const served = one(`${batch} span serving the request`, (s) => s.name === batch && linksTo(s, admit));
  assert.equal(served.service, 'couponrush-api');
  assert.notEqual(served.traceId, req.traceId, 'a batch is a trace of its own, linked');
  assert.ok(linksTo(admit, served), 'the admission links back to its batch');
  return { req, admit, served };
}

/**
 * What the worker process shows: `coupon.persist` in the request's own trace (a child of the
 * admission whose traceparent the queue carried), and the batch `worker.persist` it links to,
 * itself linked to the admission, with its `db.insert` child.
 */
function workerSpans(admit: ReceivedSpan, queue: 'stream' | 'kafka', couponId: number, user: string) {
  const persisted = one('coupon.persist span', (s) => s.name === 'coupon.persist' && s.traceId === admit.traceId);
  assert.equal(persisted.service, 'couponrush-worker');
  assert.equal(persisted.parentSpanId, admit.spanId, 'the queue carried the admission as the parent');
  assert.equal(persisted.kind, OTLP_KIND.consumer);
  assert.equal(persisted.attributes['couponrush.queue'], queue);
  assert.equal(persisted.attributes['couponrush.coupon_id'], couponId);
  assert.equal(persisted.attributes['couponrush.user_id'], user);
  const queuedMs = persisted.attributes['couponrush.queued_ms'];
  assert.ok(typeof queuedMs === 'number' && queuedMs >= 0 && persisted.startMs >= admit.startMs, `queued ${String(queuedMs)} ms`);
  const batch = one('worker.persist batch', (s) => s.name === 'worker.persist' && linksTo(s, admit));
  assert.equal(batch.service, 'couponrush-worker');
  assert.equal(batch.attributes['couponrush.queue'], queue);
  assert.ok(linksTo(persisted, batch), 'the issuance links to the batch that persisted it');
  const insert = one('db.insert of the batch', (s) => s.name === 'db.insert' && s.parentSpanId === batch.spanId);
  assert.equal(insert.traceId, batch.traceId);
}

describe('traces of one issuance, from the request to the row', () => {
  it('redis-lua-async: the API and the worker process in one trace, through the stream entry', async (t) => {
    if (!(await needStores(t))) return;
    const server = await startRedisTestServer(tracingEnv('couponrush-api'));
    const worker = spawnWorker({ ...server.workerEnv, ...tracingEnv('couponrush-worker'), WORKER_LINGER_MS: '0' }, 'tracing-stream');
    try {
      const { id } = await server.createCoupon({ strategy: 'redis-lua-async', totalQuantity: 5 });
      const { status, requestId } = await issue(server, id, 'trace-user-1');
      assert.equal(status, 202);
      await waitForDrain(server, id, 1);
      await arrived('the worker sent coupon.persist', (s) => s.name === 'coupon.persist' && s.attributes['couponrush.user_id'] === 'trace-user-1');
      await arrived('the API sent the request span', (s) => s.attributes['couponrush.request_id'] === requestId);
      const { admit } = apiSpans(requestId, id, 'trace-user-1', 'redis-lua-async', 'redis.admit_batch');
      workerSpans(admit, 'stream', id, 'trace-user-1');
    } finally {
      worker.kill('SIGTERM');
      await exited(worker);
      await server.close();
    }
  });

  it('redis-lua-kafka: the API and the worker process in one trace, through the signed record; the event publish has its span', async (t) => {
    if (!(await needStores(t)) || !(await needKafka(t))) return;
    const server = await startKafkaServer(broker()!, tracingEnv('couponrush-api'));
    const worker = spawnWorker({ ...server.workerEnv, ...tracingEnv('couponrush-worker'), KAFKA_EVENTS: 'on' }, 'tracing-kafka');
    try {
      const { id } = await server.createCoupon({ strategy: KAFKA_STRATEGY, totalQuantity: 5 });
      const { status, requestId } = await issue(server, id, 'trace-user-2');
      assert.equal(status, 202);
      await waitForRows(server, id, 1);
      await arrived('the worker sent coupon.persist', (s) => s.name === 'coupon.persist' && s.attributes['couponrush.user_id'] === 'trace-user-2', 60_000);
      await arrived('the API sent the request span', (s) => s.attributes['couponrush.request_id'] === requestId);
      const { admit } = apiSpans(requestId, id, 'trace-user-2', KAFKA_STRATEGY, 'redis.admit_batch');
      // The produce is a batch of its own, linked to the admission like the Lua call.
      const produce = one('kafka.produce span serving the request', (s) => s.name === 'kafka.produce' && linksTo(s, admit));
      assert.equal(produce.kind, OTLP_KIND.producer);
      assert.equal(produce.attributes['couponrush.outcome'], 'acked');
      assert.equal(produce.attributes['messaging.destination.name'], server.topic);
      workerSpans(admit, 'kafka', id, 'trace-user-2');
      // The outbox round that published the issued event (a trace of its own, sampled as a new trace).
      await arrived('the worker sent events.publish', (s) => s.name === 'events.publish' && s.service === 'couponrush-worker', 30_000);
      const publish = spans((s) => s.name === 'events.publish')[0]!;
      assert.equal(publish.kind, OTLP_KIND.producer);
      assert.ok(Number(publish.attributes['couponrush.batch_size']) >= 1);
    } finally {
      worker.kill('SIGTERM');
      await exited(worker);
      await server.close();
    }
  });
});

describe("a caller's traceparent, and the answers that get no span", () => {
  const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
  const CALLER_SPAN = '00f067aa0ba902b7';
  const traceparent = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`;

  it('is honoured from a TRUST_PROXY address, and ignored from anyone else (a new trace instead)', async () => {
    const trusting = await startTestServer({ db: 'pglite', env: { ...tracingEnv('couponrush-api'), TRUST_PROXY: 'loopback' } });
    const direct = await startTestServer({ db: 'pglite', env: tracingEnv('couponrush-api') });
    try {
      for (const [server, user] of [[trusting, 'via-proxy'], [direct, 'direct']] as const) {
        const { id } = await server.createCoupon({ strategy: 'db-atomic' });
        const { status } = await issue(server, id, user, { traceparent });
        assert.equal(status, 201);
      }
      await arrived('both request spans', () => spans((s) => s.name === REQUEST_SPAN && ['via-proxy', 'direct'].includes(String(s.attributes['couponrush.user_id']))).length === 2);
      const viaProxy = one('the trusted request', (s) => s.name === REQUEST_SPAN && s.attributes['couponrush.user_id'] === 'via-proxy');
      assert.equal(viaProxy.traceId, CALLER_TRACE, "the proxy's trace is continued");
      assert.equal(viaProxy.parentSpanId, CALLER_SPAN);
      const direct_ = one('the direct request', (s) => s.name === REQUEST_SPAN && s.attributes['couponrush.user_id'] === 'direct');
      assert.notEqual(direct_.traceId, CALLER_TRACE, 'a client cannot join (or force the sampling of) a trace of its choosing');
      assert.equal(direct_.parentSpanId, '');
      // db-atomic's admission is the transaction: its span is the request's child, with the outcome.
      const admit = one('the direct admission', (s) => s.name === 'coupon.admit' && s.traceId === direct_.traceId);
      assert.equal(admit.attributes['couponrush.strategy'], 'db-atomic');
      assert.equal(admit.attributes['couponrush.outcome'], 'ISSUED');
    } finally {
      await trusting.close();
      await direct.close();
    }
  });

  it('an answer given before the token is read (a window not open yet) has no span; the answer after it has one', async () => {
    const server = await startTestServer({ db: 'pglite', env: tracingEnv('couponrush-api') });
    try {
      const later = await server.createCoupon({ strategy: 'db-atomic', issueStartsAt: new Date(Date.now() + 3600_000).toISOString(), issueEndsAt: new Date(Date.now() + 7200_000).toISOString() });
      const early = await issue(server, later.id, 'early-user');
      assert.equal(early.status, 422);
      const open = await server.createCoupon({ strategy: 'db-atomic' });
      const answered = await issue(server, open.id, 'early-user');
      assert.equal(answered.status, 201);
      await arrived('the answered request', (s) => s.attributes['couponrush.request_id'] === answered.requestId);
      assert.deepEqual(spans((s) => s.attributes['couponrush.request_id'] === early.requestId), [], 'the early 422 made no span');
    } finally {
      await server.close();
    }
  });
});

describe('tracing off', () => {
  const REPO = fileURLToPath(new URL('..', import.meta.url));
  const RECORDER = fileURLToPath(new URL('./fixtures/record-imports.mjs', import.meta.url));

  /** `couponrush serve` (embedded) with `env`: creates a campaign, issues once, stops; returns the modules it loaded and the spans received meanwhile. */
  async function serveOnce(env: Record<string, string>, user: string): Promise<{ modules: string[]; spans: number }> {
    const dir = mkdtempSync(join(tmpdir(), 'couponrush-tracing-'));
    const port = await freePort();
    const before = receiver.count();
    const child = spawn(process.execPath, ['--import', 'tsx', '--import', RECORDER, 'src/cli.ts', 'serve'], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? '', DATA_DIR: dir, PORT: String(port), ADMIN_TOKEN, JWT_SECRET, LOG_LEVEL: 'warn', RECORD_IMPORTS_FILE: join(dir, 'imports.txt'), ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    try {
      const url = `http://127.0.0.1:${port}`;
      await waitUntil(`serve on :${port} (${stderr})`, async () => (await request(url, 'GET', '/healthz').catch(() => ({ status: 0 }))).status === 200, 60_000);
      const created = await request(url, 'POST', '/admin/coupons', {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        json: { name: 'traced?', totalQuantity: 5, issueStartsAt: new Date(Date.now() - 60_000).toISOString(), issueEndsAt: new Date(Date.now() + 3600_000).toISOString() },
      });
      assert.equal(created.status, 201, created.text);
      const res = await request(url, 'POST', `/coupons/${(created.json as { id: number }).id}/issues`, { headers: { authorization: `Bearer ${signUserToken(JWT_SECRET, user)}` } });
      assert.equal(res.status, 201);
    } finally {
      child.kill('SIGTERM');
      await exited(child);
    }
    const modules = readFileSync(join(dir, 'imports.txt'), 'utf8').split('\n');
    rmSync(dir, { recursive: true, force: true });
    return { modules, spans: receiver.count() - before };
  }

  const sdkLoaded = (modules: readonly string[]) => modules.some((m) => /\/src\/tracing\/sdk\.ts$|@opentelemetry\/sdk-trace\//.test(m));

  it('sends no span and never loads the SDK (OTEL_TRACES_EXPORTER=none wins over an endpoint); on, the same process loads it and sends', async () => {
    const off = await serveOnce({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_TRACES_EXPORTER: 'none' }, 'untraced-user');
    assert.ok(off.modules.some((m) => m.endsWith('/src/tracing/tracing.ts')), 'the recorder saw our modules load');
    assert.equal(sdkLoaded(off.modules), false, 'the OpenTelemetry SDK was loaded with tracing off');
    assert.equal(off.spans, 0);
    // The same check sees the SDK when tracing is on: it can fail.
    const on = await serveOnce({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_SERVICE_NAME: 'couponrush-on' }, 'traced-user');
    assert.equal(sdkLoaded(on.modules), true);
    assert.ok(on.spans >= 2, `the request and its admission were sent at shutdown (got ${on.spans})`);
    assert.ok(spans((s) => s.service === 'couponrush-on' && s.name === REQUEST_SPAN && s.attributes['couponrush.user_id'] === 'traced-user').length === 1);
  });
});

describe("OTEL_TRACES_SAMPLER's rules, applied before the SDK is asked for a span", () => {
  const sampled = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  const unsampled = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00';
  const tracerFor = (sampler: SamplerName, ratio = 1) => {
    const settings: TracingSettings = { url: `${receiver.endpoint}/v1/traces`, serviceName: 'rules', sampler, ratio, batch: { scheduleDelayMs: 60_000, maxQueueSize: 1024, maxExportBatchSize: 512 } };
    return otelTracing(settings, 1000);
  };
  const recorded = (n: number, make: () => unknown) => Array.from({ length: n }, make).filter((s) => s !== undefined).length;

  it('a new trace: always, never, or about the ratio', async () => {
    const on = tracerFor('parentbased_always_on');
    const off = tracerFor('parentbased_always_off');
    const tenth = tracerFor('parentbased_traceidratio', 0.1);
    try {
      assert.equal(recorded(100, () => on.start('r', undefined)), 100);
      assert.equal(recorded(100, () => off.start('r', undefined)), 0);
      const n = recorded(10_000, () => tenth.start('r', undefined));
      assert.ok(n > 800 && n < 1200, `about 1,000 of 10,000 at 0.1 (got ${n})`);
      // A batch: recorded when it serves a recorded span, else as a new trace.
      assert.equal(off.batch('b', []), undefined);
      const root = on.start('r', undefined)!;
      assert.notEqual(off.batch('b', [root.spanContext()]), undefined, 'a traced request always has its batch');
      // A child of a recorded span is recorded, in its trace.
      assert.equal(on.child(root, 'c').spanContext().traceId, root.spanContext().traceId);
    } finally {
      await Promise.all([on, off, tenth].map((t) => t.shutdown().catch(() => undefined)));
    }
  });

  it("a trusted proxy's traceparent: its flag for the parentbased samplers, its trace id for traceidratio; the queue's: its flag", async () => {
    const parentBased = tracerFor('parentbased_traceidratio', 0);
    const byTraceId = tracerFor('traceidratio', 0.5);
    try {
      assert.equal(parentBased.start('r', sampled)?.spanContext().traceId, '4bf92f3577b34da6a3ce929d0e0e4736', 'a sampled parent is followed even at ratio 0');
      assert.equal(parentBased.start('r', unsampled), undefined);
      // traceidratio ignores the flag and decides on the trace id: the same every time.
      const decisions = new Set(Array.from({ length: 20 }, () => byTraceId.start('r', unsampled) !== undefined));
      assert.equal(decisions.size, 1, 'deterministic on the trace id');
      assert.notEqual(parentBased.follow('p', sampled), undefined);
      assert.equal(parentBased.follow('p', unsampled), undefined);
      assert.equal(parentBased.follow('p', 'not a traceparent'), undefined);
      // A malformed or oversized header from the proxy is no parent: a new trace, at the root's ratio (0 here).
      for (const bad of ['not a traceparent', `${sampled}-${'f'.repeat(10_000)}`, sampled.toUpperCase(), '00-00000000000000000000000000000000-00f067aa0ba902b7-01']) {
        assert.equal(parentBased.start('r', bad), undefined, bad.slice(0, 40));
      }
    } finally {
      await Promise.all([parentBased, byTraceId].map((t) => t.shutdown().catch(() => undefined)));
    }
  });
});
