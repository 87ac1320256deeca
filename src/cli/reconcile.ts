// Placeholder until the reconcile and diff commands land; they refuse to run rather than pretend.
import { EXIT_USAGE, type Io } from './usage.ts';

export async function runReconcile(_argv: string[], io: Io): Promise<number> {
  io.stderr('keyroll reconcile: not available in this build yet\n');
  return EXIT_USAGE;
}

export async function runDiff(_argv: string[], io: Io): Promise<number> {
  io.stderr('keyroll diff: not available in this build yet\n');
  return EXIT_USAGE;
}
