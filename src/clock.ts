// Owns time for the whole program: one injectable clock (now, sleep, setTimeout) and a manual one for tests.
import { abortReason, onAbort } from './abort.ts';

export interface Clock {
  now(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `fn` after `ms`; returns a cancel function. The timer never keeps the process alive. */
  setTimeout(fn: () => void, ms: number): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  // One abort listener per signal (onAbort), not one per sleep: a fleet pass has a sleep in
  // flight per verifying target, all on the pass's signal.
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const stop = signal
        ? onAbort(signal, (reason) => {
            clearTimeout(timer);
            reject(reason);
          })
        : undefined;
      const timer = setTimeout(() => {
        stop?.();
        resolve();
      }, ms);
    }),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return () => clearTimeout(t);
  },
};

interface Timer {
  due: number;
  fn: () => void;
}

/**
 * A clock that moves only when told to. `advance(ms)` fires every timer (and wakes every sleeper)
 * due by then, in due order, letting promise callbacks run between them, so code that awaits a
 * sleep and sleeps again is driven through all its steps by one `advance`.
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Map<number, Timer>();

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): () => void {
    const id = ++this.#seq;
    this.#timers.set(id, { due: this.#now + Math.max(0, ms), fn });
    return () => this.#timers.delete(id);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        cancel();
        reject(signal?.reason);
      };
      const cancel = this.setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Moves time forward by `ms`, firing what falls due on the way. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (;;) {
      let next: [number, Timer] | undefined;
      for (const entry of this.#timers) if (!next || entry[1].due < next[1].due) next = entry;
      if (!next || next[1].due > target) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].due;
      next[1].fn();
      await settle();
    }
    this.#now = target;
  }

  /** Timers (and sleepers) waiting to fire. */
  get pending(): number {
    return this.#timers.size;
  }
}

/** Lets queued promise callbacks and I/O callbacks run (one turn of the event loop). */
function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
