// The engine's steps as promise chains (observeTarget, each target's completion in runPass): what
// they log, when they close a target's connections, and how they fail, against in-memory
// controllers and a capturing logger.
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.ts';
import { runPass } from '../../src/engine/pass.ts';
import { observeTarget, type Target } from '../../src/engine/target.ts';
import { createLogger, type LogLevel } from '../../src/log.ts';
import { type ControllerClient, ControllerError } from '../../src/reconcile/controller-client.ts';
import { KEY_NEW, KEY_OLD, observed, TOKEN } from '../reconcile/support/fixtures.ts';

function logger(level: LogLevel = 'warn') {
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level, destination: { write: (l) => void lines.push(JSON.parse(l)) } });
  return { log, lines };
}

function env(log = logger().log, signal = AbortSignal.timeout(10_000)) {
  return {
    clock: systemClock,
    log,
    retry: { retries: 2, minTimeoutMs: 1, maxTimeoutMs: 1 },
    deadlineMs: 5_000,
    pollIntervalMs: 1,
    signal,
  };
}

/** A controller that fails every state read, counting them and its closeIdle calls. */
function down() {
  const counts = { reads: 0, closed: 0 };
  const client: ControllerClient = {
    getState: async () => {
      counts.reads++;
      throw new ControllerError('network', 'GET _kilo/state failed: ECONNREFUSED');
    },
    patchEnv: async () => ({ ok: true, signaled: true, migratedProfiles: 0 }),
    closeIdle: () => void counts.closed++,
  };
  return { client, counts };
}

/** A controller that restarts onto the delivered key at once. */
function healthy() {
  const counts = { closed: 0 };
  let patched = false;
  const client: ControllerClient = {
    getState: async () => (patched ? observed({ gateway: { pid: 5151 } }, KEY_NEW) : observed({}, KEY_OLD)),
    patchEnv: async () => {
      patched = true;
      return { ok: true, signaled: true, migratedProfiles: 0 };
    },
    closeIdle: () => void counts.closed++,
  };
  return { client, counts };
}

const target = (name: string, client: ControllerClient): Target => ({
  name,
  url: `http://${name}`,
  labels: {},
  token: TOKEN,
  client,
});

describe('observeTarget', () => {
  it('an unreachable controller: a warning per retry and one when it gives up, bound to the target', async () => {
    const { log, lines } = logger();
    const d = down();
    const o = await observeTarget(target('t-down', d.client), env(log));
    expect(o).toEqual({ ok: false, error: 'GET _kilo/state failed: ECONNREFUSED' });
    expect(d.counts.reads).toBe(3);
    expect(lines.map((l) => [l.msg, l.target, l.component, l.attempt])).toEqual([
      ['Observe failed; retrying', 't-down', 'reconcile', 1],
      ['Observe failed; retrying', 't-down', 'reconcile', 2],
      ['Target unreachable', 't-down', 'reconcile', undefined],
    ]);
  });

  it('logs nothing for a reachable controller, nor below the logger level', async () => {
    const quiet = logger();
    expect(await observeTarget(target('t-ok', healthy().client), env(quiet.log))).toMatchObject({ ok: true });
    const errorsOnly = logger('error');
    expect(await observeTarget(target('t-down', down().client), env(errorsOnly.log))).toMatchObject({
      ok: false,
    });
    expect([...quiet.lines, ...errorsOnly.lines]).toEqual([]);
  });

  it('throws the abort reason, and warns of nothing, when the signal aborts', async () => {
    const { log, lines } = logger();
    const ac = new AbortController();
    const client: ControllerClient = {
      ...down().client,
      getState: async () => {
        ac.abort(new Error('shutting down'));
        throw new ControllerError('network', 'GET _kilo/state failed: ECONNRESET');
      },
    };
    await expect(observeTarget(target('t', client), env(log, ac.signal))).rejects.toThrow('shutting down');
    expect(lines.filter((l) => l.msg === 'Target unreachable')).toEqual([]);
  });
});

describe('runPass: each target completed as it finishes', () => {
  const opts = (e: ReturnType<typeof env>, keepResults = true) => ({
    key: { key: KEY_NEW, version: 'v2' },
    spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' as const },
    rollout: { concurrency: 2, maxUnavailable: 2, failureBudget: 1, paused: false },
    dryRun: false,
    keepResults,
    env: e,
  });

  it('closes each target’s connections once, tallies and keeps its result in input order', async () => {
    const a = healthy();
    const b = down();
    const c = healthy();
    const seen: string[] = [];
    const r = await runPass([target('a', a.client), target('b', b.client), target('c', c.client)], {
      ...opts(env()),
      onResult: (x) => seen.push(x.name),
    });
    expect(r.targets.map((x) => [x.name, x.outcome])).toEqual([
      ['a', 'converged'],
      ['b', 'unreachable'],
      ['c', 'converged'],
    ]);
    expect(r.summary).toMatchObject({ total: 3, converged: 2, unreachable: 1, patched: 2 });
    expect(seen.sort()).toEqual(['a', 'b', 'c']);
    expect([a.counts.closed, b.counts.closed, c.counts.closed]).toEqual([1, 1, 1]);
  });

  it('a target that fails (the pass aborted) still has its connections closed, and the pass rejects', async () => {
    const ac = new AbortController();
    const closed: string[] = [];
    const failing = (name: string): ControllerClient => ({
      getState: async () => {
        ac.abort(new Error('pass cancelled'));
        throw new ControllerError('network', 'GET _kilo/state failed: ECONNRESET');
      },
      patchEnv: async () => ({ ok: true, signaled: true, migratedProfiles: 0 }),
      closeIdle: () => void closed.push(name),
    });
    await expect(
      runPass(
        [target('x', failing('x')), target('y', failing('y'))],
        opts(env(logger().log, ac.signal), false),
      ),
    ).rejects.toThrow('pass cancelled');
    expect(closed.sort()).toEqual(['x', 'y']);
  });
});
