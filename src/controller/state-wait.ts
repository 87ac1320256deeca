// Owns the held `GET /_kilo/state` (a read that waits): what its headers ask, how many reads are
// held at once, and when a held read is answered — its gateway is ready and is not the one the
// caller saw (`waitOver`), its time is up, its caller left, or the controller shuts down. The
// contract is src/kilo-state.ts's; docs/controller.md, "A read that waits".
import type { Clock } from '../clock.ts';
import { type ObservedState, type StateWait, WAIT_HEADER, WAIT_PID_HEADER, waitOver } from '../kilo-state.ts';

/** The longest a read is held (`controller.waitMaxMs`): under the admin port's 30 s request deadline. */
export const WAIT_MAX_MS = 20_000;
/** Reads held at once; one reconciler needs one. Past it a read is answered at once. */
export const HELD_MAX = 16;
/**
 * How soon a held read looks again when the supervisor calls the gateway running but the read's
 * own readiness look did not see it ready (`relookDue`): no further supervisor event may come.
 */
export const RELOOK_MS = 200;

export type WaitParse = { ok: true; wait: StateWait | null } | { ok: false; error: string };

const DIGITS = /^[0-9]+$/;

/**
 * The wait a request asks for (null: answer at once — no `WAIT_HEADER`, or 0), or the error that
 * names the malformed header. Both headers are checked whenever present.
 */
export function parseWait(headers: Readonly<Record<string, string | string[] | undefined>>): WaitParse {
  const ms = headers[WAIT_HEADER];
  const pid = headers[WAIT_PID_HEADER];
  // Node joins a repeated x- header with ", ", which the digits check refuses.
  if (ms !== undefined && (typeof ms !== 'string' || !DIGITS.test(ms))) {
    return { ok: false, error: `${WAIT_HEADER} must be a whole number of milliseconds` };
  }
  if (pid !== undefined && (typeof pid !== 'string' || !DIGITS.test(pid) || !validPid(Number(pid)))) {
    return { ok: false, error: `${WAIT_PID_HEADER} must be a positive integer (a process id)` };
  }
  const n = ms === undefined ? 0 : Number(ms);
  return { ok: true, wait: n > 0 ? { ms: n, pid: pid === undefined ? null : Number(pid) } : null };
}

const validPid = (n: number) => Number.isSafeInteger(n) && n > 0;

/** What a held read needs of the state it observes. */
export type GatewaySeen = Pick<ObservedState, 'gateway'>;

/**
 * Whether a held read that observed `state` (not `waitOver`) looks again soon: the supervisor
 * calls the gateway running (its probe said ready, or a surge gateway took over) and it is not
 * the one the caller saw, but this observation's own readiness look said not ready. Otherwise the
 * next supervisor event is what can end the wait.
 */
export function relookDue(state: GatewaySeen, pid: number | null): boolean {
  const g = state.gateway;
  return g.state === 'running' && !g.ready && (pid === null || g.pid !== pid);
}

/** Where the wake-ups come from: the Supervisor (an EventEmitter). */
export interface WakeSource {
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  off(event: string, listener: (...args: unknown[]) => void): unknown;
}

export interface StateWaitsOptions {
  /** Emits `events` when the gateway may have become ready or been replaced. */
  source: WakeSource;
  events: readonly string[];
  clock: Clock;
  /** `controller.waitMaxMs`; a longer wait is held this long. */
  maxMs?: number;
  maxHeld?: number;
}

/** One held read: whether something happened since its last observation, and how to wake it. */
class Hold {
  changed = true;
  timeUp = false;
  #wake: (() => void) | null = null;

  /** Resolves at the next `wake()` (the caller checks its flags first: nothing runs in between). */
  next(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
    });
  }

  wake(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }
}

/**
 * The reads held by one controller. One listener per event for them all (not one per read); each
 * held read has its deadline timer and observes once per wake-up (the observation is coalesced
 * among concurrent readers). The only other wake-up is the re-look (`relookDue`): one timer for
 * all the reads that want one, armed only while some do.
 */
export class StateWaits {
  readonly maxMs: number;
  readonly maxHeld: number;
  readonly #o: StateWaitsOptions;
  readonly #held = new Set<Hold>();
  /** Held reads waiting for the re-look timer, and its cancel (null: not armed). */
  readonly #relook = new Set<Hold>();
  #relookCancel: (() => void) | null = null;
  #closed = false;
  /** Resolved once no read is held (`close`). */
  #idle: (() => void)[] = [];

  constructor(o: StateWaitsOptions) {
    this.#o = o;
    this.maxMs = o.maxMs ?? WAIT_MAX_MS;
    this.maxHeld = o.maxHeld ?? HELD_MAX;
    for (const e of o.events) o.source.on(e, this.#wakeAll);
  }

  /** Reads held now. */
  get held(): number {
    return this.#held.size;
  }

  readonly #wakeAll = (): void => {
    // Every held read observes now; those that still want a re-look ask again.
    this.#stopRelook();
    for (const h of this.#held) {
      h.changed = true;
      h.wake();
    }
  };

  readonly #relookNow = (): void => {
    this.#relookCancel = null;
    for (const h of this.#relook) {
      h.changed = true;
      h.wake();
    }
    this.#relook.clear();
  };

  #wantRelook(h: Hold): void {
    this.#relook.add(h);
    this.#relookCancel ??= this.#o.clock.setTimeout(this.#relookNow, RELOOK_MS);
  }

  #stopRelook(): void {
    this.#relook.clear();
    this.#relookCancel?.();
    this.#relookCancel = null;
  }

  /**
   * `observe()`s until `waitOver(state, ask.pid)`, then resolves that state; when the time is up
   * (`ask.ms`, at most `maxMs`) or the controller closes, resolves the state observed then; when
   * `gone` aborts (the caller left), resolves null at once and nothing is to be written. Past
   * `maxHeld`, or once closed, one observation, at once.
   */
  async hold<S extends GatewaySeen>(
    ask: StateWait,
    observe: () => Promise<S>,
    gone: AbortSignal,
  ): Promise<S | null> {
    if (this.#closed || this.#held.size >= this.maxHeld || ask.ms <= 0) return observe();
    const h = new Hold();
    this.#held.add(h);
    const cancel = this.#o.clock.setTimeout(
      () => {
        h.timeUp = true;
        h.wake();
      },
      Math.min(ask.ms, this.maxMs),
    );
    const left = () => h.wake();
    gone.addEventListener('abort', left, { once: true });
    try {
      for (;;) {
        if (gone.aborted) return null;
        if (h.timeUp || this.#closed) return await observe();
        if (!h.changed) {
          await h.next();
          continue;
        }
        h.changed = false;
        const state = await observe();
        if (gone.aborted) return null;
        // Observed after the deadline passed: that is the state "at that moment".
        if (waitOver(state, ask.pid) || h.timeUp) return state;
        if (relookDue(state, ask.pid)) this.#wantRelook(h);
      }
    } finally {
      cancel();
      gone.removeEventListener('abort', left);
      this.#held.delete(h);
      this.#relook.delete(h);
      if (this.#relook.size === 0) this.#stopRelook();
      if (this.#held.size === 0) for (const done of this.#idle.splice(0)) done();
    }
  }

  /**
   * Controller shutdown: every held read is answered now (with the state observed then), later
   * ones at once; the event listeners are removed. Resolves once no read is held.
   */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const e of this.#o.events) this.#o.source.off(e, this.#wakeAll);
      this.#wakeAll();
    }
    if (this.#held.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }
}
