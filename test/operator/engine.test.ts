// The GatewayKey engine without a cluster or a wall clock: resolveGatewayKey on in-memory caches,
// reconcileGatewayKey dry and live against in-memory controllers, and the operator's reconciler
// under its work queue on a ManualClock — deadlines, backoff and requeues are reached by advancing
// time, never by sleeping.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import type { PassEnv } from '../../src/engine/env.ts';
import {
  type GatewayKeyCaches,
  type GatewayKeyDeps,
  type Rotation,
  reconcileGatewayKey,
  resolveGatewayKey,
} from '../../src/engine/gateway-key.ts';
import type { ObservedState } from '../../src/kilo-state.ts';
import { SecretRegistry, silentLogger } from '../../src/log.ts';
import { type CachedGatewayKey, parseGatewayKey } from '../../src/operator/gateway-key.ts';
import type { Cached, CacheReader } from '../../src/operator/informer.ts';
import type { CachedPod, CachedSecret, KubeClient } from '../../src/operator/kube-port.ts';
import { OperatorMetrics } from '../../src/operator/metrics.ts';
import { createReconciler } from '../../src/operator/reconciler.ts';
import { WorkQueue } from '../../src/operator/work-queue.ts';
import type { ControllerClient } from '../../src/reconcile/controller-client.ts';
import { KEY_NEW, KEY_OLD, observed, TOKEN } from '../reconcile/support/fixtures.ts';
import { gatewayKeySpec } from './support.ts';

const NS = 'default';
const b64 = (s: string) => Buffer.from(s).toString('base64');

function cache<T extends Cached>(items: T[]): CacheReader<T> & { items: T[] } {
  return {
    items,
    get: (ns, name) => items.find((o) => o.namespace === ns && o.name === name),
    list: () => items,
  };
}

function secret(name: string, data: Record<string, string>, version = 'v2'): CachedSecret {
  return {
    namespace: NS,
    name,
    resourceVersion: '1',
    annotations: { 'keyroll.dev/version': version },
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
  };
}

function pod(name: string, ip: string, ready = true): CachedPod {
  return {
    namespace: NS,
    name,
    resourceVersion: '1',
    labels: { app: 'gw' },
    portOverride: null,
    podIP: ip,
    ready,
  };
}

function gatewayKey(name: string, spec: unknown = gatewayKeySpec({ app: 'gw' })): CachedGatewayKey {
  const gk = parseGatewayKey({
    metadata: { name, namespace: NS, uid: `uid-${name}`, resourceVersion: '1', generation: 1 },
    spec,
  });
  if (!gk) throw new Error('bad fixture');
  return gk;
}

