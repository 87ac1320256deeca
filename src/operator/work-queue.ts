// Owns the operator's keyed work queue: dedupe, one worker per key, capped rate-limited requeue.
import type { Clock } from '../clock.ts';
import type { ReconcileResult } from '../engine/gateway-key.ts';

export interface WorkQueueOptions {
  /** Workers running different keys at once. */
  concurrency: number;
  /** First retry delay after a failure; doubles per consecutive failure of the same key. */
  baseDelayMs: number;
  /** Cap on that delay. Work is never dropped: a key keeps retrying at the cap. */
  maxDelayMs: number;
  clock: Clock;
}

export type { ReconcileResult } from '../engine/gateway-key.ts';

export type Reconcile = (key: string) => Promise<ReconcileResult | undefined>;

/**
 * A key is in at most one of: waiting (queued), running, or delayed (timer). Adding a key that is
 * running marks it dirty, so it runs once more after the current run with the newest state —
 * never twice at the same time. Failures requeue with per-key exponential backoff, reset on
 * success.
 */
export class WorkQueue {
  readonly #opts: WorkQueueOptions;
  readonly #reconcile: Reconcile;
  readonly #queue: string[] = [];
  readonly #queued = new Set<string>();
  readonly #running = new Set<string>();
  readonly #dirty = new Set<string>();
  readonly #delayed = new Map<string, { due: number; cancel: () => void }>();
  readonly #failures = new Map<string, number>();
  #stopped = false;
  #idleWaiters: Array<() => void> = [];
  onError: (key: string, err: unknown, retryInMs: number) => void = () => {};

  constructor(reconcile: Reconcile, opts: WorkQueueOptions) {
    this.#reconcile = reconcile;
    this.#opts = opts;
  }

  /** Enqueue now (an event or a resync). A pending delayed retry is pulled forward. */
  add(key: string): void {
    if (this.#stopped) return;
    const delayed = this.#delayed.get(key);
    if (delayed) {
      delayed.cancel();
      this.#delayed.delete(key);
    }
    if (this.#running.has(key)) {
      this.#dirty.add(key);
      return;
    }
    if (this.#queued.has(key)) return;
    this.#queued.add(key);
    this.#queue.push(key);
    this.#pump();
  }

  /** Enqueue after `ms`, unless an earlier wake-up is already planned. */
  addAfter(key: string, ms: number): void {
    if (this.#stopped) return;
    if (this.#queued.has(key) || this.#running.has(key)) {
      if (this.#running.has(key) && ms <= 0) this.#dirty.add(key);
      if (ms > 0 && !this.#queued.has(key)) this.#schedule(key, ms);
      return;
    }
    if (ms <= 0) this.add(key);
    else this.#schedule(key, ms);
  }

  #schedule(key: string, ms: number): void {
    const due = this.#opts.clock.now() + ms;
    const existing = this.#delayed.get(key);
    if (existing && existing.due <= due) return;
    existing?.cancel();
    const cancel = this.#opts.clock.setTimeout(() => {
      this.#delayed.delete(key);
      this.add(key);
    }, ms);
    this.#delayed.set(key, { due, cancel });
  }

  get depth(): number {
    return this.#queue.length;
  }

  get pendingRetries(): number {
    return this.#delayed.size;
  }

  /** Resolves once nothing is queued or running (delayed retries may remain). */
  idle(): Promise<void> {
    if (this.#queue.length === 0 && this.#running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stop taking work; resolves when running reconciles have finished. */
  async shutdown(): Promise<void> {
    this.#stopped = true;
    for (const d of this.#delayed.values()) d.cancel();
    this.#delayed.clear();
    this.#queue.length = 0;
    this.#queued.clear();
    await this.idle();
  }

  #pump(): void {
    while (!this.#stopped && this.#running.size < this.#opts.concurrency) {
      const index = this.#queue.findIndex((k) => !this.#running.has(k));
      if (index < 0) break;
      const [key] = this.#queue.splice(index, 1) as [string];
      this.#queued.delete(key);
      this.#running.add(key);
      void this.#run(key);
    }
    if (this.#queue.length === 0 && this.#running.size === 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  async #run(key: string): Promise<void> {
    let retryIn: number | undefined;
    try {
      const result = await this.#reconcile(key);
      this.#failures.delete(key);
      retryIn = result?.requeueAfterMs;
    } catch (err) {
      const n = (this.#failures.get(key) ?? 0) + 1;
      this.#failures.set(key, n);
      retryIn = Math.min(this.#opts.maxDelayMs, this.#opts.baseDelayMs * 2 ** (n - 1));
      this.onError(key, err, retryIn);
    } finally {
      this.#running.delete(key);
    }
    if (this.#dirty.delete(key)) this.add(key);
    else if (retryIn !== undefined) this.addAfter(key, retryIn);
    this.#pump();
  }
}
