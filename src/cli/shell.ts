// Owns what every `keyroll` command shares: its flags (declared by its usage text, plus the
// common ones), output mode, scrubbed stdout/stderr, logger, SIGINT/SIGTERM handling, progress.
//
// How to use commandContext (a command in 10 lines):
//   export async function run(argv: string[], io: Io): Promise<number> {
//     const ctx = commandContext(argv, io, { name: 'thing', usage: USAGE, kube: true });
//     try {
//       if (ctx.help) return EXIT_OK;                  // --help printed the usage already
//       const cfg = parseFlagValues(Schema, ctx.values); // src/flags.ts: `--flag: why` UsageErrors
//       ctx.secrets.add(token);                         // before anything can print or log it
//       const result = await work({ log: ctx.log, signal: ctx.signal, onProgress: ctx.progress(n) });
//       ctx.stdout(ctx.output === 'json' ? `${JSON.stringify(result)}\n` : render(result));
//       return result.ok ? EXIT_OK : EXIT_NOT_DONE;
//     } finally { ctx.dispose(); }                      // signal listeners off
//   }
// Throw UsageError (exit 2, hint to --help) or TerminalError (its exit code); main() prints them.
// Long-running servers end with `return ctx.untilSignalled(() => server.stop())`.
import { type DeprecatedFlag, type FlagValues, optionsFromUsage, parseCommandLine } from '../command-line.ts';
import { EXIT_OK, errorMessage } from '../errors.ts';
import { createLogger, type DestinationStream, type Logger } from '../log.ts';
import type { createProgress, Progress } from '../reconcile/progress.ts';
import { SecretRegistry } from '../secrets.ts';
import { type Io, UsageError } from './usage.ts';

export type OutputMode = 'text' | 'json';

export interface CommandSpec {
  /** As typed after `keyroll`: `fly`, `profiles scan`. */
  name: string;
  /** The command's help; its flag lines declare its flags (src/flags.ts optionsFromUsage). */
  usage: string;
  /** `-o/--output text|json` and `--json` (default true). */
  output?: boolean;
  /** `-n/--namespace`, `--context`, `--kubeconfig` (default false). */
  kube?: boolean;
  /** Old flag names still accepted for one release, with a warning on stderr. */
  deprecated?: Readonly<Record<string, DeprecatedFlag>>;
  allowPositionals?: boolean;
  /** Level when neither --log-level nor KEYROLL_LOG_LEVEL says (default warn). */
  logLevel?: string;
  /** Where log lines go (default stderr, so stdout stays the report). */
  logTo?: 'stdout' | 'stderr';
  /** Fields of every log line besides `app`. */
  logBase?: Record<string, unknown>;
  /**
   * `createProgress` (src/reconcile/progress.ts), for a command with a fan-out. Passed in, not
   * imported here: `keyroll controller` must load none of the reconcile code (nor its zod).
   */
  progress?: typeof createProgress;
}

export interface CommandContext {
  /** `--help` was given: the usage is printed, the command returns EXIT_OK. */
  readonly help: boolean;
  readonly values: FlagValues;
  readonly positionals: readonly string[];
  readonly output: OutputMode;
  /** Every value registered here is replaced by [REDACTED] in stdout, stderr and the log. */
  readonly secrets: SecretRegistry;
  stdout(text: string): void;
  stderr(text: string): void;
  readonly log: Logger;
  /** Aborts on the first SIGINT or SIGTERM (its reason names the signal). */
  readonly signal: AbortSignal;
  /** A string flag's value, or undefined. */
  str(name: string): string | undefined;
  /**
   * A fan-out's progress on stderr: a line cut to the terminal's width, only when stderr is a TTY
   * and the spec passed `progress`.
   */
  progress(total: number, label?: string): Progress;
  /** Waits for SIGINT/SIGTERM, runs `stop`, resolves 0 (stopped cleanly) or 1 (stop threw). */
  untilSignalled(stop: () => Promise<void>): Promise<number>;
  /** Removes the signal listeners; idempotent. */
  dispose(): void;
}

const OUTPUT_FLAGS = `  -o, --output text|json   output format (default text); --json is short for -o json
  --json`;

const KUBE_FLAGS = `  -n, --namespace NS       namespace [KEYROLL_NAMESPACE] (default: the kubeconfig context's,
                           else the pod's own, else default)
  --context NAME           kubeconfig context (default: the current context)
  --kubeconfig PATH        kubeconfig file [KUBECONFIG] (default: in-cluster service account)`;

