// The one-shot run's Lease (src/operator/run-lease.ts) against the Kubernetes API test server:
// create, take a released or expired Lease, refuse a live holder, renew, release, lose it (taken
// over, or not renewed in time), 409 races, and the operator's LeaderElector waiting on it.
// Every actor runs on one manual clock: the tests move its time (advanceUntil, only while every
// actor sleeps) and wait only for the server's answers, so a "1.5 s" Lease costs no wall time.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { silentLogger } from '../../src/log.ts';
import { kubeAdapter, loadKubeConfig } from '../../src/operator/kube.ts';
import type { KubeClient } from '../../src/operator/kube-port.ts';
import { LeaderElector, microTime } from '../../src/operator/leader.ts';
import {
  acquireRunLease,
  type RunLeaseOptions,
  runLeaseOptions,
  takeRunLease,
} from '../../src/operator/run-lease.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { advanceUntil, NS, track } from './support.ts';

let server: KubeApiServer;
let kube: KubeClient;
/** The operator's client: its own user agent, so the run's requests can be told apart. */
let operatorKube: KubeClient;
let seq = 0;
const cleanups: Array<() => Promise<void> | void> = [];
/** The clock of every Lease holder in a test; a new one for each test. */
let clock: ManualClock;

beforeAll(async () => {
  server = await startKubeApiServer({});
  kube = kubeAdapter(loadKubeConfig(server.kubeconfigPath), {
    requestTimeoutMs: 5_000,
    userAgent: 'keyroll-reconcile/test',
  });
  operatorKube = kubeAdapter(loadKubeConfig(server.kubeconfigPath), {
    requestTimeoutMs: 5_000,
    userAgent: 'keyroll-operator/test',
  });
}, 30_000);

beforeEach(() => {
  clock = new ManualClock(Date.now());
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  server.hooks.clearFailures();
});

afterAll(async () => {
  await server?.close();
});

interface StoredLease {
  metadata: { resourceVersion: string };
  spec: {
    holderIdentity?: string;
    leaseDurationSeconds?: number;
    renewTime?: string;
    acquireTime?: string;
    leaseTransitions?: number;
  };
}

function stored(name: string): StoredLease | undefined {
  return server.hooks.get('leases.coordination.k8s.io', NS, name) as StoredLease | undefined;
}

function opts(name: string, identity = 'cron-1', durationMs = 1_500): RunLeaseOptions {
  return {
    kube,
    namespace: NS,
    name,
    identity,
    leaseDurationMs: durationMs,
    renewDeadlineMs: 1_000,
    retryPeriodMs: 100,
    timeoutMs: 2_000,
    clock,
    log: silentLogger(),
  };
}

function putLease(name: string, holder: string, durationSeconds = 1, transitions = 0): void {
  const now = microTime(clock.now());
  server.hooks.upsert({
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: { name, namespace: NS },
    spec: {
      holderIdentity: holder,
      leaseDurationSeconds: durationSeconds,
      acquireTime: now,
      renewTime: now,
      leaseTransitions: transitions,
    },
  });
}

/** A LeaderElector (the operator's) on `name`; stopped (and its Lease released) after the test. */
function elector(name: string, identity: string, onLead: () => void = () => {}) {
  const e = new LeaderElector({
    kube: operatorKube,
    namespace: NS,
    name,
    identity,
    leaseDurationMs: 1_500,
    renewDeadlineMs: 1_000,
    retryPeriodMs: 100,
    timeoutMs: 2_000,
    clock,
    log: silentLogger(),
    onStartedLeading: onLead,
    onStoppedLeading: () => {},
  });
  e.start();
  cleanups.push(() => e.stop());
  return e;
}

const fresh = () => `run-lease-${++seq}`;

