// Owns the zod types of flag values (Go-style durations, counts, ports) for the commands that
// parse their flags with zod, with one error format, `--flag: why`. Reading the command line
// itself, and the checks behind these types, live in src/command-line.ts (zod-free, for the
// in-pod controller); they are re-exported here.
import * as z from 'zod';
import { checkCount, checkDuration } from './command-line.ts';
import { UsageError } from './errors.ts';

export {
  type DeprecatedFlag,
  type FlagValues,
  millisecondsFlag,
  optionsFromUsage,
  type ParseOptions,
  parseCommandLine,
} from './command-line.ts';

/** A duration flag (`1h30m`, `90s`, `250ms`) in milliseconds, at least `min` and at most `max`. */
export function durationFlag(min = 0, max = Number.MAX_SAFE_INTEGER) {
  return z.string().transform((text, ctx) => {
    const r = checkDuration(text, min, max);
    if (r.ok) return r.value;
    ctx.addIssue({ code: 'custom', message: r.reason });
    return z.NEVER;
  });
}

/** A whole-number flag in [min, max]; `what` names the thing in the upper bound's message. */
export function countFlag(min: number, max = Number.MAX_SAFE_INTEGER, what = '') {
  return z.string().transform((text, ctx) => {
    const r = checkCount(text, min, max, what);
    if (r.ok) return r.value;
    ctx.addIssue({ code: 'custom', message: r.reason });
    return z.NEVER;
  });
}

/** A TCP port flag; `min` 0 lets the system pick one. */
export function portFlag(min = 1) {
  return countFlag(min, 65_535, 'a port');
}

/** `--flag: why; --other: why`, each issue named by the flag of its field. */
export function flagIssues(error: z.ZodError, flagOf: (field: string) => string): string {
  return error.issues
    .map((i) => {
      const field = String(i.path[0] ?? '');
      return field ? `${flagOf(field)}: ${i.message}` : i.message;
    })
    .join('; ');
}

/** Parses `raw` (keyed by flag name, or by field with `flagOf`) or throws a UsageError naming every bad flag. */
export function parseFlagValues<S extends z.ZodType>(
  schema: S,
  raw: unknown,
  flagOf: (field: string) => string = (f) => `--${f}`,
): z.infer<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new UsageError(flagIssues(parsed.error, flagOf));
  return parsed.data;
}
