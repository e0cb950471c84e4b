// After a sell-out the holders of a coupon are final: where no row goes in without a unit (the
// row and the claim in one transaction, the over-issue CHECK behind them), a counter that reached
// the stock means every holder's row is committed and no other can come. Loaded once when this
// process sees the sell-out, the set answers every later attempt — ALREADY_ISSUED to a holder,
// SOLD_OUT to the rest — without a round trip, in every instance (each loads its own). The
// precedence of refusals is kept, unlike a sold-out flag that answers 410 to everyone.
import type { Queryable } from '../../db/index.js';
import { ALREADY_ISSUED, SOLD_OUT, type IssueOutcome } from '../domain.js';
import { loadIssuedUsers } from '../repository.js';

/** Above this stock the holders are not kept in memory (about 100 bytes each); refusals ask the database. */
export const FINAL_HOLDERS_MAX = 1_000_000;
/** Sold-out campaigns whose holders are kept; the oldest is dropped (and asked the database again) past this. */
const CAMPAIGNS_KEPT = 16;

export class FinalHolders {
  private readonly loaded = new Map<number, ReadonlySet<string>>();
  private readonly loading = new Set<number>();

  constructor(
    private readonly db: Queryable,
    private readonly onLoadFailed: (couponId: number, err: unknown) => void,
    private readonly maxHolders = FINAL_HOLDERS_MAX,
  ) {}

  /** The refusal for this user once the coupon's final holders are loaded; undefined before. */
  answer(couponId: number, userId: string): IssueOutcome | undefined {
    const holders = this.loaded.get(couponId);
    if (holders === undefined) return undefined;
    return holders.has(userId) ? ALREADY_ISSUED : SOLD_OUT;
  }

  /**
   * This process saw the committed counter of the coupon at its stock (`total`): loads the
   * holders, once. Until they are in, attempts go to the database as before; a failed load is
   * tried again at the next sell-out seen.
   */
  soldOut(couponId: number, total: number): void {
    if (this.loaded.has(couponId) || this.loading.has(couponId) || total > this.maxHolders) return;
    this.loading.add(couponId);
    loadIssuedUsers(this.db, couponId).then(
      (users) => {
        this.loading.delete(couponId);
        this.loaded.set(couponId, new Set(users));
        if (this.loaded.size > CAMPAIGNS_KEPT) this.loaded.delete(this.loaded.keys().next().value!);
      },
      (err: unknown) => {
        this.loading.delete(couponId);
        this.onLoadFailed(couponId, err);
      },
    );
  }
}
