// Supervisor faults with real processes: SIGKILL escalation, backoff, coalescing, env per spawn.
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { Supervisor, type SupervisorOptions } from '../../src/controller/supervisor.ts';
import { freePort } from '../support/http.ts';
import { captureLogger, FIXTURE, pidAlive, readStarts, tempDir, waitFor } from './helpers.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function make(fixEnv: Record<string, string>, extra: Partial<SupervisorOptions> = {}) {
  const { dir, cleanup } = tempDir('keyroll-sup-');
  const port = await freePort();
  const logFile = join(dir, 'starts.jsonl');
  const { log, lines, secrets } = captureLogger();
  const vars: Record<string, string> = { KILOCODE_API_KEY: 'test-key-A-000000', ...fixEnv };
  const sup = new Supervisor({
    command: process.execPath,
    args: [FIXTURE],
    // Evaluated on each spawn: the test mutates `vars` and expects the next child to see it.
    env: () => ({
      PATH: process.env.PATH ?? '',
      OPENCLAW_GATEWAY_PORT: String(port),
      FIX_LOG: logFile,
      ...vars,
    }),
    gatewayPort: port,
    log,
    probeIntervalMs: 25,
    stopTimeoutMs: 2_000,
    ...extra,
  });
  cleanups.push(async () => {
    await sup.shutdown().catch(() => {});
    for (const s of readStarts(logFile)) {
      for (const pid of [s.pid, s.grandchild]) {
        if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
      }
    }
    cleanup();
  });
  return { sup, vars, starts: () => readStarts(logFile), lines, port, secrets };
}

/** A manual clock that records every wait asked of it. */
class RecordingClock extends ManualClock {
  readonly asked: number[] = [];
  override setTimeout(fn: () => void, ms: number): () => void {
    this.asked.push(ms);
    return super.setTimeout(fn, ms);
  }
}

/** Resolves once the child has crashed and its respawn waits on `clock`. */
async function crashed(sup: Supervisor, clock: ManualClock): Promise<void> {
  // The backoff event comes right before the wait is asked of the clock, in the same turn.
  if (sup.getState() !== 'crashed' || clock.pending !== 1) await once(sup, 'backoff');
}

/**
 * Once the child has crashed: the respawn was asked to wait `ms`; 1 ms short of it nothing
 * happens, at `ms` the next child is spawned.
 */
async function respawnsAfter(sup: Supervisor, clock: RecordingClock, ms: number): Promise<void> {
  const spawns = sup.getStats().spawns;
  await crashed(sup, clock);
  expect(clock.asked.at(-1)).toBe(ms);
  await clock.advance(ms - 1);
  expect(sup.getStats().spawns).toBe(spawns);
  await clock.advance(1);
  expect(sup.getStats()).toMatchObject({ spawns: spawns + 1, state: 'starting' });
}

