// local: an in-process admission gate (issued count + user set per coupon, rebuilt from the
// database on first use) in front of group commit: admitted requests are written many per
// statement, a few milliseconds apart, and each is answered 201 only after its row committed.
// The embedded default. Exact with ONE API process: the gate's memory is not shared.
import type { Logger } from '../../util/logger.js';
import { OutcomeUnknownError, type Db, type Queryable } from '../../db/index.js';
import { ALREADY_ISSUED, ISSUED, OUTCOME_UNKNOWN, SOLD_OUT, unavailable, type Coupon, type IssueOutcome } from '../domain.js';
import { findIssue, insertIssues, issuedCount, loadIssuedUsers } from '../repository.js';
import type { IssueStrategy, StrategyModule } from './types.js';

/** How long an idle gate waits to gather a batch; under load batches form while a write is in flight. */
const GROUP_COMMIT_DELAY_MS = 2;
const MAX_BATCH = 1_000;

interface GateState {
  issued: number;
  readonly users: Set<string>;
}

interface Admitted {
  readonly couponId: number;
  readonly userId: string;
  readonly issuedAt: Date;
  readonly settle: (outcome: IssueOutcome) => void;
}

class LocalGate implements IssueStrategy {
  private readonly states = new Map<number, GateState>();
  private readonly loading = new Map<number, Promise<GateState>>();
  private queue: Admitted[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  /** Batch writes and state loads run one at a time, so a load never misses a write in flight. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly db: Db,
    private readonly log: Logger,
  ) {}

  async issue(coupon: Coupon, userId: string, now: Date): Promise<IssueOutcome> {
    const state = this.states.get(coupon.id) ?? (await this.load(coupon.id));
    if (state.users.has(userId)) return ALREADY_ISSUED;
    if (state.issued >= coupon.totalQuantity) return SOLD_OUT;
    state.users.add(userId);
    state.issued++;
    return new Promise<IssueOutcome>((settle) => {
      this.queue.push({ couponId: coupon.id, userId, issuedAt: now, settle });
      this.scheduleFlush();
    });
  }

  async close(): Promise<void> {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    await this.serial(() => this.flushAll());
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private load(couponId: number): Promise<GateState> {
    let pending = this.loading.get(couponId);
    if (pending === undefined) {
      pending = this.serial(async () => {
        // One transaction, so the count and the users are of the same moment.
        const state = await this.db.transaction(async (tx) => ({
          issued: (await issuedCount(tx, couponId)) ?? 0,
          users: new Set(await loadIssuedUsers(tx, couponId)),
        }));
        // Admissions still queued are not in the database yet, but they are promised.
        for (const a of this.queue) {
          if (a.couponId === couponId && !state.users.has(a.userId)) {
            state.users.add(a.userId);
            state.issued++;
          }
        }
        this.states.set(couponId, state);
        return state;
      }).finally(() => this.loading.delete(couponId));
      this.loading.set(couponId, pending);
    }
    return pending;
  }

  private scheduleFlush(): void {
    if (this.flushTimer !== undefined) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.serial(() => this.flushAll());
    }, GROUP_COMMIT_DELAY_MS);
  }

  private async flushAll(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.length <= MAX_BATCH ? this.queue : this.queue.slice(0, MAX_BATCH);
      this.queue = this.queue.length <= MAX_BATCH ? [] : this.queue.slice(MAX_BATCH);
      await this.writeBatch(batch);
    }
  }

  private async writeBatch(batch: Admitted[]): Promise<void> {
    let inserted: Set<string>;
    try {
      // A transaction, not a lone statement: if the COMMIT's answer is lost, transaction() asks
      // the server what became of it, so the batch still gets a true answer.
      const rows = await this.db.transaction((tx) => insertIssues(tx, batch), { committed: (q) => allHeld(q, batch) });
      inserted = new Set(rows.map((r) => `${r.couponId}\u0000${r.userId}`));
    } catch (err) {
      // Nothing of the batch was written (or, OutcomeUnknownError, it cannot be known whether it
      // was): answer so, and rebuild the gates of the coupons involved from the database before
      // they admit anyone else.
      this.log.error({ err, batch: batch.length }, 'local: group commit failed');
      for (const a of batch) this.states.delete(a.couponId);
      const outcome = err instanceof OutcomeUnknownError ? OUTCOME_UNKNOWN : unavailable('database write failed');
      for (const a of batch) a.settle(outcome);
      return;
    }
    for (const a of batch) {
      if (inserted.has(`${a.couponId}\u0000${a.userId}`)) {
        a.settle(ISSUED);
      } else {
        // Someone outside this gate wrote the row first; our count is off, so rebuild it.
        this.states.delete(a.couponId);
        a.settle(ALREADY_ISSUED);
      }
    }
  }
}

export const local: StrategyModule = {
  summary: 'in-process gate + group commit, 201 after commit — fastest without Redis, exact with one API process only',
  requires: [],
  admission: 'process',
  queued: false,
  mayOverIssue: false,
  create: ({ db, log }) => new LocalGate(db, log),
};

/** Whether every user of a batch holds its coupon: a lost COMMIT's batch committed (all or nothing). */
async function allHeld(db: Queryable, batch: readonly Admitted[]): Promise<boolean> {
  for (const a of batch) if ((await findIssue(db, a.couponId, a.userId)) === undefined) return false;
  return true;
}
