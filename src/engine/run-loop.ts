// Owns repeating passes: a level-triggered loop at a jittered interval that survives a failed pass (the Fly driver's).
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';

export interface LoopOptions<T> {
  once: boolean;
  intervalMs: number;
  jitterMs: number;
  clock: Clock;
  signal: AbortSignal;
  /** Injected for tests; `Math.random` by default. */
  random?: () => number;
  /** Runs one pass (reading the key source afresh); throws on an error the pass could not report. */
  pass: () => Promise<T>;
  onPass: (r: T) => void;
  onError: (err: unknown) => void;
  log: Logger;
}

/** Pure: the wait before the next pass, `interval + random() * jitter`. */
export function nextDelay(intervalMs: number, jitterMs: number, random: () => number): number {
  return intervalMs + Math.floor(random() * jitterMs);
}

/**
 * Runs passes until `once` or the signal aborts. A failed pass is reported and retried at the next
 * tick (level-triggered: nothing is remembered between passes). Returns the last pass result, or
 * the last error when the last pass failed.
 */
export async function runLoop<T>(o: LoopOptions<T>): Promise<{ last: T | null; error: unknown }> {
  const random = o.random ?? Math.random;
  let last: T | null = null;
  let error: unknown = null;
  for (;;) {
    try {
      last = await o.pass();
      error = null;
      o.onPass(last);
    } catch (err) {
      if (o.signal.aborted) return { last, error: null };
      error = err;
      o.onError(err);
    }
    if (o.once || o.signal.aborted) return { last, error };
    const wait = nextDelay(o.intervalMs, o.jitterMs, random);
    o.log.debug({ waitMs: wait }, 'Next pass scheduled');
    try {
      await o.clock.sleep(wait, o.signal);
    } catch {
      return { last, error };
    }
  }
}
