// Owns the operator's notion of time, injected so tests advance it instead of sleeping.

export interface Clock {
  now(): number;
  /** Returns a cancel function. */
  setTimeout(fn: () => void, ms: number): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return () => clearTimeout(t);
  },
};

/** A clock that moves only when told to; timers fire in due order during `advance`. */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  #timers = new Map<number, { due: number; fn: () => void }>();

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

  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      let next: [number, { due: number; fn: () => void }] | undefined;
      for (const entry of this.#timers) if (!next || entry[1].due < next[1].due) next = entry;
      if (!next || next[1].due > target) break;
      this.#timers.delete(next[0]);
      this.#now = next[1].due;
      next[1].fn();
      await new Promise((r) => setImmediate(r));
    }
    this.#now = target;
  }

  get pending(): number {
    return this.#timers.size;
  }
}
