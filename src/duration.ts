// Owns durations, the one parser of every duration keyroll reads (flags, targets files, the
// GatewayKey spec): Go's notation, as the CRD accepts it ("1h30m", "90s", "250ms"), and the
// compact rendering of reports.

/** Milliseconds per unit; `us` and `ns` are fractions of a millisecond. */
const UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** The CRD's pattern for a duration (manifests/crd/gatewaykey.yaml), anchored. */
export const DURATION_PATTERN = /^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$/;

const PART = /(\d+(?:\.\d+)?)([a-z]*)/y;

const EXAMPLES = 'such as 1h30m, 90s or 250ms';

/**
 * Milliseconds for a Go-style duration: one or more `<number><unit>` parts, units ns, us, ms, s,
 * m, h (`1h30m`, `90s`, `1.5s`, `250ms`). A number without a unit, a sign, a day unit or any other
 * text is refused with a message that says why. Whole milliseconds, rounded.
 */
export function parseDuration(text: string): number {
  const bad = (why: string) => new Error(`expected a duration ${EXAMPLES}, got '${text}' (${why})`);
  if (text === '') throw bad('empty');
  if (text.startsWith('-')) throw bad('a duration cannot be negative');
  if (text.startsWith('+')) throw bad('no sign');
  if (/^\d+(\.\d+)?$/.test(text)) throw bad(`no unit: write ${text}s for seconds`);
  let total = 0;
  let at = 0;
  while (at < text.length) {
    PART.lastIndex = at;
    const m = PART.exec(text);
    if (!m || m[0] === '' || m[1] === undefined) throw bad('expected a number and a unit');
    const unit = m[2] ?? '';
    const per = UNITS[unit];
    if (per === undefined) {
      throw bad(
        unit === '' ? 'a number needs a unit' : `unknown unit '${unit}'; units are ns, us, ms, s, m, h`,
      );
    }
    total += Number(m[1]) * per;
    at = PART.lastIndex;
  }
  if (!Number.isFinite(total) || total > Number.MAX_SAFE_INTEGER) throw bad('too long');
  return Math.round(total);
}

/** Compact rendering for reports: 850ms, 12.3s, 4m05s. */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
}
