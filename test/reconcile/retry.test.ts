// Retrying controller calls (src/reconcile/retry.ts): the first attempt runs without p-retry and
// a retryable failure continues under it; numbering, onRetry calls, backoff and aborts are the
// same across both paths.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ControllerError } from '../../src/reconcile/controller-client.ts';
import { type RetryPolicy, retrying, withRetry } from '../../src/reconcile/retry.ts';

const FAST: RetryPolicy = { retries: 4, minTimeoutMs: 1, maxTimeoutMs: 4 };
const retryable = () => new ControllerError('http', 'GET _kilo/state answered HTTP 503', 503);
const terminal = () => new ControllerError('http', 'GET _kilo/state answered HTTP 400', 400);
const live = () => new AbortController().signal;

/** `fn` for withRetry failing with `failures[i]` at attempt i+1, then answering 'ok'; attempts seen. */
function script(failures: Error[]) {
  const attempts: number[] = [];
  const fn = async (attempt: number) => {
    attempts.push(attempt);
    const err = failures[attempt - 1];
    if (err) throw err;
    return 'ok';
  };
  return { fn, attempts };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('withRetry', () => {
  it('answers from the first attempt without a retry', async () => {
    const { fn, attempts } = script([]);
    const onRetry = vi.fn();
    await expect(withRetry(fn, FAST, live(), onRetry)).resolves.toBe('ok');
    expect(attempts).toEqual([1]);
    expect(onRetry).not.toHaveBeenCalled();
  });

  it('numbers attempts 1, 2, 3 across the first attempt and the retries, with onRetry for each failure', async () => {
    const e1 = retryable();
    const e2 = new ControllerError('network', 'GET _kilo/state failed: ECONNRESET');
    const { fn, attempts } = script([e1, e2]);
    const onRetry = vi.fn();
    await expect(withRetry(fn, FAST, live(), onRetry)).resolves.toBe('ok');
    expect(attempts).toEqual([1, 2, 3]);
    expect(onRetry.mock.calls).toEqual([
      [e1, 1],
      [e2, 2],
    ]);
  });

  it('gives up after policy.retries retries with the last error; no onRetry for the last failure', async () => {
    const errs = [retryable(), retryable(), retryable()];
    const { fn, attempts } = script(errs);
    const onRetry = vi.fn();
    await expect(withRetry(fn, { ...FAST, retries: 2 }, live(), onRetry)).rejects.toBe(errs[2]);
    expect(attempts).toEqual([1, 2, 3]);
    expect(onRetry.mock.calls.map((c) => c[1])).toEqual([1, 2]);
  });

  it('a terminal error at the first attempt is thrown at once', async () => {
    const e = terminal();
    const { fn, attempts } = script([e]);
    const onRetry = vi.fn();
    await expect(withRetry(fn, FAST, live(), onRetry)).rejects.toBe(e);
    expect(attempts).toEqual([1]);
    expect(onRetry).not.toHaveBeenCalled();
  });

  it('a terminal error after retries ends them: thrown as it is, attempts stop', async () => {
    const e = terminal();
    const { fn, attempts } = script([retryable(), e]);
    const onRetry = vi.fn();
    await expect(withRetry(fn, FAST, live(), onRetry)).rejects.toBe(e);
    expect(attempts).toEqual([1, 2]);
    expect(onRetry.mock.calls.map((c) => c[1])).toEqual([1]);
  });

  it('retries: 0 makes one attempt, a retryable error included', async () => {
    const e = retryable();
    const { fn, attempts } = script([e]);
    const onRetry = vi.fn();
    await expect(withRetry(fn, { ...FAST, retries: 0 }, live(), onRetry)).rejects.toBe(e);
    expect(attempts).toEqual([1]);
    expect(onRetry).not.toHaveBeenCalled();
  });

  it('an aborted signal rejects with its reason before any attempt', async () => {
    const ac = new AbortController();
    const reason = new Error('pass aborted');
    ac.abort(reason);
    const { fn, attempts } = script([]);
    await expect(withRetry(fn, FAST, ac.signal)).rejects.toBe(reason);
    expect(attempts).toEqual([]);
  });

  it('a signal that aborts during the first attempt rejects with its reason, even after an answer', async () => {
    const ac = new AbortController();
    const reason = new Error('pass aborted');
    await expect(
      withRetry(
        async () => {
          ac.abort(reason);
          return 'ok';
        },
        FAST,
        ac.signal,
      ),
    ).rejects.toBe(reason);
  });

  it('a signal that aborts during a failed first attempt rejects with its reason at once, without a backoff', async () => {
    const ac = new AbortController();
    const reason = new Error('pass aborted');
    const onRetry = vi.fn();
    const attempts: number[] = [];
    const t0 = Date.now();
    await expect(
      withRetry(
        async (attempt) => {
          attempts.push(attempt);
          ac.abort(reason);
          throw retryable();
        },
        { retries: 4, minTimeoutMs: 5_000, maxTimeoutMs: 5_000 },
        ac.signal,
        onRetry,
      ),
    ).rejects.toBe(reason);
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(attempts).toEqual([1]);
    expect(onRetry).not.toHaveBeenCalled();
  });

  it('a signal that aborts while waiting to retry rejects with its reason; no further attempt', async () => {
    const ac = new AbortController();
    const reason = new Error('pass aborted');
    const attempts: number[] = [];
    const p = withRetry(
      async (attempt) => {
        attempts.push(attempt);
        if (attempt === 2) ac.abort(reason);
        throw retryable();
      },
      { retries: 4, minTimeoutMs: 50, maxTimeoutMs: 50 },
      ac.signal,
    );
    await expect(p).rejects.toBe(reason);
    expect(attempts).toEqual([1, 2]);
  });

  it('waits the same doubling, capped backoff between attempts as p-retry', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0.5); // jitter ×1.5
    const waits: number[] = [];
    const real = globalThis.setTimeout;
    vi.spyOn(globalThis, 'setTimeout').mockImplementation(((cb: () => void, ms?: number) => {
      waits.push(ms ?? 0);
      return real(cb, ms);
    }) as typeof setTimeout);
    const { fn, attempts } = script([retryable(), retryable(), retryable(), retryable()]);
    await expect(withRetry(fn, { retries: 4, minTimeoutMs: 4, maxTimeoutMs: 20 }, live())).resolves.toBe(
      'ok',
    );
    expect(attempts).toEqual([1, 2, 3, 4, 5]);
    // round(1.5 × 4 × 2^n), capped at 20.
    expect(waits).toEqual([6, 12, 20, 20]);
  });
});

describe('retrying', () => {
  it('retries what its own predicate accepts, and throws a TypeError at once as p-retry does', async () => {
    class Busy extends Error {}
    const busy = new Busy('busy');
    const { fn, attempts } = script([busy]);
    const onRetry = vi.fn();
    await expect(retrying(fn, FAST, live(), (e) => e instanceof Busy, onRetry)).resolves.toBe('ok');
    expect(attempts).toEqual([1, 2]);
    expect(onRetry.mock.calls).toEqual([[busy, 1]]);

    const bug = new TypeError('x is not a function');
    const second = script([bug]);
    await expect(retrying(second.fn, FAST, live(), () => true)).rejects.toBe(bug);
    expect(second.attempts).toEqual([1]);
  });
});
