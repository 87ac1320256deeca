// Shared helpers for controller tests: fixture processes, captured logs, pid checks.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createLogger, type Logger, SecretRegistry } from '../../src/log.ts';

export const FIXTURE = fileURLToPath(new URL('./fixtures/child.ts', import.meta.url));
export const TOKEN = 'test-token-controller-0123456789';

export interface FixtureStart {
  pid: number;
  key: string | null;
  grandchild: number | null;
}

export function readStarts(logFile: string): FixtureStart[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as FixtureStart);
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A logger whose lines are kept in memory (for the secret grep), scrubbed like production. */
export function captureLogger(): { log: Logger; lines: string[]; secrets: SecretRegistry } {
  const lines: string[] = [];
  const secrets = new SecretRegistry();
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger({ secrets, destination: stream, level: 'debug' });
  return { log, lines, secrets };
}

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
