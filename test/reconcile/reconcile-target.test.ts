// The per-target pipeline against an in-memory controller port and a fake clock: deadlines and
// polling are exercised by advancing time, not by waiting for it.
import { describe, expect, it } from 'vitest';
import type { Clock } from '../../src/clock.ts';
import { runPass } from '../../src/engine/pass.ts';
import { RestartPace, reconcileTarget, type TargetWork } from '../../src/engine/target.ts';
import type { ObservedState, StateWait } from '../../src/kilo-state.ts';
import { silentLogger } from '../../src/log.ts';
import { type ControllerClient, ControllerError } from '../../src/reconcile/controller-client.ts';
import { FailureBudget, Semaphore } from '../../src/reconcile/limits.ts';
import { KEY_NEW, KEY_OLD, observed, TOKEN, traffic } from './support/fixtures.ts';

function fakeClock(): Clock & { slept: number } {
  let now = 1_000_000;
  const c = {
    slept: 0,
    now: () => now,
    sleep: async (ms: number) => {
      now += ms;
      c.slept += ms;
    },
    setTimeout: () => {
      throw new Error('the per-target pipeline only sleeps');
    },
  };
  return c;
}

/** A controller port whose state after a patch follows `afterPatch(n)` for the n-th observation. */
function client(initial: ObservedState, afterPatch: (n: number) => ObservedState) {
  let patched = false;
  let n = 0;
  const calls: string[] = [];
  const c: ControllerClient = {
    getState: async () => {
      calls.push('GET');
      return patched ? afterPatch(++n) : initial;
    },
    patchEnv: async (vars) => {
      calls.push(`POST ${Object.keys(vars).join(',')}`);
      patched = true;
      return { ok: true, signaled: true, migratedProfiles: 0 };
    },
  };
  return { c, calls };
}

interface Over {
  dryRun?: boolean;
  budget?: FailureBudget;
  deadlineMs?: number;
}

function ctx(clock: Clock, over: Over = {}): TargetWork {
  return {
    key: { key: KEY_NEW, version: 'v2' },
    spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' },
    dryRun: over.dryRun ?? false,
    env: {
      clock,
      log: silentLogger(),
      retry: { retries: 0, minTimeoutMs: 1, maxTimeoutMs: 1 },
      deadlineMs: over.deadlineMs ?? 120_000,
      pollIntervalMs: 1_000,
      signal: AbortSignal.timeout(10_000),
    },
    gate: { budget: over.budget ?? new FailureBudget(1), unavailable: new Semaphore(1) },
  };
}

const target = (c: ControllerClient) => ({ name: 't', url: 'http://t', labels: {}, token: TOKEN, client: c });

describe('reconcileTarget()', () => {
  it('sends nothing to a converged target', async () => {
    const { c, calls } = client(observed({}, KEY_NEW), () => observed({}, KEY_NEW));
    const r = await reconcileTarget(target(c), ctx(fakeClock()));
    expect(r.outcome).toBe('converged');
    expect(calls).toEqual(['GET']);
  });

  it('waits for the new pid: converged on the first observation that shows it', async () => {
    const clock = fakeClock();
    const { c, calls } = client(observed(), (n) =>
      n < 5
        ? observed({ gateway: { state: 'restarting', ready: false } })
        : observed({ gateway: { pid: 5000 } }, KEY_NEW),
    );
    const r = await reconcileTarget(target(c), ctx(clock));
    expect(r.outcome).toBe('converged');
    expect(calls.filter((x) => x === 'GET')).toHaveLength(6);
    expect(clock.slept).toBe(4_000);
    expect(r.after?.gateway.pid).toBe(5000);
  });

  it('signaled but never changed: polls until the deadline, then not converged with the reason', async () => {
    const clock = fakeClock();
    const { c, calls } = client(observed(), () => observed({}, KEY_OLD));
    const budget = new FailureBudget(1);
    const r = await reconcileTarget(target(c), ctx(clock, { budget }));
    expect(r.outcome).toBe('not-converged');
    expect(clock.slept).toBe(120_000);
    expect(calls.filter((x) => x.startsWith('POST'))).toHaveLength(1);
    expect(r.drift.map((d) => d.code)).toEqual(['fingerprint-differs', 'pid-unchanged']);
    expect(r.message).toMatch(
      /^not converged within 120 s after the patch \(controller answered signaled:true\): state still shows envHash/,
    );
    expect(budget.exhausted).toBe(true);
  });

  it('a dry run observes and plans but never patches', async () => {
    const { c, calls } = client(observed(), () => observed({}, KEY_NEW));
    const r = await reconcileTarget(target(c), ctx(fakeClock(), { dryRun: true }));
    expect(r.outcome).toBe('drift');
    expect(r.actions.map((a) => a.type)).toEqual(['deliver-key', 'wait-for-ready']);
    expect(calls).toEqual(['GET']);
  });

  it('skips delivery once the failure budget is spent', async () => {
    const budget = new FailureBudget(1);
    budget.record();
    const { c, calls } = client(observed(), () => observed({}, KEY_NEW));
    const r = await reconcileTarget(target(c), ctx(fakeClock(), { budget }));
    expect(r.outcome).toBe('skipped');
    expect(calls).toEqual(['GET']);
  });
});

