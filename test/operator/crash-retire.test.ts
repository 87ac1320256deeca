// Crash safety of retiring in the operator with real processes: `keyroll operator` is SIGKILLed
// before, during and after its revoke call (the fake key API holds the call and the test kills at
// that moment), over many runs; an operator with the same identity then takes over. The lifecycle
// lives in GatewayKey status (Retiring written before the call, Retired after): A is revoked
// exactly once, never before every target proved B; a rotation to C during the retirement of A
// retires A and then B, in order. No key or token in any output, status or Event.
// The killed operator runs as the operator image runs it (the bundle of `npm run build`, the
// Dockerfile's ENTRYPOINT flags; the run's shared bundle, test/support/shared-bundle.ts): each of
// the ten starts takes ≈0.7 s of CPU instead of ≈2 s from the sources (868 client-node modules),
// most of this file's CPU.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { type FakeController, startFakeController } from '../reconcile/support/fake-controller.ts';
import { type KillPoint, killAt, startFakeKeyApi } from '../support/fake-key-api.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { node24 } from '../support/sandbox.ts';
import { bundledKeyroll } from '../support/shared-bundle.ts';
import { b64, kubeRequest, processOperatorFlags, startTestOperator, TOKEN, waitFor } from './support.ts';

const SOURCE_TOKEN = 'test-token-source-opcrash-000000000';
const RUNS = 10;
const LANES = ['lane-0', 'lane-1', 'lane-2'];
const compileCache = mkdtempSync(join(tmpdir(), 'keyroll-opcrash-cache-'));
const captured: string[] = [];
const secrets = new Set<string>([SOURCE_TOKEN, TOKEN]);
let server: KubeApiServer;
/** Node argv up to the operator's flags: the image's entrypoint on the bundle. */
let launch: string[] = [];

beforeAll(async () => {
  launch = [...(await bundledKeyroll()), 'operator'];
  server = await startKubeApiServer({
    crdPaths: ['manifests/crd/gatewaykey.yaml'],
    bookmarkIntervalMs: 1_000,
    namespaces: LANES,
  });
  for (const ns of LANES) {
    secret(ns, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
    secret(ns, 'source-token', { token: SOURCE_TOKEN });
  }
}, 120_000);

afterAll(async () => {
  await killAllTracked();
  captured.push(JSON.stringify(server.hooks.dump()));
  await server?.close();
  rmSync(compileCache, { recursive: true, force: true });
  const all = captured.join('\n');
  for (const s of secrets)
    expect(all.includes(s), 'a key or token in an output, status or Event').toBe(false);
});

function secret(ns: string, name: string, data: Record<string, string>): void {
  server.hooks.upsert({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: ns, labels: { 'keyroll.dev/key-source': 'true' } },
    type: 'Opaque',
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, b64(v)])),
  });
}

function pod(ns: string, name: string, app: string, port: number): void {
  server.hooks.upsert({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app }, annotations: { 'keyroll.dev/port': String(port) } },
    spec: { containers: [{ name: 'gateway', image: 'keyroll/gateway' }] },
    status: { phase: 'Running', podIP: '127.0.0.1', conditions: [{ type: 'Ready', status: 'True' }] },
  });
}

interface Lifecycle {
  current: { version: string } | null;
  previous: Array<{ version: string; state: string }>;
}

function lifecycleOf(ns: string, name: string): Lifecycle {
  const o = server.hooks.get('gatewaykeys.keyroll.dev', ns, name) as
    | { status?: { lifecycle?: Lifecycle } }
    | undefined;
  return o?.status?.lifecycle ?? { current: null, previous: [] };
}

interface Run {
  point: KillPoint;
  toC: boolean;
}

const PLAN: Run[] = Array.from({ length: RUNS }, (_, i) => ({
  point: (['before', 'during', 'after'] as const)[i % 3]!,
  toC: i === 4 || i === 8,
}));

