// End to end: the operator, the Kubernetes API test server, 5 controllers with stand-in gateways and
// 1 with the real OpenClaw gateway. A Secret update converges all six, status goes Progressing →
// Ready, an Event records the rotation, and the real gateway's upstream sees the new key.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  NS,
  putPod,
  putSecret,
  startTestOperator,
  type TestOperator,
  waitFor,
} from '../operator/support.ts';
import {
  type FleetMember,
  readState,
  startOpenclawMember,
  startStandInMember,
  stopMember,
  waitGatewayReady,
} from '../reconcile/support/fleet.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../support/fake-upstream.ts';
import { chat } from '../support/http.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { killAllTracked } from '../support/processes.ts';

const TOKEN = 'test-token-operator-e2e-0123456789';
const KEY_A = 'test-key-A-operator-e2e-00000001';
const KEY_B = 'test-key-B-operator-e2e-00000002';
const APP = 'gw-e2e';

let server: KubeApiServer;
let upstream: FakeUpstream;
let operator: TestOperator | null = null;
const members: FleetMember[] = [];
const logLines: string[] = [];

beforeAll(async () => {
  server = await startKubeApiServer({
    crdPaths: ['manifests/crd/gatewaykey.yaml'],
    bookmarkIntervalMs: 1_000,
  });
  upstream = await startFakeUpstream({ keys: [KEY_A] });
  const starts = [
    startOpenclawMember({ name: 'openclaw', token: TOKEN, key: KEY_A, upstreamBaseUrl: upstream.baseUrl }),
  ];
  for (let i = 0; i < 5; i++) {
    starts.push(
      startStandInMember({
        name: `standin-${i}`,
        token: TOKEN,
        key: KEY_A,
        upstreamBaseUrl: upstream.baseUrl,
      }),
    );
  }
  members.push(...(await Promise.all(starts)));
  await Promise.all(members.map((m) => waitGatewayReady(m, m.kind === 'openclaw' ? 170_000 : 60_000)));
  putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
  putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: KEY_A }, { 'keyroll.dev/version': 'v1' });
  for (const m of members) putPod(server, `pod-${m.name}`, { app: APP }, Number(new URL(m.url).port));
  await createGatewayKey(server, 'fleet', {
    ...gatewayKeySpec({ app: APP }),
    rollout: { maxUnavailable: 3, paused: false, failureBudget: 1 },
  });
  operator = await startTestOperator(server, 'e2e', { targetDeadline: '150s' }, logLines);
}, 300_000);

afterAll(async () => {
  await operator?.stop().catch(() => undefined);
  await Promise.all(members.map((m) => stopMember(m).catch(() => undefined)));
  await killAllTracked();
  await upstream?.close();
  await server?.close();
});

describe('operator end to end with the real OpenClaw gateway', () => {
  it('reports the running fleet Ready without restarting it', async () => {
    const before = await Promise.all(members.map((m) => readState(m)));
    await waitFor(
      'Ready at v1',
      () => {
        const s = gkStatus(server, 'fleet');
        return s.desiredVersion === 'v1' && condition(s, 'Ready')?.status === 'True';
      },
      60_000,
    );
    const after = await Promise.all(members.map((m) => readState(m)));
    expect(after.map((s) => s?.gateway.pid)).toEqual(before.map((s) => s?.gateway.pid));
  });

  it('a Secret update reaches all six gateways, the real upstream sees the new key', async () => {
    const before = await Promise.all(members.map((m) => readState(m)));
    upstream.setKeys([KEY_A, KEY_B]);
    const seen: string[] = [];
    const sample = () => {
      const s = gkStatus(server, 'fleet');
      const tag = `${condition(s, 'Progressing')?.status}/${condition(s, 'Ready')?.status}/${s.desiredVersion}`;
      if (seen.at(-1) !== tag) seen.push(tag);
    };
    const poll = setInterval(sample, 20);
    try {
      putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: KEY_B }, { 'keyroll.dev/version': 'v2' });
      await waitFor(
        'Ready at v2',
        () => {
          const s = gkStatus(server, 'fleet');
          return s.desiredVersion === 'v2' && condition(s, 'Ready')?.status === 'True';
        },
        170_000,
        100,
      );
    } finally {
      clearInterval(poll);
      sample();
    }
    expect(seen.indexOf('True/False/v2')).toBeGreaterThanOrEqual(0);
    expect(seen.indexOf('True/False/v2')).toBeLessThan(seen.indexOf('False/True/v2'));
    expect(gkStatus(server, 'fleet').targets).toEqual({ total: 6, converged: 6, progressing: 0, failed: 0 });

    const want = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_B });
    const after = await Promise.all(members.map((m) => readState(m)));
    for (const [i, s] of after.entries()) {
      expect(s?.key.envHash, members[i]?.name).toBe(want);
      expect(s?.gateway.pid, members[i]?.name).not.toBe(before[i]?.gateway.pid);
    }
    await waitFor('a KeyRotated Event', () =>
      server.hooks.objects('events', NS).some((e) => (e as { reason?: string }).reason === 'KeyRotated'),
    );

    // The old key is revoked upstream: the real gateway answers only because it now sends B.
    upstream.setKeys([KEY_B]);
    const real = members.find((m) => m.kind === 'openclaw')!;
    const res = await chat(real.gatewayPort, real.token, 90_000);
    expect(res.status, res.text.slice(0, 300)).toBe(200);
    const last = upstream.requests.filter((q) => q.path.endsWith('chat/completions')).at(-1);
    expect(last?.keyHash).toBe(keyHash(KEY_B));
  }, 180_000);

  it('a resync after the rotation restarts nothing; no secret anywhere', async () => {
    const before = await Promise.all(members.map((m) => readState(m)));
    server.hooks.compactHistory();
    server.hooks.dropWatches();
    putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
    await new Promise((r) => setTimeout(r, 2_000));
    await operator?.op.idle();
    const after = await Promise.all(members.map((m) => readState(m)));
    expect(after.map((s) => s?.gateway.pid)).toEqual(before.map((s) => s?.gateway.pid));
    const stored = server.hooks
      .dump()
      .filter((o) => (o as { kind?: string }).kind !== 'Secret')
      .map((o) => JSON.stringify(o))
      .join('\n');
    for (const text of [stored, logLines.join('\n')]) {
      for (const s of [KEY_A, KEY_B, TOKEN]) expect(text.includes(s)).toBe(false);
    }
  });
});
