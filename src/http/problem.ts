// RFC 9457 problem details: the one place that turns refusals and errors into HTTP responses
// with a stable machine-readable `code`. A 5xx never carries internals.
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import type { Refusal } from '../coupons/domain.js';
import { OutcomeUnknownError } from '../db/index.js';
import { isDependencyUnavailable } from '../util/dependency-errors.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export type ProblemCode =
  | 'VALIDATION_FAILED'
  | 'BAD_URL'
  | 'MALFORMED_REQUEST'
  | 'HEADERS_TOO_LARGE'
  | 'REQUEST_TIMEOUT'
  | 'MALFORMED_JSON'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'UNAUTHENTICATED'
  | 'FORBIDDEN'
  | 'NOT_FOUND'
  | 'METHOD_NOT_ALLOWED'
  | 'COUPON_NOT_FOUND'
  | 'NOT_ISSUED'
  | 'ALREADY_ISSUED'
  | 'SOLD_OUT'
  | 'ISSUE_WINDOW_NOT_OPEN'
  | 'ISSUE_WINDOW_CLOSED'
  | 'STRATEGY_UNAVAILABLE'
  | 'SERVICE_UNAVAILABLE'
  | 'OUTCOME_UNKNOWN'
  | 'RATE_LIMITED'
  | 'OVERLOADED'
  | 'TIMEOUT'
  | 'INTERNAL_ERROR';

const TITLES: Record<ProblemCode, string> = {
  VALIDATION_FAILED: 'The request is not valid',
  BAD_URL: 'The request URL cannot be routed',
  MALFORMED_REQUEST: 'The request is not valid HTTP',
  HEADERS_TOO_LARGE: 'The request headers are too large',
  REQUEST_TIMEOUT: 'The request was not received in time',
  MALFORMED_JSON: 'The request body is not valid JSON',
  PAYLOAD_TOO_LARGE: 'The request body is too large',
  UNSUPPORTED_MEDIA_TYPE: 'The request body has an unsupported media type',
  UNAUTHENTICATED: 'Authentication is required',
  FORBIDDEN: 'Not allowed',
  NOT_FOUND: 'No such resource',
  METHOD_NOT_ALLOWED: 'Method not allowed',
  COUPON_NOT_FOUND: 'No such coupon',
  NOT_ISSUED: 'This user has not been issued this coupon',
  ALREADY_ISSUED: 'This user already has this coupon',
  SOLD_OUT: 'The coupon is sold out',
  ISSUE_WINDOW_NOT_OPEN: 'The issue window has not opened yet',
  ISSUE_WINDOW_CLOSED: 'The issue window has closed',
  STRATEGY_UNAVAILABLE: 'The requested strategy is not available with this configuration',
  SERVICE_UNAVAILABLE: 'Temporarily unavailable, nothing was issued; retry shortly',
  OUTCOME_UNKNOWN: 'A store failed mid-issue; this user may hold the coupon',
  RATE_LIMITED: 'Too many requests, retry after the given delay',
  OVERLOADED: 'The server is overloaded, retry after the given delay',
  TIMEOUT: 'The request took too long; its outcome is unknown',
  INTERNAL_ERROR: 'Internal error',
};

export interface Problem {
  type: string;
  title: string;
  status: number;
  code: ProblemCode;
  detail?: string;
  /** VALIDATION_FAILED: what is wrong where, as in RFC 9457's example (`pointer` into the body, `#/field`). */
  errors?: FieldError[];
}

export interface FieldError {
  pointer: string;
  detail: string;
}

/**
 * Errors raised outside any route, by Fastify's router (`frameworkErrors`) or by Node's HTTP
 * parser (`clientError`, no request object at all), by their `code`; anything else the parser
 * refuses is MALFORMED_REQUEST. The detail never echoes the request: it may not even be text.
 */
const FRAMEWORK_ERRORS: Readonly<Record<string, { status: number; code: ProblemCode; detail?: string }>> = {
  FST_ERR_BAD_URL: { status: 400, code: 'BAD_URL', detail: 'the path is not valid percent-encoded UTF-8' },
  FST_ERR_MAX_PARAM_LENGTH: { status: 414, code: 'BAD_URL', detail: 'a path segment is longer than any route takes' },
  HPE_HEADER_OVERFLOW: { status: 431, code: 'HEADERS_TOO_LARGE' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'REQUEST_TIMEOUT' },
};

/** The answer to an error raised outside any route (see FRAMEWORK_ERRORS); 500 for one not listed. */
export function frameworkProblem(errorCode: string | undefined, parser: boolean): { status: number; code: ProblemCode; detail?: string } {
  return (errorCode === undefined ? undefined : FRAMEWORK_ERRORS[errorCode]) ?? (parser ? { status: 400, code: 'MALFORMED_REQUEST' } : { status: 500, code: 'INTERNAL_ERROR' });
}

/** Thrown from handlers and hooks for an expected refusal; the error handler renders it. */
export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly code: ProblemCode,
    readonly detail?: string,
    readonly headers?: Readonly<Record<string, string>>,
    readonly errors?: FieldError[],
  ) {
    super(detail ?? TITLES[code]);
    this.name = 'HttpProblem';
  }
}

