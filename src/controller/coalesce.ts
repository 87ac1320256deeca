// Owns the sharing of one run of an expensive read among concurrent callers: the observation
// behind /_kilo/state (a scan of every profile store and a readiness probe) and the profile
// migration a patch runs. Ten clients at once would otherwise run ten scans side by side. Callers
// that arrive while a run is going share the next run instead, so at most one runs and one waits,
// and every caller still gets a run that began after it asked: it sees every patch, start and
// stop that completed before its request.

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
