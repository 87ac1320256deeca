// Pure parts of the Fly loop: the per-machine plan (one class of action, live first, the cap),
// convergence, config fingerprints, and the loop's cadence with an injected clock.
import { describe, expect, it } from 'vitest';
import type { Clock } from '../../src/clock.ts';
import { nextDelay, runLoop } from '../../src/engine/run-loop.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { configFingerprint, configMatches, withKey } from '../../src/fly/durable.ts';
import type { FlyPassResult } from '../../src/fly/loop.ts';
import {
  durableState,
  type MachineInput,
  machineConverged,
  planMachines,
} from '../../src/fly/machine-plan.ts';
import { fleetMachines, machineTarget } from '../../src/fly/targets.ts';
import { silentLogger } from '../../src/log.ts';

const TOKEN = 'test-token-plan-0123456789';
const KEY = 'test-key-B-plan-000000000000002';
const WANT = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY });

const m = (
  id: string,
  state: string,
  durable: 'ok' | 'differs',
  live: MachineInput['live'],
): MachineInput => ({
  id,
  state,
  durable,
  live,
});

describe('planMachines', () => {
  it.each([
    // state, durable, live → action, durable state, live state
    ['started', 'differs', 'stale', 'live', 'deferred', 'stale'],
    ['started', 'ok', 'stale', 'live', 'ok', 'stale'],
    ['started', 'differs', 'ok', 'none', 'deferred', 'ok'],
    ['started', 'ok', 'ok', 'none', 'ok', 'ok'],
    ['started', 'differs', 'unreachable', 'none', 'deferred', 'unreachable'],
    ['started', 'ok', 'no-address', 'none', 'ok', 'no-address'],
    ['stopped', 'differs', null, 'durable', 'stale', 'not-running'],
    ['created', 'differs', null, 'durable', 'stale', 'not-running'],
    ['stopped', 'ok', null, 'none', 'ok', 'not-running'],
    ['suspended', 'differs', null, 'none', 'deferred', 'not-running'],
    ['starting', 'differs', null, 'none', 'deferred', 'not-running'],
  ] as const)(
    '%s machine, config %s, live %s → %s (durable %s, live %s)',
    (state, durable, live, action, ds, ls) => {
      const [p] = planMachines([m('a', state, durable, live)], { maxChanges: 5 });
      expect(p).toMatchObject({ action, durable: ds, live: ls, held: false });
    },
  );

  it('never plans a durable write for a started machine, even when only the config differs', () => {
    const plans = planMachines([m('a', 'started', 'differs', 'ok'), m('b', 'started', 'differs', 'stale')], {
      maxChanges: 10,
    });
    expect(plans.map((p) => p.action)).toEqual(['none', 'live']);
    expect(plans[0]!.reason).toMatch(/deferred until the machine is stopped/);
  });

  it('takes no action (and no lease) for drift a delivery cannot fix', () => {
    const [p] = planMachines([{ ...m('a', 'started', 'ok', 'stale'), liveFixable: false }], {
      maxChanges: 5,
    });
    expect(p).toMatchObject({ action: 'none', live: 'stale' });
    expect(p!.reason).toMatch(/cannot fix/);
  });

  it('caps changes per pass: live deliveries first, then config writes, in id order; the rest held', () => {
    const plans = planMachines(
      [
        m('s2', 'stopped', 'differs', null),
        m('c', 'started', 'ok', 'stale'),
        m('s1', 'stopped', 'differs', null),
        m('a', 'started', 'ok', 'stale'),
        m('ok', 'started', 'ok', 'ok'),
      ],
      { maxChanges: 3 },
    );
    const by = Object.fromEntries(plans.map((p) => [p.id, p]));
    expect(by.a!.action).toBe('live');
    expect(by.c!.action).toBe('live');
    expect(by.s1!.action).toBe('durable');
    expect(by.s2).toMatchObject({ action: 'none', held: true });
    expect(by.s2!.reason).toMatch(/--max-changes 3 reached, next pass/);
    expect(by.ok).toMatchObject({ action: 'none', held: false });
    // Input order is kept.
    expect(plans.map((p) => p.id)).toEqual(['s2', 'c', 's1', 'a', 'ok']);
  });
});

describe('convergence', () => {
  it.each([
    ['ok', 'ok', 'started', false, true],
    ['deferred', 'ok', 'started', false, true],
    ['deferred', 'ok', 'started', true, false],
    ['ok', 'stale', 'started', false, false],
    ['ok', 'unreachable', 'started', false, false],
    ['ok', 'not-running', 'stopped', false, true],
    ['stale', 'not-running', 'stopped', false, false],
    ['deferred', 'not-running', 'suspended', false, false],
  ] as const)('durable %s, live %s, %s, requireDurable %s → %s', (d, l, s, req, want) => {
    expect(machineConverged(d, l, s, req)).toBe(want);
  });

  it('durableState: only stopped/created machines can be written without a restart', () => {
    expect(durableState('stopped', false)).toBe('stale');
    expect(durableState('started', false)).toBe('deferred');
    expect(durableState('started', true)).toBe('ok');
  });
});

