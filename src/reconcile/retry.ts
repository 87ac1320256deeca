// Owns retrying controller calls: capped, jittered backoff, and only for errors worth retrying.
import pRetry, { AbortError } from 'p-retry';
import { ControllerError } from './controller-client.ts';

export interface RetryPolicy {
  retries: number;
  minTimeoutMs: number;
  maxTimeoutMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { retries: 4, minTimeoutMs: 250, maxTimeoutMs: 4000 };

/** Network errors, timeouts, 429 and 5xx are retried; a 4xx or a malformed answer is terminal. */
export function isRetryable(err: unknown): boolean {
  return err instanceof ControllerError && err.retryable;
}

/** Controller calls under `policy`, retrying only what `isRetryable` allows. */
export function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  signal: AbortSignal,
  onRetry?: (err: Error, attempt: number) => void,
): Promise<T> {
  return retrying(fn, policy, signal, isRetryable, onRetry);
}

/**
 * Any call under `policy` (capped, jittered, doubling), retrying the errors `retryable` accepts.
 *
 * The first attempt runs without p-retry: nearly every call succeeds at once, and p-retry's
 * set-up per call (options copied and checked, closures, timers' bookkeeping) was ≈0.9 KB of
 * garbage per controller call (BENCHMARKS.md, reconcile fleet, S8-H2).
 * Only a failure p-retry would retry enters it, which replays that failure as its attempt 1:
 * the same numbering, onRetry calls, backoff and signal checks as p-retry from the start, except
 * that a signal which aborted during the first attempt rejects with its reason at once (p-retry
 * called onRetry and waited out the first backoff before it did).
 */
export function retrying<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  signal: AbortSignal,
  retryable: (err: unknown) => boolean,
  onRetry?: (err: Error, attempt: number) => void,
): Promise<T> {
  // Not an async function: its frame and await cost ≈0.2 KB more per call than these two closures.
  if (signal.aborted) return Promise.reject(signal.reason);
  let first: Promise<T>;
  try {
    first = Promise.resolve(fn(1));
  } catch (err) {
    first = Promise.reject(err);
  }
  // After a failed first attempt, a plain Error that is not retried is thrown as p-retry throws
  // it; anything else (a retry, an abort, a TypeError or non-Error, which p-retry treats apart)
  // goes to p-retry.
  const after = (err: unknown): Promise<T> => {
    if (
      (policy.retries === 0 || !retryable(err)) &&
      err instanceof Error &&
      !(err instanceof TypeError) &&
      !(err instanceof AbortError)
    ) {
      return Promise.reject(err);
    }
    return pRetry((attempt) => (attempt === 1 ? Promise.reject(err) : fn(attempt)), {
      retries: policy.retries,
      factor: 2,
      minTimeout: policy.minTimeoutMs,
      maxTimeout: policy.maxTimeoutMs,
      randomize: true,
      signal,
      shouldRetry: ({ error }) => retryable(error),
      onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
        if (retriesLeft > 0 && retryable(error)) onRetry?.(error, attemptNumber);
      },
    });
  };
  // An answer that came after the signal aborted counts as a failure, as in p-retry.
  return first.then((value) => (signal.aborted ? after(signal.reason) : value), after);
}