describe('failure budget accounting', () => {
  it('a gateway that was already not ready, and that we did not patch, spends no budget', async () => {
    const budget = new FailureBudget(1);
    const down = observed({ gateway: { state: 'backoff', pid: null, ready: false } }, KEY_NEW);
    const { c, calls } = client(down, () => down);
    const r = await reconcileTarget(target(c), ctx(fakeClock(), { budget, deadlineMs: 5_000 }));
    expect(r.outcome).toBe('not-converged');
    expect(r.actions.map((a) => a.type)).toEqual(['wait-for-ready']);
    expect(calls.every((x) => x === 'GET')).toBe(true);
    expect(budget.failures).toBe(0);
  });
});

describe('a provider that rejects the key (traffic evidence)', () => {
  const rejected = traffic({ accepted: 0, rejected: 3 });

  it('the desired key rejected: not converged at once, KeyRejected, nothing sent, no budget spent', async () => {
    const clock = fakeClock();
    const budget = new FailureBudget(1);
    const obs = observed({ traffic: rejected }, KEY_NEW);
    const { c, calls } = client(obs, () => obs);
    const r = await reconcileTarget(target(c), ctx(clock, { budget }));
    expect(r.outcome).toBe('not-converged');
    expect(r.reason).toBe('KeyRejected');
    expect(r.drift.map((d) => d.code)).toEqual(['key-rejected']);
    expect(r.actions).toEqual([expect.objectContaining({ type: 'none', code: 'KeyRejected' })]);
    expect(r.message).toMatch(/^the provider rejected the desired key on 3 responses since /);
    expect(calls).toEqual(['GET']);
    expect(clock.slept).toBe(0);
    expect(budget.failures).toBe(0);
  });

  it('rejected and not ready: reports without waiting for readiness', async () => {
    const clock = fakeClock();
    const obs = observed({ gateway: { ready: false }, traffic: rejected }, KEY_NEW);
    const { c, calls } = client(obs, () => obs);
    const r = await reconcileTarget(target(c), ctx(clock));
    expect(r.outcome).toBe('not-converged');
    expect(r.reason).toBe('KeyRejected');
    expect(calls).toEqual(['GET']);
    expect(clock.slept).toBe(0);
  });

  it('an accepted response after the last rejection: converged, nothing sent', async () => {
    const obs = observed(
      { traffic: traffic({ rejected: 3, acceptedAt: '2026-12-02T11:06:00.000Z' }) },
      KEY_NEW,
    );
    const { c, calls } = client(obs, () => obs);
    const r = await reconcileTarget(target(c), ctx(fakeClock()));
    expect(r.outcome).toBe('converged');
    expect(r.reason).toBeUndefined();
    expect(calls).toEqual(['GET']);
  });

  it('the old key rejected: the desired key is delivered and converges once counters restart', async () => {
    const { c, calls } = client(observed({ traffic: rejected }), (n) =>
      n < 2
        ? observed({ gateway: { state: 'restarting', ready: false }, traffic: rejected })
        : observed({ gateway: { pid: 5000 }, traffic: traffic({ accepted: 0 }) }, KEY_NEW),
    );
    const r = await reconcileTarget(target(c), ctx(fakeClock()));
    expect(r.outcome).toBe('converged');
    expect(r.reason).toBeUndefined();
    expect(calls.filter((x) => x.startsWith('POST'))).toHaveLength(1);
  });

  it('the old key rejected and the patch fails: DeliveryFailed territory, not KeyRejected', async () => {
    const c: ControllerClient = {
      getState: async () => observed({ traffic: rejected }),
      patchEnv: async () => {
        throw new Error('POST _kilo/env/patch: HTTP 400 Key not patchable');
      },
    };
    const r = await reconcileTarget(target(c), ctx(fakeClock()));
    expect(r.outcome).toBe('not-converged');
    expect(r.drift.map((d) => d.code)).toContain('key-rejected');
    expect(r.reason).toBeUndefined();
  });

  it('the delivered key is rejected by the provider: not converged at the deadline, KeyRejected, budget spent', async () => {
    const clock = fakeClock();
    const budget = new FailureBudget(1);
    const { c } = client(observed(), () => observed({ gateway: { pid: 5000 }, traffic: rejected }, KEY_NEW));
    const r = await reconcileTarget(target(c), ctx(clock, { budget, deadlineMs: 10_000 }));
    expect(r.outcome).toBe('not-converged');
    expect(r.reason).toBe('KeyRejected');
    expect(r.patched).toBe(true);
    expect(r.message).toMatch(/after the patch .*: the provider rejected the key on 3 responses/);
    expect(budget.exhausted).toBe(true);
  });

  it('a dry run reports the drift with the reason', async () => {
    const obs = observed({ traffic: rejected }, KEY_NEW);
    const { c, calls } = client(obs, () => obs);
    const r = await reconcileTarget(target(c), ctx(fakeClock(), { dryRun: true }));
    expect(r.outcome).toBe('drift');
    expect(r.reason).toBe('KeyRejected');
    expect(calls).toEqual(['GET']);
  });
});

