// The one-shot run's Lease (src/operator/run-lease.ts) against the Kubernetes API test server:
// create, take a released or expired Lease, refuse a live holder, renew, release, lose it (taken
// over, or not renewed in time), 409 races, and the operator's LeaderElector waiting on it.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.ts';
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

const NS = 'default';

async function waitFor(what: string, fn: () => unknown, timeoutMs: number, everyMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

let server: KubeApiServer;
let kube: KubeClient;
/** The operator's client: its own user agent, so the run's requests can be told apart. */
let operatorKube: KubeClient;
let seq = 0;
const cleanups: Array<() => Promise<void> | void> = [];

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
    clock: systemClock,
    log: silentLogger(),
  };
}

function putLease(name: string, holder: string, durationSeconds = 1, transitions = 0): void {
  const now = microTime(Date.now());
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
    clock: systemClock,
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
    await waitFor('a renewal', () => stored(name)!.spec.renewTime !== first.spec.renewTime, 3_000, 20);
    expect(stored(name)!.spec.acquireTime).toBe(first.spec.acquireTime);
    expect(out.lease.signal.aborted).toBe(false);
    await out.lease.release();
    expect(stored(name)!.spec.holderIdentity).toBe('');
    const rv = stored(name)!.metadata.resourceVersion;
    await new Promise((r) => setTimeout(r, 300));
    expect(stored(name)!.metadata.resourceVersion).toBe(rv); // no renewal after release
  });

  it('takes a released Lease at once, keeping its transition count + 1', async () => {
    const name = fresh();
    putLease(name, '', 15, 4);
    const started = Date.now();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    expect(out.held).toBe(true);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(stored(name)!.spec).toMatchObject({ holderIdentity: 'cron-1', leaseTransitions: 5 });
    if (out.held) await out.lease.release();
  });

  it('refuses a Lease whose holder renews it (the operator running), and writes nothing', async () => {
    const name = fresh();
    const e = elector(name, 'operator-a');
    await waitFor('operator leads', () => e.isLeader, 5_000, 20);
    const before = stored(name)!;
    server.hooks.clearRequestLog();
    const started = Date.now();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    expect(out).toEqual({ held: false, holder: 'operator-a' });
    expect(Date.now() - started).toBeLessThan(1_500); // within a few of the holder's renewals
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
    const started = Date.now();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    const waited = Date.now() - started;
    expect(out.held).toBe(true);
    expect(waited).toBeGreaterThanOrEqual(1_000);
    expect(waited).toBeLessThan(3_000);
    expect(stored(name)!.spec).toMatchObject({ holderIdentity: 'cron-1', leaseTransitions: 3 });
    if (out.held) await out.lease.release();
  });

  it("the operator's LeaderElector waits while the run holds the Lease and leads once it is released", async () => {
    const name = fresh();
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    if (!out.held) throw new Error('expected the Lease');
    let ledAt = 0;
    const e = elector(name, 'operator-b', () => {
      ledAt = Date.now();
    });
    await new Promise((r) => setTimeout(r, 2_500)); // longer than the Lease duration: renewals keep it
    expect(e.isLeader).toBe(false);
    expect(out.lease.signal.aborted).toBe(false);
    const releasedAt = Date.now();
    await out.lease.release();
    await waitFor('operator leads', () => e.isLeader, 3_000, 20);
    expect(ledAt - releasedAt).toBeLessThan(1_000);
  });

  it('a 409 on create (another writer first) is a lost race: it reads again and refuses the live holder', async () => {
    const name = fresh();
    const remove = server.hooks.injectFailure({ verb: 'create', resource: 'leases', code: 409, count: 1 });
    cleanups.push(remove);
    // The "other writer": an operator that starts leading right after our create lost.
    const e = elector(name, 'operator-c');
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
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
    await waitFor('the run aborted', () => out.lease.signal.aborted, 3_000, 20);
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
    const t0 = Date.now();
    await waitFor('the run aborted', () => out.lease.signal.aborted, 4_000, 20);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    expect(String(out.lease.signal.reason)).toMatch(/not renewed for 1000 ms/);
  });

  it('a transient failure reading the Lease (503) is retried; the run still takes it', async () => {
    const name = fresh();
    cleanups.push(server.hooks.injectFailure({ verb: 'get', resource: 'leases', name, code: 503, count: 2 }));
    const out = await acquireRunLease(opts(name), AbortSignal.timeout(10_000));
    expect(out.held).toBe(true);
    if (out.held) await out.lease.release();
  });

  it('the caller aborting the wait stops it', async () => {
    const name = fresh();
    putLease(name, 'slow-to-expire', 60);
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('SIGTERM')), 300);
    await expect(acquireRunLease(opts(name), ac.signal)).rejects.toThrow('SIGTERM');
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
    await waitFor('operator leads', () => e.isLeader, 5_000, 20);
    for (const json of [false, true]) {
      const o = io();
      const r = await takeRunLease({
        kube,
        namespace: NS,
        env: { KEYROLL_LEASE_NAME: name, KEYROLL_LEASE_DURATION_SECONDS: '1.5', POD_NAME: 'cron-x' },
        log: silentLogger(),
        ...o.write,
        json,
        signal: AbortSignal.timeout(10_000),
      });
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
    });
    if (typeof r === 'number') throw new Error(`exit ${r}: ${o.err.join('')}`);
    expect(stored(name)!.spec.holderIdentity).toBe('cron-y');
    expect(stored(name)!.spec.leaseDurationSeconds).toBe(15);
    await r.release();
    expect(stored(name)!.spec.holderIdentity).toBe('');
    expect(o.out).toEqual([]);
  });
});
