// Owns command-line flags for every command and for the in-pod controller alike (nothing here
// imports src/cli/): flags declared by the usage text itself, deprecated aliases, and the zod
// types of flag values (Go-style durations, counts, ports) with one error format, `--flag: why`.
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';
import * as z from 'zod';
import { formatDuration, parseDuration } from './duration.ts';
import { errorMessage, UsageError } from './errors.ts';

/**
 * The flags a usage text declares. Every line whose first non-blank character is `-` declares
 * the flags it starts with, separated by `, `: `--name VALUE` a string flag, `--name` alone a
 * boolean, `-x, --name` with a short form. VALUE is a placeholder in capitals (`DUR`, `N`,
 * `VAR,...`), choices (`text|json`) or a quoted phrase (`"CMD ARGS"`); anything else after the
 * name is the description. So a command's help and the flags it accepts cannot drift apart.
 */
export function optionsFromUsage(usage: string): ParseArgsOptionsConfig {
  const options: ParseArgsOptionsConfig = {};
  for (const raw of usage.split('\n')) {
    let rest = raw.trimStart();
    if (!rest.startsWith('-')) continue;
    for (;;) {
      const m = /^(?:-([a-zA-Z]), )?--([a-z0-9][a-z0-9-]*)/.exec(rest);
      if (!m) break;
      rest = rest.slice(m[0].length);
      const value = /^ ("[^"]*"|[A-Z][A-Z0-9_]*(?:,\.\.\.)?|[a-z0-9]+(?:\|[a-z0-9]+)+)(?=$|[ ,])/.exec(rest);
      if (value) rest = rest.slice(value[0].length);
      const name = m[2]!;
      options[name] = {
        type: value ? 'string' : 'boolean',
        ...(m[1] ? { short: m[1] } : {}),
      };
      if (!rest.startsWith(', -')) break;
      rest = rest.slice(2);
    }
  }
  return options;
}

/** A deprecated flag kept for one release: its value is handed to `use`, with a warning. */
export interface DeprecatedFlag {
  /** The flag that replaces it (without `--`). */
  use: string;
  /** Turns the old flag's value into the new flag's (e.g. milliseconds into a duration). */
  value?: (old: string) => string;
}

/** `--stop-timeout-ms 10000` → `--stop-timeout 10000ms`: a millisecond flag become a duration. */
export function millisecondsFlag(use: string, old: string): DeprecatedFlag {
  return {
    use,
    value: (v) => {
      if (!/^\d+$/.test(v)) throw new UsageError(`--${old}: expected a whole number of milliseconds`);
      return `${v}ms`;
    },
  };
}

export type FlagValues = Record<string, string | boolean | undefined>;

export interface ParseOptions {
  deprecated?: Readonly<Record<string, DeprecatedFlag>>;
  allowPositionals?: boolean;
  /** Where deprecation warnings go (a line each, already ending in a newline). */
  warn: (text: string) => void;
  /** Names the command in warnings: `keyroll <command>: --old is deprecated …`. */
  command: string;
}

/**
 * Parses `argv` against the flags `usage` declares (strict: an unknown flag is a UsageError),
 * then folds each deprecated flag given into the flag that replaces it, warning once per flag.
 */
export function parseCommandLine(
  argv: readonly string[],
  usage: string,
  o: ParseOptions,
): { values: FlagValues; positionals: string[] } {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: optionsFromUsage(usage),
      strict: true,
      allowPositionals: o.allowPositionals ?? false,
    });
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
  const values = { ...parsed.values } as FlagValues;
  for (const [old, d] of Object.entries(o.deprecated ?? {})) {
    const v = values[old];
    if (v === undefined) continue;
    if (values[d.use] !== undefined) throw new UsageError(`give --${d.use} or --${old}, not both`);
    values[d.use] = typeof v === 'string' && d.value ? d.value(v) : v;
    delete values[old];
    o.warn(
      `keyroll ${o.command}: --${old} is deprecated and goes in the next release; use --${d.use}` +
        `${typeof v === 'string' ? ` ${values[d.use]}` : ''}\n`,
    );
  }
  return { values, positionals: parsed.positionals };
}

/** A duration flag (`1h30m`, `90s`, `250ms`) in milliseconds, at least `min` and at most `max`. */
export function durationFlag(min = 0, max = Number.MAX_SAFE_INTEGER) {
  return z.string().transform((text, ctx) => {
    let ms: number;
    try {
      ms = parseDuration(text);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: errorMessage(err) });
      return z.NEVER;
    }
    if (ms < min || ms > max) {
      ctx.addIssue({
        code: 'custom',
        message:
          ms < min ? `expected at least ${formatDuration(min)}` : `expected at most ${formatDuration(max)}`,
      });
      return z.NEVER;
    }
    return ms;
  });
}

/** A whole-number flag in [min, max]; `what` names the thing in the upper bound's message. */
export function countFlag(min: number, max = Number.MAX_SAFE_INTEGER, what = '') {
  return z
    .string()
    .regex(/^\d+$/, 'expected a whole number')
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(min, `expected at least ${min}`)
        .max(max, `expected ${what ? `${what} ` : ''}at most ${max}`),
    );
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
