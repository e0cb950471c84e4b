// The OpenTelemetry SDK behind `Tracing` (tracing.ts). Imported only when tracing is on, so a
// process with tracing off never loads it (test/tracing.test.ts checks that).
//
// Configured from the settings config.ts parsed out of the standard OTEL_* variables, passed here
// explicitly (the SDK reads no sampler, endpoint or batch setting of its own): spans go to the
// OTLP/HTTP endpoint as JSON through a batch processor.
//
// Sampling is decided here, before the SDK is called, and the SDK records every span it is asked
// for (its sampler is always_on). Asking the SDK for a span of every request, to have most of them
// dropped by its sampler, cost the issue route 16 % of its CPU at 1 % sampling; deciding first
// costs an unsampled request one Math.random() (docs/performance.md, "Tracing"). The rules are
// OTEL_TRACES_SAMPLER's, applied to couponrush's spans:
//
//   a new trace (a request without a trusted traceparent, the event publisher's round, a worker
//     batch that persists no traced issuance): the sampler's root rule — always, never, or the
//     ratio, drawn at random (the SDK's ratio sampler draws from the trace id; nothing else has
//     seen a trace id couponrush is about to make, so the two are the same to everyone else);
//   a request under a traceparent from a TRUST_PROXY address: the parentbased samplers follow its
//     sampled flag; traceidratio decides on its trace id, as the SDK's sampler does;
//   a child (the admission under its request, the insert under its batch): recorded, as its parent is;
//   a batch serving traced requests, an issuance the queue carried a sampled traceparent for:
//     recorded, so a traced request's trace never misses the batch that served it or its row.
import { diag, DiagLogLevel, ROOT_CONTEXT, trace, type Context, type Link, type Span, type SpanContext } from '@opentelemetry/api';
import { parseTraceParent } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BatchSpanProcessor, SamplingDecision, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import type { Logger } from '../util/logger.js';
import { MAX_TRACEPARENT, type SpanOptions, type Tracing, type TracingSettings } from './tracing.js';

const SAMPLED = 1;

/** Whether a new trace is recorded: the configured sampler's rule for a root. */
function rootRule(settings: TracingSettings): () => boolean {
  switch (settings.sampler) {
    case 'always_on':
    case 'parentbased_always_on':
      return () => true;
    case 'always_off':
    case 'parentbased_always_off':
      return () => false;
    case 'traceidratio':
    case 'parentbased_traceidratio': {
      const ratio = settings.ratio;
      return () => Math.random() < ratio;
    }
  }
}

/** Whether a request under a trusted proxy's traceparent is recorded. */
function remoteRule(settings: TracingSettings): (parent: SpanContext) => boolean {
  switch (settings.sampler) {
    case 'parentbased_always_on':
    case 'parentbased_always_off':
    case 'parentbased_traceidratio':
      return (parent) => (parent.traceFlags & SAMPLED) === SAMPLED;
    case 'always_on':
      return () => true;
    case 'always_off':
      return () => false;
    case 'traceidratio': {
      const ratio = new TraceIdRatioBasedSampler(settings.ratio);
      return (parent) => ratio.shouldSample(ROOT_CONTEXT, parent.traceId).decision === SamplingDecision.RECORD_AND_SAMPLED;
    }
  }
}

/** The remote span context a `traceparent` value names, or undefined when it is malformed. */
function contextOf(traceparent: string): SpanContext | undefined {
  if (traceparent.length > MAX_TRACEPARENT) return undefined;
  const parent = parseTraceParent(traceparent);
  return parent === null ? undefined : { ...parent, isRemote: true };
}

function linksOf(contexts: readonly SpanContext[] | undefined): Link[] | undefined {
  return contexts === undefined || contexts.length === 0 ? undefined : contexts.map((c) => ({ context: c }));
}

/**
 * The SDK's tracer. `linkLimit` is the most links a span may carry: the largest batch (a Lua
 * call's attempts, a worker batch), so that a batch links to every issuance in it.
 */
export function otelTracing(settings: TracingSettings, linkLimit: number, log?: Logger): Tracing {
  if (log !== undefined) {
    // The SDK reports an export that failed (a collector away) through diag: into our log, once a line.
    diag.setLogger(
      {
        error: (message, ...args) => log.warn({ args }, `tracing: ${message}`),
        warn: (message, ...args) => log.warn({ args }, `tracing: ${message}`),
        info: () => undefined,
        debug: () => undefined,
        verbose: () => undefined,
      },
      { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true },
    );
  }
  const processor = new BatchSpanProcessor({
    exporter: new OTLPTraceExporter({ url: settings.url }),
    maxQueueSize: settings.batch.maxQueueSize,
    maxExportBatchSize: settings.batch.maxExportBatchSize,
    scheduledDelayMillis: settings.batch.scheduleDelayMs,
  });
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': settings.serviceName }),
    // Every span asked for is recorded: the rules above decided before asking.
    sampler: new AlwaysOnSampler(),
    spanLimits: { linkCountLimit: Math.max(128, linkLimit) },
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer('couponrush');
  const newTrace = rootRule(settings);
  const underProxy = remoteRule(settings);
  const record = (ctx: Context, name: string, options: SpanOptions | undefined, root = false): Span =>
    tracer.startSpan(name, { kind: options?.kind, attributes: options?.attributes, links: linksOf(options?.links), startTime: options?.startTime, root }, ctx);
  return {
    start: (name, traceparent, options) => {
      const parent = traceparent === undefined ? undefined : contextOf(traceparent);
      if (parent === undefined) return newTrace() ? record(ROOT_CONTEXT, name, options) : undefined;
      return underProxy(parent) ? record(trace.setSpanContext(ROOT_CONTEXT, parent), name, options) : undefined;
    },
    follow: (name, traceparent, options) => {
      const parent = contextOf(traceparent);
      if (parent === undefined || (parent.traceFlags & SAMPLED) !== SAMPLED) return undefined;
      return record(trace.setSpanContext(ROOT_CONTEXT, parent), name, options);
    },
    child: (parent, name, options) => record(trace.setSpan(ROOT_CONTEXT, parent), name, options),
    batch: (name, links, options) => (links.length > 0 || newTrace() ? record(ROOT_CONTEXT, name, { ...options, links }, true) : undefined),
    contextOf,
    shutdown: () => provider.shutdown(),
  };
}
