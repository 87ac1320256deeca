import { realpathSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { findKubectl, type Kubectl, kubectlFor } from '../support/kube/kubectl.ts';

const CRD = new URL('../../manifests/crd/gatewaykey.yaml', import.meta.url).pathname;
const kubectlBin = findKubectl();

const SAMPLE = `apiVersion: v1
kind: Secret
metadata: {name: kilocode-key}
stringData: {KILOCODE_API_KEY: test-key-A-kubectl-0001}
---
apiVersion: keyroll.dev/v1alpha1
kind: GatewayKey
metadata: {name: gw}
spec:
  source: {secretRef: {name: kilocode-key, key: KILOCODE_API_KEY}}
  targets: {selector: {matchLabels: {app: openclaw-gateway}}}
  controllerTokenSecretRef: {name: gateway-token, key: OPENCLAW_GATEWAY_TOKEN}
`;

const INVALID = `apiVersion: keyroll.dev/v1alpha1
kind: GatewayKey
metadata: {name: bad}
spec:
  source:
    secretRef: {name: kilocode-key, key: KILOCODE_API_KEY}
    api: {url: "https://keys.example.test/current", tokenSecretRef: {name: t, key: k}}
  delivery: sometimes
  targets: {selector: {matchLabels: {app: openclaw-gateway}}, port: 0}
  controllerTokenSecretRef: {name: gateway-token, key: OPENCLAW_GATEWAY_TOKEN}
`;

const UNKNOWN_FIELD = SAMPLE.split('---\n')[1]!.replace('name: gw', 'name: unk') + '  colour: blue\n';

async function writeStatus(server: KubeApiServer, name: string, status: unknown): Promise<Response> {
  return fetch(`${server.url}/apis/keyroll.dev/v1alpha1/namespaces/default/gatewaykeys/${name}/status`, {
    method: 'PATCH',
    headers: { 'Content-Type': 'application/merge-patch+json' },
    body: JSON.stringify({ status }),
    signal: AbortSignal.timeout(5000),
  });
}

describe.skipIf(!kubectlBin)('real kubectl against the test server', () => {
  let server: KubeApiServer;
  let kubectl: Kubectl;
  let dir: string;

  beforeAll(async () => {
    server = await startKubeApiServer();
    kubectl = await kubectlFor(server.kubeconfigPath);
    dir = dirname(server.kubeconfigPath);
    await writeFile(join(dir, 'sample.yaml'), SAMPLE);
    await writeFile(join(dir, 'invalid.yaml'), INVALID);
    await writeFile(join(dir, 'unknown.yaml'), UNKNOWN_FIELD);
  });

  afterAll(async () => {
    await kubectl?.dispose();
    await server?.close();
  });

  it('the dispatcher runs kubectl 1.32 because /version says 1.32', async () => {
    const r = await kubectl.run(['version', '-o', 'json']);
    expect(r.code, r.stderr).toBe(0);
    const v = JSON.parse(r.stdout);
    expect(v.clientVersion.minor).toMatch(/^32\+?$/);
    expect(v.serverVersion.minor).toBe('32');
  });

  it('the dispatcher follows /version: a server saying 1.28 gets kubectl 1.28', async () => {
    const old = await startKubeApiServer({ version: { major: 1, minor: 28 }, discovery: 'legacy' });
    const k = await kubectlFor(old.kubeconfigPath);
    try {
      const r = await k.run(['version', '-o', 'json']);
      expect(r.code, r.stderr).toBe(0);
      const clientMinor: string = JSON.parse(r.stdout).clientVersion.minor;
      // A plain (non-dispatcher) kubectl keeps its own version; the dispatcher switches.
      if (realpathSync(kubectlBin!).includes('google-cloud-sdk') || clientMinor.startsWith('28'))
        expect(clientMinor).toMatch(/^28/);
    } finally {
      await k.dispose();
      await old.close();
    }
  });

  it('applies the CRD with default validation, and it becomes Established', async () => {
    const r = await kubectl.run(['apply', '-f', CRD]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(
      'customresourcedefinition.apiextensions.k8s.io/gatewaykeys.keyroll.dev created',
    );
    const post = server.hooks
      .requestLog()
      .find((e) => e.verb === 'create' && e.resource === 'customresourcedefinitions');
    expect(post?.query.fieldValidation).toBe('Strict');
    const w = await kubectl.run([
      'wait',
      '--for=condition=Established',
      'crd/gatewaykeys.keyroll.dev',
      '--timeout=20s',
    ]);
    expect(w.code, w.stderr).toBe(0);
  });

  it('applies a sample Secret and GatewayKey; stringData lands base64 in data, defaults are set', async () => {
    const r = await kubectl.run(['apply', '-f', join(dir, 'sample.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('secret/kilocode-key created');
    expect(r.stdout).toContain('gatewaykey.keyroll.dev/gw created');
    const secret = server.hooks.get('secrets', 'default', 'kilocode-key')!;
    expect(secret.stringData).toBeUndefined();
    expect(secret.data).toEqual({
      KILOCODE_API_KEY: Buffer.from('test-key-A-kubectl-0001').toString('base64'),
    });
    const gk = server.hooks.get('gatewaykeys', 'default', 'gw')!;
    expect(gk.spec).toMatchObject({
      delivery: 'restart',
      envVar: 'KILOCODE_API_KEY',
      targets: { port: 18789 },
    });
    expect((gk.metadata as { generation: number }).generation).toBe(1);

    const again = await kubectl.run(['apply', '-f', join(dir, 'sample.yaml')]);
    expect(again.stdout).toContain('gatewaykey.keyroll.dev/gw unchanged');
  });

  it('get gk prints the printer columns, and -o yaml the object', async () => {
    const before = await kubectl.run(['get', 'gk']);
    expect(before.code, before.stderr).toBe(0);
    expect(before.stdout.split('\n')[0]).toMatch(
      /^NAME\s+DESIRED\s+CONVERGED\s+READY\s+STATUS\s+LAST-ROTATED\s+AGE$/,
    );
    const res = await writeStatus(server, 'gw', {
      targets: { total: 3, converged: 2, progressing: 1, failed: 0 },
      lastRotationTime: new Date(Date.now() - 5 * 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      conditions: [
        {
          type: 'Ready',
          status: 'False',
          reason: 'RolloutInProgress',
          message: '',
          lastTransitionTime: '2026-01-01T00:00:00Z',
        },
      ],
    });
    expect(res.status).toBe(200);
    const after = await kubectl.run(['get', 'gk']);
    // STATUS is the Ready reason; LAST-ROTATED the age of status.lastRotationTime.
    expect(after.stdout.split('\n')[1]).toMatch(/^gw\s+3\s+2\s+False\s+RolloutInProgress\s+5m\d*s?\s+\d+s$/);
    const wide = await kubectl.run(['get', 'gk', '-o', 'wide']);
    expect(wide.stdout.split('\n')[0]).toMatch(/DELIVERY\s+VERSION/);

    const yaml = await kubectl.run(['get', 'gk', '-o', 'yaml']);
    expect(yaml.code, yaml.stderr).toBe(0);
    expect(yaml.stdout).toContain('kind: List');
    expect(yaml.stdout).toContain('kind: GatewayKey');
    expect(yaml.stdout).toContain('delivery: restart');
    expect(yaml.stdout).toContain('converged: 2');
  });

  it('patch --type merge changes the spec and bumps the generation, not the status', async () => {
    const r = await kubectl.run([
      'patch',
      'gk',
      'gw',
      '--type',
      'merge',
      '-p',
      '{"spec":{"delivery":"file"}}',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('gatewaykey.keyroll.dev/gw patched');
    const gk = server.hooks.get('gatewaykeys', 'default', 'gw')!;
    expect(gk.spec).toMatchObject({ delivery: 'file' });
    expect((gk.metadata as { generation: number }).generation).toBe(2);
    expect(gk.status).toMatchObject({ targets: { converged: 2 } });
  });

  it('wait --for=condition=Ready returns once a Ready condition is written through /status', async () => {
    const started = Date.now();
    const waiting = kubectl.run(['wait', '--for=condition=Ready', 'gk/gw', '--timeout=20s'], {
      timeoutMs: 25_000,
    });
    // Write only once kubectl is watching, so the test proves the watch delivers the change.
    const deadline = Date.now() + 15_000;
    while (!server.hooks.requestLog().some((e) => e.verb === 'watch' && e.resource === 'gatewaykeys')) {
      if (Date.now() > deadline) throw new Error('kubectl never watched gatewaykeys');
      await new Promise((r) => setTimeout(r, 50));
    }
    const res = await writeStatus(server, 'gw', {
      targets: { total: 3, converged: 3, progressing: 0, failed: 0 },
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'Converged',
          message: '',
          lastTransitionTime: '2026-01-01T00:01:00Z',
        },
      ],
    });
    expect(res.status).toBe(200);
    const r = await waiting;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('gatewaykey.keyroll.dev/gw condition met');
    expect(Date.now() - started).toBeLessThan(20_000);
    const watch = server.hooks.requestLog().find((e) => e.verb === 'watch' && e.resource === 'gatewaykeys')!;
    expect(watch.query.allowWatchBookmarks).toBe('true');
    expect(watch.query.fieldSelector).toBe('metadata.name=gw');
  });

  it('rejects an invalid spec with the schema errors and stores nothing', async () => {
    const r = await kubectl.run(['apply', '-f', join(dir, 'invalid.yaml')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('The GatewayKey "bad" is invalid');
    expect(r.stderr).toContain(
      'spec.delivery: Unsupported value: "sometimes": supported values: "restart", "file"',
    );
    expect(r.stderr).toContain(
      'spec.targets.port: Invalid value: 0: spec.targets.port in body should be greater than or equal to 1',
    );
    expect(r.stderr).toContain('spec.source in body must validate one and only one schema (oneOf)');
    expect(server.hooks.get('gatewaykeys', 'default', 'bad')).toBeUndefined();

    const u = await kubectl.run(['apply', '-f', join(dir, 'unknown.yaml')]);
    expect(u.code).not.toBe(0);
    expect(u.stderr).toContain('strict decoding error: unknown field "spec.colour"');
    expect(server.hooks.get('gatewaykeys', 'default', 'unk')).toBeUndefined();
  });

  it('apply --server-side sends an apply patch and keeps the object', async () => {
    server.hooks.clearRequestLog();
    const r = await kubectl.run([
      'apply',
      '--server-side',
      '--force-conflicts',
      '-f',
      join(dir, 'sample.yaml'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('gatewaykey.keyroll.dev/gw serverside-applied');
    const apply = server.hooks
      .requestLog()
      .find(
        (e) =>
          e.verb === 'patch' &&
          e.resource === 'gatewaykeys' &&
          e.contentType.startsWith('application/apply-patch+yaml'),
      );
    expect(apply?.query.fieldManager).toBe('kubectl');
    const gk = server.hooks.get('gatewaykeys', 'default', 'gw')!;
    const managers = (gk.metadata as { managedFields: { manager: string; operation: string }[] })
      .managedFields;
    expect(managers.some((m) => m.manager === 'kubectl' && m.operation === 'Apply')).toBe(true);
    // The sample does not set delivery, so the value kubectl-patch wrote survives the apply.
    expect(gk.spec).toMatchObject({ delivery: 'file' });
  });

  it('a server-side apply conflicting with another manager fails without --force-conflicts', async () => {
    const withDelivery = SAMPLE.split('---\n')[1]!.replace('  targets:', '  delivery: restart\n  targets:');
    await writeFile(join(dir, 'conflict.yaml'), withDelivery);
    const r = await kubectl.run(['apply', '--server-side', '-f', join(dir, 'conflict.yaml')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('conflict with "kubectl-patch"');
    expect(r.stderr).toContain('.spec.delivery');
    const forced = await kubectl.run([
      'apply',
      '--server-side',
      '--force-conflicts',
      '-f',
      join(dir, 'conflict.yaml'),
    ]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(server.hooks.get('gatewaykeys', 'default', 'gw')!.spec).toMatchObject({ delivery: 'restart' });
  });

  it('delete waits for finalizers, then removes the object', async () => {
    const p = await kubectl.run([
      'patch',
      'gk',
      'gw',
      '--type',
      'merge',
      '-p',
      '{"metadata":{"finalizers":["keyroll.dev/cleanup"]}}',
    ]);
    expect(p.code, p.stderr).toBe(0);
    const d = await kubectl.run(['delete', 'gk', 'gw', '--wait=false']);
    expect(d.code, d.stderr).toBe(0);
    const pending = server.hooks.get('gatewaykeys', 'default', 'gw')!;
    expect((pending.metadata as { deletionTimestamp?: string }).deletionTimestamp).toBeDefined();
    const f = await kubectl.run([
      'patch',
      'gk',
      'gw',
      '--type',
      'json',
      '-p',
      '[{"op":"remove","path":"/metadata/finalizers"}]',
    ]);
    expect(f.code, f.stderr).toBe(0);
    expect(server.hooks.get('gatewaykeys', 'default', 'gw')).toBeUndefined();

    const r = await kubectl.run(['apply', '-f', join(dir, 'sample.yaml')]);
    expect(r.code, r.stderr).toBe(0);
    const del = await kubectl.run(['delete', '-f', join(dir, 'sample.yaml')]);
    expect(del.code, del.stderr).toBe(0);
    expect(del.stdout).toContain('gatewaykey.keyroll.dev "gw" deleted');
    expect(server.hooks.objects('gatewaykeys')).toEqual([]);
    expect(server.hooks.objects('secrets')).toEqual([]);
  });
});
