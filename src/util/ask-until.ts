// Finding out what became of a command whose answer was lost: ask the store again, as soon as it
// answers, for a bounded time. Shared by the database layer (a lost COMMIT answer) and the Redis
// strategies (a lost admission answer).
import { setTimeout as sleep } from 'node:timers/promises';

/** How long a lost answer is looked for before the outcome is declared unknown. */
export const LOST_ANSWER_CHECK_MS = 3_000;
const ASK_EVERY_MS = 100;

/**
 * Calls `ask` until it returns something other than undefined, or `budgetMs` has passed; each
 * call may take only what is left of the budget. A call that throws or runs out of time counts as
 * "no answer yet". Returns undefined when the budget ran out.
 */
export async function askUntil<T>(ask: () => Promise<T | undefined>, budgetMs = LOST_ANSWER_CHECK_MS): Promise<T | undefined> {
  const deadline = Date.now() + budgetMs;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const call = ask();
    call.catch(() => undefined); // may settle after we stopped waiting for it
    try {
      const answer = await Promise.race([call, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), left)))]);
      if (answer !== undefined) return answer;
    } catch {
      // the store is still away
    } finally {
      clearTimeout(timer);
    }
    await sleep(Math.min(ASK_EVERY_MS, Math.max(0, deadline - Date.now())));
  }
}
