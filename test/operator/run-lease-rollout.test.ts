// Acceptance (issue 14): the reconcile CronJob's command (`keyroll reconcile --once --kube`, run in
// this process) and the operator both rolling out one key rotation over a fleet of fake controllers
// never restart more gateways at once than the GatewayKey's rollout.maxUnavailable, because the
// run acts only while it holds the operator's Lease. Concurrency is measured at the controllers:
// every restart window (patch received → gateway ready again) of every controller.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runKubeReconcile } from '../../src/cli/reconcile-kube.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { kubeAdapter, loadKubeConfig } from '../../src/operator/kube.ts';
import { type FakeController, startFakeController } from '../reconcile/support/fake-controller.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import {
  createGatewayKey,
  gatewayKeySpec,
  KEY_A,
  KEY_B,
  KEY_C,
  kubeRequest,
  NS,
  putPod,
  putSecret,
  startTestOperator,
  type TestOperator,
  TOKEN,
  waitFor,
} from './support.ts';

const APP = 'gw-run-lease';
const FLEET = 4;
const RESTART_MS = 400;
let server: KubeApiServer;
const fakes: FakeController[] = [];
const operators: TestOperator[] = [];
const outputs: string[] = [];

/** The most restart windows open at one moment (an unfinished window is open until now). */
function maxConcurrent(windows: ReadonlyArray<readonly [number, number | null]>): number {
  const events: Array<[number, number]> = [];
  for (const [start, end] of windows) events.push([start, 1], [end ?? Number.POSITIVE_INFINITY, -1]);
  // At equal times an end comes before a start: back-to-back restarts do not overlap.
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let max = 0;
  for (const [, d] of events) {
    open += d;
    max = Math.max(max, open);
  }
  return max;
}

/** Every controller's restart windows since `since` (ms). */
function windowsSince(since: number): Array<[number, number | null]> {
  return fakes.flatMap((f) => f.restartWindows.filter(([s]) => s >= since));
}

function rotate(key: string, version: string): void {
  putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: key }, { 'keyroll.dev/version': version });
}

function allRun(key: string): boolean {
  const want = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key });
  return fakes.every((f) => {
    const s = f.snapshot();
    return s.envHash === want && s.ready;
  });
}

function leaseHolder(): string {
  const l = server.hooks.get('leases.coordination.k8s.io', NS, 'keyroll-operator') as
    | { spec?: { holderIdentity?: string } }
    | undefined;
  return l?.spec?.holderIdentity ?? '';
}

/** The CronJob's command, in this process: `reconcile --once --kube` as identity `pod`. */
async function cronRun(pod: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout: string[] = [];
  const stderr: string[] = [];
  const kube = kubeAdapter(loadKubeConfig(server.kubeconfigPath), {
    requestTimeoutMs: 5_000,
    userAgent: `keyroll-reconcile/${pod}`,
  });
  const code = await runKubeReconcile(
    { namespace: NS, json: false, deadlineMs: 30_000, pollIntervalMs: 50 },
    {
      stdout: (t) => stdout.push(t),
      stderr: (t) => stderr.push(t),
      // The operator's test timings: a 3 s Lease.
      env: { POD_NAME: pod, KEYROLL_LEASE_DURATION_SECONDS: '3', KEYROLL_LOG_LEVEL: 'warn' },
      isTty: false,
    },
    { kube },
  );
  outputs.push(...stdout, ...stderr);
  return { code, stdout: stdout.join(''), stderr: stderr.join('') };
}

async function operator(identity: string): Promise<TestOperator> {
  const o = await startTestOperator(server, identity);
  operators.push(o);
  return o;
}

beforeAll(async () => {
  server = await startKubeApiServer({
    crdPaths: ['manifests/crd/gatewaykey.yaml'],
    bookmarkIntervalMs: 1_000,
  });
  for (let i = 0; i < FLEET; i++) {
    const f = await startFakeController({ token: TOKEN, key: KEY_A, restartMs: RESTART_MS });
    fakes.push(f);
    putPod(server, `gw-${i}`, { app: APP }, Number(new URL(f.url).port));
  }
  putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
  rotate(KEY_A, 'v1');
  await createGatewayKey(server, 'rotate', {
    ...gatewayKeySpec({ app: APP }),
    rollout: { maxUnavailable: 1, paused: false, failureBudget: 1 },
  });
}, 60_000);

afterAll(async () => {
  for (const o of operators) await o.stop().catch(() => {});
  for (const f of fakes) await f.close();
  await server?.close();
});