const COMMON_FLAGS = `  --log-level LEVEL        trace|debug|info|warn|error|fatal|silent [KEYROLL_LOG_LEVEL]
  -h, --help               show this help`;

/** The usage with the common flags the spec asks for appended (those it does not list itself). */
export function fullUsage(spec: CommandSpec): string {
  const own = optionsFromUsage(spec.usage);
  const common = [COMMON_FLAGS];
  if (spec.kube) common.unshift(KUBE_FLAGS);
  if (spec.output !== false) common.unshift(OUTPUT_FLAGS);
  // A flag line with its continuation lines (indented deeper, not starting with `-`).
  const entries = common.join('\n').split(/\n(?= {2}-)/);
  const fresh = entries.filter((e) => Object.keys(optionsFromUsage(e)).some((name) => !(name in own)));
  return `${spec.usage.trimEnd()}\n\nCommon flags:\n${fresh.join('\n')}\n`;
}

/** Cuts a `\r`-redrawn status line to `columns - 1` characters (no wrap, so `\r` redraws it). */
export function fitToWidth(text: string, columns: number | undefined): string {
  if (!columns || columns < 2) return text;
  return text
    .split('\n')
    .map((line) => {
      const cr = line.startsWith('\r') ? '\r' : '';
      const body = cr ? line.slice(1) : line;
      return body.length > columns - 1 ? `${cr}${body.slice(0, columns - 2)}…` : line;
    })
    .join('\n');
}

/** Progress when stderr is not a terminal: nothing (a pipe or a log file gets the report only). */
const NO_PROGRESS: Progress = { phase() {}, result() {}, done() {}, finish() {} };

export function commandContext(argv: readonly string[], io: Io, spec: CommandSpec): CommandContext {
  const secrets = new SecretRegistry();
  const stdout = (t: string) => io.stdout(secrets.scrub(t));
  const stderr = (t: string) => io.stderr(secrets.scrub(t));
  const usage = fullUsage(spec);
  const { values, positionals } = parseCommandLine(argv, usage, {
    command: spec.name,
    warn: stderr,
    ...(spec.deprecated ? { deprecated: spec.deprecated } : {}),
    ...(spec.allowPositionals ? { allowPositionals: true } : {}),
  });
  const str = (name: string) => {
    const v = values[name];
    return typeof v === 'string' ? v : undefined;
  };
  let output: OutputMode = 'text';
  if (spec.output !== false) {
    const o = str('output') ?? (values.json ? 'json' : 'text');
    if (o !== 'text' && o !== 'json') throw new UsageError(`--output: expected text or json, got '${o}'`);
    if (values.json && str('output') === 'text')
      throw new UsageError('give --json or --output text, not both');
    output = o;
  }
  const level = str('log-level') ?? io.env.KEYROLL_LOG_LEVEL ?? spec.logLevel ?? 'warn';
  const destination: DestinationStream = {
    write: (line: string) => (spec.logTo === 'stdout' ? io.stdout(line) : io.stderr(line)),
  };
  const log = createLogger({ level, secrets, destination, base: { app: 'keyroll', ...spec.logBase } });

  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (abort.signal.aborted) {
      // Listeners stay installed: a second signal must not kill a shutdown in progress.
      log.warn({ signal: sig }, 'Signal received again; still stopping');
      return;
    }
    log.info({ signal: sig }, 'Signal received; stopping');
    abort.abort(new Error(`interrupted by ${sig}`));
  };
  let disposed = false;
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  };
  const help = values.help === true;
  if (help) {
    io.stdout(usage);
  } else {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }

  return {
    help,
    values,
    positionals,
    output,
    secrets,
    stdout,
    stderr,
    log,
    signal: abort.signal,
    str,
    progress: (total, label) =>
      io.isTty && spec.progress
        ? spec.progress(total, (t) => stderr(fitToWidth(t, io.columns)), true, label)
        : NO_PROGRESS,
    untilSignalled: (stop) =>
      new Promise<number>((resolve) => {
        const run = () =>
          stop().then(
            () => resolve(EXIT_OK),
            (err: unknown) => {
              log.error({ error: errorMessage(err) }, 'Shutdown failed');
              resolve(1);
            },
          );
        if (abort.signal.aborted) run();
        else abort.signal.addEventListener('abort', run, { once: true });
      }),
    dispose,
  };
}
