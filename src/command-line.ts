// Owns reading a command line (nothing here imports src/cli/ or zod, so the in-pod controller
// can use it): flags declared by the usage text itself, deprecated aliases, and the checks of
// flag values (Go-style durations, whole numbers) with the reasons every command prints as
// `--flag: why`. src/flags.ts wraps the checks as zod types for the commands that use zod.
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';
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

/** A flag value checked: the value, or why it is refused (a reason that never quotes a secret). */
export type Checked<T> = { ok: true; value: T } | { ok: false; reason: string };

/** A duration (`1h30m`, `90s`, `250ms`) in milliseconds, at least `min` and at most `max`. */
export function checkDuration(text: string, min = 0, max = Number.MAX_SAFE_INTEGER): Checked<number> {
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  }
  if (ms < min) return { ok: false, reason: `expected at least ${formatDuration(min)}` };
  if (ms > max) return { ok: false, reason: `expected at most ${formatDuration(max)}` };
  return { ok: true, value: ms };
}

/** Digits only, in [min, max]; `what` names the thing in the upper bound's reason. */
export function checkCount(
  text: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
  what = '',
): Checked<number> {
  if (!/^\d+$/.test(text)) return { ok: false, reason: 'expected a whole number' };
  const n = Number(text);
  if (n < min) return { ok: false, reason: `expected at least ${min}` };
  if (n > max) return { ok: false, reason: `expected ${what ? `${what} ` : ''}at most ${max}` };
  return { ok: true, value: n };
}
