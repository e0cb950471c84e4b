// A promise bounded in time: the scrapes, the readiness probes and the start-up ping must answer
// even when a store does not.

/** `promise`'s outcome, or a rejection with `message` once `ms` have passed (the timer is always cleared). */
export function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
