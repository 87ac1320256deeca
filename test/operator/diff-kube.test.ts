// `keyroll diff --kube` as a real subprocess against the Kubernetes API test server and two real
// controllers with stand-in gateways: no drift is exit 0, a new key in the Secret is exit 1 with the
// planned deliveries, a missing Secret is drift with its reason, and nothing is written anywhere:
// the API server sees only reads, the controllers only GETs, and no secret reaches the output.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { type FleetMember, readState } from '../reconcile/support/fleet.ts';
import type { RecordingProxy } from '../reconcile/support/recording-proxy.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { sharedBundleRoot } from '../support/shared-bundle.ts';
import {
  type CliRun,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  KEY_A,
  KEY_B,
  NS,
  type ProxiedFleet,
  putSecret,
  runKeyroll,
  startProxiedFleet,
  TOKEN,
} from './support.ts';

const APP = 'gw-diff-kube';
let server: KubeApiServer;
let fleet: ProxiedFleet;
let members: FleetMember[] = [];
let proxies: RecordingProxy[] = [];
const outputs: string[] = [];

/** Runs the real CLI once (bounded) and keeps its output for the secret grep. */
async function diffOnce(extra: string[] = []): Promise<CliRun> {
  const run = await runKeyroll(
    ['diff', '--kube', '--kubeconfig', server.kubeconfigPath, '--namespace', NS, ...extra],
    'diff-kube',
    60_000,
  );
  outputs.push(run.stdout, run.stderr);
  return run;
}

beforeAll(async () => {
  await sharedBundleRoot(); // the CLI runs from the run's shared bundle: built (once) before any test's clock
  server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'] });
  fleet = await startProxiedFleet(server, { prefix: 'dk', app: APP, key: KEY_A, version: 'v1' });
  ({ members, proxies } = fleet);
}, 90_000);

afterAll(async () => {
  await fleet?.close();
  await server?.close();
});

