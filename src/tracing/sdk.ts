// The OpenTelemetry SDK behind `Tracing` (tracing.ts). Imported only when tracing is on, so a
// process with tracing off never loads it (test/tracing.test.ts checks that).
//
// Configured from the settings config.ts parsed out of the standard OTEL_* variables, passed here
// explicitly (the SDK reads no sampler, endpoint or batch setting of its own): spans go to the
// OTLP/HTTP endpoint as JSON through a batch processor; the sampler is the one OTEL_TRACES_SAMPLER
// names, except that a batch span with a sampled link is always sampled (BatchAwareSampler).
import { diag, DiagLogLevel, ROOT_CONTEXT, trace, type Context, type Link, type Span, type SpanContext } from '@opentelemetry/api';
import { parseTraceParent } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';

import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  SamplingDecision,
  TraceIdRatioBasedSampler,
  TracerProvider,
  type Sampler,
  type SamplingResult,
} from '@opentelemetry/sdk-trace';
import type { Logger } from '../util/logger.js';
import { MAX_TRACEPARENT, type SamplerName, type SpanOptions, type Tracing, type TracingSettings } from './tracing.js';

function baseSampler(name: SamplerName, ratio: number): Sampler {
  switch (name) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio);
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

/**
 * The configured sampler, and one rule of couponrush's: a root span linked to a sampled span (a
 * batch doing the work of a sampled request) is sampled, so the request's trace never misses the
 * batch that served it. Unless the sampler is always_off: then nothing is.
 */
class BatchAwareSampler implements Sampler {
  constructor(
    private readonly inner: Sampler,
    private readonly never: boolean,
  ) {}

  shouldSample(ctx: Context, traceId: string, name: string, kind: number, attributes: Parameters<Sampler['shouldSample']>[4], links: Link[]): SamplingResult {
    if (!this.never && trace.getSpanContext(ctx) === undefined && links.some((l) => (l.context.traceFlags & 1) === 1)) {
      return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    }
    return this.inner.shouldSample(ctx, traceId, name, kind, attributes, links);
  }

  toString(): string {
    return `BatchAware{${this.inner.toString()}}`;
  }
}

/** The remote span context a `traceparent` value names, or undefined when it is malformed. */
function contextOf(traceparent: string): SpanContext | undefined {
  if (traceparent.length > MAX_TRACEPARENT) return undefined;
  const parent = parseTraceParent(traceparent);
  return parent === null ? undefined : { ...parent, isRemote: true };
}

/** A remote parent from a `traceparent` value, or the root context when it is absent or malformed. */
function parentContext(traceparent: string | undefined): Context {
  const parent = traceparent === undefined ? undefined : contextOf(traceparent);
  return parent === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, parent);
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
    sampler: new BatchAwareSampler(baseSampler(settings.sampler, settings.ratio), settings.sampler === 'always_off'),
    spanLimits: { linkCountLimit: Math.max(128, linkLimit) },
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer('couponrush');
  // The attributes are set once the sampler said yes: an unsampled span costs no attribute object.
  // (The samplers couponrush offers decide on the trace id, the parent and the links alone.)
  const startIn = (ctx: Context, name: string, options: SpanOptions | undefined, root = false): Span | undefined => {
    const span = tracer.startSpan(name, { kind: options?.kind, links: linksOf(options?.links), startTime: options?.startTime, root }, ctx);
    if (!span.isRecording()) return undefined;
    if (options?.attributes !== undefined) span.setAttributes(options.attributes);
    return span;
  };
  return {
    start: (name, traceparent, options) => startIn(parentContext(traceparent), name, options),
    child: (parent, name, options) => startIn(trace.setSpan(ROOT_CONTEXT, parent), name, options),
    batch: (name, links, options) => startIn(ROOT_CONTEXT, name, { ...options, links }, true),
    contextOf,
    shutdown: () => provider.shutdown(),
  };
}
