// Owns client-side pacing of Fly Machines API calls: one token bucket per (action, scope), sized
// below Fly's documented per-action, per-machine budgets, plus Retry-After blocks after a 429.
import { type Clock, systemClock } from '../clock.ts';

/** What pacing needs of the program's clock (src/clock.ts). */
export type PaceClock = Pick<Clock, 'now' | 'sleep'>;

/** The client's names for the Machines API actions it calls (also the fake's counter keys). */
export type FlyAction = 'list' | 'get' | 'update' | 'lease_acquire' | 'lease_get' | 'lease_release';

export const FLY_ACTIONS: readonly FlyAction[] = [
  'list',
  'get',
  'update',
  'lease_acquire',
  'lease_get',
  'lease_release',
];

export interface Budget {
  /** Sustained requests per second. */
  ratePerSec: number;
  /** Requests allowed back to back from a full bucket. */
  burst: number;
}

export interface Budgets {
  /** Get Machine. */
  get: Budget;
  /** Every other action. */
  other: Budget;
}

/**
 * Fly's published limits (docs/machines/api/working-with-machines-api, "Rate Limits"): per action,
 * per machine, 1 req/s with a short-term burst up to 3; Get Machine 5 req/s, burst up to 10.
 */
export const DOCUMENTED_BUDGETS: Budgets = {
  get: { ratePerSec: 5, burst: 10 },
  other: { ratePerSec: 1, burst: 3 },
};

/**
 * What the client allows itself: the documented rates with a smaller burst, so network jitter
 * between our send time and Fly's receive time can never push a request over the server's limit.
 */
export const CLIENT_BUDGETS: Budgets = {
  get: { ratePerSec: 5, burst: 8 },
  other: { ratePerSec: 1, burst: 2 },
};

export function budgetFor(budgets: Budgets, action: FlyAction): Budget {
  return action === 'get' ? budgets.get : budgets.other;
}

/** The bucket key: Fly counts per action and per machine (per app for listing). */
export function limitKey(action: FlyAction, scope: string): string {
  return `${action}:${scope}`;
}

interface Cell {
  /** GCRA theoretical arrival time (ms): when the bucket would next be empty-and-refilling. */
  tat: number;
}

const MAX_CELLS = 10_000;

/**
 * Generic cell rate algorithm: equivalent to a token bucket, but each caller reserves a future
 * slot, so concurrent callers on one key queue up in order instead of racing for a refill.
 */
export class TokenBucketLimiter {
  readonly #budgets: Budgets;
  readonly #clock: PaceClock;
  readonly #cells = new Map<string, Cell>();

  constructor(opts: { budgets?: Budgets; clock?: PaceClock } = {}) {
    this.#budgets = opts.budgets ?? CLIENT_BUDGETS;
    this.#clock = opts.clock ?? systemClock;
  }

  /** Reserves the next slot for (action, scope) and returns how long to wait for it (ms). */
  reserve(action: FlyAction, scope: string): number {
    const now = this.#clock.now();
    const { ratePerSec, burst } = budgetFor(this.#budgets, action);
    const interval = 1000 / ratePerSec;
    const tolerance = (Math.max(1, burst) - 1) * interval;
    const key = limitKey(action, scope);
    const cell = this.#cells.get(key) ?? { tat: now };
    const tat = Math.max(cell.tat, now);
    const allowAt = tat - tolerance;
    cell.tat = tat + interval;
    this.#cells.set(key, cell);
    this.#prune(now);
    return Math.max(0, Math.ceil(allowAt - now));
  }

  /** Waits for a slot; rejects with the signal's reason if it aborts first. */
  async take(action: FlyAction, scope: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const wait = this.reserve(action, scope);
    if (wait > 0) await this.#clock.sleep(wait, signal);
  }

  /**
   * After a 429 with Retry-After: no request on this key before `untilMs`, and from then on one
   * per interval (the burst is spent), so the key recovers at the sustained rate.
   */
  block(action: FlyAction, scope: string, untilMs: number): void {
    const { ratePerSec, burst } = budgetFor(this.#budgets, action);
    const interval = 1000 / ratePerSec;
    const tolerance = (Math.max(1, burst) - 1) * interval;
    const key = limitKey(action, scope);
    const cell = this.#cells.get(key) ?? { tat: this.#clock.now() };
    cell.tat = Math.max(cell.tat, untilMs + tolerance);
    this.#cells.set(key, cell);
  }

  /** Drops cells whose bucket has refilled completely; they carry no state worth keeping. */
  #prune(now: number): void {
    if (this.#cells.size <= MAX_CELLS) return;
    for (const [key, cell] of this.#cells) if (cell.tat <= now) this.#cells.delete(key);
  }
}