function world(keys: CachedGatewayKey[], key = KEY_NEW) {
  return {
    gatewayKeys: cache(keys),
    secrets: cache([
      secret('kilocode-key', { KILOCODE_API_KEY: key }),
      secret('gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN }),
    ]),
    pods: cache([pod('gw-1', '10.0.0.2'), pod('gw-0', '10.0.0.1'), pod('gw-down', '10.0.0.3', false)]),
  } satisfies GatewayKeyCaches;
}

/** In-memory controllers by URL: a patch makes the next observation show `after(url)`. */
function controllers(initial: (url: string) => ObservedState, after: (url: string) => ObservedState) {
  const calls: string[] = [];
  const patched = new Set<string>();
  const client = (url: string): ControllerClient => ({
    getState: async () => {
      calls.push(`GET ${url}`);
      return patched.has(url) ? after(url) : initial(url);
    },
    patchEnv: async () => {
      calls.push(`POST ${url}`);
      patched.add(url);
      return { ok: true, signaled: true, migratedProfiles: 0 };
    },
  });
  return { calls, client: (url: string) => client(url) };
}

let abort = new AbortController();
beforeEach(() => {
  abort = new AbortController();
});
afterEach(() => abort.abort());

function env(clock: ManualClock, signal: AbortSignal = abort.signal): PassEnv {
  return {
    clock,
    log: silentLogger(),
    retry: { retries: 0, minTimeoutMs: 1, maxTimeoutMs: 1 },
    deadlineMs: 30_000,
    pollIntervalMs: 1_000,
    signal,
  };
}

describe('resolveGatewayKey()', () => {
  it('resolves the spec, token, key and the ready pods sorted by name', () => {
    const w = world([gatewayKey('gk')]);
    const r = resolveGatewayKey(w.gatewayKeys.items[0]!, w);
    if (!r.ok) throw new Error(r.message);
    expect(r.token).toBe(TOKEN);
    expect(r.material).toEqual({ key: KEY_NEW, version: 'v2' });
    expect(r.targets.map((t) => [t.name, t.url])).toEqual([
      ['gw-0', 'http://10.0.0.1:1'],
      ['gw-1', 'http://10.0.0.2:1'],
    ]);
    expect(r.notReady).toBe(1); // gw-down: matched, not observable
  });

  it('names the first missing input with its Degraded reason; only a bad spec is terminal', () => {
    const spec = gatewayKeySpec({ app: 'gw' });
    const cases: Array<[string, (w: ReturnType<typeof world>) => void, unknown, string, RegExp, boolean]> = [
      ['bad spec', () => {}, { ...spec, delivery: 'carrier-pigeon' }, 'InvalidSpec', /spec\.delivery/, false],
      [
        'empty selector',
        () => {},
        { ...spec, targets: { selector: {}, port: 1 } },
        'InvalidSpec',
        /spec\.targets\.selector: must not be empty/,
        false,
      ],
      [
        'no token Secret',
        (w) => w.secrets.items.splice(1, 1),
        spec,
        'SecretNotFound',
        /^spec\.controllerTokenSecretRef: Secret default\/gateway-token not found \(keyroll sees only Secrets labelled keyroll\.dev\/key-source=true\)$/,
        true,
      ],
      [
        'empty token',
        (w) => {
          w.secrets.items[1] = secret('gateway-token', { OPENCLAW_GATEWAY_TOKEN: ' \n' });
        },
        spec,
        'TokenNotFound',
        /has no non-empty key OPENCLAW_GATEWAY_TOKEN/,
        true,
      ],
      [
        'no key Secret',
        (w) => w.secrets.items.splice(0, 1),
        spec,
        'SecretNotFound',
        /^spec\.source\.secretRef: Secret default\/kilocode-key not found/,
        true,
      ],
      [
        'key with a space',
        (w) => {
          w.secrets.items[0] = secret('kilocode-key', { KILOCODE_API_KEY: 'test-key with-space-01' });
        },
        spec,
        'InvalidKey',
        /the key must not contain whitespace/,
        true,
      ],
    ];
    for (const [what, mutate, s, reason, message, requeue] of cases) {
      const w = world([gatewayKey('gk', s)]);
      mutate(w);
      const r = resolveGatewayKey(w.gatewayKeys.items[0]!, w);
      expect(r.ok, what).toBe(false);
      if (r.ok) continue;
      expect([what, r.reason, r.requeue]).toEqual([what, reason, requeue]);
      expect(r.message).toMatch(message);
      expect(r.message).not.toContain('with-space');
    }
  });
});

function deps(w: ReturnType<typeof world>, clock: ManualClock, client: (url: string) => ControllerClient) {
  return {
    ...w,
    env: env(clock),
    pass: { requestTimeoutMs: 1_000, concurrency: 10 },
    resyncMs: 300_000,
    missingSourceRequeueMs: 30_000,
    secretValues: new SecretRegistry(),
    rotations: new Map<string, Rotation>(),
    controllerClient: (url) => client(url),
  } satisfies GatewayKeyDeps;
}

describe('reconcileGatewayKey()', () => {
  it('dry: observes every ready target, plans deliver-key, sends nothing, writes nothing', async () => {
    const w = world([gatewayKey('gk')]);
    const c = controllers(
      () => observed({}, KEY_OLD),
      () => observed({}, KEY_NEW),
    );
    const r = await reconcileGatewayKey(`${NS}/gk`, deps(w, new ManualClock(), c.client), { dryRun: true });
    expect(c.calls.sort()).toEqual(['GET http://10.0.0.1:1', 'GET http://10.0.0.2:1']);
    expect(r.pass?.summary).toMatchObject({ total: 2, drift: 2, patched: 0 });
    expect(r.pass?.targets.map((t) => t.actions.map((a) => a.type))).toEqual([
      ['deliver-key', 'wait-for-ready'],
      ['deliver-key', 'wait-for-ready'],
    ]);
    expect(r.retry).toBe(false);
    expect(JSON.stringify(r)).not.toContain(KEY_NEW);
  });

  it('live: delivers, verifies, completes the rotation once; the next pass only observes', async () => {
    const w = world([gatewayKey('gk')]);
    const c = controllers(
      () => observed({}, KEY_OLD),
      () => observed({ gateway: { pid: 5000 } }, KEY_NEW),
    );
    const d = deps(w, new ManualClock(1_000_000), c.client);
    const first = await reconcileGatewayKey(`${NS}/gk`, d, { dryRun: false });
    expect(first.pass?.summary).toMatchObject({ total: 2, converged: 2, patched: 2 });
    expect(first.rotation).toMatchObject({ version: 'v2', completed: true });
    // gw-down matches the selector but is not ready: it cannot prove anything, so Ready stays
    // False and names it (issue 12: Ready counts every pod the selector matches).
    expect(first.status?.conditions?.find((x) => x.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'TargetsUnobserved',
      message: expect.stringContaining('gw-down'),
    });
    expect(first.status?.targets).toEqual({
      total: 3,
      converged: 2,
      progressing: 0,
      failed: 0,
      unobserved: 1,
    });
    expect(first.status?.lifecycle?.current).toMatchObject({ version: 'v2', provenAt: null });
    expect(first.events.map((e) => e.reason)).toEqual(['KeyRotated']);
    // Streamed: a live pass keeps no per-target results; status and Events come from the digest.
    expect(first.pass?.targets).toEqual([]);
    expect(first.status?.targetStatuses?.map((t) => [t.name, t.pid, t.converged])).toEqual([
      ['gw-0', 5000, true],
      ['gw-1', 5000, true],
    ]);
    expect(first.requeueAfterMs).toBe(300_000);
    c.calls.length = 0;
    const second = await reconcileGatewayKey(`${NS}/gk`, d, { dryRun: false });
    expect(c.calls.every((x) => x.startsWith('GET'))).toBe(true);
    expect(second.rotation?.completed).toBe(false);
  });
});

/** A KubeClient that stores status writes and Events in memory; everything else is not called. */
function memoryKube(w: ReturnType<typeof world>) {
  const statuses: Array<{ name: string; status: unknown }> = [];
  const events: Array<Record<string, unknown>> = [];
  let rv = 1;
  const unused = async (): Promise<never> => {
    throw new Error('not used by the reconciler');
  };
  const kube: KubeClient = {
    list: unused,
    watch: unused,
    getGatewayKey: async (_ns, name) => w.gatewayKeys.get(NS, name) ?? null,
    async replaceGatewayKeyStatus(object) {
      const meta = object.metadata as { name: string };
      statuses.push({ name: meta.name, status: object.status });
      const i = w.gatewayKeys.items.findIndex((g) => g.name === meta.name);
      const stored = {
        ...object,
        metadata: { ...(object.metadata as object), namespace: NS, resourceVersion: String(++rv) },
      };
      const parsed = parseGatewayKey(stored);
      if (parsed && i >= 0) w.gatewayKeys.items[i] = parsed;
      return stored;
    },
    async createEvent(_ns, event) {
      events.push(event);
    },
    getLease: unused,
    createLease: unused,
    replaceLease: unused,
  };
  return { kube, statuses, events };
}

describe('the operator reconciler under its work queue, on a manual clock', () => {
  function operator(
    w: ReturnType<typeof world>,
    clock: ManualClock,
    client: (url: string) => ControllerClient,
  ) {
    const mem = memoryKube(w);
    const reconcile = createReconciler({
      ...w,
      kube: mem.kube,
      log: silentLogger(),
      clock,
      metrics: new OperatorMetrics(),
      identity: 'test',
      resyncMs: 300_000,
      missingSourceRequeueMs: 30_000,
      apiTimeoutMs: 5_000,
      pass: {
        retry: { retries: 0, minTimeoutMs: 1, maxTimeoutMs: 1 },
        deadlineMs: 30_000,
        pollIntervalMs: 1_000,
        requestTimeoutMs: 1_000,
        concurrency: 10,
      },
      signal: abort.signal,
      secretValues: new SecretRegistry(),
      controllerClient: (url) => client(url),
    });
    const runs: string[] = [];
    const queue = new WorkQueue(
      async (key) => {
        runs.push(`${clock.now()} ${key}`);
        return reconcile(key);
      },
      { concurrency: 1, baseDelayMs: 1_000, maxDelayMs: 60_000, clock },
    );
    return { ...mem, queue, runs };
  }

  it('a delivery that never shows: polled to the 30 s deadline by advancing time, Degraded, retried with backoff', async () => {
    const clock = new ManualClock(0);
    const w = world([gatewayKey('gk')]);
    w.pods.items.splice(0, 1); // one target: gw-0
    const c = controllers(
      () => observed({}, KEY_OLD),
      () => observed({}, KEY_OLD), // signaled, but the gateway never changes
    );
    const o = operator(w, clock, c.client);
    o.queue.add(`${NS}/gk`);
    // The pass waits on the manual clock: advance through the deadline, one poll per second.
    for (let t = 0; t < 30 && o.statuses.length < 2; t++) await clock.advance(1_000);
    await o.queue.idle();
    expect(clock.now()).toBe(30_000);
    expect(c.calls.filter((x) => x.startsWith('POST'))).toHaveLength(1);
    // 1 observation, then one per second until the deadline (30 s / 1 s, plus the first at 0 s).
    expect(c.calls.filter((x) => x.startsWith('GET'))).toHaveLength(1 + 31);
    const last = o.statuses.at(-1)?.status as { conditions: Array<{ type: string; reason: string }> };
    expect(last.conditions.find((x) => x.type === 'Degraded')?.reason).toBe('DeliveryFailed');
    expect(o.events.map((e) => e.reason)).toContain('DeliveryFailed');
    // Not converged: the queue retries after its 1 s backoff, not before.
    expect(o.runs).toEqual(['0 default/gk']);
    await clock.advance(999);
    expect(o.runs).toHaveLength(1);
    await clock.advance(1);
    expect(o.runs[1]).toBe('31000 default/gk');
    // The retry's own pass now waits on the clock: stop it.
    abort.abort();
    await o.queue.shutdown();
  });

  it('an invalid spec is terminal (no requeue, however long); a missing Secret comes back after 30 s', async () => {
    const clock = new ManualClock(0);
    const w = world([
      gatewayKey('bad', { ...gatewayKeySpec({ app: 'gw' }), targets: { selector: {}, port: 1 } }),
      gatewayKey('orphan', gatewayKeySpec({ app: 'gw', secret: 'no-such-key' })),
    ]);
    const c = controllers(
      () => observed({}, KEY_NEW),
      () => observed({}, KEY_NEW),
    );
    const o = operator(w, clock, c.client);
    o.queue.add(`${NS}/bad`);
    o.queue.add(`${NS}/orphan`);
    await o.queue.idle();
    await clock.advance(29_999);
    await o.queue.idle();
    expect(o.runs).toEqual(['0 default/bad', '0 default/orphan']);
    await clock.advance(1);
    await o.queue.idle();
    expect(o.runs).toEqual(['0 default/bad', '0 default/orphan', '30000 default/orphan']);
    await clock.advance(600_000);
    await o.queue.idle();
    expect(o.runs.filter((r) => r.endsWith('/bad'))).toHaveLength(1);
    expect(c.calls).toEqual([]);
    const reasons = o.statuses.map(
      (s) =>
        `${s.name}:${(s.status as { conditions: Array<{ type: string; reason: string }> }).conditions.find((x) => x.type === 'Degraded')?.reason}`,
    );
    expect(new Set(reasons)).toEqual(new Set(['bad:InvalidSpec', 'orphan:SecretNotFound']));
    await o.queue.shutdown();
  });
});
