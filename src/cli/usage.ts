// Owns the CLI's process boundary: the Io a command writes through, and the error vocabulary it
// shares with every module (src/errors.ts), re-exported for the commands.
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { errorMessage, UsageError } from '../errors.ts';

export { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, TerminalError, UsageError } from '../errors.ts';

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /** stderr is a terminal: progress lines are drawn there, and only then. */
  isTty: boolean;
  /** stderr's width in columns when it is a terminal; progress lines are cut to it. */
  columns?: number | undefined;
}

export function processIo(): Io {
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
    isTty: Boolean(process.stderr.isTTY),
    columns: process.stderr.isTTY ? process.stderr.columns : undefined,
  };
}

/**
 * `util.parseArgs` with strict checking, turning its errors into UsageErrors. Commands on the
 * shell (./shell.ts) declare their flags in their usage text instead.
 */
export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
}

export type Command = (argv: string[], io: Io) => Promise<number>;
