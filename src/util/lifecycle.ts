// Starting and stopping the long-running parts of a process (the workers, the event publisher):
// a part that fails to start stops what it opened, and parts started together stop in reverse
// order, once.

/** A part of a process that runs from start() until stop(). */
export interface LongRunning {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts `part`; if that fails, stops it (closing what it opened) and rethrows. */
export async function started<P extends LongRunning>(part: P): Promise<P> {
  try {
    await part.start();
  } catch (err) {
    await part.stop();
    throw err;
  }
  return part;
}

/** Parts started one after another; one that fails to start stops those started before it. */
export class Parts {
  private readonly running: LongRunning[] = [];

  async start<P extends LongRunning>(part: P): Promise<P> {
    try {
      await started(part);
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.running.push(part);
    return part;
  }

  /** Stops every part started, the last first. */
  async stop(): Promise<void> {
    for (const part of this.running.splice(0).reverse()) await part.stop();
  }
}
