// RFC 9457 problem details: the one place that turns refusals and errors into HTTP responses
// with a stable machine-readable `code`, and the one table that gives each code its status.
// A 5xx never carries internals; bad input is a 4xx (docs/architecture.md, invariant 6).
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import type { Refusal } from '../coupons/domain.js';
import { OutcomeUnknownError } from '../db/index.js';
import { isDependencyUnavailable } from '../util/dependency-errors.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/**
 * Every problem code this API answers with, its HTTP status and its title: the one place a code's
 * status is decided (503 included). Call sites name the code; the status follows from it.
 */
const PROBLEMS = {
  VALIDATION_FAILED: [400, 'The request is not valid'],
  BAD_URL: [400, 'The request URL cannot be routed'],
  MALFORMED_REQUEST: [400, 'The request is not valid HTTP'],
  MALFORMED_JSON: [400, 'The request body is not valid JSON'],
  STRATEGY_UNAVAILABLE: [400, 'The requested strategy is not available with this configuration'],
  UNAUTHENTICATED: [401, 'Authentication is required'],
  FORBIDDEN: [403, 'Not allowed'],
  NOT_FOUND: [404, 'No such resource'],
  COUPON_NOT_FOUND: [404, 'No such coupon'],
  NOT_ISSUED: [404, 'This user has not been issued this coupon'],
  METHOD_NOT_ALLOWED: [405, 'Method not allowed'],
  REQUEST_TIMEOUT: [408, 'The request was not received in time'],
  ALREADY_ISSUED: [409, 'This user already has this coupon'],
  SOLD_OUT: [410, 'The coupon is sold out'],
  PAYLOAD_TOO_LARGE: [413, 'The request body is too large'],
  UNSUPPORTED_MEDIA_TYPE: [415, 'The request body has an unsupported media type'],
  ISSUE_WINDOW_NOT_OPEN: [422, 'The issue window has not opened yet'],
  ISSUE_WINDOW_CLOSED: [422, 'The issue window has closed'],
  RATE_LIMITED: [429, 'Too many requests, retry after the given delay'],
  HEADERS_TOO_LARGE: [431, 'The request headers are too large'],
  INTERNAL_ERROR: [500, 'Internal error'],
  SERVICE_UNAVAILABLE: [503, 'Temporarily unavailable, nothing was issued; retry shortly'],
  OUTCOME_UNKNOWN: [503, 'A store failed mid-issue; this user may hold the coupon'],
  OVERLOADED: [503, 'The server is overloaded, retry after the given delay'],
  TIMEOUT: [504, 'The request took too long; its outcome is unknown'],
} as const satisfies Record<string, readonly [number, string]>;

export type ProblemCode = keyof typeof PROBLEMS;

/** The HTTP status a problem code is answered with. */
export function statusOf(code: ProblemCode): number {
  return PROBLEMS[code][0];
}

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

/** What an error raised outside any route is answered with (see FRAMEWORK_ERRORS). */
export interface FrameworkProblem {
  readonly status: number;
  readonly code: ProblemCode;
  readonly detail?: string;
}

/**
 * Errors raised outside any route, by Fastify's router (`frameworkErrors`) or by Node's HTTP
 * parser (`clientError`, no request object at all), by their `code`; anything else the parser
 * refuses is MALFORMED_REQUEST. The detail never echoes the request: it may not even be text.
 * `status` only where the framework's own differs from the code's: an over-long path segment is
 * 414 URI Too Long, a URL that cannot be routed all the same.
 */
const FRAMEWORK_ERRORS: Readonly<Record<string, { code: ProblemCode; status?: number; detail?: string }>> = {
  FST_ERR_BAD_URL: { code: 'BAD_URL', detail: 'the path is not valid percent-encoded UTF-8' },
  FST_ERR_MAX_PARAM_LENGTH: { code: 'BAD_URL', status: 414, detail: 'a path segment is longer than any route takes' },
  HPE_HEADER_OVERFLOW: { code: 'HEADERS_TOO_LARGE' },
  ERR_HTTP_REQUEST_TIMEOUT: { code: 'REQUEST_TIMEOUT' },
};

/** The answer to an error raised outside any route (see FRAMEWORK_ERRORS); 500 for one not listed. */
export function frameworkProblem(errorCode: string | undefined, parser: boolean): FrameworkProblem {
  const known = errorCode === undefined ? undefined : FRAMEWORK_ERRORS[errorCode];
  const { code, status, detail } = known ?? { code: parser ? 'MALFORMED_REQUEST' : 'INTERNAL_ERROR' };
  return { status: status ?? statusOf(code), code, ...(detail === undefined ? {} : { detail }) };
}

