// KeyRejected through the Kubernetes drivers: the Kubernetes API test server, two fake controllers
// (HTTP, `/_kilo/state` with live-traffic evidence) as Ready pods, and a GatewayKey whose Secret holds
// the key both gateways already run. `reconcile --once --kube` and `diff --kube` report KeyRejected
// (exit 1), the status and a Warning Event say so, nothing is re-delivered; once an accepted response
// follows the last rejection, both exit 0 and the GatewayKey is Ready — also under a running operator.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Workspace } from '../reconcile/support/cli-harness.ts';
import { type FakeController, startFakeController } from '../reconcile/support/fake-controller.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { TRAFFIC_ACCEPTED_LATER, TRAFFIC_HEALTHY, TRAFFIC_REJECTED } from '../support/observed.ts';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  KEY_A,
  KEY_B,
  NS,
  putKeySecrets,
  putPod,
  startTestOperator,
  TOKEN,
  waitFor,
} from './support.ts';

const APP = 'gw-key-rejected';
const rejected = TRAFFIC_REJECTED;
const acceptedLater = TRAFFIC_ACCEPTED_LATER;
const healthy = TRAFFIC_HEALTHY;

let server: KubeApiServer;
const fakes: FakeController[] = [];
let ws: Workspace;
const transcripts: string[] = [];

const posts = () => fakes.flatMap((f) => f.requests.filter((r) => r.method !== 'GET'));
const kubeArgs = () => ['--kube', '--kubeconfig', server.kubeconfigPath, '--namespace', NS];
const warnings = (reason: string) =>
  server.hooks.objects('events', NS).filter((e) => (e as { reason?: string }).reason === reason) as Array<{
    type: string;
    message: string;
  }>;

beforeAll(async () => {
  server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'] });
  for (const [i, traffic] of [rejected, healthy].entries()) {
    const fake = await startFakeController({ token: TOKEN, key: KEY_B, restartMs: 50, traffic });
    fakes.push(fake);
    putPod(server, `gw-${i}`, { app: APP }, Number(new URL(fake.url).port));
  }
  putKeySecrets(server, KEY_B, 'v2');
  await createGatewayKey(server, 'rotate', gatewayKeySpec({ app: APP }));
}, 60_000);

beforeEach(() => {
  ws = new Workspace();
  return () => {
    transcripts.push(ws.transcript);
    ws.cleanup();
  };
});

afterAll(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  await server?.close();
  // No key or token in anything the commands printed, nor in stored Events and statuses.
  const stored = ['events', 'gatewaykeys.keyroll.dev'].map((r) => server?.hooks.objects(r, NS) ?? []);
  const all = transcripts.join('\n') + JSON.stringify(stored);
  for (const secret of [KEY_A, KEY_B, TOKEN]) expect(all).not.toContain(secret);
});

describe('KeyRejected with --kube and the operator', () => {
  it('reconcile --once --kube: exit 1 with KeyRejected, status Degraded=KeyRejected, one Warning, no POST', async () => {
    const r = await ws.run('reconcile', ['--once', ...kubeArgs(), '--poll', '50ms', '--deadline', '10s']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(
      /^rotate: not converged 1\/2: KeyRejected: the provider rejects key version v2 on 1 pod\(s\): gw-0 /m,
    );

    const s = gkStatus(server, 'rotate');
    expect(condition(s, 'Ready')).toMatchObject({ status: 'False', reason: 'KeyRejected' });
    expect(condition(s, 'Degraded')).toMatchObject({ status: 'True', reason: 'KeyRejected' });
    expect(condition(s, 'Degraded')?.message).toContain('gw-0');
    expect(condition(s, 'Degraded')?.message).not.toContain('gw-1');
    expect(s.targetStatuses?.[0]).toMatchObject({
      name: 'gw-0',
      converged: false,
      message: expect.stringMatching(/^KeyRejected: the provider rejected the desired key on 3 responses/),
    });
    expect(warnings('KeyRejected')).toEqual([
      expect.objectContaining({ type: 'Warning', message: expect.stringContaining('gw-0') }),
    ]);
    expect(warnings('DeliveryFailed')).toEqual([]);

    // Again, as JSON: same reason, no second Event for the same cause, still nothing sent.
    const j = await ws.run('reconcile', ['--once', ...kubeArgs(), '--json']);
    expect(j.code).toBe(1);
    const report = JSON.parse(j.stdout);
    expect(report.converged).toBe(false);
    expect(report.gatewayKeys[0]).toMatchObject({ name: 'rotate', converged: false });
    expect(report.gatewayKeys[0].reason).toMatch(/^KeyRejected: /);
    expect(warnings('KeyRejected')).toHaveLength(1);
    expect(posts()).toEqual([]);
  }, 60_000);

  it('diff --kube: exit 1 with the KeyRejected plan (text and JSON), GETs only', async () => {
    const d = await ws.run('diff', kubeArgs());
    expect(d.code, d.stdout + d.stderr).toBe(1);
    expect(d.stdout).toMatch(/^=== GatewayKey default\/rotate$/m);
    expect(d.stdout).toMatch(
      /^ {2}plan +none: KeyRejected: the provider rejected the desired key on 3 responses/m,
    );
    expect(d.stdout).toMatch(/^- traffic +120 responses since /m);
    const j = await ws.run('diff', [...kubeArgs(), '--output', 'json']);
    expect(j.code).toBe(1);
    const doc = JSON.parse(j.stdout);
    expect(doc.drift).toBe(true);
    const targets = doc.gatewayKeys[0].pass.targets as Array<{ name: string; reason?: string }>;
    expect(targets.map((t) => [t.name, t.reason])).toEqual([
      ['gw-0', 'KeyRejected'],
      ['gw-1', undefined],
    ]);
    expect(posts()).toEqual([]);
  }, 60_000);

  it('an accepted response after the last rejection: both exit 0 and the GatewayKey is Ready', async () => {
    fakes[0]!.setTraffic(acceptedLater);
    const d = await ws.run('diff', kubeArgs());
    expect(d.code, d.stdout).toBe(0);
    const r = await ws.run('reconcile', ['--once', ...kubeArgs()]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('rotate: converged 2/2');
    const s = gkStatus(server, 'rotate');
    expect(condition(s, 'Ready')).toMatchObject({ status: 'True', reason: 'Converged' });
    expect(condition(s, 'Degraded')).toMatchObject({ status: 'False', reason: 'AsExpected' });
    expect(posts()).toEqual([]);
  }, 60_000);

  it('the operator: KeyRejected while the provider refuses the key, Ready once it accepts, no restart', async () => {
    fakes[0]!.setTraffic(rejected);
    const before = fakes.map((f) => f.snapshot().pid);
    const op = await startTestOperator(server, 'key-rejected-op');
    try {
      await waitFor(
        'Degraded=KeyRejected',
        () => condition(gkStatus(server, 'rotate'), 'Degraded')?.reason === 'KeyRejected',
        20_000,
      );
      // The Event follows the status write (a reconcile writes status, then records Events).
      await waitFor('a second KeyRejected Warning', () => warnings('KeyRejected').length >= 2, 5_000);
      // The operator keeps re-observing (retry with backoff); the evidence flips, and so does status.
      fakes[0]!.setTraffic(acceptedLater);
      await waitFor(
        'Ready=True',
        () => condition(gkStatus(server, 'rotate'), 'Ready')?.status === 'True',
        20_000,
      );
    } finally {
      await op.stop();
    }
    expect(posts()).toEqual([]);
    expect(fakes.map((f) => f.snapshot().pid)).toEqual(before);
  }, 60_000);
});
