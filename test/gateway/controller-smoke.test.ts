// Runs the controller smoke script (real OpenClaw, no Docker) so CI runs it on every build. The
// entrypoint script's checks (an existing volume, the doctor path) run in controller-real.test.ts.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/sandbox.ts';

function runScript(name: string, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    // Own process group: on a timeout the script and everything it started are killed together.
    const p = spawn('bash', [join(REPO_ROOT, 'scripts', name)], { cwd: REPO_ROOT, detached: true });
    let out = '';
    p.stdout.on('data', (d) => {
      out += String(d);
    });
    p.stderr.on('data', (d) => {
      out += String(d);
    });
    const timer = setTimeout(() => {
      try {
        process.kill(-p.pid!, 'SIGTERM');
      } catch {
        // gone
      }
    }, timeoutMs);
    p.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe('controller smoke scripts', () => {
  it('scripts/controller-smoke-test.sh passes', async () => {
    const r = await runScript('controller-smoke-test.sh', 1_000_000);
    expect(r.out).toMatch(/controller-smoke-test: \d+ passed, 0 failed/);
    expect(r.code, r.out).toBe(0);
  }, 1_100_000);
});
