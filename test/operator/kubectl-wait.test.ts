// What a user sees with the real kubectl while the operator works: `kubectl wait` on the Ready
// condition returns only once every selected gateway runs with the key from the Secret, and
// `kubectl get gk` prints the printer columns with the counts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { type FleetMember, readState } from '../reconcile/support/fleet.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { findKubectl, type Kubectl, kubectlFor } from '../support/kube/kubectl.ts';
import { killAllTracked } from '../support/processes.ts';
import {
  KEY_A,
  KEY_B,
  NS,
  type StandInPods,
  startStandInPods,
  startTestOperator,
  type TestOperator,
  TOKEN,
} from './support.ts';

const APP = 'gw-kubectl';
let server: KubeApiServer;
let k: Kubectl;
let pods: StandInPods | undefined;
let members: FleetMember[] = [];
let operator: TestOperator | undefined;
const lines: string[] = [];

const manifests = (key: string) => `
apiVersion: v1
kind: Secret
metadata:
  name: gateway-token
  labels: {keyroll.dev/key-source: 'true'}
stringData:
  OPENCLAW_GATEWAY_TOKEN: ${TOKEN}
---
apiVersion: v1
kind: Secret
metadata:
  name: kilocode-key
  labels: {keyroll.dev/key-source: 'true'}
  annotations: {keyroll.dev/version: v2}
stringData:
  KILOCODE_API_KEY: ${key}
---
apiVersion: keyroll.dev/v1alpha1
kind: GatewayKey
metadata:
  name: kilocode
spec:
  source:
    secretRef: {name: kilocode-key, key: KILOCODE_API_KEY}
  targets:
    selector: {matchLabels: {app: ${APP}}}
  controllerTokenSecretRef: {name: gateway-token, key: OPENCLAW_GATEWAY_TOKEN}
  rollout: {maxUnavailable: 2}
`;

beforeAll(async () => {
  server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'] });
  k = await kubectlFor(server.kubeconfigPath);
  // The gateways run with key A; the Secret the user applies holds key B.
  pods = await startStandInPods(server, {
    prefix: 'kw',
    app: APP,
    n: 2,
    key: KEY_A,
    upstreamKeys: [KEY_A, KEY_B],
    readyTimeoutMs: 60_000,
  });
  ({ members } = pods);
}, 120_000);

afterAll(async () => {
  await operator?.stop().catch(() => {});
  await pods?.close();
  await killAllTracked();
  await k?.dispose();
  await server?.close();
});

describe.skipIf(!findKubectl())('kubectl against the operator', () => {
  it('kubectl wait --for=condition=Ready returns once every target runs the Secret key', async () => {
    const applied = await k.run(['apply', '-n', NS, '-f', '-'], {
      input: manifests(KEY_B),
      timeoutMs: 30_000,
    });
    expect(applied.code, applied.stderr).toBe(0);
    const pidsBefore = await Promise.all(members.map(async (m) => (await readState(m))?.gateway.pid));

    operator = await startTestOperator(server, 'op-kubectl', {}, lines);
    const wait = await k.run(['wait', '-n', NS, '--for=condition=Ready', 'gk/kilocode', '--timeout=120s'], {
      timeoutMs: 130_000,
    });
    expect(wait.code, wait.stderr).toBe(0);
    expect(wait.stdout).toContain('gatewaykey.keyroll.dev/kilocode condition met');

    // At the moment kubectl saw Ready, every gateway already ran a new process with key B.
    const want = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_B });
    for (const [i, m] of members.entries()) {
      const s = await readState(m);
      expect(s?.key.envHash).toBe(want);
      expect(s?.gateway.pid).not.toBe(pidsBefore[i]);
    }

    const get = await k.run(['get', '-n', NS, 'gk'], { timeoutMs: 30_000 });
    expect(get.code).toBe(0);
    expect(get.stdout).toMatch(/^NAME\s+DESIRED\s+CONVERGED\s+READY\s+STATUS\s+LAST-ROTATED\s+AGE/);
    // The operator proved key B on every target: Converged, and LAST-ROTATED is set (an age).
    expect(get.stdout).toMatch(/^kilocode\s+2\s+2\s+True\s+Converged\s+\d+[sm]\S*\s+\d+[sm]/m);

    // Nothing kubectl shows carries the key.
    const yaml = await k.run(['get', '-n', NS, 'gk', 'kilocode', '-o', 'yaml'], { timeoutMs: 30_000 });
    for (const out of [wait.stdout, get.stdout, yaml.stdout, lines.join('\n')]) {
      expect(out).not.toContain(KEY_A);
      expect(out).not.toContain(KEY_B);
      expect(out).not.toContain(TOKEN);
    }
  }, 240_000);
});