describe('the reconcile CronJob and the operator under one Lease', () => {
  it('measures what it claims: overlapping windows count, back-to-back ones do not', () => {
    expect(maxConcurrent([])).toBe(0);
    expect(
      maxConcurrent([
        [0, 10],
        [10, 20],
      ]),
    ).toBe(1);
    expect(
      maxConcurrent([
        [0, 10],
        [5, 20],
        [6, null],
      ]),
    ).toBe(3);
  });

  it('started together on a rotation: one of them rolls out, at most maxUnavailable (1) restarting at any moment', async () => {
    const since = Date.now();
    rotate(KEY_B, 'v2');
    const [cron] = await Promise.all([cronRun('cron-1'), operator('op-1')]);
    expect(cron.code, cron.stderr).toBe(0);
    expect(cron.stdout).toMatch(
      /^(rotate: converged 4\/4|skipped: Lease default\/keyroll-operator is held by op-1)/,
    );
    await waitFor('every gateway on KEY_B', () => allRun(KEY_B), 30_000);
    const windows = windowsSince(since);
    expect(maxConcurrent(windows)).toBe(1);
    // Each gateway restarted once: the second actor found every target converged.
    expect(fakes.map((f) => f.restartWindows.filter(([s]) => s >= since).length)).toEqual([1, 1, 1, 1]);
  }, 90_000);

  it('the run holds the Lease: an operator started during it does not lead until the run releases it', async () => {
    await operators.pop()!.stop(); // releases the Lease
    const since = Date.now();
    rotate(KEY_C, 'v3');
    const running = cronRun('cron-2');
    await waitFor('the run holds the Lease', () => leaseHolder() === 'cron-2', 10_000, 10);
    await waitFor('the run restarts a gateway', () => windowsSince(since).length > 0, 10_000, 10);
    const op = await operator('op-2');
    const cron = await running;
    expect(cron.code, cron.stderr).toBe(0);
    expect(cron.stdout).toBe('rotate: converged 4/4\n');
    expect(allRun(KEY_C)).toBe(true);
    // Released at the end: the operator leads at once, and finds nothing to restart.
    await waitFor('the operator leads', () => op.op.isLeader(), 5_000, 10);
    await op.op.idle();
    // It did not lead during the run: an elector leads only after a successful write of the Lease,
    // and the server saw the operator's first one after the run's last (its release).
    const leaseWrites = server.hooks
      .requestLog()
      .filter(
        (r) =>
          r.resource === 'leases' &&
          (r.verb === 'create' || r.verb === 'update') &&
          r.code >= 200 &&
          r.code < 300,
      );
    const runReleased = leaseWrites.findLastIndex((r) => r.userAgent === 'keyroll-reconcile/cron-2');
    expect(runReleased).toBeGreaterThan(-1);
    expect(leaseWrites.findIndex((r) => r.userAgent === op.userAgent)).toBeGreaterThan(runReleased);
    const windows = windowsSince(since);
    expect(windows).toHaveLength(FLEET);
    expect(maxConcurrent(windows)).toBe(1);
  }, 90_000);

  it('while the operator leads and rolls out, the run is skipped (exit 0), and restarts stay within maxUnavailable', async () => {
    const since = Date.now();
    rotate(KEY_A, 'v4');
    const cron = await cronRun('cron-3');
    expect(cron.code, cron.stderr).toBe(0);
    expect(cron.stdout).toBe(
      'skipped: Lease default/keyroll-operator is held by op-2, which renews it (the operator is running and reconciles these GatewayKeys); nothing done\n',
    );
    await waitFor('every gateway on KEY_A', () => allRun(KEY_A), 30_000);
    const windows = windowsSince(since);
    expect(windows).toHaveLength(FLEET);
    expect(maxConcurrent(windows)).toBe(1);
    // The skipped run read the Lease and nothing else: no list, no status write, no Event.
    const sent = server.hooks
      .requestLog()
      .filter((r) => r.userAgent === 'keyroll-reconcile/cron-3')
      .map((r) => `${r.verb} ${r.resource}`);
    expect([...new Set(sent)]).toEqual(['get leases']);
  }, 90_000);

  it('control: with maxUnavailable 2 the same measurement sees two gateways restarting at once', async () => {
    const patched = await kubeRequest(
      server,
      'PATCH',
      `/apis/keyroll.dev/v1alpha1/namespaces/${NS}/gatewaykeys/rotate`,
      { spec: { rollout: { maxUnavailable: 2 } } },
      'application/merge-patch+json',
    );
    expect(patched.status).toBe(200);
    const since = Date.now();
    rotate(KEY_B, 'v5');
    await waitFor('every gateway on KEY_B', () => allRun(KEY_B), 30_000);
    expect(maxConcurrent(windowsSince(since))).toBe(2);
  }, 90_000);

  it('no key or token in anything the runs printed', () => {
    expect(outputs.join('').length).toBeGreaterThan(0);
    for (const t of outputs) for (const n of [KEY_A, KEY_B, KEY_C, TOKEN]) expect(t.includes(n)).toBe(false);
  });
});