/** Thrown from handlers and hooks for an expected refusal; the error handler renders it. */
export class HttpProblem extends Error {
  readonly status: number;

  constructor(
    readonly code: ProblemCode,
    readonly detail?: string,
    readonly headers?: Readonly<Record<string, string>>,
    readonly errors?: FieldError[],
  ) {
    super(detail ?? PROBLEMS[code][1]);
    this.name = 'HttpProblem';
    this.status = statusOf(code);
  }
}

/** The problem document; `status` is the code's unless the framework chose another (FRAMEWORK_ERRORS). */
export function problemBody(code: ProblemCode, detail?: string, errors?: FieldError[], status = statusOf(code)): Problem {
  const body: Problem = { type: `urn:couponrush:problem:${code}`, title: PROBLEMS[code][1], status, code };
  if (detail !== undefined) body.detail = detail;
  if (errors !== undefined && errors.length > 0) body.errors = errors;
  return body;
}

export function sendProblem(reply: FastifyReply, code: ProblemCode, detail?: string, errors?: FieldError[]): FastifyReply {
  return sendProblemAs(reply, statusOf(code), code, detail, errors);
}

/** Only for an error that comes with a status of its own (the framework's, see FRAMEWORK_ERRORS). */
function sendProblemAs(reply: FastifyReply, status: number, code: ProblemCode, detail?: string, errors?: FieldError[]): FastifyReply {
  return reply.code(status).type(PROBLEM_CONTENT_TYPE).send(problemBody(code, detail, errors, status));
}

/** Answers an error raised outside any route (frameworkErrors) with its problem. */
export function sendFrameworkProblem(reply: FastifyReply, { status, code, detail }: FrameworkProblem): FastifyReply {
  return sendProblemAs(reply, status, code, detail);
}

/** Where each schema violation is, as a JSON pointer into the request part it concerns. */
function fieldErrors(validation: NonNullable<FastifyError['validation']>): FieldError[] {
  return validation.map((v) => {
    const params = v.params as { missingProperty?: unknown; additionalProperty?: unknown };
    const leaf = v.keyword === 'required' ? params.missingProperty : v.keyword === 'additionalProperties' ? params.additionalProperty : undefined;
    return { pointer: `#${v.instancePath}${typeof leaf === 'string' ? `/${leaf}` : ''}`, detail: v.message ?? 'is not valid' };
  });
}

/**
 * A whole answer, built before it is written: the issue route's answers take this shape so that
 * Fastify's route and the node:http front (routes/issue-handler.ts) send the same bytes.
 * `headers`: beyond x-request-id, content-type and content-length (retry-after, www-authenticate).
 */
export interface Answer {
  readonly status: number;
  readonly contentType: string;
  readonly body: string;
  readonly length: number;
  readonly headers: Readonly<Record<string, string>> | undefined;
}

export const PROBLEM_JSON_UTF8 = `${PROBLEM_CONTENT_TYPE}; charset=utf-8`;
const JSON_UTF8 = 'application/json; charset=utf-8';

/** A JSON answer; the body is ASCII-safe JSON text (its length is its byte count only then, so it is counted). */
export function jsonAnswer(status: number, body: string, contentType = JSON_UTF8, headers?: Readonly<Record<string, string>>): Answer {
  return { status, contentType, body, length: Buffer.byteLength(body), headers };
}

/** The problem document as an answer (the same bytes Fastify's serializer makes of `problemBody`). */
export function problemAnswer(code: ProblemCode, detail?: string, headers?: Readonly<Record<string, string>>, errors?: FieldError[]): Answer {
  return jsonAnswer(statusOf(code), JSON.stringify(problemBody(code, detail, errors)), PROBLEM_JSON_UTF8, headers);
}

/** Sends an answer through Fastify (a string payload with its type is sent as it is). */
export function sendAnswer(reply: FastifyReply, answer: Answer): FastifyReply {
  if (answer.headers !== undefined) void reply.headers(answer.headers);
  return reply.code(answer.status).type(answer.contentType).send(answer.body);
}

