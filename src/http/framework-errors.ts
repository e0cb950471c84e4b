// Answers to errors raised outside any route: a URL Fastify's router cannot decode, and what
// Node's HTTP parser refuses before there is a request at all (malformed request line, headers
// over the limit, a request not received in time). Both are RFC 9457 problems with an
// x-request-id, like every other answer; their codes and statuses are in problem.ts.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { frameworkProblem, problemBody, PROBLEM_JSON_UTF8, sendFrameworkProblem } from './problem.js';
import { generatedRequestId, REQUEST_ID_HEADER } from './protection.js';

/** Fastify's `frameworkErrors`: no hook has run, so the request id is echoed here. */
export function answerFrameworkError(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const problem = frameworkProblem(error.code, false);
  if (problem.status >= 500) request.log.error({ err: error }, 'framework error');
  void sendFrameworkProblem(reply.header(REQUEST_ID_HEADER, request.id), problem);
}

interface ParserError extends Error {
  code?: string;
}

/**
 * Fastify's `clientErrorHandler` (node:http's 'clientError'): answers on the raw socket when it
 * still can, then destroys it, as Node's own handler does. A connection reset has no one to answer.
 */
export function answerClientError(error: ParserError, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  // A response already under way on this connection must not get a second status line inside it.
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (socket.writable && (inFlight == null || inFlight.headersSent !== true)) {
    const { status, code, detail } = frameworkProblem(error.code, true);
    const body = JSON.stringify(problemBody(code, detail, undefined, status));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
        `${REQUEST_ID_HEADER}: ${generatedRequestId()}\r\n` +
        `content-type: ${PROBLEM_JSON_UTF8}\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\n` +
        'connection: close\r\n\r\n' +
        body,
    );
  }
  socket.destroy(error);
}
