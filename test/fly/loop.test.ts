// `keyroll fly` against the fake Fly Machines API and 10 machines backed by real controllers with
// stand-in gateways: convergence, a calm second pass, and the faults of issue 6 (429s, a lease held
// by someone else, a machine stopped mid-pass, a durable write whose live push fails, a deploy).
// The tests share one fleet and run in order; each rotates to a fresh key first.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { envHash, FlyFleet, KEYS, secretsIn, waitFor } from './support/loop-fleet.ts';

const fleet = new FlyFleet();
const APP = 'keyroll-test-app';

beforeAll(async () => {
  await fleet.start(10, KEYS.A);
}, 240_000);

afterAll(async () => {
  await fleet.stop();
}, 60_000);

function restartsOf(ids: string[]): number[] {
  return ids.map((id) => fleet.fly.machine(APP, id).restarts);
}

describe('keyroll fly: 10 machines, real controllers', () => {
  it('one pass converges every machine; the next pass changes nothing', async () => {
    fleet.addStopped('s01', KEYS.A);
    fleet.addStopped('s02', KEYS.A);
    const ids = fleet.machines.map((m) => m.id);
    const pidsBefore = await fleet.pids();
    const versionsBefore = ids.map((id) => fleet.fly.machine(APP, id).version);
    fleet.setKey(KEYS.B);

    const first = await fleet.run(['--once', '--max-changes', '12', '--max-unavailable', '4']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    // Live: every running gateway proves B, each restarted once by its controller.
    expect(await fleet.liveHashes()).toEqual(ids.map(() => envHash(KEYS.B)));
    const pidsAfter = await fleet.pids();
    pidsAfter.forEach((pid, i) => {
      expect(pid).not.toBeNull();
      expect(pid).not.toBe(pidsBefore[i]);
    });
    // Durable: the app secret holds B (staged); the stopped machines' configs lost their old key,
    // written with skip_launch (still stopped, never booted); the rest of their config is kept.
    expect(fleet.fly.secretValue(APP, 'KILOCODE_API_KEY')).toBe(KEYS.B);
    for (const id of ['s01', 's02']) {
      const m = fleet.fly.machine(APP, id);
      expect(m.state).toBe('stopped');
      expect(m.restarts).toBe(0);
      expect(fleet.fly.storedEnv(APP, id)).toEqual({});
      expect(m.config.guest).toEqual({ cpu_kind: 'shared', cpus: 1, memory_mb: 1024 });
    }
    // Started machines: no Fly update at all (it would reboot or stop them); their config write
    // is deferred and reported.
    expect(ids.map((id) => fleet.fly.machine(APP, id).version)).toEqual(versionsBefore);
    expect(restartsOf(ids)).toEqual(ids.map(() => 0));
    const updates = fleet.fly.writes().filter((r) => r.action === 'update');
    expect(updates.map((r) => r.machineId).sort()).toEqual(['s01', 's02']);
    expect(updates.every((r) => r.hadNonce)).toBe(true);
    expect(first.stdout).toMatch(/12\/12 converged, 10 live delivered, 2 config written/);
    expect(first.stdout).toMatch(/10 config write deferred/);
    // Every lease taken was given back.
    for (const id of [...ids, 's01', 's02']) expect(fleet.fly.leaseOf(APP, id)).toBeNull();

    fleet.resetLogs();
    const second = await fleet.run(['--once', '--max-changes', '12']);
    expect(second.code, second.stdout).toBe(0);
    expect(fleet.fly.writes()).toEqual([]);
    expect(fleet.controllerPosts()).toBe(0);
    expect(await fleet.pids()).toEqual(pidsAfter);
    expect(restartsOf(ids)).toEqual(ids.map(() => 0));
    expect(second.stdout).toMatch(/12\/12 converged, 0 live delivered, 0 config written/);
  }, 90_000);

  it('writes a deferred config once the machine is seen stopped, restart-free', async () => {
    fleet.fly.setMachineState(APP, 'm00', 'stopped');
    fleet.resetLogs();
    const r = await fleet.run(['--once']);
    expect(r.code, r.stdout).toBe(0);
    const m = fleet.fly.machine(APP, 'm00');
    expect(fleet.fly.storedEnv(APP, 'm00')).toEqual({ OTHER_SETTING: 'kept-as-is' });
    expect(m.state).toBe('stopped');
    expect(m.restarts).toBe(0);
    expect(fleet.fly.writes().map((w) => `${w.action}:${w.machineId}`)).toEqual([
      'lease_acquire:m00',
      'update:m00',
      'lease_release:m00',
    ]);
    expect(fleet.machine('m00').proxy.requests).toEqual([]);
    // It boots with the key from the app secret; the next pass finds nothing to do.
    fleet.fly.setMachineState(APP, 'm00', 'started');
    expect(fleet.fly.bootedEnv(APP, 'm00').KILOCODE_API_KEY).toBe(KEYS.B);
    fleet.resetLogs();
    const again = await fleet.run(['--once']);
    expect(again.code).toBe(0);
    expect(fleet.fly.writes()).toEqual([]);
    expect(again.stdout).toMatch(/m00 +started +ok /);
  }, 60_000);

  it('429 from Fly: backs off (Retry-After honoured) and never exceeds the limits', async () => {
    fleet.setKey(KEYS.C);
    // s01 gets a stale key back into its config (a hand edit), so this pass has a config write too.
    const s01 = fleet.fly.machine(APP, 's01');
    fleet.fly.setMachineConfig(APP, 's01', { ...s01.config, env: { KILOCODE_API_KEY: KEYS.B } });
    fleet.resetLogs();
    fleet.fly.inject({ action: 'list', status: 429, retryAfterSec: 1, count: 1 });
    fleet.fly.inject({ action: 'lease_acquire', scope: 'm02', status: 429, retryAfterSec: 1, count: 2 });
    fleet.fly.inject({ action: 'lease_acquire', scope: 's01', status: 429, retryAfterSec: 1, count: 1 });
    const r = await fleet.run(['--once', '--max-changes', '12', '--max-unavailable', '4']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(await fleet.liveHashes()).toEqual(fleet.machines.map(() => envHash(KEYS.C)));
    const totals = fleet.fly.totals();
    expect(totals.injected).toBe(4);
    // The fake's own limiter (Fly's documented budgets) never had to say no.
    expect(totals.rateLimited).toBe(0);
    // After each injected 429 the next call on that key waited for Retry-After (1 s).
    for (const [action, scope] of [
      ['list', APP],
      ['lease_acquire', 'm02'],
      ['lease_acquire', 's01'],
    ] as const) {
      const seen = fleet.fly.requests.filter((q) => q.action === action && (q.machineId ?? q.app) === scope);
      for (let i = 1; i < seen.length; i++) {
        if (seen[i - 1]!.status === 429) expect(seen[i]!.at - seen[i - 1]!.at).toBeGreaterThanOrEqual(950);
      }
      expect(seen.at(-1)!.status).toBeLessThan(300);
    }
  }, 60_000);

  it('a lease held by someone else: skips that machine, reports it, delivers next pass', async () => {
    fleet.setKey(KEYS.D);
    fleet.fly.holdLease(APP, 'm03', { owner: 'someone-else@fake.fly', ttlSeconds: 300 });
    const pid3 = (await fleet.pids())[3];
    fleet.resetLogs();
    const r = await fleet.run(['--once', '--max-changes', '12', '--max-unavailable', '4']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/m03: skipped: lease held by someone-else@fake\.fly; not delivered, next pass/);
    expect(fleet.machine('m03').proxy.posts()).toBe(0);
    expect((await fleet.pids())[3]).toBe(pid3);
    expect(await fleet.liveHashes()).toEqual(
      fleet.machines.map((_, i) => (i === 3 ? envHash(KEYS.C) : envHash(KEYS.D))),
    );
    // Nothing was written under someone else's lease.
    expect(fleet.fly.writes().filter((w) => w.machineId === 'm03')).toEqual([
      expect.objectContaining({ action: 'lease_acquire', status: 409 }),
    ]);

    fleet.skewMs += 301_000; // the other holder's lease expires
    const next = await fleet.run(['--once']);
    expect(next.code, next.stdout).toBe(0);
    expect((await fleet.liveHashes())[3]).toBe(envHash(KEYS.D));
  }, 60_000);

  it('a machine stopped mid-pass is skipped, then gets its config written', async () => {
    fleet.setKey(KEYS.E);
    fleet.resetLogs();
    fleet.fly.inject({ action: 'lease_acquire', scope: 'm05', delayMs: 1_000 });
    const running = fleet.run(['--once', '--max-changes', '12', '--max-unavailable', '4']);
    await waitFor('the lease request for m05', () =>
      fleet.fly.requests.some((q) => q.action === 'lease_acquire' && q.machineId === 'm05'),
    );
    fleet.fly.setMachineState(APP, 'm05', 'stopped');
    const r = await running;
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(
      /m05: skipped: machine became stopped during the pass; not delivered, next pass/,
    );
    expect(fleet.machine('m05').proxy.posts()).toBe(0);
    expect(fleet.fly.leaseOf(APP, 'm05')).toBeNull();

    const next = await fleet.run(['--once']);
    expect(next.code, next.stdout).toBe(0);
    expect(fleet.fly.storedEnv(APP, 'm05').KILOCODE_API_KEY).toBeUndefined();
    expect(fleet.fly.secretValue(APP, 'KILOCODE_API_KEY')).toBe(KEYS.E);
    expect(fleet.fly.machine(APP, 'm05').state).toBe('stopped');
  }, 60_000);

  it('durable write succeeds but the live push fails: not converged, retried each pass until proven', async () => {
    // m05 is stopped, no key in its config. Rotate to F: the app secret gets F.
    fleet.setKey(KEYS.F);
    const first = await fleet.run(['--once', '--max-changes', '12', '--max-unavailable', '4']);
    expect(first.code, first.stdout).toBe(0);
    expect(fleet.fly.storedEnv(APP, 'm05').KILOCODE_API_KEY).toBeUndefined();
    expect(fleet.fly.secretValue(APP, 'KILOCODE_API_KEY')).toBe(KEYS.F);
    // The machine comes back, but its running gateway still has E (the fake Fly's boot does not
    // reach the loopback controller — exactly the "config says F, process runs E" gap), and its
    // controller refuses the first two pushes.
    fleet.fly.setMachineState(APP, 'm05', 'started');
    const m5 = fleet.machine('m05');
    m5.proxy.failPatches(2, 503);
    const abort = new AbortController();
    const loop = fleet.run(['--interval', '1s', '--jitter', '0s', '--retries', '0'], {
      signal: abort.signal,
    });
    await waitFor('m05 to prove F', async () => (await fleet.liveHashes())[5] === envHash(KEYS.F), 30_000);
    // Let the pass that proved it print its report, then stop the loop.
    await waitFor('the converged pass report', () =>
      /12\/12 converged, 1 live delivered/.test(fleet.liveOut),
    );
    abort.abort();
    const r = await loop;
    expect(r.stdout).toMatch(/m05: not-converged: live delivery not proven: .*HTTP 503.*; next pass/);
    expect(r.stdout).toMatch(/m05 +started +ok \S+ +stale/);
    expect(r.stdout).toMatch(/12\/12 converged, 1 live delivered/);
    expect(m5.proxy.posts()).toBe(3);
    expect(r.code).toBe(0);
  }, 60_000);

  it('skips the whole pass while the app is mid-deploy', async () => {
    fleet.setKey(KEYS.G);
    fleet.fly.startDeploy(APP, { rolled: 2 });
    fleet.resetLogs();
    const r = await fleet.run(['--once']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/app is mid-deploy .*pass skipped/);
    expect(fleet.fly.writes()).toEqual([]);
    expect(fleet.fly.requests.map((q) => q.action)).toEqual(['list']);
    expect(fleet.controllerPosts()).toBe(0);
    expect(fleet.machines.every((m) => m.proxy.requests.length === 0)).toBe(true);
    fleet.fly.finishDeploy(APP);
  }, 30_000);

  it('printed no secret in any output (keys, controller token, Fly token)', () => {
    expect(fleet.transcript.length).toBeGreaterThan(1000);
    expect(secretsIn(fleet.transcript)).toEqual([]);
  });
});
