// Owns the rollout's bounds: a concurrency-limited map, a semaphore, and the failure budget.

/** Runs `fn` over `items` with at most `limit` in flight; results keep the input order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  async function worker(): Promise<void> {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!, i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * Runs `fn` over `items`, pulled lazily from the iterable, with at most `limit` in flight: a
 * generator of a million items holds only the ones being worked on.
 */
export async function forEachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  const it = items[Symbol.iterator]();
  let index = 0;
  let finished = false;
  async function worker(): Promise<void> {
    for (;;) {
      if (finished) return;
      const next = it.next();
      if (next.done) {
        finished = true;
        return;
      }
      await fn(next.value, index++);
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, limit) }, worker));
}

/** A counting semaphore; `acquire` gives the release function. */
export class Semaphore {
  #free: number;
  #waiters: Array<() => void> = [];
  constructor(size: number) {
    this.#free = size;
  }
  async acquire(signal: AbortSignal): Promise<() => void> {
    if (this.#free > 0) {
      this.#free--;
    } else {
      signal.throwIfAborted();
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          this.#waiters = this.#waiters.filter((w) => w !== wake);
          reject(signal.reason);
        };
        const wake = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        this.#waiters.push(wake);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const w = this.#waiters.shift();
      if (w) w();
      else this.#free++;
    };
  }
}

/** Counts delivery failures; once `limit` is reached no new target gets a delivery this pass. */
export class FailureBudget {
  readonly limit: number;
  #failures = 0;
  constructor(limit: number) {
    this.limit = limit;
  }
  record(): void {
    this.#failures++;
  }
  get failures(): number {
    return this.#failures;
  }
  get exhausted(): boolean {
    return this.#failures >= this.limit;
  }
}