export function problemBody(status: number, code: ProblemCode, detail?: string, errors?: FieldError[]): Problem {
  const body: Problem = { type: `urn:couponrush:problem:${code}`, title: TITLES[code], status, code };
  if (detail !== undefined) body.detail = detail;
  if (errors !== undefined && errors.length > 0) body.errors = errors;
  return body;
}

export function sendProblem(reply: FastifyReply, status: number, code: ProblemCode, detail?: string, errors?: FieldError[]): FastifyReply {
  return reply.code(status).type(PROBLEM_CONTENT_TYPE).send(problemBody(status, code, detail, errors));
}

/** Where each schema violation is, as a JSON pointer into the request part it concerns. */
function fieldErrors(validation: NonNullable<FastifyError['validation']>): FieldError[] {
  return validation.map((v) => {
    const params = v.params as { missingProperty?: unknown; additionalProperty?: unknown };
    const leaf = v.keyword === 'required' ? params.missingProperty : v.keyword === 'additionalProperties' ? params.additionalProperty : undefined;
    return { pointer: `#${v.instancePath}${typeof leaf === 'string' ? `/${leaf}` : ''}`, detail: v.message ?? 'is not valid' };
  });
}

/** Refusals with a fixed answer, serialised once: the stampede's 409s and 410s cost no JSON work. */
const REFUSALS = Object.fromEntries(
  (
    [
      ['ALREADY_ISSUED', 409, 'ALREADY_ISSUED'],
      ['SOLD_OUT', 410, 'SOLD_OUT'],
      ['WINDOW_NOT_OPEN', 422, 'ISSUE_WINDOW_NOT_OPEN'],
      ['WINDOW_CLOSED', 422, 'ISSUE_WINDOW_CLOSED'],
      ['COUPON_NOT_FOUND', 404, 'COUPON_NOT_FOUND'],
    ] as const
  ).map(([kind, status, code]) => {
    const json = JSON.stringify(problemBody(status, code));
    return [kind, { status, json, body: Buffer.from(json) }];
  }),
) as Record<Exclude<Refusal['kind'], 'UNAVAILABLE'>, { status: number; json: string; body: Buffer }>;

/** The status and serialised body of a refusal with a fixed answer (early-answers.ts sends it raw). */
export function refusalAnswer(refusal: Exclude<Refusal, { kind: 'UNAVAILABLE' }>): { readonly status: number; readonly body: Buffer } {
  return REFUSALS[refusal.kind];
}

/**
 * Answers a refused issue attempt. Refusals are expected outcomes, so they are sent, not thrown:
 * an exception per 409/410 captured a stack trace each and cost ~20% of the route's throughput.
 */
export function sendRefusal(reply: FastifyReply, outcome: Refusal): FastifyReply {
  if (outcome.kind === 'UNAVAILABLE') {
    return sendProblem(reply.header('retry-after', '1'), 503, 'SERVICE_UNAVAILABLE', outcome.reason);
  }
  const refusal = REFUSALS[outcome.kind];
  return reply.code(refusal.status).type(PROBLEM_CONTENT_TYPE).send(refusal.json);
}

const OUTCOME_UNKNOWN_DETAIL =
  'the store failed after the decisive command went out: GET /coupons/{id}/issues/me tells whether the coupon was issued, and a retry never issues a second one';
const OUTCOME_UNKNOWN_JSON = JSON.stringify(problemBody(503, 'OUTCOME_UNKNOWN', OUTCOME_UNKNOWN_DETAIL));

/** The issue attempt may or may not have issued the coupon (see OUTCOME_UNKNOWN in the domain). */
export function sendOutcomeUnknown(reply: FastifyReply): FastifyReply {
  return reply.code(503).header('retry-after', '1').type(PROBLEM_CONTENT_TYPE).send(OUTCOME_UNKNOWN_JSON);
}

export function registerProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof HttpProblem) {
      if (error.headers !== undefined) void reply.headers(error.headers);
      return sendProblem(reply, error.status, error.code, error.detail, error.errors);
    }
    // A safety net: strategies turn an unknown commit into the OUTCOME_UNKNOWN outcome themselves.
    if (error instanceof OutcomeUnknownError) {
      request.log.warn({ err: error }, 'outcome unknown');
      return sendOutcomeUnknown(reply);
    }
    if (error.validation !== undefined) {
      return sendProblem(reply, 400, 'VALIDATION_FAILED', error.message, fieldErrors(error.validation));
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      if (status === 413) return sendProblem(reply, 413, 'PAYLOAD_TOO_LARGE');
      if (status === 415) return sendProblem(reply, 415, 'UNSUPPORTED_MEDIA_TYPE', error.message);
      if (error instanceof SyntaxError || error.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || error.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
        return sendProblem(reply, 400, 'MALFORMED_JSON', error.message);
      }
      return sendProblem(reply, status, 'VALIDATION_FAILED', error.message);
    }
    if (isDependencyUnavailable(error)) {
      request.log.warn({ err: error }, 'dependency unavailable');
      void reply.header('retry-after', '1');
      return sendProblem(reply, 503, 'SERVICE_UNAVAILABLE');
    }
    request.log.error({ err: error }, 'unhandled error');
    return sendProblem(reply, 500, 'INTERNAL_ERROR');
  });

  app.setNotFoundHandler((request, reply) => sendProblem(reply, 404, 'NOT_FOUND', `${request.method} ${request.url.split('?')[0]}`));
}
