// The console's only door to the server: the admin token from sessionStorage as a bearer header on
// every call (no cookie: another site's page cannot make the browser send it), problem+json
// errors as values, and the live stream read as server-sent events over fetch (EventSource
// cannot send a header).
import { createParser } from 'eventsource-parser';

const TOKEN_KEY = 'couponrush.adminToken';

export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (t: string) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export interface FieldError {
  pointer: string;
  detail: string;
}

export interface Problem {
  status: number;
  code: string;
  title: string;
  detail?: string;
  errors?: FieldError[];
}

export type Result<T> = { ok: true; value: T } | { ok: false; problem: Problem };

/** Any non-2xx: the server's problem+json, or one made up from what the network said. */
async function problemOf(response: Response): Promise<Problem> {
  try {
    const body = (await response.json()) as Partial<Problem>;
    if (typeof body.code === 'string') return { status: response.status, code: body.code, title: body.title ?? body.code, ...(body.detail === undefined ? {} : { detail: body.detail }), ...(body.errors === undefined ? {} : { errors: body.errors }) };
  } catch {
    // not JSON: fall through
  }
  return { status: response.status, code: `HTTP_${response.status}`, title: response.statusText || 'request failed' };
}

export async function call<T>(method: 'GET' | 'POST', path: string, body?: unknown, with_token = token.get()): Promise<Result<T>> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (with_token !== null) headers.authorization = `Bearer ${with_token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response: Response;
  try {
    response = await fetch(path, { method, headers, cache: 'no-store', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  } catch (err) {
    return { ok: false, problem: { status: 0, code: 'NETWORK', title: 'the server did not answer', detail: (err as Error).message } };
  }
  if (!response.ok) return { ok: false, problem: await problemOf(response) };
  return { ok: true, value: (await response.json()) as T };
}

export const isAuthProblem = (p: Problem) => p.status === 401 || p.status === 403;

// ---- what the server sends (src/console/feed.ts, src/routes/console.ts, src/routes/schemas.ts) ----

export interface CampaignSample {
  id: number;
  name: string;
  strategy: string;
  total: number;
  persisted: number;
  admitted: number;
  remaining: number;
  status: CampaignStatus;
  issueStartsAt: string;
  issueEndsAt: string;
  soldOutAt: number | null;
  stream?: { length: number; lag: number | null; pending: number; dead: number };
}

export interface ConsoleSample {
  at: number;
  processes?: number;
  answers: Record<string, number>;
  answersPerSecond: Record<string, number>;
  latencyMs: { p50: number | null; p99: number | null };
  campaign?: CampaignSample;
  campaignUnreadable?: string;
}

export type CampaignStatus = 'UPCOMING' | 'OPEN' | 'SOLD_OUT' | 'ENDED';

export interface Coupon {
  id: number;
  name: string;
  totalQuantity: number;
  issuedCount: number;
  remaining: number;
  issueStartsAt: string;
  issueEndsAt: string;
  status: CampaignStatus;
  strategy: string;
}

export interface ConsoleInfo {
  defaultStrategy: string;
  strategies: Array<{ name: string; summary: string; unavailable: string | null }>;
  stores: { database: string; redis: boolean; kafka: boolean };
  sampleIntervalMs: number;
}

/**
 * Follows the live stream until `signal` aborts; reconnects after a break. `onState` says whether
 * samples are flowing, so the page never shows stale numbers as live.
 */
export async function follow(
  couponId: number | undefined,
  onSample: (s: ConsoleSample) => void,
  onState: (state: 'live' | 'reconnecting' | Problem) => void,
  signal: AbortSignal,
): Promise<void> {
  const path = `/admin/console/stream${couponId === undefined ? '' : `?coupon=${couponId}`}`;
  while (!signal.aborted) {
    try {
      const response = await fetch(path, { headers: { authorization: `Bearer ${token.get() ?? ''}`, accept: 'text/event-stream' }, cache: 'no-store', signal });
      if (!response.ok || response.body === null) {
        const problem = await problemOf(response);
        onState(problem);
        if (isAuthProblem(problem)) return;
      } else {
        const parser = createParser({
          onEvent: (event) => {
            if (event.event !== 'sample') return;
            onState('live');
            onSample(JSON.parse(event.data) as ConsoleSample);
          },
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.feed(value);
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    onState('reconnecting');
    await new Promise((r) => setTimeout(r, 2_000));
  }
}
