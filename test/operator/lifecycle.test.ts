// The key lifecycle in the operator (issue 12), against the Kubernetes API test server, fake
// controllers and the fake key API: the API source mints near expiry and a failed mint delivers
// nothing; the previous key is revoked only once every pod the selector matches — Ready or not —
// proved the current one; the webhook is delivered once per retirable version, with retries and
// no secret; no key or token in any log line, status, Event or webhook body.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { type FakeController, startFakeController } from '../reconcile/support/fake-controller.ts';
import { type FakeKeyApi, startFakeKeyApi } from '../support/fake-key-api.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import {
  condition,
  createGatewayKey,
  gkStatus,
  kubeRequest,
  NS,
  putPod,
  putSecret,
  startTestOperator,
  type TestOperator,
  TOKEN,
  waitFor,
} from './support.ts';

const SOURCE_TOKEN = 'test-token-source-operator-00000000';

let server: KubeApiServer;
const logLines: string[] = [];
const hookBodies: string[] = [];
let op: TestOperator | null = null;
let api: FakeKeyApi | null = null;
let fakes: FakeController[] = [];
const allKeys: string[] = [];

/** A webhook receiver that answers 503 to the first `failFirst` requests, then 200. */
async function startHook(failFirst: number) {
  const received: Array<{ status: number; body: Record<string, unknown> }> = [];
  const srv: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      hookBodies.push(`${JSON.stringify(req.headers)} ${text}`);
      const status = received.length < failFirst ? 503 : 200;
      received.push({ status, body: JSON.parse(text) as Record<string, unknown> });
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}/retirable`,
    received,
    accepted: () => received.filter((r) => r.status === 200),
    close: () => new Promise<void>((r) => srv.close(() => r())),
  };
}

function apiSpec(app: string, k: FakeKeyApi, retire: Record<string, unknown>) {
  return {
    source: {
      api: {
        url: k.currentUrl,
        mintUrl: k.mintUrl,
        tokenSecretRef: { name: 'source-token', key: 'token' },
      },
    },
    retire,
    targets: { selector: { matchLabels: { app } }, port: 1 },
    controllerTokenSecretRef: { name: 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
    rollout: { maxUnavailable: 3 },
  };
}

async function fleet(n: number, key: string): Promise<FakeController[]> {
  const list = await Promise.all(
    Array.from({ length: n }, () => startFakeController({ token: TOKEN, key, restartMs: 30 })),
  );
  fakes.push(...list);
  return list;
}

const runs = (f: FakeController, key: string) =>
  f.snapshot().envHash === fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key });

interface Lifecycle {
  current: { version: string; provenAt: string | null } | null;
  previous: Array<{ version: string; state: string; blockedBy?: string[]; retiredAt?: string }>;
}
const lifecycleOf = (name: string) =>
  (gkStatus(server, name) as { lifecycle?: Lifecycle }).lifecycle ?? { current: null, previous: [] };
const eventsOf = (name: string) =>
  (
    server.hooks.objects('events', NS) as Array<{
      reason: string;
      message: string;
      involvedObject: { name: string };
    }>
  )
    .filter((e) => e.involvedObject.name === name)
    .map((e) => `${e.reason}: ${e.message}`);

beforeAll(async () => {
  server = await startKubeApiServer({
    crdPaths: ['manifests/crd/gatewaykey.yaml'],
    bookmarkIntervalMs: 1_000,
  });
  putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
  putSecret(server, 'source-token', { token: SOURCE_TOKEN });
}, 30_000);

afterEach(async () => {
  await op?.stop();
  op = null;
  await Promise.all(fakes.map((f) => f.close()));
  fakes = [];
  if (api) allKeys.push(...api.keys().map((k) => k.key));
  await api?.close();
  api = null;
});

afterAll(async () => {
  await server?.close();
  // No key, controller token or source token in any log line, status, Event or webhook body.
  const statuses = JSON.stringify(server.hooks.objects('gatewaykeys.keyroll.dev', NS));
  const events = JSON.stringify(server.hooks.objects('events', NS));
  const captured = [logLines.join('\n'), statuses, events, hookBodies.join('\n')];
  expect(allKeys.length).toBeGreaterThan(3);
  for (const secret of [TOKEN, SOURCE_TOKEN, ...allKeys])
    for (const text of captured) expect(text.includes(secret), secret).toBe(false);
});

describe('operator: key lifecycle with spec.source.api and spec.retire', () => {
  it('the CRD accepts spec.source.api and spec.retire, and defaults retire.after to 60s', async () => {
    const k = await startFakeKeyApi({ token: SOURCE_TOKEN });
    try {
      const spec = apiSpec('crd-only', k, { revokeUrl: k.revokeUrl });
      const ok = await kubeRequest(
        server,
        'POST',
        `/apis/keyroll.dev/v1alpha1/namespaces/${NS}/gatewaykeys`,
        {
          apiVersion: 'keyroll.dev/v1alpha1',
          kind: 'GatewayKey',
          metadata: { name: 'crd-api', namespace: NS },
          spec,
        },
      );
      expect(ok.status).toBe(201);
      expect((ok.json as { spec: { retire: unknown } }).spec.retire).toEqual({
        after: '60s',
        revokeUrl: k.revokeUrl,
      });
      // (The test server does not evaluate CEL: test/operator/crd-schema.test.ts checks the rule
      // that refuses retire.revokeUrl without source.api, and that zod agrees.)
      await kubeRequest(server, 'DELETE', `/apis/keyroll.dev/v1alpha1/namespaces/${NS}/gatewaykeys/crd-api`);
    } finally {
      await k.close();
    }
  });

  it('three targets, one NotReady pod still on A: A is never revoked and the pod is named, Ready False; once it proves B, A is revoked once and the webhook delivered once', async () => {
    api = await startFakeKeyApi({ token: SOURCE_TOKEN });
    const a = api.current();
    const [f0, f1, f2] = await fleet(3, a.key);
    const hook = await startHook(2);
    try {
      putPod(server, 'nr-0', { app: 'nr' }, Number(new URL(f0!.url).port));
      putPod(server, 'nr-1', { app: 'nr' }, Number(new URL(f1!.url).port));
      putPod(server, 'nr-2', { app: 'nr' }, Number(new URL(f2!.url).port), false);
      await createGatewayKey(
        server,
        'nr',
        apiSpec('nr', api, { after: '0s', revokeUrl: api.revokeUrl, webhook: hook.url }),
      );
      op = await startTestOperator(server, 'op-life', { resync: '300ms' }, logLines);
      await waitFor('A is current', () => lifecycleOf('nr').current?.version === a.version);

      const b = api.mint();
      let atRevoke: boolean[] = [];
      api.onRevoked = () => {
        atRevoke = [f0!, f1!, f2!].map((f) => runs(f, b.key) && f.snapshot().ready);
      };
      await waitFor('A blocked by nr-2', () => {
        const p = lifecycleOf('nr').previous[0];
        return p?.state === 'Blocked' && p.blockedBy?.includes('nr-2');
      });
      expect(runs(f0!, b.key) && runs(f1!, b.key)).toBe(true);
      expect(runs(f2!, a.key)).toBe(true); // the NotReady pod still runs A
      const s = gkStatus(server, 'nr');
      expect(condition(s, 'Ready')).toMatchObject({ status: 'False', reason: 'TargetsUnobserved' });
      expect(condition(s, 'Ready')?.message).toContain('nr-2');
      expect(s.targets).toMatchObject({ total: 3, converged: 2, unobserved: 1 });
      expect(condition(s, 'PreviousKeyRetirable')).toMatchObject({
        status: 'False',
        reason: 'TargetUnobserved',
      });
      // Several more passes (resync 300 ms): still nothing revoked, nothing announced.
      const passes = logLines.filter((l) => l.includes('Reconciled GatewayKey')).length;
      await waitFor(
        '3 more passes',
        () => logLines.filter((l) => l.includes('Reconciled GatewayKey')).length >= passes + 3,
      );
      expect(api.revokeCalls).toEqual([]);
      expect(hook.received).toEqual([]);
      expect(eventsOf('nr').some((e) => e.startsWith('RetirementBlocked:') && e.includes('nr-2'))).toBe(true);

      // The pod becomes Ready: B is delivered to it, proven, and only then A is revoked.
      putPod(server, 'nr-2', { app: 'nr' }, Number(new URL(f2!.url).port), true);
      await waitFor('A retired', () => lifecycleOf('nr').previous[0]?.state === 'Retired');
      expect(atRevoke).toEqual([true, true, true]);
      expect(api.revokedCount(a.version)).toBe(1);
      expect(api.activeKeys()).toEqual([b.key]);
      const done = gkStatus(server, 'nr');
      expect(condition(done, 'Ready')).toMatchObject({ status: 'True', reason: 'Converged' });
      expect(condition(done, 'PreviousKeyRetirable')).toMatchObject({ status: 'False', reason: 'Retired' });
      expect(lifecycleOf('nr').current).toMatchObject({ version: b.version, provenAt: expect.any(String) });
      // The webhook: two 503s retried with backoff, then delivered once; versions and names only.
      await waitFor('webhook delivered', () => hook.accepted().length === 1);
      expect(hook.received.map((r) => r.status)).toEqual([503, 503, 200]);
      expect(hook.accepted()[0]!.body).toEqual({
        gatewayKey: 'nr',
        namespace: NS,
        previousVersion: a.version,
        currentVersion: b.version,
        provenTargets: ['nr-0', 'nr-1', 'nr-2'],
      });
      const revokedEvent = `PreviousKeyRevoked: Revoked key version ${a.version} at the source: every target proved ${b.version}`;
      await waitFor('the revoke Event', () => eventsOf('nr').includes(revokedEvent));
      expect(eventsOf('nr')).toContain(
        `PreviousKeyRetirable: Key version ${a.version} may be retired: every target proved ${b.version}`,
      );
      // Later passes call neither again.
      const after = logLines.filter((l) => l.includes('Reconciled GatewayKey')).length;
      await waitFor(
        '3 more passes',
        () => logLines.filter((l) => l.includes('Reconciled GatewayKey')).length >= after + 3,
      );
      expect(api.revokeCalls).toHaveLength(1);
      expect(hook.received).toHaveLength(3);
    } finally {
      await hook.close();
    }
  }, 60_000);

  it('API source: near expiry a new key is minted, delivered and proven; a failed mint is Degraded, delivers nothing and keeps the old key', async () => {
    api = await startFakeKeyApi({ token: SOURCE_TOKEN });
    const a = api.current();
    const [f0, f1] = await fleet(2, a.key);
    putPod(server, 'mint-0', { app: 'mint' }, Number(new URL(f0!.url).port));
    putPod(server, 'mint-1', { app: 'mint' }, Number(new URL(f1!.url).port));
    await createGatewayKey(server, 'mint', apiSpec('mint', api, { after: '0s', revokeUrl: api.revokeUrl }));
    op = await startTestOperator(server, 'op-mint', { resync: '300ms' }, logLines);
    await waitFor('Ready at A', () => {
      const s = gkStatus(server, 'mint');
      return s.desiredVersion === a.version && condition(s, 'Ready')?.status === 'True';
    });
    expect(f0!.patches).toEqual([]);

    // The mint endpoint fails: Degraded with the reason, nothing delivered, the targets keep A.
    api.failNext('mint', 1_000, 503);
    api.expireIn(3_600_000); // within the default refreshBefore (72 h)
    await waitFor('Degraded', () => condition(gkStatus(server, 'mint'), 'Degraded')?.status === 'True');
    const degraded = condition(gkStatus(server, 'mint'), 'Degraded');
    expect(degraded?.reason).toBe('SourceUnavailable');
    expect(degraded?.message).toMatch(/mint .*HTTP 503.*nothing was delivered/);
    expect(api.keys()).toHaveLength(1);
    expect(f0!.patches).toEqual([]);
    expect(f1!.patches).toEqual([]);
    expect(runs(f0!, a.key) && runs(f1!, a.key)).toBe(true);
    expect(api.revokeCalls).toEqual([]);

    // The mint works again: B is minted, delivered, proven; A is retired.
    api.failNext('mint', 0, 503);
    await waitFor('A retired', () => lifecycleOf('mint').previous[0]?.state === 'Retired');
    const b = api.keys()[1]!;
    expect(api.keys()).toHaveLength(2);
    expect(f0!.patches).toEqual([b.key]);
    expect(f1!.patches).toEqual([b.key]);
    const s = gkStatus(server, 'mint');
    expect(s.desiredVersion).toBe(b.version);
    expect(condition(s, 'Ready')?.status).toBe('True');
    expect(condition(s, 'Degraded')?.status).toBe('False');
    expect(api.revokedCount(a.version)).toBe(1);
    expect(api.revokeCalls).toHaveLength(1);
  }, 60_000);
});
