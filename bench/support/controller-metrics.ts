// Owns reading the controller's own /metrics from a benchmark: one scrape as name → value, and a
// sampler that keeps the peaks of the controller's `process.memoryUsage()` figures (heap used and
// total, external, array buffers) while a benchmark runs, so an RSS peak can be told apart into
// V8 heap and the rest.

/** Unlabelled series of one scrape (`name value` lines), by name. */
export async function scrapeMetrics(adminPort: number, token: string): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/metrics`, {
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5_000),
  });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

export const MEMORY_SERIES = [
  'process_resident_memory_bytes',
  'nodejs_heap_size_used_bytes',
  'nodejs_heap_size_total_bytes',
  'nodejs_external_memory_bytes',
  'nodejs_array_buffers_bytes',
] as const;

export interface MetricsSampler {
  /** Stops; the peak of each memory series in MB, and how many scrapes succeeded. */
  stop(): Promise<{ peaksMb: Record<(typeof MEMORY_SERIES)[number], number>; scrapes: number }>;
}

/** Scrapes `/metrics` every `everyMs` (one at a time) and keeps the peaks of MEMORY_SERIES. */
export function sampleControllerMetrics(adminPort: number, token: string, everyMs = 500): MetricsSampler {
  const peaks = Object.fromEntries(MEMORY_SERIES.map((n) => [n, Number.NaN])) as Record<
    (typeof MEMORY_SERIES)[number],
    number
  >;
  let scrapes = 0;
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      try {
        const m = await scrapeMetrics(adminPort, token);
        scrapes++;
        for (const n of MEMORY_SERIES) {
          const v = (m.get(n) ?? Number.NaN) / 1024 / 1024;
          peaks[n] = Number.isNaN(peaks[n]) ? v : Math.max(peaks[n], v);
        }
      } catch {
        // a scrape that fails is not a figure
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return { peaksMb: peaks, scrapes };
    },
  };
}
