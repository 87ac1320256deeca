// Owns the error vocabulary every command and module shares: exit codes, the errors that end a
// command with a given code, and the one way to turn a thrown value into text.

/** The command did what was asked (or found nothing to do). */
export const EXIT_OK = 0;
/** The command ran, but the work is not done: drift remains, a target did not converge. */
export const EXIT_NOT_DONE = 1;
/** Bad usage, configuration, input, or an API that refused: nothing (more) was changed. */
export const EXIT_USAGE = 2;

/**
 * An error that ends a command: the CLI prints `keyroll <command>: <message>` on stderr and exits
 * with `exitCode`. The message must already be fit for a terminal: it names what is wrong, never a
 * secret value.
 */
export class TerminalError extends Error {
  override name = 'TerminalError';
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT_USAGE, options?: ErrorOptions) {
    super(message, options);
    this.exitCode = exitCode;
  }
}

/** Bad flags or arguments: the CLI prints the message and a hint to `--help`, and exits 2. */
export class UsageError extends TerminalError {
  override name = 'UsageError';
  constructor(message: string, options?: ErrorOptions) {
    super(message, EXIT_USAGE, options);
  }
}

/**
 * The message of a thrown value: an Error's message, a thrown string as is, anything else
 * 'unknown error' (an object's String() is '[object Object]' at best, its contents at worst).
 */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (typeof err === 'string') return err;
  return 'unknown error';
}