describe('config fingerprints', () => {
  it('compares by HMAC with the controller token, like the controller envHash; durable = no key in the config', () => {
    const config = { env: { KILOCODE_API_KEY: KEY, OTHER: 'x' }, image: 'img' };
    expect(configFingerprint(config, 'KILOCODE_API_KEY', TOKEN)).toBe(WANT);
    // The app secret holds the key: a config holding it, even the desired one, must lose it.
    expect(configMatches(config, 'KILOCODE_API_KEY', TOKEN, WANT)).toBe(false);
    expect(
      configMatches({ env: { KILOCODE_API_KEY: 'test-key-A-old' } }, 'KILOCODE_API_KEY', TOKEN, WANT),
    ).toBe(false);
    expect(configFingerprint({}, 'KILOCODE_API_KEY', TOKEN)).toBeNull();
    expect(configMatches(undefined, 'KILOCODE_API_KEY', TOKEN, WANT)).toBe(true);
    expect(configMatches({ env: { OTHER: 'x' } }, 'KILOCODE_API_KEY', TOKEN, WANT)).toBe(true);
  });

  it('withKey copies the whole config and changes only the one variable', () => {
    const config = { env: { OTHER: 'x' }, image: 'img', guest: { cpus: 1 }, metadata: { a: 'b' } };
    const next = withKey(config, 'KILOCODE_API_KEY', KEY);
    expect(next).toEqual({ ...config, env: { OTHER: 'x', KILOCODE_API_KEY: KEY } });
    expect(config.env).toEqual({ OTHER: 'x' });
    expect(withKey(undefined, 'K', KEY)).toEqual({ env: { K: KEY } });
  });
});

describe('targets', () => {
  it('drops gone machines, sorts by id, and addresses the controller by private IP and port', () => {
    const list = fleetMachines([
      { id: 'b', state: 'started', private_ip: 'fdaa::2' },
      { id: 'x', state: 'destroyed' },
      { id: 'a', state: 'started', private_ip: '127.0.0.1', config: { metadata: { keyroll_port: '4321' } } },
    ]);
    expect(list.map((x) => x.id)).toEqual(['a', 'b']);
    const a = machineTarget(list[0]!, { port: 18789, token: TOKEN, timeoutMs: 1000 });
    const b = machineTarget(list[1]!, { port: 18789, token: TOKEN, timeoutMs: 1000 });
    expect('target' in a && a.target.url).toBe('http://127.0.0.1:4321');
    expect('target' in b && b.target.url).toBe('http://[fdaa::2]:18789');
    const bad = machineTarget({ id: 'c', state: 'started' }, { port: 1, token: TOKEN, timeoutMs: 1 });
    expect('addressError' in bad && bad.addressError).toMatch(/private_ip is missing/);
  });
});

describe('runLoop', () => {
  function manualClock(): Clock & { slept: number[] } {
    const slept: number[] = [];
    return {
      slept,
      now: () => 0,
      sleep: async (ms) => {
        slept.push(ms);
      },
      setTimeout: () => {
        throw new Error('the loop only sleeps');
      },
    };
  }
  const pass = (converged: boolean) => ({ converged }) as FlyPassResult;

  it('nextDelay = interval + random × jitter', () => {
    expect(nextDelay(300_000, 60_000, () => 0)).toBe(300_000);
    expect(nextDelay(300_000, 60_000, () => 0.5)).toBe(330_000);
  });

  it('--once runs one pass and never sleeps', async () => {
    const clock = manualClock();
    let n = 0;
    const r = await runLoop({
      once: true,
      intervalMs: 1000,
      jitterMs: 0,
      clock,
      signal: new AbortController().signal,
      pass: async () => {
        n++;
        return pass(true);
      },
      onPass: () => {},
      onError: () => {},
      log: silentLogger(),
    });
    expect(n).toBe(1);
    expect(r.last?.converged).toBe(true);
    expect(clock.slept).toEqual([]);
  });

  it('keeps going after a failed pass, at a jittered interval, until aborted', async () => {
    const clock = manualClock();
    const abort = new AbortController();
    const errors: unknown[] = [];
    let n = 0;
    const r = await runLoop({
      once: false,
      intervalMs: 1000,
      jitterMs: 500,
      random: () => 0.5,
      clock,
      signal: abort.signal,
      pass: async () => {
        n++;
        if (n === 2) throw new Error('list failed');
        if (n === 4) abort.abort();
        return pass(n === 4);
      },
      onPass: () => {},
      onError: (e) => errors.push(e),
      log: silentLogger(),
    });
    expect(n).toBe(4);
    expect(errors).toHaveLength(1);
    expect(clock.slept).toEqual([1250, 1250, 1250]);
    expect(r.last?.converged).toBe(true);
    expect(r.error).toBeNull();
  });
});
