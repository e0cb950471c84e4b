// Batches admissions: the attempts (admit-enqueue, or admit-produce) on one campaign that arrive while Redis is busy
// with the previous call, or within one event-loop turn, go to Redis as ONE script call. Under a
// stampede that is one EVALSHA, one socket write and one reply for tens of requests instead of one
// each — CPU saved in the API and in Redis, which share the machine with everything else.
//
// At most one call per campaign is in flight. A lone attempt leaves at the end of its turn
// (setImmediate), so an idle service adds no wait. The script decides a batch in arrival order,
// each attempt exactly as if it ran alone, so the outcome of every request is the one it would get
// unbatched. If the call fails, every attempt in it fails with the same error (the route answers
// 503; nothing was admitted, or — on a lost reply — the request is as undetermined as a lone one).
//
// With tracing on, each call has a span (`redis.admit_batch`) linked to the admission spans of the
// sampled requests in it (and they to it), and each sampled admission carries its `traceparent`
// into what the script queues.
import { ATTR, batchSpan, carriedTraceparent, endSpan, KIND, type Span, type Tracing } from '../tracing/tracing.js';
import type { CampaignKeys } from './keys.js';
import type { AdmissionAttempt } from './scripts.js';

/** The batch script: admit-enqueue.lua (redis-lua-async*) or admit-produce.lua (redis-lua-kafka); one result per attempt. */
export type AdmitBatch<R> = (keys: CampaignKeys, couponId: string, attempts: readonly AdmissionAttempt[]) => Promise<R[]>;

/** Attempts per script call: bounds how long Redis runs one script (it serves nobody else meanwhile). */
export const MAX_BATCH = 256;

interface Waiting<R> extends AdmissionAttempt {
  readonly resolve: (result: R) => void;
  readonly reject: (err: unknown) => void;
  /** The admission's span (tracing on). */
  readonly span: Span | undefined;
}

class CampaignQueue<R> {
  readonly waiting: Waiting<R>[] = [];
  inFlight = false;
  scheduled = false;

  constructor(
    readonly keys: CampaignKeys,
    readonly couponId: string,
  ) {}
}

export class AdmissionBatcher<R> {
  private readonly queues = new Map<string, CampaignQueue<R>>();
  private readonly flushLater = (queue: CampaignQueue<R>) => this.flush(queue);

  constructor(
    private readonly admitBatch: AdmitBatch<R>,
    /** Present when tracing is on. */
    private readonly tracing?: Tracing,
  ) {}

  /** Decides one attempt: ACCEPTED (admitted and queued), MISSING or a refusal. `span`: the admission's, when traced. */
  admit(keys: CampaignKeys, couponId: string, userId: string, nowMs: number, requestId: string, span?: Span): Promise<R> {
    let queue = this.queues.get(couponId);
    if (queue === undefined) {
      queue = new CampaignQueue<R>(keys, couponId);
      this.queues.set(couponId, queue);
    }
    const q = queue;
    return new Promise((resolve, reject) => {
      q.waiting.push({ userId, nowMs, requestId, traceparent: carriedTraceparent(span), span, resolve, reject });
      this.schedule(q);
    });
  }

  private schedule(queue: CampaignQueue<R>): void {
    if (queue.inFlight || queue.scheduled) return;
    queue.scheduled = true;
    setImmediate(this.flushLater, queue);
  }

  private flush(queue: CampaignQueue<R>): void {
    queue.scheduled = false;
    const batch = queue.waiting.splice(0, MAX_BATCH);
    queue.inFlight = true;
    const span =
      this.tracing === undefined
        ? undefined
        : batchSpan(this.tracing, 'redis.admit_batch', batch.map((w) => w.span), {
            kind: KIND.client,
            attributes: { 'db.system.name': 'redis', [ATTR.couponId]: Number(queue.couponId), [ATTR.batchSize]: batch.length },
          });
    this.admitBatch(queue.keys, queue.couponId, batch).then(
      (results) => {
        endSpan(span);
        for (let i = 0; i < batch.length; i++) batch[i]!.resolve(results[i]!);
        this.settled(queue);
      },
      (err: unknown) => {
        endSpan(span, err);
        for (const attempt of batch) attempt.reject(err);
        this.settled(queue);
      },
    );
  }

  private settled(queue: CampaignQueue<R>): void {
    queue.inFlight = false;
    if (queue.waiting.length > 0) this.schedule(queue);
    else this.queues.delete(queue.couponId);
  }
}
