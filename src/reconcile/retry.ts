// Owns retrying controller calls: capped, jittered backoff, and only for errors worth retrying.
import pRetry from 'p-retry';
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

/** Any call under `policy` (capped, jittered, doubling), retrying the errors `retryable` accepts. */
export async function retrying<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  signal: AbortSignal,
  retryable: (err: unknown) => boolean,
  onRetry?: (err: Error, attempt: number) => void,
): Promise<T> {
  return pRetry(fn, {
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
}
