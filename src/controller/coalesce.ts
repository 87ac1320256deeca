// Owns the sharing of one observation among concurrent readers of /_kilo/state.
//
// Each observation scans every profile store and probes the gateway; ten clients polling at once
// would run ten scans side by side. Readers that arrive while one runs share the next run
// instead, so at most one runs and one waits, and every reader still gets an observation that
// began after it asked: it sees every patch, start and stop that completed before its request.

/** Wraps `fn` so that concurrent callers share runs, never one that began before they called. */
export function coalesce<T>(fn: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | null = null;
  let queued: Promise<T> | null = null;
  const start = (): Promise<T> => {
    const run = fn().finally(() => {
      if (running === run) running = null;
    });
    running = run;
    return run;
  };
  return () => {
    if (!running) return start();
    if (!queued) {
      const settled = running.then(
        () => undefined,
        () => undefined,
      );
      queued = settled.then(() => {
        queued = null;
        return start();
      });
    }
    return queued;
  };
}
