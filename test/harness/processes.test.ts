// Tracked processes: output capture, bounded waits, SIGKILL escalation and group-wide cleanup.
import { afterEach, describe, expect, it } from 'vitest';
import {
  killAllTracked,
  pidAlive,
  spawnTracked,
  trackedCount,
  waitForPidExit,
} from '../support/processes.ts';

const node = process.execPath;

afterEach(async () => {
  await killAllTracked(1_000);
});

describe('spawnTracked', () => {
  it('captures stdout and stderr lines and waits for a matching line', async () => {
    const p = spawnTracked(node, [
      '-e',
      'console.log("one"); console.error("two"); setTimeout(() => console.log("three"), 100)',
    ]);
    expect(await p.waitForLine(/^three$/, 5_000)).toBe('three');
    await p.exited;
    expect(p.stdoutLines).toEqual(['one', 'three']);
    expect(p.stderrLines).toEqual(['two']);
  });

  it('waitForLine rejects on timeout and when the child exits first', async () => {
    const idle = spawnTracked(node, ['-e', 'setTimeout(() => {}, 10_000)']);
    await expect(idle.waitForLine(/never/, 100)).rejects.toThrow(/within 100 ms/);
    const quick = spawnTracked(node, ['-e', 'process.exit(3)']);
    await expect(quick.waitForLine(/never/, 5_000)).rejects.toThrow(/exited \(code 3/);
  });

  it('stop() escalates to SIGKILL when SIGTERM is ignored', async () => {
    const p = spawnTracked(node, [
      '-e',
      'process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000)',
    ]);
    await p.waitForLine(/up/, 5_000);
    const t0 = Date.now();
    expect(await p.stop('SIGTERM', 300)).toEqual({ code: null, signal: 'SIGKILL' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it('killAllTracked() also kills grandchildren in the process group', async () => {
    const p = spawnTracked(node, [
      '-e',
      `const c = require('node:child_process').spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
       console.log('grandchild ' + c.pid); setInterval(() => {}, 1000);`,
    ]);
    const line = await p.waitForLine(/^grandchild \d+$/, 5_000);
    const grandchild = Number(line.split(' ')[1]);
    expect(pidAlive(grandchild)).toBe(true);
    expect(trackedCount()).toBe(1);
    await killAllTracked(1_000);
    expect(await waitForPidExit(grandchild, 5_000)).toBe(true);
    expect(trackedCount()).toBe(0);
  });
});
