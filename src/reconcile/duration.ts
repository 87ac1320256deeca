// Owns duration parsing for the reconciler's flags and files ("500ms", "5s", "2m", "72h").
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds for a duration like `120s`; a bare number means seconds. Throws on anything else. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) throw new Error(`expected a duration such as 500ms, 30s, 5m or 72h, got '${text}'`);
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!);
}

/** Compact rendering for reports: 850ms, 12.3s, 4m05s. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}
