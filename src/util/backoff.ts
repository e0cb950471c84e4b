// The wait before retrying something that failed: doubled at each failure, from `min` up to
// `max`, back to nothing after a success. The workers, the Kafka consumer's rejoin and the event
// publisher retry with it.

export class Backoff {
  private ms = 0;

  constructor(
    private readonly min: number,
    private readonly max: number,
  ) {}

  /** The wait before the next attempt (a failure happened). */
  next(): number {
    this.ms = Math.min(this.max, Math.max(this.min, this.ms * 2));
    return this.ms;
  }

  /** An attempt succeeded: the next failure waits `min` again. */
  reset(): void {
    this.ms = 0;
  }
}