describe('run Lease', () => {
  it('creates a missing Lease (MicroTime, duration), renews it while held and releases it at the end', async () => {
    const name = fresh();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    expect(out.held).toBe(true);
    if (!out.held) return;
    const first = stored(name)!;
    expect(first.spec.holderIdentity).toBe('cron-1');
    expect(first.spec.leaseDurationSeconds).toBe(2);
    expect(first.spec.renewTime).toMatch(/\.\d{6}Z$/);
    expect(first.spec.leaseTransitions).toBe(0);
    // One retry period (100 ms) later it renews, keeping the acquire time.
    await advanceUntil(clock, () => stored(name)!.spec.renewTime !== first.spec.renewTime, { stepMs: 100 });
    expect(stored(name)!.spec.renewTime).toBe(microTime(clock.now()));
    expect(stored(name)!.spec.acquireTime).toBe(first.spec.acquireTime);
    expect(out.lease.signal.aborted).toBe(false);
    await out.lease.release();
    expect(stored(name)!.spec.holderIdentity).toBe('');
    // Nothing left to renew it: no timer, and three retry periods later the same object.
    expect(clock.pending).toBe(0);
    const rv = stored(name)!.metadata.resourceVersion;
    await clock.advance(300);
    expect(stored(name)!.metadata.resourceVersion).toBe(rv);
  });

  it('takes a released Lease at once, keeping its transition count + 1', async () => {
    const name = fresh();
    putLease(name, '', 15, 4);
    // The clock never moves here: had it waited for anything, this would not return.
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    expect(out.held).toBe(true);
    expect(stored(name)!.spec).toMatchObject({ holderIdentity: 'cron-1', leaseTransitions: 5 });
    if (out.held) await out.lease.release();
  });

  it('refuses a Lease whose holder renews it (the operator running), and writes nothing', async () => {
    const name = fresh();
    const e = elector(name, 'operator-a');
    await advanceUntil(clock, () => e.isLeader, { stepMs: 100 });
    const before = stored(name)!;
    server.hooks.clearRequestLog();
    const run = track(acquireRunLease(opts(name), AbortSignal.timeout(10_000)));
    // The elector and the run each sleep between their requests: two timers.
    const waited = await advanceUntil(clock, () => run.settled, { stepMs: 100, parked: 2 });
    expect(await run.promise).toEqual({ held: false, holder: 'operator-a' });
    expect(waited).toBeLessThan(1_500); // within a few of the holder's renewals, before it could expire
    expect(stored(name)!.spec.holderIdentity).toBe('operator-a');
    expect(stored(name)!.spec.leaseTransitions).toBe(before.spec.leaseTransitions);
    const writes = server.hooks
      .requestLog()
      .filter((r) => r.userAgent.startsWith('keyroll-reconcile/') && r.method !== 'GET');
    expect(writes).toEqual([]);
  });

  it('takes over a Lease nobody renews after its leaseDurationSeconds, by its own clock', async () => {
    const name = fresh();
    putLease(name, 'dead-operator', 1, 2);
    const run = track(acquireRunLease(opts(name), AbortSignal.timeout(10_000)));
    const waited = await advanceUntil(clock, () => run.settled, { stepMs: 100 });
    const out = await run.promise;
    expect(out.held).toBe(true);
    // From its first read: 1 s of its clock (in its 100 ms re-reads), not a moment less.
    expect(waited).toBeGreaterThanOrEqual(1_000);
    expect(waited).toBeLessThanOrEqual(1_100);
    expect(stored(name)!.spec).toMatchObject({ holderIdentity: 'cron-1', leaseTransitions: 3 });
    if (out.held) await out.lease.release();
  });

  it("the operator's LeaderElector waits while the run holds the Lease and leads once it is released", async () => {
    const name = fresh();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    if (!out.held) throw new Error('expected the Lease');
    let ledAt = 0;
    const e = elector(name, 'operator-b', () => {
      ledAt = clock.now();
    });
    // 2.5 s, longer than the Lease duration: the run's renewals keep it.
    const t0 = clock.now();
    await advanceUntil(clock, () => clock.now() - t0 >= 2_500, { stepMs: 100, parked: 2 });
    expect(e.isLeader).toBe(false);
    expect(out.lease.signal.aborted).toBe(false);
    const releasedAt = clock.now();
    await out.lease.release();
    await advanceUntil(clock, () => e.isLeader, { stepMs: 100 });
    expect(ledAt - releasedAt).toBeLessThanOrEqual(100); // its next attempt, one retry period
  });

  it('a 409 on create (another writer first) is a lost race: it reads again and refuses the live holder', async () => {
    const name = fresh();
    const remove = server.hooks.injectFailure({ verb: 'create', resource: 'leases', code: 409, count: 1 });
    cleanups.push(remove);
    // The "other writer": an operator that starts leading right after our create lost.
    const e = elector(name, 'operator-c');
    await clock.advance(0); // its first attempt starts now, beside ours
    const run = track(acquireRunLease(opts(name), AbortSignal.timeout(10_000)));
    await advanceUntil(clock, () => run.settled, { stepMs: 100, parked: 2 });
    const out = await run.promise;
    if (out.held) {
      // The elector's create may have failed on the injected 409 instead of ours: then we won.
      expect(stored(name)!.spec.holderIdentity).toBe('cron-1');
      await out.lease.release();
    } else {
      expect(out.holder).toBe('operator-c');
      expect(e.isLeader).toBe(true);
    }
  });

  it('a stale write (409 on renew) re-reads; another holder in the Lease aborts the run', async () => {
    const name = fresh();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    if (!out.held) throw new Error('expected the Lease');
    cleanups.push(() => out.lease.release());
    putLease(name, 'intruder', 15, 1); // someone else wrote the Lease: our next renew gets 409
    // The renew that gets the 409, then the re-read that finds the intruder.
    const waited = await advanceUntil(clock, () => out.lease.signal.aborted, { stepMs: 100 });
    expect(waited).toBe(200);
    expect(String(out.lease.signal.reason)).toMatch(
      /lost the Lease default\/run-lease-\d+: now held by intruder/,
    );
    await out.lease.release();
    expect(stored(name)!.spec.holderIdentity).toBe('intruder'); // release never clears another's Lease
  });

  it('renewals failing for longer than the deadline abort the run', async () => {
    const name = fresh();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    if (!out.held) throw new Error('expected the Lease');
    cleanups.push(() => out.lease.release());
    cleanups.push(server.hooks.injectFailure({ verb: 'update', resource: 'leases', code: 503 }));
    const waited = await advanceUntil(clock, () => out.lease.signal.aborted, { stepMs: 100 });
    expect(waited).toBe(1_000); // the renew deadline, to the retry period
    expect(String(out.lease.signal.reason)).toMatch(/not renewed for 1000 ms/);
  });

  it('a transient failure reading the Lease (503) is retried; the run still takes it', async () => {
    const name = fresh();
    cleanups.push(server.hooks.injectFailure({ verb: 'get', resource: 'leases', name, code: 503, count: 2 }));
    const run = track(acquireRunLease(opts(name), AbortSignal.timeout(10_000)));
    const waited = await advanceUntil(clock, () => run.settled, { stepMs: 100 });
    const out = await run.promise;
    expect(out.held).toBe(true);
    expect(waited).toBe(200); // one retry period after each failed read
    if (out.held) await out.lease.release();
  });

  it('the caller aborting the wait stops it', async () => {
    const name = fresh();
    putLease(name, 'slow-to-expire', 60);
    const ac = new AbortController();
    const run = track(acquireRunLease(opts(name), ac.signal));
    // 300 ms of its clock watching the holder, then asleep till its next read: the abort ends that.
    const t0 = clock.now();
    await advanceUntil(clock, () => clock.now() - t0 >= 300 && clock.pending > 0, { stepMs: 100 });
    expect(run.settled).toBe(false);
    ac.abort(new Error('SIGTERM'));
    await expect(run.promise).rejects.toThrow('SIGTERM');
    expect(stored(name)!.spec.holderIdentity).toBe('slow-to-expire');
  });
});

