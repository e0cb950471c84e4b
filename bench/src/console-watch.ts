// A console left open: follows GET /admin/console/stream like the browser page does, for
// `bench --watch-console` (the A/B of what an open console costs) and for the tests, which
// compare what it was told with the database.
import http from 'node:http';
import { createParser } from 'eventsource-parser';
import type { ConsoleSample } from '../../src/console/feed.js';

export interface ConsoleWatch {
  /** Every sample received so far, oldest first. */
  readonly samples: readonly ConsoleSample[];
  /** Resolves with the first sample received from now on that `test` accepts. */
  until(test: (s: ConsoleSample) => boolean, timeoutMs?: number): Promise<ConsoleSample>;
  close(): void;
}

/** Opens the stream; rejects with the status and body when the server refuses it. */
export function watchConsole(baseUrl: string, adminToken: string, couponId?: number): Promise<ConsoleWatch> {
  const samples: ConsoleSample[] = [];
  const waiters = new Set<{ test: (s: ConsoleSample) => boolean; resolve: (s: ConsoleSample) => void }>();
  const path = `/admin/console/stream${couponId === undefined ? '' : `?coupon=${couponId}`}`;
  return new Promise((resolve, reject) => {
    const req = http.get(new URL(path, baseUrl), { headers: { authorization: `Bearer ${adminToken}`, accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => reject(Object.assign(new Error(`console stream refused: ${res.statusCode} ${body}`), { status: res.statusCode, body })));
        return;
      }
      const parser = createParser({
        onEvent: (event) => {
          if (event.event !== 'sample') return;
          const sample = JSON.parse(event.data) as ConsoleSample;
          samples.push(sample);
          for (const w of waiters) {
            if (w.test(sample)) {
              waiters.delete(w);
              w.resolve(sample);
            }
          }
        },
      });
      res.setEncoding('utf8').on('data', (chunk: string) => parser.feed(chunk));
      res.on('error', () => undefined);
      resolve({
        samples,
        until(test, timeoutMs = 30_000) {
          return new Promise((ok, fail) => {
            const timer = setTimeout(() => {
              waiters.delete(w);
              fail(new Error(`no console sample matched within ${timeoutMs} ms; the last: ${JSON.stringify(samples.at(-1))}`));
            }, timeoutMs);
            const w = {
              test,
              resolve: (s: ConsoleSample) => {
                clearTimeout(timer);
                ok(s);
              },
            };
            waiters.add(w);
          });
        },
        close: () => req.destroy(),
      });
    });
    req.on('error', reject);
  });
}