describe('the first verifying observation, paced by the pass (RestartPace)', () => {
  /**
   * A controller whose gateway restarts for `restartMs` of the clock's time after each patch
   * arrives; its answer to the patch reaches the caller `answerMs` later (a busy event loop).
   */
  function restarting(clock: Clock, restartMs: number, answerMs = 0) {
    let patchedAt: number | null = null;
    const calls: string[] = [];
    const c: ControllerClient = {
      getState: async () => {
        calls.push('GET');
        if (patchedAt === null) return observed();
        return clock.now() < patchedAt + restartMs
          ? observed({ gateway: { state: 'restarting', ready: false } })
          : observed({ gateway: { pid: 5000 } }, KEY_NEW);
      },
      patchEnv: async () => {
        calls.push('POST');
        patchedAt = clock.now();
        await clock.sleep(answerMs);
        return { ok: true, signaled: true, migratedProfiles: 0 };
      },
    };
    return { c, calls };
  }

  it('the first target polls at once and every interval; later ones look first when it was proven', async () => {
    const clock = fakeClock();
    const pace = new RestartPace();
    expect(pace.firstPollMs).toBe(0);
    const first = restarting(clock, 2_500);
    const r1 = await reconcileTarget(target(first.c), { ...ctx(clock), pace });
    expect(r1.outcome).toBe('converged');
    // Polled at +0, +1 s, +2 s (restarting), +3 s (proven).
    expect(first.calls).toEqual(['GET', 'POST', 'GET', 'GET', 'GET', 'GET']);
    expect(pace.firstPollMs).toBe(3_000);
    const second = restarting(clock, 2_500);
    const slept = clock.slept;
    const r2 = await reconcileTarget(target(second.c), { ...ctx(clock), pace });
    expect(r2.outcome).toBe('converged');
    expect(r2.after?.gateway.pid).toBe(5000);
    expect(second.calls).toEqual(['GET', 'POST', 'GET']);
    expect(clock.slept - slept).toBe(3_000);
  });

  it('a target slower than the pace is still polled every interval until proven, never converged early', async () => {
    const clock = fakeClock();
    const pace = new RestartPace();
    pace.proven(1_000);
    const slow = restarting(clock, 3_500);
    const r = await reconcileTarget(target(slow.c), { ...ctx(clock), pace });
    expect(r.outcome).toBe('converged');
    // First look at +1 s, then +2, +3 (restarting), +4 s (proven); the pace keeps its shortest.
    expect(slow.calls).toEqual(['GET', 'POST', 'GET', 'GET', 'GET', 'GET']);
    expect(pace.firstPollMs).toBe(1_000);
  });

  it('counts from the patch sent, not its answer: a late answer neither shortens nor lengthens the pace', async () => {
    const clock = fakeClock();
    const pace = new RestartPace();
    // The first target's answer took 1 s (its loop was busy): looks at +1, +2 (restarting), +3 s
    // after the send (proven; the restart took 2.5 s).
    const first = restarting(clock, 2_500, 1_000);
    await reconcileTarget(target(first.c), { ...ctx(clock), pace });
    expect(first.calls).toEqual(['GET', 'POST', 'GET', 'GET', 'GET']);
    expect(pace.firstPollMs).toBe(3_000);
    // The next one is answered at once: it looks first 3 s after its send and is proven then
    // (counted from the answer, the pace would have been 2 s: a look too early, and a second one).
    const second = restarting(clock, 2_500);
    const slept = clock.slept;
    const r = await reconcileTarget(target(second.c), { ...ctx(clock), pace });
    expect(r.outcome).toBe('converged');
    expect(second.calls).toEqual(['GET', 'POST', 'GET']);
    expect(clock.slept - slept).toBe(3_000);
    // A third answered 2 s late waits only the rest: 1 s.
    const third = restarting(clock, 2_500, 2_000);
    const before = clock.slept;
    await reconcileTarget(target(third.c), { ...ctx(clock), pace });
    expect(third.calls).toEqual(['GET', 'POST', 'GET']);
    expect(clock.slept - before).toBe(3_000);
  });

  it('a pace longer than the deadline waits no longer than the deadline', async () => {
    const clock = fakeClock();
    const pace = new RestartPace();
    pace.proven(60_000);
    const never = restarting(clock, Number.POSITIVE_INFINITY);
    const r = await reconcileTarget(target(never.c), { ...ctx(clock, { deadlineMs: 5_000 }), pace });
    expect(r.outcome).toBe('not-converged');
    expect(clock.slept).toBe(5_000);
    expect(never.calls).toEqual(['GET', 'POST', 'GET']);
  });
});

