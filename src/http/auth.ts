// Who is calling: users by HS256 JWT (`sub` = user id) or, behind an authenticating gateway, by a
// trusted X-User-Id header; operators by the admin bearer token.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { createSigner, createVerifier } from 'fast-jwt';
import type { AuthMode } from '../config.js';
import { isValidUserId, USER_ID_RULE } from '../coupons/ids.js';
import { HttpProblem } from './problem.js';

export const USER_ID_HEADER = 'x-user-id';

/** Returns the caller's user id, read from the request's headers, or throws a 401 problem. */
export type UserAuthenticator = (headers: IncomingHttpHeaders) => string;

function bearer(headers: IncomingHttpHeaders): string | undefined {
  const header = headers.authorization;
  if (header === undefined) return undefined;
  const match = /^Bearer ([^\s]+)$/i.exec(header);
  return match?.[1];
}

const unauthenticated = (detail: string) => new HttpProblem('UNAUTHENTICATED', detail, { 'www-authenticate': 'Bearer' });

/**
 * A token minted elsewhere with the full JWT_MAX_TTL_S may reach us with its `exp` a little further
 * away than that when the minting host's clock runs ahead of ours.
 */
const CLOCK_SKEW_S = 60;

export function createUserAuthenticator(mode: AuthMode, jwtSecret: string, maxTtlS: number): UserAuthenticator {
  if (mode === 'header') {
    return (headers) => {
      const userId = headers[USER_ID_HEADER];
      if (userId === undefined) throw unauthenticated(`missing ${USER_ID_HEADER} header`);
      if (!isValidUserId(userId)) throw unauthenticated(`${USER_ID_HEADER} must be ${USER_ID_RULE}`);
      return userId;
    };
  }
  const verify = createVerifier({
    key: jwtSecret,
    algorithms: ['HS256'],
    // exp is required: a token without one would live for ever, past any maximum lifetime.
    requiredClaims: ['sub', 'exp'],
    // No verified-token cache: in a stampede each user sends a request or two, so the cache
    // mostly missed while hashing every token for its key; off, the issue route measured +14-17%.
    cache: false,
  });
  const maxTtlMs = (maxTtlS + CLOCK_SKEW_S) * 1000;
  return (headers) => {
    const token = bearer(headers);
    if (token === undefined) throw unauthenticated('missing Authorization: Bearer <token> header');
    let payload: { sub?: unknown; exp: number };
    try {
      payload = verify(token) as { sub?: unknown; exp: number };
    } catch (err) {
      throw unauthenticated(`invalid token: ${(err as Error).message}`);
    }
    // fast-jwt has checked that exp is a number in the future; a lifetime is only bounded here.
    if (payload.exp * 1000 - Date.now() > maxTtlMs) throw unauthenticated(`invalid token: exp is more than JWT_MAX_TTL_S (${maxTtlS} s) away`);
    if (!isValidUserId(payload.sub)) throw unauthenticated(`token sub must be ${USER_ID_RULE}`);
    return payload.sub;
  };
}

/** Throws 401 unless the request carries the admin token (compared in constant time). */
export function createAdminAuthenticator(adminToken: string): (request: { readonly headers: IncomingHttpHeaders }) => void {
  const expected = createHash('sha256').update(adminToken).digest();
  return (request) => {
    const token = bearer(request.headers);
    if (token === undefined) throw unauthenticated('missing Authorization: Bearer <admin token> header');
    const given = createHash('sha256').update(token).digest();
    if (!timingSafeEqual(given, expected)) throw new HttpProblem('FORBIDDEN', 'admin token required');
  };
}

/** Mints a user JWT (`couponrush token`, tests, the bench). */
export function signUserToken(jwtSecret: string, userId: string, ttlSeconds = 24 * 3600): string {
  if (jwtSecret === '') throw new Error('JWT_SECRET is not set');
  if (!isValidUserId(userId)) throw new Error(`user id must be ${USER_ID_RULE}`);
  return createSigner({ key: jwtSecret, algorithm: 'HS256', expiresIn: ttlSeconds * 1000 })({ sub: userId });
}