describe('keyroll diff --kube', () => {
  it('the Secret holds the running key: exit 0, no drift, every target observed', async () => {
    const before = await fleet.pids();
    const run = await diffOnce();
    expect(run.stderr).not.toMatch(/Unknown option/);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`=== GatewayKey ${NS}/rotate`);
    expect(run.stdout).toContain('2 target(s): 2 in sync, 0 drift');
    expect(run.stdout).toMatch(/\nno drift\n?$/);
    expect(proxies.every((p) => p.requests.length > 0)).toBe(true);
    expect(fleet.nonGets()).toEqual([]);
    expect(await fleet.pids()).toEqual(before);
  }, 90_000);

  it('the Secret changed to key B: exit 1 with a planned deliver-key per target, and nothing sent', async () => {
    putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: KEY_B }, { 'keyroll.dev/version': 'v2' });
    const before = await fleet.pids();
    const run = await diffOnce();
    expect(run.code).toBe(1);
    expect(
      run.stdout.match(/plan\s+deliver-key: envHash \w+ differs from desired \w+ \(version - → v2\)/g),
    ).toHaveLength(2);
    expect(run.stdout).toContain('2 target(s): 0 in sync, 2 drift');
    expect(run.stdout).toContain(`drift in 1 of 1 GatewayKey(s) in namespace ${NS}`);
    // Still the old key and the same processes everywhere: a diff sends nothing.
    expect(fleet.nonGets()).toEqual([]);
    expect(await fleet.pids()).toEqual(before);
    const running = fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_A });
    for (const m of members) expect((await readState(m))?.key.envHash).toBe(running);
  }, 90_000);

  it('--output json is one document with the planned actions per GatewayKey', async () => {
    const run = await diffOnce(['--output', 'json']);
    expect(run.code).toBe(1);
    const doc = JSON.parse(run.stdout) as {
      namespace: string;
      drift: boolean;
      gatewayKeys: Array<{
        name: string;
        drift: boolean;
        pass?: { dryRun: boolean; keyVersion: string; targets: Array<{ actions: Array<{ type: string }> }> };
      }>;
    };
    expect(doc.namespace).toBe(NS);
    expect(doc.drift).toBe(true);
    expect(doc.gatewayKeys.map((g) => g.name)).toEqual(['rotate']);
    const pass = doc.gatewayKeys[0]?.pass;
    expect(pass?.dryRun).toBe(true);
    expect(pass?.keyVersion).toBe('v2');
    for (const t of pass?.targets ?? []) expect(t.actions.map((a) => a.type)).toContain('deliver-key');
    expect(pass?.targets).toHaveLength(2);
  }, 90_000);

  it('a GatewayKey whose Secret is missing is drift with the reason (exit 1); sections are sorted', async () => {
    await createGatewayKey(server, 'a-orphan', gatewayKeySpec({ app: 'gw-none', secret: 'no-such-key' }));
    putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: KEY_A }, { 'keyroll.dev/version': 'v1' });
    const run = await diffOnce();
    expect(run.code).toBe(1);
    const orphan = run.stdout.indexOf(`=== GatewayKey ${NS}/a-orphan`);
    const rotate = run.stdout.indexOf(`=== GatewayKey ${NS}/rotate`);
    expect(orphan).toBeGreaterThanOrEqual(0);
    expect(rotate).toBeGreaterThan(orphan);
    expect(run.stdout).toMatch(
      /! drift: SecretNotFound: spec\.source\.secretRef: Secret default\/no-such-key not found/,
    );
    expect(run.stdout).toContain('2 target(s): 2 in sync, 0 drift');
    expect(run.stdout).toContain(`drift in 1 of 2 GatewayKey(s)`);
    // Unlike reconcile --kube, no status is written for it.
    expect(gkStatus(server, 'a-orphan').conditions).toBeUndefined();
  }, 90_000);

  it('an API error is exit 2 with a clear message', async () => {
    const remove = server.hooks.injectFailure({ verb: 'list', resource: 'gatewaykeys', code: 403 });
    try {
      const run = await diffOnce();
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/keyroll diff: namespace default: .*gatewaykeys/);
      expect(run.stdout).toBe('');
    } finally {
      remove();
    }
  }, 60_000);

  it('--kube with --targets or a source flag is a usage error (exit 2)', async () => {
    const both = await diffOnce(['--targets', 'fleet.yaml']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--targets FILE or --kube, not both');
    const source = await diffOnce(['--source-file', '/nonexistent']);
    expect(source.code).toBe(2);
    expect(source.stderr).toContain('--source-file: not with --kube');
  }, 60_000);

  it('the API server saw only reads from the diff, and no write from anyone but the test itself', () => {
    const log = server.hooks.requestLog();
    const diff = log.filter((e) => e.userAgent.startsWith('keyroll-diff/') && e.resource);
    expect(diff.length).toBeGreaterThan(0);
    expect(
      [...new Set(diff.map((e) => e.verb))].filter((v) => !['get', 'list', 'watch'].includes(v)),
    ).toEqual([]);
    const writes = log.filter(
      (e) => !['get', 'list', 'watch'].includes(e.verb) && !e.userAgent.startsWith('keyroll-test'),
    );
    expect(writes.map((e) => `${e.userAgent} ${e.verb} ${e.path}`)).toEqual([]);
    expect(server.hooks.objects('events', NS)).toEqual([]);
    expect(gkStatus(server, 'rotate')).toEqual({});
  });

  it('no key or token in any output', () => {
    expect(outputs.join('').length).toBeGreaterThan(0);
    const needles = [
      KEY_A,
      KEY_B,
      TOKEN,
      Buffer.from(KEY_A).toString('base64'),
      Buffer.from(KEY_B).toString('base64'),
      Buffer.from(TOKEN).toString('base64'),
    ];
    for (const t of outputs) for (const n of needles) expect(t.includes(n)).toBe(false);
  });
});
