// Owns the CLI's shared vocabulary: usage errors, exit codes and flag parsing helpers.
import { type ParseArgsConfig, parseArgs } from 'node:util';

export const EXIT_OK = 0;
export const EXIT_NOT_DONE = 1;
export const EXIT_USAGE = 2;

/** Bad flags or arguments: the CLI prints the message and the command's usage, and exits 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  isTty: boolean;
}

export function processIo(): Io {
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
    isTty: Boolean(process.stdout.isTTY),
  };
}

/** `util.parseArgs` with strict checking, turning its errors into UsageErrors. */
export function parseFlags<T extends NonNullable<ParseArgsConfig['options']>>(
  argv: string[],
  options: T,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export type Command = (argv: string[], io: Io) => Promise<number>;