/** Refusals with a fixed answer, serialised once: the stampede's 409s and 410s cost no JSON work. */
const REFUSAL_CODES = {
  ALREADY_ISSUED: 'ALREADY_ISSUED',
  SOLD_OUT: 'SOLD_OUT',
  WINDOW_NOT_OPEN: 'ISSUE_WINDOW_NOT_OPEN',
  WINDOW_CLOSED: 'ISSUE_WINDOW_CLOSED',
  COUPON_NOT_FOUND: 'COUPON_NOT_FOUND',
} as const satisfies Record<Exclude<Refusal['kind'], 'UNAVAILABLE'>, ProblemCode>;

const REFUSALS = Object.fromEntries(Object.entries(REFUSAL_CODES).map(([kind, code]) => [kind, problemAnswer(code)])) as Record<
  keyof typeof REFUSAL_CODES,
  Answer
>;

const RETRY_AFTER_1 = Object.freeze({ 'retry-after': '1' });

/**
 * The answer to a refused issue attempt. Refusals are expected outcomes, so they are answered,
 * not thrown: an exception per 409/410 captured a stack trace each and cost ~20% of the route's
 * throughput. The fixed ones are built once.
 */
export function refusalAnswer(outcome: Refusal): Answer {
  if (outcome.kind === 'UNAVAILABLE') return problemAnswer('SERVICE_UNAVAILABLE', outcome.reason, RETRY_AFTER_1);
  return REFUSALS[outcome.kind];
}

const OUTCOME_UNKNOWN_DETAIL =
  'the store failed after the decisive command went out: GET /coupons/{id}/issues/me tells whether the coupon was issued, and a retry never issues a second one';
/** The issue attempt may or may not have issued the coupon (see OUTCOME_UNKNOWN in the domain). */
export const OUTCOME_UNKNOWN_ANSWER = problemAnswer('OUTCOME_UNKNOWN', OUTCOME_UNKNOWN_DETAIL, RETRY_AFTER_1);
const UNAVAILABLE_ANSWER = problemAnswer('SERVICE_UNAVAILABLE', undefined, RETRY_AFTER_1);
const INTERNAL_ERROR_ANSWER = problemAnswer('INTERNAL_ERROR');

/** A thrown (or returned) problem as an answer. */
export function answerForProblem(problem: HttpProblem): Answer {
  return problemAnswer(problem.code, problem.detail, problem.headers, problem.errors);
}

/** Where an error's answer is logged: a request's logger, or the process's with the request id. */
export interface ErrorLog {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * The answer to an error a handler threw, other than the framework's own (validation, body
 * parsing): a problem as thrown, an unknown outcome, a store that is away (503, nothing done), or
 * a 500 that says nothing of the internals.
 */
export function answerForError(error: unknown, log: ErrorLog): Answer {
  if (error instanceof HttpProblem) return answerForProblem(error);
  // A safety net: strategies turn an unknown commit into the OUTCOME_UNKNOWN outcome themselves.
  if (error instanceof OutcomeUnknownError) {
    log.warn({ err: error }, 'outcome unknown');
    return OUTCOME_UNKNOWN_ANSWER;
  }
  if (isDependencyUnavailable(error)) {
    log.warn({ err: error }, 'dependency unavailable');
    return UNAVAILABLE_ANSWER;
  }
  log.error({ err: error }, 'unhandled error');
  return INTERNAL_ERROR_ANSWER;
}

export function registerProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (!(error instanceof HttpProblem) && !(error instanceof OutcomeUnknownError)) {
      if (error.validation !== undefined) {
        return sendProblem(reply, 'VALIDATION_FAILED', error.message, fieldErrors(error.validation));
      }
      const status = error.statusCode ?? 500;
      if (status >= 400 && status < 500) {
        if (status === 413) return sendProblem(reply, 'PAYLOAD_TOO_LARGE');
        if (status === 415) return sendProblem(reply, 'UNSUPPORTED_MEDIA_TYPE', error.message);
        if (error instanceof SyntaxError || error.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || error.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
          return sendProblem(reply, 'MALFORMED_JSON', error.message);
        }
        // Any other 4xx the framework raised keeps its status: the request is at fault, as it says.
        return sendProblemAs(reply, status, 'VALIDATION_FAILED', error.message);
      }
    }
    return sendAnswer(reply, answerForError(error, request.log));
  });

  app.setNotFoundHandler((request, reply) => sendProblem(reply, 'NOT_FOUND', `${request.method} ${request.url.split('?')[0]}`));
}
