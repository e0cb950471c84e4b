// The security headers of the pages the API serves itself (the console, Swagger UI at /docs).
import type { FastifyReply } from 'fastify';

/** A page may talk to its own origin only; it runs no inline script and cannot be framed. */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
} as const;

export function setPageHeaders(reply: FastifyReply): void {
  void reply.headers(PAGE_HEADERS);
}