describe('a controller that holds a state read until its gateway is ready (controller.waitMaxMs)', () => {
  /**
   * A controller advertising `waitMaxMs` whose gateway restarts for `restartMs` after a patch; a
   * read that asks to wait is held (the clock advanced) until the new gateway is ready or the
   * wait is up, as src/controller holds it. `honours: false` advertises waits but answers at once.
   */
  function holding(clock: Clock, restartMs: number, waitMaxMs: number, honours = true) {
    let patchedAt: number | null = null;
    const calls: string[] = [];
    const waits: (StateWait | undefined)[] = [];
    const ready = () => patchedAt !== null && clock.now() >= patchedAt + restartMs;
    const now = (): ObservedState =>
      patchedAt === null
        ? observed({ controller: { waitMaxMs } })
        : ready()
          ? observed({ controller: { waitMaxMs }, gateway: { pid: 5000 } }, KEY_NEW)
          : observed({ controller: { waitMaxMs }, gateway: { state: 'restarting', ready: false } });
    const c: ControllerClient = {
      getState: async (_signal, wait) => {
        calls.push('GET');
        waits.push(wait);
        if (wait && honours && patchedAt !== null && !ready()) {
          await clock.sleep(Math.min(wait.ms, waitMaxMs, patchedAt + restartMs - clock.now()));
        }
        return now();
      },
      patchEnv: async () => {
        calls.push('POST');
        patchedAt = clock.now();
        return { ok: true, signaled: true, migratedProfiles: 0 };
      },
    };
    return { c, calls, waits };
  }

  it('asks once, right after the patch, for the gateway other than the one it saw; proven when it serves', async () => {
    const clock = fakeClock();
    const pace = new RestartPace();
    const h = holding(clock, 2_500, 20_000);
    const r = await reconcileTarget(target(h.c), { ...ctx(clock), pace });
    expect(r.outcome).toBe('converged');
    expect(r.after?.gateway.pid).toBe(5000);
    expect(h.calls).toEqual(['GET', 'POST', 'GET']);
    // The observation asks no wait; the verifying read waits for a gateway other than pid 4242.
    expect(h.waits).toEqual([undefined, { ms: 20_000, pid: 4242 }]);
    // Answered the moment the restart ended: no poll interval slept, no pace learnt from it.
    expect(clock.slept).toBe(2_500);
    expect(pace.firstPollMs).toBe(0);
  });

  it('a read whose wait ran out is asked again at once; the wait never outlasts the deadline', async () => {
    const clock = fakeClock();
    const h = holding(clock, 25_000, 10_000);
    const r = await reconcileTarget(target(h.c), ctx(clock, { deadlineMs: 28_000 }));
    expect(r.outcome).toBe('converged');
    expect(h.calls).toEqual(['GET', 'POST', 'GET', 'GET', 'GET']);
    expect(h.waits.slice(1).map((w) => w?.ms)).toEqual([10_000, 10_000, 8_000]);
    expect(clock.slept).toBe(25_000);
  });

  it('one that advertises waits but answers at once is read no more often than every poll interval', async () => {
    const clock = fakeClock();
    const h = holding(clock, 2_500, 20_000, false);
    const r = await reconcileTarget(target(h.c), ctx(clock));
    expect(r.outcome).toBe('converged');
    // At +0, +1 s, +2 s (restarting), +3 s (proven): as a polled controller.
    expect(h.calls).toEqual(['GET', 'POST', 'GET', 'GET', 'GET', 'GET']);
    expect(clock.slept).toBe(3_000);
  });

  it('a gateway that never comes back: not converged at the deadline, after reads that each waited', async () => {
    const clock = fakeClock();
    const h = holding(clock, Number.POSITIVE_INFINITY, 4_000);
    const r = await reconcileTarget(target(h.c), ctx(clock, { deadlineMs: 10_000 }));
    expect(r.outcome).toBe('not-converged');
    expect(h.waits.slice(1).map((w) => w?.ms)).toEqual([4_000, 4_000, 2_000]);
    expect(clock.slept).toBe(10_000);
  });

  /**
   * `holding`'s controller behind a client with the pair (the patch, then, if it succeeded, the
   * read): `sent` is what the engine asked of the client, one entry per call.
   */
  function paired(h: ReturnType<typeof holding>, failFirstPatch = false) {
    const sent: string[] = [];
    const c: ControllerClient = {
      getState: (signal, wait) => {
        sent.push('GET');
        return h.c.getState(signal, wait);
      },
      patchEnv: (vars, version, signal) => {
        sent.push('POST');
        return h.c.patchEnv(vars, version, signal);
      },
      patchEnvThenState(vars, version, wait, signal) {
        sent.push('POST+GET');
        const patch =
          failFirstPatch && sent.filter((x) => x === 'POST+GET').length === 1
            ? Promise.reject(new ControllerError('network', 'POST _kilo/env/patch failed: ECONNRESET'))
            : h.c.patchEnv(vars, version, signal);
        const state = patch.then(() => h.c.getState(signal, wait));
        state.catch(() => {});
        return { patch, state };
      },
    };
    return { c, sent };
  }

  it('the restart’s patch goes with the waiting read (patchEnvThenState): no read of its own after it', async () => {
    const clock = fakeClock();
    const h = holding(clock, 2_500, 20_000);
    const p = paired(h);
    const r = await reconcileTarget(target(p.c), ctx(clock));
    expect(r.outcome).toBe('converged');
    expect(r.after?.gateway.pid).toBe(5000);
    expect(p.sent).toEqual(['GET', 'POST+GET']);
    expect(h.waits).toEqual([undefined, { ms: 20_000, pid: 4242 }]);
    expect(clock.slept).toBe(2_500);
  });

  it('a pair whose patch failed: the retry sends the patch alone, and the read goes on its own', async () => {
    const clock = fakeClock();
    const h = holding(clock, 2_500, 20_000);
    const w = ctx(clock);
    const p = paired(h, true);
    const r = await reconcileTarget(target(p.c), {
      ...w,
      env: { ...w.env, retry: { retries: 1, minTimeoutMs: 1, maxTimeoutMs: 1 } },
    });
    expect(r.outcome).toBe('converged');
    expect(r.attempts).toBe(2);
    expect(p.sent).toEqual(['GET', 'POST+GET', 'POST', 'GET']);
    expect(h.waits).toEqual([undefined, { ms: 20_000, pid: 4242 }]);
  });

  it('a file delivery is never paired (no restart to wait for)', async () => {
    const clock = fakeClock();
    const h = holding(clock, 0, 20_000);
    let pairs = 0;
    const c: ControllerClient = {
      ...paired(h).c,
      getState: async (signal, wait) => {
        const s = await h.c.getState(signal, wait);
        return observed(
          { controller: { waitMaxMs: 20_000 }, gateway: s.gateway },
          s.key.version === 'v2' ? KEY_NEW : KEY_OLD,
          'file',
        );
      },
    };
    const pairing = c.patchEnvThenState!;
    c.patchEnvThenState = (...args) => {
      pairs++;
      return pairing(...args);
    };
    const w = ctx(clock);
    await reconcileTarget(target(c), { ...w, spec: { ...w.spec, delivery: 'file' } });
    expect(pairs).toBe(0);
    expect(h.calls).toContain('POST');
  });

  it('a controller without waitMaxMs is never asked to wait', async () => {
    const clock = fakeClock();
    const { c } = client(observed(), (n) =>
      n < 2
        ? observed({ gateway: { state: 'restarting', ready: false } })
        : observed({ gateway: { pid: 5000 } }, KEY_NEW),
    );
    const waits: unknown[] = [];
    const spy: ControllerClient = {
      ...c,
      getState: (signal, wait) => {
        waits.push(wait);
        return c.getState(signal, wait);
      },
    };
    expect((await reconcileTarget(target(spy), ctx(clock))).outcome).toBe('converged');
    expect(waits).toEqual([undefined, undefined, undefined]);
  });
});

describe('runPass', () => {
  it('closes each target’s idle connections once its result is in, not before', async () => {
    const events: string[] = [];
    const targets = ['a', 'b', 'c'].map((name) => ({
      name,
      url: `http://${name}`,
      labels: {},
      token: TOKEN,
      client: {
        getState: async () => {
          events.push(`GET ${name}`);
          return observed({}, KEY_NEW);
        },
        patchEnv: async () => {
          throw new Error('a converged target gets no patch');
        },
        closeIdle: () => events.push(`close ${name}`),
      } satisfies ControllerClient,
    }));
    const clock = fakeClock();
    const r = await runPass(targets, {
      key: { key: KEY_NEW, version: 'v2' },
      spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' },
      rollout: { concurrency: 1, maxUnavailable: 1, failureBudget: 1, paused: false },
      dryRun: false,
      env: ctx(clock).env,
    });
    expect(r.summary.converged).toBe(3);
    expect(events).toEqual(['GET a', 'close a', 'GET b', 'close b', 'GET c', 'close c']);
  });
});
