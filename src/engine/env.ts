// Owns what every step of a pass runs with: one PassEnv (time, log, retries, bounds, cancellation) and the rollout gate.
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { FailureBudget, Semaphore } from '../reconcile/limits.ts';
import type { RetryPolicy } from '../reconcile/retry.ts';
import type { Rollout } from '../reconcile/targets.ts';

/** The environment of a pass, shared by every driver (operator, one-shot reconcile, diff, Fly loop). */
export interface PassEnv {
  clock: Clock;
  log: Logger;
  /** Controller calls (observe, patch): capped, jittered backoff. */
  retry: RetryPolicy;
  /** Per target: delivery plus verification must finish within this, else it is not converged. */
  deadlineMs: number;
  /** Re-observation interval while verifying. */
  pollIntervalMs: number;
  /** Aborted on shutdown (or the pass deadline): every step stops where it is. */
  signal: AbortSignal;
}

export type Phase = 'observing' | 'delivering' | 'verifying' | 'waiting';

/** What a pass shares between its targets: the failure budget, restart slots, progress. */
export interface RolloutGate {
  budget: FailureBudget;
  /** Restart-mode deliveries hold a slot while their gateway restarts (maxUnavailable). */
  unavailable: Semaphore;
  onPhase?: ((target: string, phase: Phase) => void) | undefined;
}

export function rolloutGate(
  rollout: Pick<Rollout, 'failureBudget' | 'maxUnavailable'>,
  onPhase?: RolloutGate['onPhase'],
): RolloutGate {
  return {
    budget: new FailureBudget(rollout.failureBudget),
    unavailable: new Semaphore(rollout.maxUnavailable),
    ...(onPhase ? { onPhase } : {}),
  };
}
