// One status write per change, counted as PUTs and PATCHes of /status per object at the Kubernetes
// API test server: GatewayKeys reconciled again and again with nothing new (the leader's first
// pass, resyncs every 300 ms, a missing Secret's requeue) write their status once. Some are stored
// without the CRD's defaults, as a GatewayKey stored before a CRD upgrade added `spec.retire` (and
// as the operator benchmark seeds them): the first write's admission defaults their spec, which
// is not a spec change (a /status write never moves the generation), so nothing wakes a second
// reconcile that would write `observedGeneration` again. Before the test server kept to that
// rule, each such GatewayKey got two writes (BENCHMARKS.md, Operator).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeController, startFakeController } from '../reconcile/support/fake-controller.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  KEY_A,
  kubeRequest,
  metricsText,
  metricValue,
  NS,
  putKeySecrets,
  putPod,
  startTestOperator,
  type TestOperator,
  TOKEN,
  waitFor,
} from './support.ts';

const BARE = 20;
let server: KubeApiServer;
let op: TestOperator | undefined;
const fakes: FakeController[] = [];
const names: string[] = [];

/** A GatewayKey stored as given, without the CRD's defaults (no admission), generation 1. */
function upsertUndefaulted(name: string, spec: ReturnType<typeof gatewayKeySpec>): void {
  server.hooks.upsert({
    apiVersion: 'keyroll.dev/v1alpha1',
    kind: 'GatewayKey',
    metadata: { name, namespace: NS },
    spec,
  });
  names.push(name);
}

/** Requests that write a GatewayKey's status (any answer), per GatewayKey. */
function statusWrites(): Map<string, number> {
  const n = new Map<string, number>();
  for (const e of server.hooks.requestLog()) {
    if (e.resource !== 'gatewaykeys' || e.subresource !== 'status') continue;
    if (e.verb !== 'update' && e.verb !== 'patch') continue;
    n.set(e.name, (n.get(e.name) ?? 0) + 1);
  }
  return n;
}

function stored(name: string): { generation: number; spec: Record<string, unknown> } {
  const o = server.hooks.get('gatewaykeys.keyroll.dev', NS, name) as {
    metadata: { generation: number };
    spec: Record<string, unknown>;
  };
  return { generation: o.metadata.generation, spec: o.spec };
}

async function reconciles(): Promise<number> {
  return metricValue(await metricsText(op!.op), 'keyroll_reconcile_total{');
}

/** Waits until every GatewayKey was reconciled `times` more times (resyncs), nothing else moving. */
async function settle(times: number): Promise<void> {
  const from = await reconciles();
  await waitFor(
    `${times} more reconciles of each`,
    async () => (await reconciles()) >= from + times * names.length,
  );
}

beforeAll(async () => {
  server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'] });
  putKeySecrets(server, KEY_A, 'v1');
  for (let i = 0; i < 3; i++) fakes.push(await startFakeController({ token: TOKEN, key: KEY_A }));
  putPod(server, 'conv-0', { app: 'sw-conv' }, Number(new URL(fakes[0]!.url).port));
  putPod(server, 'conv-1', { app: 'sw-conv' }, Number(new URL(fakes[1]!.url).port));
  putPod(server, 'conv-2', { app: 'sw-conv-2' }, Number(new URL(fakes[2]!.url).port));
  // Through the API (defaulted at creation) and as stored before a CRD upgrade (not defaulted).
  await createGatewayKey(server, 'converged', gatewayKeySpec({ app: 'sw-conv' }));
  names.push('converged');
  upsertUndefaulted('converged-undefaulted', gatewayKeySpec({ app: 'sw-conv-2' }));
  for (let i = 0; i < BARE; i++)
    upsertUndefaulted(`no-targets-${i}`, gatewayKeySpec({ app: `sw-none-${i}` }));
  upsertUndefaulted('missing-secret', gatewayKeySpec({ app: 'sw-none', secret: 'no-such-secret' }));
  expect(stored('no-targets-0').spec.retire).toBeUndefined();
  op = await startTestOperator(server, 'status-writes', { resync: '300ms' });
}, 60_000);

afterAll(async () => {
  await op?.stop();
  await Promise.all(fakes.map((f) => f.close()));
  const all = JSON.stringify(server?.hooks.dump());
  await server?.close();
  expect(all.includes(KEY_A) || all.includes(TOKEN), 'a key or token stored in the API').toBe(false);
});

describe('GatewayKey status: written once per change', () => {
  it('converged, without targets, or waiting for a Secret, reconciled again and again: one write each', async () => {
    await waitFor('every GatewayKey has a status', () =>
      names.every((n) => condition(gkStatus(server, n), 'Ready')),
    );
    await settle(3);
    expect(condition(gkStatus(server, 'converged'), 'Ready')?.status).toBe('True');
    expect(condition(gkStatus(server, 'converged-undefaulted'), 'Ready')?.status).toBe('True');
    expect(condition(gkStatus(server, 'no-targets-0'), 'Ready')?.reason).toBe('NoTargets');
    expect(condition(gkStatus(server, 'missing-secret'), 'Degraded')?.reason).toBe('SecretNotFound');

    const writes = statusWrites();
    expect(Object.fromEntries(names.map((n) => [n, writes.get(n) ?? 0]))).toEqual(
      Object.fromEntries(names.map((n) => [n, 1])),
    );
    // The first write defaulted the spec it was stored without; the generation did not move.
    expect(stored('no-targets-0').spec.retire).toEqual({ after: '60s' });
    for (const n of names) {
      expect(stored(n).generation, n).toBe(1);
      expect(gkStatus(server, n).observedGeneration, n).toBe(1);
    }
  }, 60_000);

  it('a spec change: one more write for that GatewayKey (its new observedGeneration), none for the others', async () => {
    const before = statusWrites();
    const r = await kubeRequest(
      server,
      'PATCH',
      `/apis/keyroll.dev/v1alpha1/namespaces/${NS}/gatewaykeys/no-targets-0`,
      { spec: { rollout: { paused: true } } },
      'application/merge-patch+json',
    );
    expect(r.status).toBe(200);
    expect(stored('no-targets-0').generation).toBe(2);
    await waitFor('observedGeneration 2', () => gkStatus(server, 'no-targets-0').observedGeneration === 2);
    await settle(3);

    const after = statusWrites();
    for (const n of names)
      expect(after.get(n), n).toBe((before.get(n) ?? 0) + (n === 'no-targets-0' ? 1 : 0));
  }, 60_000);
});