async function oneRun(ns: string, i: number, r: Run): Promise<void> {
  const api = await startFakeKeyApi({ token: SOURCE_TOKEN });
  const fakes: FakeController[] = [];
  const name = `crash-${i}`;
  const logLines: string[] = [];
  try {
    const a = api.current();
    for (let t = 0; t < 2; t++)
      fakes.push(await startFakeController({ token: TOKEN, key: a.key, restartMs: 20 }));
    fakes.forEach((f, t) => {
      pod(ns, `${name}-${t}`, name, Number(new URL(f.url).port));
    });
    // A is current and every target proved it (the record a previous pass left); then B is minted.
    const at = new Date().toISOString();
    server.hooks.upsert({
      apiVersion: 'keyroll.dev/v1alpha1',
      kind: 'GatewayKey',
      metadata: { name, namespace: ns },
      spec: {
        source: { api: { url: api.currentUrl, tokenSecretRef: { name: 'source-token', key: 'token' } } },
        retire: { after: '0s', revokeUrl: api.revokeUrl },
        targets: { selector: { matchLabels: { app: name } }, port: 1 },
        controllerTokenSecretRef: { name: 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
        rollout: { maxUnavailable: 2 },
      },
      status: { lifecycle: { current: { version: a.version, firstSeen: at, provenAt: at }, previous: [] } },
    });
    const b = api.mint();
    const runsOn = (key: string) =>
      fakes.every(
        (f) =>
          f.snapshot().envHash === fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key }) && f.snapshot().ready,
      );
    const revoked: Array<{ version: string; proven: boolean }> = [];
    let successor = b.key;
    api.onRevoked = (v) => {
      revoked.push({ version: v, proven: runsOn(successor) });
    };

    const identity = `op-${ns}`;
    const p = spawnTracked(
      node24(),
      [...launch, ...processOperatorFlags(server.kubeconfigPath, ns, identity)],
      {
        name: `operator-${name}`,
        env: { ...process.env, KEYROLL_LOG_LEVEL: 'debug', NODE_COMPILE_CACHE: compileCache },
      },
    );
    let c: { key: string; version: string } | null = null;
    await killAt(
      api,
      r.point,
      () => fakes.some((f) => f.patches.length > 0),
      async () => {
        if (r.toC) c = api.mint();
        await p.stop('SIGKILL', 5_000);
      },
      45_000,
    );
    captured.push(p.lines.join('\n'));
    if (c) successor = (c as { key: string }).key;
    const expected = c ? [a.version, b.version] : [a.version];

    // The same identity takes over at once (a restarted pod); its first pass finishes the job.
    const op = await startTestOperator(server, identity, { namespace: ns, resync: '300ms' }, logLines);
    try {
      await waitFor(
        `${name} (${r.point}${r.toC ? '+C' : ''}): ${expected.join(', ')} retired`,
        () =>
          expected.every((v) =>
            lifecycleOf(ns, name).previous.some((x) => x.version === v && x.state === 'Retired'),
          ),
        30_000,
      );
    } finally {
      await op.stop();
    }
    captured.push(logLines.join('\n'));
    for (const k of api.keys()) secrets.add(k.key);

    expect(
      revoked.map((x) => x.version),
      `${r.point}${r.toC ? '+C' : ''}`,
    ).toEqual(expected);
    expect(revoked.every((x) => x.proven)).toBe(true);
    for (const v of expected) expect(api.revokedCount(v)).toBe(1);
    expect(api.activeKeys()).toEqual([c ? (c as { key: string }).key : b.key]);
    await kubeRequest(server, 'DELETE', `/apis/keyroll.dev/v1alpha1/namespaces/${ns}/gatewaykeys/${name}`);
  } finally {
    await Promise.all(fakes.map((f) => f.close()));
    await api.close();
  }
}

describe('keyroll operator: SIGKILL around the revoke call', () => {
  it(`${RUNS} runs (before, during, after; two rotate to C meanwhile): exactly one revoke per version, never early, in order`, async () => {
    // Three lanes at once, each in its own namespace with its own Lease: the file stays under a minute.
    await Promise.all(
      LANES.map(async (ns, lane) => {
        for (const [i, r] of PLAN.entries()) if (i % LANES.length === lane) await oneRun(ns, i, r);
      }),
    );
    expect(PLAN.filter((r) => r.point === 'during').length).toBeGreaterThanOrEqual(3);
  }, 120_000);
});
