import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';

const CRD = new URL('../../manifests/crd/gatewaykey.yaml', import.meta.url).pathname;
const GK = { group: 'keyroll.dev', version: 'v1alpha1', plural: 'gatewaykeys', namespace: 'default' };

function gatewayKey(name: string): Record<string, unknown> {
  return {
    apiVersion: 'keyroll.dev/v1alpha1',
    kind: 'GatewayKey',
    metadata: { name },
    spec: {
      source: { secretRef: { name: 'kilocode-key', key: 'KILOCODE_API_KEY' } },
      targets: { selector: { matchLabels: { app: 'openclaw-gateway' } } },
      controllerTokenSecretRef: { name: 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
    },
  };
}

/** The ApiException a call rejects with: its code and the Status body. */
async function failure(
  p: Promise<unknown>,
): Promise<{ code: number; status: { message: string; reason: string } }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ApiException) {
      return { code: e.code, status: typeof e.body === 'string' ? JSON.parse(e.body) : e.body };
    }
    throw e;
  }
  throw new Error('expected the call to fail');
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function meta(o: unknown): { resourceVersion: string; generation?: number; name: string } {
  return (o as { metadata: { resourceVersion: string; generation?: number; name: string } }).metadata;
}

describe('@kubernetes/client-node 2.0.1 against the test server', () => {
  let server: KubeApiServer;
  let kc: KubeConfig;
  let core: CoreV1Api;
  let leases: CoordinationV1Api;
  let custom: CustomObjectsApi;

  beforeAll(async () => {
    server = await startKubeApiServer({ crdPaths: [CRD] });
    kc = new KubeConfig();
    kc.loadFromFile(server.kubeconfigPath);
    core = kc.makeApiClient(CoreV1Api);
    leases = kc.makeApiClient(CoordinationV1Api);
    custom = kc.makeApiClient(CustomObjectsApi);
  });

  afterAll(async () => {
    await server?.close();
  });

  it('Secrets: stringData is merged into base64 data, unconditional replace, delete returns a Status', async () => {
    const created = await core.createNamespacedSecret({
      namespace: 'default',
      body: { metadata: { name: 's1' }, stringData: { KILOCODE_API_KEY: 'test-key-A-client-0001' } },
    });
    expect(created.data).toEqual({
      KILOCODE_API_KEY: Buffer.from('test-key-A-client-0001').toString('base64'),
    });
    expect(created.stringData).toBeUndefined();
    expect(created.type).toBe('Opaque');
    const read = await core.readNamespacedSecret({ namespace: 'default', name: 's1' });
    expect(read.metadata?.uid).toBe(created.metadata?.uid);
    const replaced = await core.replaceNamespacedSecret({
      namespace: 'default',
      name: 's1',
      body: {
        metadata: { name: 's1' },
        data: { KILOCODE_API_KEY: Buffer.from('test-key-B').toString('base64') },
      },
    });
    expect(Number(replaced.metadata?.resourceVersion)).toBeGreaterThan(
      Number(created.metadata?.resourceVersion),
    );
    const bad = await failure(
      core.createNamespacedSecret({
        namespace: 'default',
        body: { metadata: { name: 's2' }, data: { k: 'not base64!' } },
      }),
    );
    expect(bad.code).toBe(400);
    expect(bad.status.message).toContain(
      'Secret in version "v1" cannot be handled as a Secret: illegal base64 data',
    );
    const missingNs = await failure(
      core.createNamespacedSecret({ namespace: 'nope', body: { metadata: { name: 's3' } } }),
    );
    expect(missingNs.code).toBe(404);
    expect(missingNs.status.message).toBe('namespaces "nope" not found');
    const dup = await failure(
      core.createNamespacedSecret({ namespace: 'default', body: { metadata: { name: 's1' } } }),
    );
    expect(dup.code).toBe(409);
    expect(dup.status.message).toBe('secrets "s1" already exists');
    const deleted = await core.deleteNamespacedSecret({ namespace: 'default', name: 's1' });
    expect(deleted).toMatchObject({ status: 'Success', details: { name: 's1', kind: 'secrets' } });
    const gone = await failure(core.readNamespacedSecret({ namespace: 'default', name: 's1' }));
    expect(gone.code).toBe(404);
    expect(gone.status.message).toBe('secrets "s1" not found');
  });

  it('Leases: MicroTime is required, Date.toISOString() is rejected like the real apiserver', async () => {
    const when = new Date('2026-03-01T10:20:39.400Z');
    const rejected = await failure(
      leases.createNamespacedLease({
        namespace: 'default',
        body: { metadata: { name: 'l0' }, spec: { holderIdentity: 'a', renewTime: when } },
      }),
    );
    expect(rejected.code).toBe(400);
    expect(rejected.status.message).toBe(
      'Lease in version "v1" cannot be handled as a Lease: parsing time "2026-03-01T10:20:39.400Z" as ' +
        '"2006-01-02T15:04:05.000000Z07:00": cannot parse ".400Z" as ".000000"',
    );
    const lease = await leases.createNamespacedLease({
      namespace: 'default',
      body: {
        metadata: { name: 'l1' },
        spec: {
          holderIdentity: 'a',
          leaseDurationSeconds: 15,
          acquireTime: new V1MicroTime(when),
          renewTime: new V1MicroTime(when),
        },
      },
    });
    // Times come back as plain strings with six fractional digits.
    expect(String(lease.spec?.renewTime)).toBe('2026-03-01T10:20:39.400000Z');
    const renewed = await leases.replaceNamespacedLease({
      namespace: 'default',
      name: 'l1',
      body: {
        ...lease,
        spec: { ...lease.spec, renewTime: new V1MicroTime(new Date(when.getTime() + 5000)) },
      },
    });
    expect(Number(renewed.metadata?.resourceVersion)).toBeGreaterThan(
      Number(lease.metadata?.resourceVersion),
    );
    const stale = await failure(
      leases.replaceNamespacedLease({ namespace: 'default', name: 'l1', body: lease }),
    );
    expect(stale.code).toBe(409);
    expect(stale.status.message).toBe(
      'Operation cannot be fulfilled on leases.coordination.k8s.io "l1": the object has been modified; please apply your changes to the latest version and try again',
    );
    const unconditional = await failure(
      leases.replaceNamespacedLease({
        namespace: 'default',
        name: 'l1',
        body: { metadata: { name: 'l1' }, spec: { holderIdentity: 'b' } },
      }),
    );
    expect(unconditional.code).toBe(422);
    expect(unconditional.status.message).toBe(
      'Lease.coordination.k8s.io "l1" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update',
    );
    // AllowCreateOnUpdate: a PUT of a missing Lease creates it.
    const viaPut = await leases.replaceNamespacedLease({
      namespace: 'default',
      name: 'l2',
      body: { metadata: { name: 'l2' }, spec: { holderIdentity: 'c', renewTime: new V1MicroTime(when) } },
    });
    expect(viaPut.metadata?.uid).toBeTruthy();
  });

  it('Events: core/v1 requires involvedObject.namespace to match', async () => {
    const bad = await failure(
      core.createNamespacedEvent({
        namespace: 'default',
        body: {
          metadata: { name: 'e1' },
          involvedObject: { kind: 'GatewayKey', name: 'gw', namespace: 'other' },
          reason: 'Rotated',
        },
      }),
    );
    expect(bad.code).toBe(422);
    expect(bad.status.message).toContain(
      'involvedObject.namespace: Invalid value: "other": does not match event.namespace',
    );
    const ok = await core.createNamespacedEvent({
      namespace: 'default',
      body: {
        metadata: { name: 'e2' },
        involvedObject: { kind: 'GatewayKey', name: 'gw', namespace: 'default' },
        reason: 'Rotated',
      },
    });
    expect(ok.metadata?.name).toBe('e2');
  });

  it('custom resources: CRUD, status subresource rules, 409 with the exact message, pruning', async () => {
    const created = await custom.createNamespacedCustomObject({
      ...GK,
      body: { ...gatewayKey('cn1'), status: { targets: { total: 9 } } },
    });
    expect(meta(created).generation).toBe(1);
    expect(created.status).toBeUndefined(); // dropped on create: status is a subresource
    expect(created.spec.delivery).toBe('restart'); // schema default

    const withStatus = await custom.replaceNamespacedCustomObjectStatus({
      ...GK,
      name: 'cn1',
      body: {
        ...created,
        spec: { ...created.spec, delivery: 'file' },
        status: { targets: { total: 2, converged: 1 }, secret: 'x' },
      },
    });
    expect(withStatus.status).toEqual({ targets: { total: 2, converged: 1 } }); // unknown status field pruned
    expect(withStatus.spec.delivery).toBe('restart'); // spec ignored on /status
    expect(meta(withStatus).generation).toBe(1);

    const merged = await custom.patchNamespacedCustomObjectStatus(
      {
        ...GK,
        name: 'cn1',
        body: {
          status: {
            conditions: [
              {
                type: 'Ready',
                status: 'True',
                reason: 'Converged',
                message: '',
                lastTransitionTime: '2026-01-01T00:00:00Z',
              },
            ],
          },
        },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(merged.status.targets).toEqual({ total: 2, converged: 1 });
    expect(merged.status.conditions[0].type).toBe('Ready');

    const jsonPatched = await custom.patchNamespacedCustomObject({
      ...GK,
      name: 'cn1',
      body: [{ op: 'replace', path: '/spec/delivery', value: 'file' }],
    });
    expect(jsonPatched.spec.delivery).toBe('file');
    expect(meta(jsonPatched).generation).toBe(2);
    expect(jsonPatched.status.conditions[0].status).toBe('True'); // main-resource writes keep status

    const failedTest = await failure(
      custom.patchNamespacedCustomObject({
        ...GK,
        name: 'cn1',
        body: [{ op: 'test', path: '/spec/delivery', value: 'restart' }],
      }),
    );
    expect(failedTest.code).toBe(422);

    const stale = await failure(custom.replaceNamespacedCustomObject({ ...GK, name: 'cn1', body: created }));
    expect(stale.code).toBe(409);
    expect(stale.status.reason).toBe('Conflict');
    expect(stale.status.message).toBe(
      'Operation cannot be fulfilled on gatewaykeys.keyroll.dev "cn1": the object has been modified; please apply your changes to the latest version and try again',
    );
    const { resourceVersion: _rv, ...noRv } = meta(created);
    const unconditional = await failure(
      custom.replaceNamespacedCustomObject({ ...GK, name: 'cn1', body: { ...created, metadata: noRv } }),
    );
    expect(unconditional.code).toBe(422);

    const invalid = await failure(
      custom.createNamespacedCustomObject({
        ...GK,
        body: { ...gatewayKey('cn2'), spec: { ...(gatewayKey('cn2').spec as object), delivery: 'never' } },
      }),
    );
    expect(invalid.code).toBe(422);
    expect(invalid.status.message).toBe(
      'GatewayKey.keyroll.dev "cn2" is invalid: spec.delivery: Unsupported value: "never": supported values: "restart", "file"',
    );

    const list = await custom.listNamespacedCustomObject({ ...GK });
    expect(list.items.map((i: unknown) => meta(i).name)).toEqual(['cn1']);
    expect(Number(list.metadata.resourceVersion)).toBeGreaterThan(0);

    const ssa = await custom.patchNamespacedCustomObject(
      {
        ...GK,
        name: 'cn1',
        body: { ...gatewayKey('cn1'), spec: { ...(gatewayKey('cn1').spec as object), provider: 'other' } },
        fieldManager: 'keyroll-test',
        force: true,
      },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    );
    expect(ssa.spec.provider).toBe('other');

    const deleted = await custom.deleteNamespacedCustomObject({ ...GK, name: 'cn1' });
    expect(meta(deleted).name).toBe('cn1'); // CRs return the object
    expect(server.hooks.objects('gatewaykeys')).toEqual([]);
  });

  it('strategic merge patch on a custom resource is 415 (KubernetesObjectApi.patch default)', async () => {
    await custom.createNamespacedCustomObject({ ...GK, body: gatewayKey('smp') });
    const objects = KubernetesObjectApi.makeApiClient(kc);
    const r = await failure(
      objects.patch({
        apiVersion: 'keyroll.dev/v1alpha1',
        kind: 'GatewayKey',
        metadata: { name: 'smp', namespace: 'default' },
        spec: { delivery: 'file' },
      } as never),
    );
    expect(r.code).toBe(415);
    expect(r.status.message).toBe(
      'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml',
    );
    const merged = await objects.patch(
      {
        apiVersion: 'keyroll.dev/v1alpha1',
        kind: 'GatewayKey',
        metadata: { name: 'smp', namespace: 'default' },
        spec: { delivery: 'file' },
      } as never,
      undefined,
      undefined,
      undefined,
      undefined,
      PatchStrategy.MergePatch,
    );
    expect((merged as { spec: { delivery: string } }).spec.delivery).toBe('file');
    await custom.deleteNamespacedCustomObject({ ...GK, name: 'smp' });
  });

  it('an informer sees add, update and delete, and re-lists after 410 Expired', async () => {
    const informer = makeInformer(kc, '/apis/keyroll.dev/v1alpha1/namespaces/default/gatewaykeys', () =>
      custom.listNamespacedCustomObject({ ...GK }),
    );
    const seen: string[] = [];
    const errors: unknown[] = [];
    informer.on('add', (o) => seen.push(`add:${o.metadata?.name}`));
    informer.on('update', (o) =>
      seen.push(`update:${o.metadata?.name}:${(o as { spec?: { delivery?: string } }).spec?.delivery}`),
    );
    informer.on('delete', (o) => seen.push(`delete:${o.metadata?.name}`));
    informer.on('error', (e) => errors.push(e));
    await informer.start();
    try {
      await custom.createNamespacedCustomObject({ ...GK, body: gatewayKey('inf1') });
      await until('add', () => seen.includes('add:inf1'));
      await custom.patchNamespacedCustomObject(
        { ...GK, name: 'inf1', body: { spec: { delivery: 'file' } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      await until('update', () => seen.includes('update:inf1:file'));

      // Compact the history and end the watch: the informer re-watches from its old RV, gets
      // ERROR 410 Expired, and must re-list to see what changed meanwhile.
      const listsBefore = server.hooks
        .requestLog()
        .filter((e) => e.verb === 'list' && e.resource === 'gatewaykeys').length;
      const heldRv = Number(server.hooks.resourceVersion());
      const logMark = server.hooks.requestLog().length;
      server.hooks.compactHistory();
      expect(server.hooks.dropWatches()).toBe(1);
      await custom.createNamespacedCustomObject({ ...GK, body: gatewayKey('inf2') });
      await until('re-list and add after 410', () => seen.includes('add:inf2'));
      const log = server.hooks.requestLog();
      expect(log.filter((e) => e.verb === 'list' && e.resource === 'gatewaykeys').length).toBeGreaterThan(
        listsBefore,
      );
      const rewatch = log.slice(logMark).find((e) => e.verb === 'watch' && e.resource === 'gatewaykeys');
      expect(Number(rewatch?.query.resourceVersion)).toBeLessThanOrEqual(heldRv); // answered with 410

      await custom.deleteNamespacedCustomObject({ ...GK, name: 'inf1' });
      await until('delete', () => seen.includes('delete:inf1'));
      expect(informer.list().map((o) => o.metadata?.name)).toEqual(['inf2']);
      expect(errors).toEqual([]);
    } finally {
      await informer.stop();
      await custom.deleteNamespacedCustomObject({ ...GK, name: 'inf2' }).catch(() => undefined);
    }
  });

  it('injected failures answer with the matching Status and Retry-After, then clear', async () => {
    const remove = server.hooks.injectFailure({
      verb: 'get',
      resource: 'secrets',
      code: 429,
      retryAfterSeconds: 1,
      count: 1,
    });
    const r = await failure(core.readNamespacedSecret({ namespace: 'default', name: 'whatever' }));
    expect(r.code).toBe(429);
    expect(r.status.reason).toBe('TooManyRequests');
    const next = await failure(core.readNamespacedSecret({ namespace: 'default', name: 'whatever' }));
    expect(next.code).toBe(404); // count 1 used up
    remove();
    const log = server.hooks.requestLog().filter((e) => e.resource === 'secrets' && e.name === 'whatever');
    expect(log.map((e) => [e.verb, e.namespace, e.code])).toEqual([
      ['get', 'default', 429],
      ['get', 'default', 404],
    ]);
  });
});
