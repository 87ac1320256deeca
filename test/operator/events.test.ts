// Event aggregation against the API test server: a repeated Event (same GatewayKey, type, reason,
// message) bumps count and lastTimestamp on the Event already recorded; `kubectl describe gk`
// (real kubectl) shows it once, with its count.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventRecorder } from '../../src/operator/events.ts';
import { parseGatewayKey } from '../../src/operator/gateway-key.ts';
import { kubeAdapter, loadKubeConfig } from '../../src/operator/kube.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { findKubectl, type Kubectl, kubectlFor } from '../support/kube/kubectl.ts';
import { createGatewayKey, gatewayKeySpec, NS } from './support.ts';

const hasKubectl = findKubectl() !== undefined;

describe.skipIf(!hasKubectl)('Events are aggregated', () => {
  let server: KubeApiServer;
  let kubectl: Kubectl;

  beforeAll(async () => {
    server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'] });
    kubectl = await kubectlFor(server.kubeconfigPath);
  });

  afterAll(async () => {
    await kubectl?.dispose();
    await server?.close();
  });

  it('a repeated Event increments count and lastTimestamp on the existing one; describe shows it once', async () => {
    await createGatewayKey(server, 'gw', gatewayKeySpec({ app: 'gw' }));
    const gk = parseGatewayKey(server.hooks.get('gatewaykeys', NS, 'gw'))!;
    let now = Date.parse('2026-11-23T10:00:00Z');
    const recorder = new EventRecorder({
      kube: kubeAdapter(loadKubeConfig(server.kubeconfigPath), { requestTimeoutMs: 5_000 }),
      now: () => now,
      instance: 'test',
    });
    const failed = {
      type: 'Warning' as const,
      reason: 'DeliveryFailed',
      message: '1 target(s) do not run key version v2: gw-0: timeout',
    };
    for (let i = 0; i < 4; i++) {
      await recorder.record(gk, failed, AbortSignal.timeout(5_000));
      now += 30_000;
    }
    await recorder.record(
      gk,
      { type: 'Normal', reason: 'KeyRotated', message: 'Delivered key version v2' },
      AbortSignal.timeout(5_000),
    );

    const events = server.hooks.objects('events', NS) as Array<Record<string, unknown>>;
    expect(events).toHaveLength(2);
    const warning = events.find((e) => e.reason === 'DeliveryFailed')!;
    expect(warning).toMatchObject({
      count: 4,
      firstTimestamp: '2026-11-23T10:00:00Z',
      lastTimestamp: '2026-11-23T10:01:30Z',
      involvedObject: { kind: 'GatewayKey', name: 'gw', uid: gk.uid },
    });
    expect(events.find((e) => e.reason === 'KeyRotated')).toMatchObject({ count: 1 });
    // Merge patches, not new Events.
    const patches = server.hooks
      .requestLog()
      .filter((r) => r.resource === 'events' && r.verb === 'patch' && r.code === 200);
    expect(patches).toHaveLength(3);

    const d = await kubectl.run(['describe', 'gk', 'gw']);
    expect(d.code, d.stderr).toBe(0);
    const lines = d.stdout.split('\n').filter((l) => l.includes('DeliveryFailed'));
    expect(lines, d.stdout).toHaveLength(1);
    expect(lines[0]).toMatch(/\(x4 over /);
  });

  it('an Event that is gone (TTL) is recorded anew', async () => {
    const gk = parseGatewayKey(server.hooks.get('gatewaykeys', NS, 'gw'))!;
    const kube = kubeAdapter(loadKubeConfig(server.kubeconfigPath), { requestTimeoutMs: 5_000 });
    const recorder = new EventRecorder({ kube, now: () => Date.now(), instance: 'test' });
    const e = { type: 'Normal' as const, reason: 'Converged', message: 'ttl' };
    await recorder.record(gk, e, AbortSignal.timeout(5_000));
    const first = (server.hooks.objects('events', NS) as Array<Record<string, unknown>>).find(
      (x) => x.message === 'ttl',
    )!;
    const name = (first.metadata as { name: string }).name;
    const del = await fetch(
      `${new URL(loadKubeConfig(server.kubeconfigPath).getCurrentCluster()!.server).origin}/api/v1/namespaces/${NS}/events/${name}`,
      { method: 'DELETE', headers: { authorization: 'Bearer test' } },
    );
    expect(del.ok).toBe(true);
    await recorder.record(gk, e, AbortSignal.timeout(5_000));
    const again = (server.hooks.objects('events', NS) as Array<Record<string, unknown>>).filter(
      (x) => x.message === 'ttl',
    );
    expect(again).toHaveLength(1);
    expect(again[0]).toMatchObject({ count: 1 });
  });

  it('without the patch verb (403) a repeat is recorded as a new Event, not lost', async () => {
    const gk = parseGatewayKey(server.hooks.get('gatewaykeys', NS, 'gw'))!;
    const kube = kubeAdapter(loadKubeConfig(server.kubeconfigPath), { requestTimeoutMs: 5_000 });
    const recorder = new EventRecorder({ kube, now: () => Date.now(), instance: 'test' });
    const remove = server.hooks.injectFailure({ verb: 'patch', resource: 'events', code: 403 });
    try {
      const e = { type: 'Warning' as const, reason: 'TargetUnreachable', message: 'rbac' };
      await recorder.record(gk, e, AbortSignal.timeout(5_000));
      await recorder.record(gk, e, AbortSignal.timeout(5_000));
      const got = (server.hooks.objects('events', NS) as Array<Record<string, unknown>>).filter(
        (x) => x.message === 'rbac',
      );
      expect(got.map((x) => x.count)).toEqual([1, 1]);
    } finally {
      remove();
    }
  });
});
