// Placeholder until the profiles command lands; it refuses to run rather than pretend.
import { EXIT_USAGE, type Io } from './usage.ts';

export async function run(_argv: string[], io: Io): Promise<number> {
  io.stderr('keyroll profiles: not available in this build yet\n');
  return EXIT_USAGE;
}
