// Traces (OpenTelemetry), off by default. What the rest of the code sees of them: the `Tracing`
// interface, which is present only when tracing is on (`openTracing` returns undefined when it is
// off, and then the SDK is never imported: every hot path pays one `undefined` check).
//
// The spans are placed by hand where an issuance spends its time (docs/operations.md, "Traces:
// following one issuance"), not by auto-instrumentation, and their context is passed along
// explicitly (no AsyncLocalStorage context manager: it would tax every promise of every request,
// sampled or not). Sampling is decided before a span is made (sdk.ts says how), and a span that
// is not recorded is never made: `start` and `batch` return undefined, so an unsampled request
// runs the code of tracing off after one Math.random() (docs/performance.md, "Tracing"):
//
//   issue request   routes/issue-handler.ts: `POST /coupons/{id}/issues` (SERVER), from the token
//                   to the answer; a child of the caller's `traceparent` only when it came from a
//                   TRUST_PROXY address. The answers given before it (the drain's 503, the
//                   per-address 429, a closed window or a known sell-out, load shedding) get none.
//   admission       coupons/service.ts: `coupon.admit`, the strategy's call, with the strategy and
//                   the outcome; batched admissions (one Lua call, one group commit, one Kafka
//                   send for many requests) have a batch span linked to each sampled request's.
//   queue           the stream entry (field `p`) and the Kafka record (JSON field `p`, under the
//                   record's authenticator) carry the `traceparent` of a sampled admission.
//   worker          `worker.persist` per batch, linked to each traced issuance it persists, with
//                   the insert as its child; and `coupon.persist` in each traced issuance's own
//                   trace, from the batch's start to its commit.
//   events          `events.publish`, one per round of the outbox.
import type { Attributes, Span, SpanContext, SpanKind } from '@opentelemetry/api';
import type { Logger } from '../util/logger.js';

export type { Span, SpanContext } from '@opentelemetry/api';

/** The OTEL_TRACES_SAMPLER values couponrush accepts (the SDK's built-in samplers). */
export const SAMPLER_NAMES = ['always_on', 'always_off', 'traceidratio', 'parentbased_always_on', 'parentbased_always_off', 'parentbased_traceidratio'] as const;
export type SamplerName = (typeof SAMPLER_NAMES)[number];

/** Tracing's settings, from the standard OTEL_* variables (config.ts parses and validates them). */
export interface TracingSettings {
  /** Where spans are sent: OTLP over HTTP (JSON), the full URL of the traces endpoint. */
  readonly url: string;
  readonly serviceName: string;
  readonly sampler: SamplerName;
  /** The ratio of the traceidratio samplers, in [0, 1]. */
  readonly ratio: number;
  /** The batch span processor (OTEL_BSP_*). */
  readonly batch: {
    /** How often spans are sent. */
    readonly scheduleDelayMs: number;
    /** Spans waiting to be sent; past this, new ones are dropped (and the SDK warns). */
    readonly maxQueueSize: number;
    readonly maxExportBatchSize: number;
  };
}

/** How a span starts: its kind, its first attributes, its links, and when (ms since epoch) if not now. */
export interface SpanOptions {
  readonly kind?: SpanKind;
  readonly attributes?: Attributes;
  readonly links?: readonly SpanContext[];
  readonly startTime?: number;
}

/**
 * The tracer the code calls; only there when tracing is on. Each method returns the span when it
 * is recorded, else undefined (nothing to do, nothing to carry).
 */
export interface Tracing {
  /**
   * A request's span: the root of a new trace (recorded as OTEL_TRACES_SAMPLER says of a root), or
   * under `traceparent` (a W3C header value a trusted proxy sent) when it parses, recorded as the
   * sampler says of such a parent.
   */
  start(name: string, traceparent: string | undefined, options?: SpanOptions): Span | undefined;
  /** A span under a traceparent the queue carried: recorded when that admission was. */
  follow(name: string, traceparent: string, options?: SpanOptions): Span | undefined;
  /** A child of a recorded span: recorded too. */
  child(parent: Span, name: string, options?: SpanOptions): Span;
  /**
   * A span over work done for many: the root of a trace of its own, linked to `links` (recorded
   * spans), and recorded whenever there is one — so a traced request's batch is always there —
   * else as a new trace would be.
   */
  batch(name: string, links: readonly SpanContext[], options?: SpanOptions): Span | undefined;
  /** The span context a W3C `traceparent` names, or undefined when it does not parse. */
  contextOf(traceparent: string): SpanContext | undefined;
  /** Sends what is left and stops; the process is closing. */
  shutdown(): Promise<void>;
}

/** The attribute names couponrush's spans carry besides the semantic conventions'. */
export const ATTR = {
  requestId: 'couponrush.request_id',
  couponId: 'couponrush.coupon_id',
  userId: 'couponrush.user_id',
  strategy: 'couponrush.strategy',
  outcome: 'couponrush.outcome',
  batchSize: 'couponrush.batch_size',
  queue: 'couponrush.queue',
  queuedMs: 'couponrush.queued_ms',
} as const;

/** SpanKind's values (the API's enum, without importing the API at run time). */
export const KIND = { internal: 0 as SpanKind, server: 1 as SpanKind, client: 2 as SpanKind, producer: 3 as SpanKind, consumer: 4 as SpanKind } as const;

/** SpanStatusCode.ERROR (the API's enum, without importing the API at run time). */
export const STATUS_ERROR = 2;

/** The longest value a `traceparent` can have (version 00 is exactly 55 characters). */
export const MAX_TRACEPARENT = 55;

/** The W3C `traceparent` of a span (version 00): what the queue carries to the worker. */
export function traceparentOf(context: SpanContext): string {
  return `00-${context.traceId}-${context.spanId}-0${context.traceFlags & 1}`;
}

/** The `traceparent` to carry into a queued issuance: a sampled span's, else '' (nothing to follow). */
export function carriedTraceparent(span: Span | undefined): string {
  return span === undefined ? '' : traceparentOf(span.spanContext());
}

/**
 * A span over work done for many requests (a Lua call, a Kafka send, a group commit) when one of
 * them is traced: linked to each traced one, and each of them linked back to it, so that from a
 * request's trace one reaches the batch, and from the batch every traced request in it. A batch
 * that serves no traced request has no span.
 */
export function batchSpan(tracing: Tracing | undefined, name: string, served: ReadonlyArray<Span | undefined>, options?: SpanOptions): Span | undefined {
  if (tracing === undefined) return undefined;
  let links: SpanContext[] | undefined;
  for (const s of served) if (s !== undefined) (links ??= []).push(s.spanContext());
  if (links === undefined) return undefined;
  const span = tracing.batch(name, links, options);
  if (span !== undefined) {
    const context = span.spanContext();
    for (const s of served) s?.addLink({ context });
  }
  return span;
}

/** Ends a span (if there is one) with an error status when `err` is set. */
export function endSpan(span: Span | undefined, err?: unknown): void {
  if (span === undefined) return;
  if (err !== undefined) {
    span.recordException(err instanceof Error ? err : String(err));
    span.setStatus({ code: STATUS_ERROR, message: err instanceof Error ? err.message : String(err) });
  }
  span.end();
}

/** The tracer for these settings, or undefined (and no SDK loaded) when tracing is off. */
export async function openTracing(settings: TracingSettings | undefined, linkLimit: number, log: Logger): Promise<Tracing | undefined> {
  if (settings === undefined) return undefined;
  const { otelTracing } = await import('./sdk.js');
  return otelTracing(settings, linkLimit, log);
}
