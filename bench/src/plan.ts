// The request plan of a stampede: which user sends each request, in what order. Every user sends
// at least once, the remaining requests are retries by random users, and the whole list is
// shuffled so a user's retry can race their first attempt — the case that double-issues.
import { randomInt } from 'node:crypto';
import { signUserToken } from '../../src/http/auth.js';

export interface BenchUser {
  readonly index: number;
  readonly id: string;
  /** The full `Authorization` header value. */
  readonly authorization: string;
}

export interface RequestPlan {
  readonly users: readonly BenchUser[];
  /** Indexes into `users`, in sending order. */
  readonly order: Uint32Array;
}

/** Same-length ids, so every response body has the same size (the ceiling server mimics it). */
export function benchUserId(index: number, users: number): string {
  return `bench-${String(index).padStart(Math.max(6, String(users - 1).length), '0')}`;
}

/** Mints one JWT per user; `onProgress` is called every few thousand tokens. */
export function mintUsers(jwtSecret: string, count: number, onProgress?: (done: number) => void): BenchUser[] {
  const users: BenchUser[] = new Array<BenchUser>(count);
  for (let i = 0; i < count; i++) {
    const id = benchUserId(i, count);
    users[i] = { index: i, id, authorization: `Bearer ${signUserToken(jwtSecret, id, 24 * 3600)}` };
    if (onProgress !== undefined && (i + 1) % 2_000 === 0) onProgress(i + 1);
  }
  onProgress?.(count);
  return users;
}

/** Every user once plus `requests - users` random retries, shuffled (Fisher–Yates). */
export function buildOrder(users: number, requests: number): Uint32Array {
  if (users < 1) throw new RangeError('at least one user');
  if (requests < users) throw new RangeError('requests must be at least users');
  const order = new Uint32Array(requests);
  for (let i = 0; i < users; i++) order[i] = i;
  for (let i = users; i < requests; i++) order[i] = randomInt(users);
  for (let i = requests - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}