describe('supervisor', () => {
  it('spawns each child with the env as it is at spawn time, never a snapshot', async () => {
    const { sup, vars, starts } = await make({});
    await sup.start();
    expect(await sup.waitForState('running', 10_000)).toBe(true);
    vars.KILOCODE_API_KEY = 'test-key-B-111111';
    await sup.restart();
    expect(await sup.waitForState('running', 10_000)).toBe(true);
    const s = starts();
    expect(s.map((x) => x.key)).toEqual(['test-key-A-000000', 'test-key-B-111111']);
    expect(s[0]!.pid).not.toBe(s[1]!.pid);
    expect(sup.childEnv()?.KILOCODE_API_KEY).toBe('test-key-B-111111');
    expect(sup.getStats()).toMatchObject({
      state: 'running',
      pid: s[1]!.pid,
      restarts: 0,
      requestedRestarts: 1,
    });
  });

  it('is running only after /readyz answers 200', async () => {
    const { sup } = await make({ FIX_READY_DELAY_MS: '600' });
    const t0 = Date.now();
    await sup.start();
    expect(sup.getState()).toBe('starting');
    expect(await sup.waitForState('running', 10_000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(550);
  });

  it('asks a given probe with the child port and probeTimeoutMs, and is running once it says so', async () => {
    const asked: [number, number][] = [];
    let ready = false;
    const { sup, port } = await make(
      { FIX_NO_LISTEN: '1' },
      {
        probeTimeoutMs: 300,
        probe: async (p, timeoutMs) => {
          asked.push([p, timeoutMs]);
          return ready;
        },
      },
    );
    await sup.start();
    await waitFor(() => asked.length >= 3, 5_000, 'probes');
    expect(sup.getState()).toBe('starting');
    ready = true;
    expect(await sup.waitForState('running', 5_000)).toBe(true);
    expect(new Set(asked.map(([p, t]) => `${p}/${t}`))).toEqual(new Set([`${port}/300`]));
  });

  it('kills a child that ignores SIGTERM after stopTimeoutMs', async () => {
    const { sup, starts } = await make({ FIX_IGNORE_SIGTERM: '1' }, { stopTimeoutMs: 500 });
    await sup.start();
    await sup.waitForState('running', 10_000);
    const pid = sup.getStats().pid!;
    const t0 = Date.now();
    await sup.stop();
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(480);
    expect(took).toBeLessThan(3_000);
    expect(pidAlive(pid)).toBe(false);
    expect(sup.getStats()).toMatchObject({ state: 'stopped', pid: null });
    expect(sup.getStats().lastExit?.signal).toBe('SIGKILL');
    expect(starts()).toHaveLength(1);
  });

  it('restarts past a child that ignores SIGTERM (the queue is never blocked)', async () => {
    const { sup, vars, starts } = await make({ FIX_IGNORE_SIGTERM: '1' }, { stopTimeoutMs: 300 });
    await sup.start();
    await sup.waitForState('running', 10_000);
    vars.KILOCODE_API_KEY = 'test-key-C-222222';
    await sup.restart();
    await sup.waitForState('running', 10_000);
    expect(starts().map((s) => s.key)).toEqual(['test-key-A-000000', 'test-key-C-222222']);
    expect(pidAlive(starts()[0]!.pid)).toBe(false);
  });

  it('backs off a crash loop 1 s, 2 s, 4 s … capped, and a requested restart is not a crash', async () => {
    const clock = new RecordingClock(1_000_000);
    const { sup, starts } = await make({ FIX_EXIT_AFTER_MS: '0' }, { clock, backoffMaxMs: 8_000 });
    await sup.start();
    for (const ms of [1_000, 2_000, 4_000, 8_000, 8_000]) await respawnsAfter(sup, clock, ms);
    await crashed(sup, clock);
    await sup.stop();
    expect(clock.pending).toBe(0); // the stop cancelled the waiting respawn
    expect(clock.asked).toEqual([1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    expect(sup.getStats()).toMatchObject({ state: 'stopped', restarts: 6, requestedRestarts: 0, spawns: 6 });
    expect(starts()).toHaveLength(6);
  });

  it('resets the backoff after a run of healthyThresholdMs', async () => {
    const clock = new RecordingClock(1_000_000);
    const { sup } = await make({ FIX_EXIT_AFTER_MS: '50' }, { clock });
    await sup.start();
    for (const ms of [1_000, 2_000, 4_000]) await respawnsAfter(sup, clock, ms);
    // The fourth child "runs" 31 s on the manual clock before it crashes (its exit is 50 ms of
    // real time away): the backoff starts over.
    await clock.advance(31_000);
    for (const ms of [1_000, 2_000]) await respawnsAfter(sup, clock, ms);
    await sup.stop();
    expect(clock.asked).toEqual([1_000, 2_000, 4_000, 1_000, 2_000]);
  });

  it('coalesces a burst of rotation restarts into at most two; the last child has the last key', async () => {
    const { sup, vars, starts } = await make({ FIX_READY_DELAY_MS: '100' });
    await sup.start();
    await sup.waitForState('running', 10_000);
    const all: Promise<void>[] = [];
    for (let i = 0; i < 10; i++) {
      vars.KILOCODE_API_KEY = `test-key-burst-${i}-000000`;
      all.push(sup.requestRestart());
      await new Promise((r) => setTimeout(r, 15)); // spread over the first restart
    }
    await Promise.all(all);
    await sup.waitForState('running', 10_000);
    const s = starts();
    expect(s.length - 1).toBeGreaterThanOrEqual(1);
    expect(s.length - 1).toBeLessThanOrEqual(2);
    expect(sup.getStats().requestedRestarts).toBeLessThanOrEqual(2);
    expect(s.at(-1)!.key).toBe('test-key-burst-9-000000');
    expect(sup.childEnv()?.KILOCODE_API_KEY).toBe('test-key-burst-9-000000');
  });

  it('does not lose a rotation that arrives while the child is starting', async () => {
    const { sup, vars, starts } = await make({ FIX_READY_DELAY_MS: '1500' });
    await sup.start();
    expect(sup.getState()).toBe('starting');
    vars.KILOCODE_API_KEY = 'test-key-D-333333';
    await sup.requestRestart();
    expect(await sup.waitForState('running', 10_000)).toBe(true);
    expect(starts().at(-1)!.key).toBe('test-key-D-333333');
    expect(sup.childEnv()?.KILOCODE_API_KEY).toBe('test-key-D-333333');
  });

  it('stops the whole process group: no grandchild survives stop or shutdown', async () => {
    const { sup, starts } = await make({ FIX_GRANDCHILD: '1' });
    await sup.start();
    await sup.waitForState('running', 10_000);
    const first = await waitFor(() => starts()[0], 5_000, 'first start');
    expect(first.grandchild).toBeTruthy();
    expect(pidAlive(first.grandchild!)).toBe(true);
    await sup.shutdown();
    expect(pidAlive(first.pid)).toBe(false);
    await waitFor(() => !pidAlive(first.grandchild!), 3_000, 'grandchild gone');
    expect(sup.getState()).toBe('shutting_down');
    await expect(sup.start()).rejects.toThrow(/shutting down/);
  });

  it('treats a child that never becomes ready as crashed and respawns it with backoff', async () => {
    const backoffs: number[] = [];
    const clock = new RecordingClock();
    // The ready timeout is real time (a real child is starting); the backoff is on the clock.
    const { sup } = await make({ FIX_NO_LISTEN: '1' }, { readyTimeoutMs: 300, backoffInitialMs: 50, clock });
    sup.on('backoff', (ms: number) => backoffs.push(ms));
    await sup.start();
    await respawnsAfter(sup, clock, 50);
    expect(backoffs).toEqual([50]);
    expect(sup.getStats()).toMatchObject({ restarts: 1, spawns: 2 });
  });

  it('scrubs registered secrets from forwarded child output', async () => {
    const { sup, lines, secrets } = await make({ FIX_PRINT_KEY: '1' });
    secrets.add('test-key-A-000000');
    await sup.start();
    await waitFor(() => lines.some((l) => l.includes('debug: key=')), 10_000, 'the key line');
    const all = lines.join('');
    expect(all).not.toContain('test-key-A-000000');
    expect(all).toContain('debug: key=[REDACTED]');
  });

  it('cuts an overlong output line at maxLineLength, and a key straddling the cut leaves no trace', async () => {
    const { sup, lines, secrets } = await make({ FIX_KEY_PAD: '20' }, { maxLineLength: 30 });
    secrets.add('test-key-A-000000');
    await sup.start();
    await waitFor(() => lines.some((l) => l.includes('xxxxxxxxxxxxxxxxxxxx')), 10_000, 'the long line');
    const line = JSON.parse(lines.find((l) => l.includes('xxxxxxxxxxxxxxxxxxxx'))!) as { line: string };
    expect(line.line).toBe(`${'x'.repeat(20)}[REDACTED]…`);
    expect(lines.join('')).not.toContain('test-key');
    expect(lines.join('')).not.toContain('yyy');
  });

  it('forwards child output as log lines', async () => {
    const { sup, lines } = await make({});
    await sup.start();
    await sup.waitForState('running', 10_000);
    await waitFor(() => lines.some((l) => l.includes('fixture child started')), 5_000, 'forwarded line');
    const line = JSON.parse(lines.find((l) => l.includes('fixture child started'))!);
    expect(line).toMatchObject({ msg: 'Gateway output', stream: 'stdout' });
  });
});

describe('surge: the old gateway yields the CPU to the new one from the spawn on', () => {
  /** Niceness of every thread of a live process (field 19 of /proc/PID/task/TID/stat). */
  const threadNices = (pid: number) =>
    readdirSync(`/proc/${pid}/task`).map((tid) => {
      const raw = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return Number(raw.slice(raw.lastIndexOf(')') + 2).split(' ')[16]);
    });
  /** The autogroup niceness (`/autogroup-N nice X`), or null on a kernel without autogroups. */
  const autogroupNice = (pid: number) => {
    try {
      return Number(/nice (-?\d+)/.exec(readFileSync(`/proc/${pid}/autogroup`, 'utf8'))?.[1]);
    } catch {
      return null;
    }
  };

  /** The first log line with message `msg`, parsed (undefined when there is none). */
  const logged = (lines: string[], msg: string) =>
    lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === msg);

  async function surgeSupervisor(extra: Partial<SupervisorOptions> = {}) {
    const { dir, cleanup } = tempDir('keyroll-sup-nice-');
    const port = await freePort();
    const surgePort = await freePort();
    const logFile = join(dir, 'starts.jsonl');
    const { log, lines } = captureLogger();
    // Knobs per spawn: the test sets them before the restart, for the next child only.
    const knobs: Record<string, string> = {};
    const sup = new Supervisor({
      command: process.execPath,
      args: [FIXTURE],
      env: (p) => ({
        PATH: process.env.PATH ?? '',
        OPENCLAW_GATEWAY_PORT: String(p),
        FIX_LOG: logFile,
        ...knobs,
      }),
      gatewayPort: port,
      surgePort,
      strategy: 'surge',
      log,
      probeIntervalMs: 25,
      stopTimeoutMs: 1_500,
      ...extra,
    });
    cleanups.push(async () => {
      await sup.shutdown().catch(() => {});
      for (const s of readStarts(logFile)) if (pidAlive(s.pid)) process.kill(s.pid, 'SIGKILL');
      cleanup();
    });
    await sup.start();
    expect(await sup.waitForState('running', 10_000)).toBe(true);
    return { sup, knobs, lines, logFile, oldPid: sup.getStats().pid! };
  }

  it('every thread of the old gateway is at surgeNice while the new one starts (its autogroup untouched); the new one keeps 0', async () => {
    const { sup, knobs, lines, oldPid } = await surgeSupervisor();
    expect(threadNices(oldPid).length).toBeGreaterThan(1); // Node's own threads, not just main
    expect(new Set(threadNices(oldPid))).toEqual(new Set([0]));
    // The next child is ready only after 5 s: the old one is looked at before the switch.
    knobs.FIX_READY_DELAY_MS = '5000';
    const restarting = sup.requestRestart();
    const said = await waitFor(
      () => logged(lines, 'Old gateway yields the CPU to the surge gateway'),
      4_000,
      'the old gateway reniced',
    );
    expect(sup.getStats().pid).toBe(oldPid); // not switched yet
    expect(new Set(threadNices(oldPid))).toEqual(new Set([10]));
    const group = autogroupNice(oldPid);
    if (group !== null) expect(group).toBe(0);
    await waitFor(() => sup.getStats().pid !== oldPid, 10_000, 'the switch');
    const newPid = sup.getStats().pid!;
    expect(new Set(threadNices(newPid))).toEqual(new Set([0]));
    await restarting;
    expect(pidAlive(oldPid)).toBe(false);
    expect(said).toMatchObject({ pid: oldPid, nice: 10, threads: true, autogroup: false });
  }, 30_000);

  it('with surgeAutogroup its autogroup yields too; after a failed surge the old gateway serves on, its autogroup back at 0', async () => {
    const { sup, knobs, lines, oldPid } = await surgeSupervisor({
      readyTimeoutMs: 5_000,
      surgeAutogroup: true,
    });
    knobs.FIX_NO_LISTEN = '1';
    const restarting = sup.requestRestart();
    const said = await waitFor(
      () => logged(lines, 'Old gateway yields the CPU to the surge gateway'),
      4_000,
      'the old gateway reniced',
    );
    const group = autogroupNice(oldPid);
    expect(said).toMatchObject({ threads: true, autogroup: group !== null });
    if (group !== null) expect(group).toBe(10);
    await expect(restarting).rejects.toThrow(/did not become ready/);
    expect(sup.getStats()).toMatchObject({ pid: oldPid, state: 'running' });
    const back = logged(lines, 'Old gateway priority set back after the failed surge');
    expect(back).toMatchObject({ pid: oldPid });
    if (autogroupNice(oldPid) !== null) expect(autogroupNice(oldPid)).toBe(0);
    // Threads go back to 0 only with CAP_SYS_NICE; what the log says is what the threads have.
    expect(new Set(threadNices(oldPid))).toEqual(new Set([back?.threads ? 0 : 10]));
  }, 30_000);

  it('surgeNice null leaves the old gateway as it is', async () => {
    const { sup, knobs, lines, logFile, oldPid } = await surgeSupervisor({ surgeNice: null });
    // Looked at while the new child is up but not yet ready: after the switch the old one
    // drains at once (nothing in flight) and its /proc entry may already be gone.
    knobs.FIX_READY_DELAY_MS = '2000';
    const restarting = sup.requestRestart();
    await waitFor(() => readStarts(logFile).length === 2, 4_000, 'the surge spawn');
    expect(sup.getStats().pid).toBe(oldPid);
    expect(new Set(threadNices(oldPid))).toEqual(new Set([0]));
    await restarting;
    expect(lines.join('')).not.toContain('yields the CPU');
  }, 30_000);
});
