// Owns what the profile tests share: fresh state dirs removed after each test, and an Io that
// keeps what a command printed (for `main(['profiles', …])` and the secret greps).
import { chmodSync, rmSync } from 'node:fs';
import { afterEach } from 'vitest';
import { main } from '../../src/cli/main.ts';
import type { Io } from '../../src/cli/usage.ts';
import { makeStateDir } from '../fixtures/profiles/generate.ts';

/**
 * Returns a maker of fresh state dirs (`makeStateDir`: 0700 temp dirs), each removed after the
 * test that made it, its mode restored first so a test that made it read-only leaves nothing.
 * Call once, at the top of a test file.
 */
export function stateDirs(): (prefix?: string) => string {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) {
      try {
        chmodSync(d, 0o700);
      } catch {
        // already gone
      }
      rmSync(d, { recursive: true, force: true });
    }
  });
  return (prefix) => {
    const d = makeStateDir(prefix);
    dirs.push(d);
    return d;
  };
}

/** An Io (not a terminal, empty env) that keeps stdout in `out` and stderr in `err`. */
export function captureIo(): Io & { out: string; err: string } {
  const io = {
    out: '',
    err: '',
    env: {},
    isTty: false,
    stdout: (t: string) => {
      io.out += t;
    },
    stderr: (t: string) => {
      io.err += t;
    },
  };
  return io;
}

/** `keyroll profiles …` in this process: exit code and what it printed. */
export async function profilesCli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = captureIo();
  const code = await main(['profiles', ...argv], io);
  return { code, out: io.out, err: io.err };
}
