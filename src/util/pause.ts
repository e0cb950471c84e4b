// A sleep that a stop can cut short: the loops of the workers and the event publisher wait
// between rounds with it, and their stop() wakes them at once instead of after the full wait.

export class Pause {
  private wakeUp: (() => void) | undefined;

  /** Resolves after `ms`, or at the next wake(), whichever comes first. */
  for(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wakeUp === done) this.wakeUp = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = done;
    });
  }

  /** Ends the wait in progress, if any. */
  wake(): void {
    this.wakeUp?.();
  }
}