describe('takeRunLease (the call the reconcile command makes)', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    return { out, err, write: { out: (t: string) => out.push(t), err: (t: string) => err.push(t) } };
  };

  it('options from the environment: name, duration, identity; bad values are errors', () => {
    const o = runLeaseOptions({ kube, namespace: NS, env: {}, log: silentLogger() });
    expect(o).toMatchObject({ name: 'keyroll-operator', leaseDurationMs: 15_000, retryPeriodMs: 2_000 });
    expect(o.renewDeadlineMs).toBe(10_000);
    expect(o.identity).toMatch(/^keyroll-reconcile-/);
    const p = runLeaseOptions({
      kube,
      namespace: NS,
      env: { KEYROLL_LEASE_NAME: 'my-lease', KEYROLL_LEASE_DURATION_SECONDS: '3', POD_NAME: 'job-abc' },
      log: silentLogger(),
    });
    expect(p).toMatchObject({
      name: 'my-lease',
      leaseDurationMs: 3_000,
      identity: 'job-abc',
      renewDeadlineMs: 2_000,
    });
    expect(() =>
      runLeaseOptions({ kube, namespace: NS, env: { KEYROLL_LEASE_NAME: 'Bad_Name' }, log: silentLogger() }),
    ).toThrow(/KEYROLL_LEASE_NAME/);
    expect(() =>
      runLeaseOptions({
        kube,
        namespace: NS,
        env: { KEYROLL_LEASE_DURATION_SECONDS: '0' },
        log: silentLogger(),
      }),
    ).toThrow(/KEYROLL_LEASE_DURATION_SECONDS/);
  });

  it('held by a live operator: exit 0 and one "skipped" line naming the holder (JSON too)', async () => {
    const name = fresh();
    const e = elector(name, 'operator-d');
    await advanceUntil(clock, () => e.isLeader, { stepMs: 100 });
    for (const json of [false, true]) {
      const o = io();
      const run = track(
        takeRunLease({
          kube,
          namespace: NS,
          env: { KEYROLL_LEASE_NAME: name, KEYROLL_LEASE_DURATION_SECONDS: '1.5', POD_NAME: 'cron-x' },
          log: silentLogger(),
          ...o.write,
          json,
          signal: AbortSignal.timeout(10_000),
          clock,
        }),
      );
      // Until it sees the operator renew: the operator and the run each sleep between requests.
      await advanceUntil(clock, () => run.settled, { stepMs: 100, parked: 2 });
      const r = await run.promise;
      expect(r).toBe(0);
      if (json)
        expect(JSON.parse(o.out.join(''))).toMatchObject({ skipped: true, leaseHolder: 'operator-d' });
      else expect(o.out.join('')).toMatch(/^skipped: Lease default\/run-lease-\d+ is held by operator-d/);
    }
  });

  it('a 403 on the Lease is exit 2 naming the Role', async () => {
    const name = fresh();
    cleanups.push(server.hooks.injectFailure({ verb: 'get', resource: 'leases', code: 403 }));
    const o = io();
    const r = await takeRunLease({
      kube,
      namespace: NS,
      env: { KEYROLL_LEASE_NAME: name },
      log: silentLogger(),
      ...o.write,
      json: false,
      signal: AbortSignal.timeout(10_000),
    });
    expect(r).toBe(2);
    expect(o.err.join('')).toMatch(/keyroll-reconcile Role must allow get\/update on this Lease/);
  });

  it('free: returns a run signal and a release that clears the holder', async () => {
    const name = fresh();
    const o = io();
    const r = await takeRunLease({
      kube,
      namespace: NS,
      env: { KEYROLL_LEASE_NAME: name, POD_NAME: 'cron-y' },
      log: silentLogger(),
      ...o.write,
      json: false,
      signal: AbortSignal.timeout(10_000),
      clock,
    });
    if (typeof r === 'number') throw new Error(`exit ${r}: ${o.err.join('')}`);
    expect(stored(name)!.spec.holderIdentity).toBe('cron-y');
    expect(stored(name)!.spec.leaseDurationSeconds).toBe(15);
    await r.release();
    expect(stored(name)!.spec.holderIdentity).toBe('');
    expect(o.out).toEqual([]);
  });
});
