// `keyroll reconcile --once --kube` as a real subprocess against the Kubernetes API test server and two
// real controllers with stand-in gateways: converges, is a no-op when re-run, reports a Degraded
// GatewayKey with exit 1, sends only what the keyroll-reconcile Role allows, and never prints a secret.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { type FleetMember, readState } from '../reconcile/support/fleet.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { sharedBundleRoot } from '../support/shared-bundle.ts';
import {
  type CliRun,
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  KEY_A,
  KEY_B,
  NS,
  type ProxiedFleet,
  putSecret,
  requestsSent,
  roleAllows,
  runKeyroll,
  startProxiedFleet,
  TOKEN,
} from './support.ts';

const APP = 'gw-reconcile-kube';
let server: KubeApiServer;
let fleet: ProxiedFleet;
let members: FleetMember[] = [];
const outputs: string[] = [];

/** Runs the real CLI once (bounded) and keeps its output for the secret grep. */
async function runOnce(extra: string[] = []): Promise<CliRun> {
  const run = await runKeyroll(
    [
      'reconcile',
      '--once',
      '--kube',
      '--kubeconfig',
      server.kubeconfigPath,
      '--namespace',
      NS,
      '--poll',
      '100ms',
      '--deadline',
      '30s',
      ...extra,
    ],
    'reconcile-kube',
    90_000,
  );
  outputs.push(run.stdout, run.stderr);
  return run;
}

function posts(): number {
  return fleet.nonGets().length;
}

beforeAll(async () => {
  await sharedBundleRoot(); // the CLI runs from the run's shared bundle: built (once) before any test's clock
  server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'] });
  fleet = await startProxiedFleet(server, { prefix: 'rk', app: APP, key: KEY_B, version: 'v2' });
  ({ members } = fleet);
}, 90_000);

afterAll(async () => {
  await fleet?.close();
  await server?.close();
});

describe('keyroll reconcile --once --kube', () => {
  it('delivers the Secret’s key to every selected gateway, proves it, exits 0 and writes status Ready', async () => {
    const before = await fleet.pids();
    const run = await runOnce();
    expect(run.stderr).not.toMatch(/Unknown option/);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('rotate: converged 2/2');

    const want = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_B });
    const after = await Promise.all(members.map((m) => readState(m)));
    for (const [i, st] of after.entries()) {
      expect(st?.key.envHash).toBe(want);
      expect(st?.gateway.pid).toEqual(expect.any(Number));
      expect(st?.gateway.pid).not.toBe(before[i]);
    }
    expect(posts()).toBeGreaterThanOrEqual(2);

    const s = gkStatus(server, 'rotate');
    expect(condition(s, 'Ready')?.status).toBe('True');
    expect(s.desiredVersion).toBe('v2');
    expect(s.targets).toEqual({ total: 2, converged: 2, progressing: 0, failed: 0 });
    const rotated = server.hooks
      .objects('events', NS)
      .filter((e) => (e as { reason?: string }).reason === 'KeyRotated');
    expect(rotated.length).toBeGreaterThan(0);
  }, 120_000);

  it('a second run changes nothing: exit 0, no POST to any controller, same PIDs', async () => {
    const before = await fleet.pids();
    const postsBefore = posts();
    const run = await runOnce(['--json']);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as {
      namespace: string;
      converged: boolean;
      gatewayKeys: Array<{ name: string; converged: boolean; targets: { total: number; converged: number } }>;
    };
    expect(report.namespace).toBe(NS);
    expect(report.converged).toBe(true);
    expect(report.gatewayKeys).toEqual([
      expect.objectContaining({
        name: 'rotate',
        converged: true,
        targets: expect.objectContaining({ total: 2, converged: 2 }),
      }),
    ]);
    expect(posts()).toBe(postsBefore);
    expect(await fleet.pids()).toEqual(before);
  }, 120_000);

  it('a GatewayKey whose Secret is missing: exit 1 with the reason, status Degraded; the others still converge', async () => {
    await createGatewayKey(server, 'orphan', gatewayKeySpec({ app: 'gw-none', secret: 'no-such-key' }));
    const run = await runOnce();
    expect(run.code).toBe(1);
    expect(run.stdout).toContain('rotate: converged 2/2');
    expect(run.stdout).toMatch(/orphan: not converged 0\/0: SecretNotFound: .*no-such-key not found/);
    const s = gkStatus(server, 'orphan');
    expect(condition(s, 'Degraded')).toMatchObject({ status: 'True', reason: 'SecretNotFound' });
    expect(condition(s, 'Ready')?.status).toBe('False');
  }, 120_000);

  it('an API error is exit 2 with a clear message: a denied list, a denied status write', async () => {
    const removeList = server.hooks.injectFailure({ verb: 'list', resource: 'pods', code: 403 });
    try {
      const run = await runOnce();
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/keyroll reconcile: namespace default: .*pods.*keyroll-reconcile Role/);
      expect(run.stdout).toBe('');
    } finally {
      removeList();
    }
    // Make the orphan's status change (its Secret now exists but lacks the key) so a write is due.
    putSecret(server, 'no-such-key', { OTHER: 'x' });
    const removeStatus = server.hooks.injectFailure({
      verb: 'update',
      resource: 'gatewaykeys',
      subresource: 'status',
      code: 403,
    });
    try {
      const run = await runOnce();
      expect(run.code).toBe(2);
      expect(run.stdout).toContain('rotate: converged 2/2');
      expect(run.stdout).toMatch(/orphan: error: PUT gatewaykey default\/orphan status/);
    } finally {
      removeStatus();
    }
  }, 120_000);

  it('RBAC: every request the run sent is allowed by the keyroll-reconcile Role', () => {
    const allowed = roleAllows('keyroll-reconcile');
    const sent = requestsSent(server, (ua) => ua.startsWith('keyroll-reconcile/'));
    expect([...sent].filter((s) => !allowed.has(s))).toEqual([]);
    for (const must of [
      'keyroll.dev|gatewaykeys|list',
      'keyroll.dev|gatewaykeys/status|update',
      '|secrets|list',
      '|pods|list',
      '|events|create',
    ]) {
      expect(sent).toContain(must);
    }
  });

  it('--kube and --targets together are a usage error (exit 2)', async () => {
    const run = await runOnce(['--targets', 'fleet.yaml']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--targets FILE or --kube, not both');
  }, 30_000);

  it('no key or token in any output', () => {
    expect(outputs.join('').length).toBeGreaterThan(0);
    const needles = [
      KEY_A,
      KEY_B,
      TOKEN,
      Buffer.from(KEY_B).toString('base64'),
      Buffer.from(TOKEN).toString('base64'),
    ];
    for (const t of outputs) for (const n of needles) expect(t.includes(n)).toBe(false);
  });
});
