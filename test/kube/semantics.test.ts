import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';

const CRD = new URL('../../manifests/crd/gatewaykey.yaml', import.meta.url).pathname;
const GK_PATH = '/apis/keyroll.dev/v1alpha1/namespaces/default/gatewaykeys';

function gatewayKey(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: 'keyroll.dev/v1alpha1',
    kind: 'GatewayKey',
    metadata: { name, labels },
    spec: {
      source: { secretRef: { name: 'kilocode-key', key: 'KILOCODE_API_KEY' } },
      targets: { selector: { matchLabels: { app: 'openclaw-gateway' } } },
      controllerTokenSecretRef: { name: 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
    },
  };
}

interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test assertions walk arbitrary JSON
  body: any;
}

async function call(
  server: KubeApiServer,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const res = await fetch(server.url + path, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

/** Opens a watch and collects its events (one JSON per line) until `stop()` or the server ends it. */
function watch(server: KubeApiServer, path: string) {
  const events: {
    type: string;
    object: { metadata: { name?: string; resourceVersion: string }; code?: number; reason?: string };
  }[] = [];
  let ended = false;
  const req = request(server.url + path);
  req.on('response', (res) => {
    let buf = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buf += chunk;
      let i = buf.indexOf('\n');
      while (i >= 0) {
        events.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
        i = buf.indexOf('\n');
      }
    });
    res.on('end', () => {
      ended = true;
    });
  });
  req.on('error', () => {
    ended = true;
  });
  req.end();
  return {
    events,
    ended: () => ended,
    stop: () => req.destroy(),
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('kube test server semantics', () => {
  let server: KubeApiServer;

  beforeAll(async () => {
    server = await startKubeApiServer({ crdPaths: [CRD], bookmarkIntervalMs: 100 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('serves aggregated discovery when asked, legacy otherwise, and openapi v3 with fieldValidation', async () => {
    const agg = await call(server, 'GET', '/apis', undefined, {
      Accept: 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json',
    });
    expect(agg.headers.get('content-type')).toBe(
      'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList',
    );
    const keyroll = agg.body.items.find(
      (g: { metadata: { name: string } }) => g.metadata.name === 'keyroll.dev',
    );
    expect(keyroll.versions[0].resources[0]).toMatchObject({
      resource: 'gatewaykeys',
      scope: 'Namespaced',
      shortNames: ['gk'],
    });
    const legacy = await call(server, 'GET', '/apis/keyroll.dev/v1alpha1');
    expect(legacy.body.resources.map((r: { name: string }) => r.name)).toEqual([
      'gatewaykeys',
      'gatewaykeys/status',
    ]);
    const index = await call(server, 'GET', '/openapi/v3');
    const url: string = index.body.paths['apis/keyroll.dev/v1alpha1'].serverRelativeURL;
    const doc = await call(server, 'GET', url);
    const op = Object.values(
      doc.body.paths as Record<string, { patch: { parameters: { name: string }[] } }>,
    )[0]!.patch;
    expect(op.parameters.map((p) => p.name)).toContain('fieldValidation');
    expect((await call(server, 'GET', '/openapi/v2')).status).toBe(404);
  });

  it('fieldValidation: Strict rejects, Warn prunes with a Warning header, Ignore prunes silently', async () => {
    const extra = { ...gatewayKey('fv'), spec: { ...(gatewayKey('fv').spec as object), colour: 'blue' } };
    const strict = await call(server, 'POST', `${GK_PATH}?fieldValidation=Strict`, extra);
    expect(strict.status).toBe(400);
    expect(strict.body.message).toBe('strict decoding error: unknown field "spec.colour"');
    const warn = await call(server, 'POST', GK_PATH, extra);
    expect(warn.status).toBe(201);
    expect(warn.headers.get('warning')).toBe('299 - "unknown field \\"spec.colour\\""');
    expect(warn.body.spec.colour).toBeUndefined();
    await call(server, 'DELETE', `${GK_PATH}/fv`);
    const ignore = await call(server, 'POST', `${GK_PATH}?fieldValidation=Ignore`, extra);
    expect(ignore.status).toBe(201);
    expect(ignore.headers.get('warning')).toBeNull();
    await call(server, 'DELETE', `${GK_PATH}/fv`);
  });

  it('create rules: generateName, namespace mismatch, bad names, dryRun', async () => {
    const gen = await call(server, 'POST', GK_PATH, { ...gatewayKey(''), metadata: { generateName: 'gk-' } });
    expect(gen.status).toBe(201);
    expect(gen.body.metadata.name).toMatch(/^gk-[a-z0-9]{5}$/);
    const mismatch = await call(server, 'POST', GK_PATH, {
      ...gatewayKey('m'),
      metadata: { name: 'm', namespace: 'other' },
    });
    expect(mismatch.status).toBe(400);
    expect(mismatch.body.message).toBe(
      'the namespace of the provided object does not match the namespace sent on the request',
    );
    const badName = await call(server, 'POST', GK_PATH, gatewayKey('Bad_Name'));
    expect(badName.status).toBe(422);
    expect(badName.body.message).toContain(
      'GatewayKey.keyroll.dev "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain',
    );
    const dry = await call(server, 'POST', `${GK_PATH}?dryRun=All`, gatewayKey('dry'));
    expect(dry.status).toBe(201);
    expect(server.hooks.get('gatewaykeys', 'default', 'dry')).toBeUndefined();
    const pod = await call(server, 'POST', '/api/v1/namespaces/default/pods', {
      metadata: { name: 'p1', labels: { app: 'openclaw-gateway' } },
      spec: { containers: [{ name: 'c', image: 'x' }] },
      status: { phase: 'Running', podIP: '10.0.0.1' },
    });
    expect(pod.body.status).toEqual({ phase: 'Pending', qosClass: 'BestEffort' });
    await call(server, 'DELETE', `${GK_PATH}/${gen.body.metadata.name}`);
  });

  it('list: label selectors (equality and set-based), field selectors, pagination with 410 after compaction', async () => {
    for (const [n, tier] of [
      ['a', 'gold'],
      ['b', 'silver'],
      ['c', 'bronze'],
    ] as const) {
      expect((await call(server, 'POST', GK_PATH, gatewayKey(n, { tier }))).status).toBe(201);
    }
    const names = async (q: string) =>
      (await call(server, 'GET', `${GK_PATH}?${q}`)).body.items.map(
        (i: { metadata: { name: string } }) => i.metadata.name,
      );
    expect(await names('labelSelector=tier%3Dgold')).toEqual(['a']);
    expect(await names('labelSelector=tier!%3Dgold')).toEqual(['b', 'c']);
    expect(await names(`labelSelector=${encodeURIComponent('tier in (gold,bronze)')}`)).toEqual(['a', 'c']);
    expect(await names(`labelSelector=${encodeURIComponent('tier notin (gold)')}`)).toEqual(['b', 'c']);
    expect(await names('labelSelector=tier')).toEqual(['a', 'b', 'c']);
    expect(await names('labelSelector=!tier')).toEqual([]);
    expect(await names('fieldSelector=metadata.name%3Db')).toEqual(['b']);
    const unsupported = await call(server, 'GET', `${GK_PATH}?fieldSelector=spec.delivery%3Drestart`);
    expect(unsupported.status).toBe(400);
    expect(unsupported.body.message).toContain('field label not supported: spec.delivery');
    const all = await call(server, 'GET', '/apis/keyroll.dev/v1alpha1/gatewaykeys');
    expect(all.body.items).toHaveLength(3);

    const page1 = await call(server, 'GET', `${GK_PATH}?limit=2`);
    expect(page1.body.items).toHaveLength(2);
    expect(page1.body.metadata.remainingItemCount).toBe(1);
    const page2 = await call(server, 'GET', `${GK_PATH}?limit=2&continue=${page1.body.metadata.continue}`);
    expect(page2.body.items.map((i: { metadata: { name: string } }) => i.metadata.name)).toEqual(['c']);
    server.hooks.compactHistory();
    const expired = await call(server, 'GET', `${GK_PATH}?limit=2&continue=${page1.body.metadata.continue}`);
    expect(expired.status).toBe(410);
    expect(expired.body.reason).toBe('Expired');
    for (const n of ['a', 'b', 'c']) await call(server, 'DELETE', `${GK_PATH}/${n}`);
  });

  it('watch: replay from a resourceVersion, synthetic ADDED from 0, selector transitions, 410 when compacted', async () => {
    const created = await call(server, 'POST', GK_PATH, gatewayKey('w1', { tier: 'gold' }));
    const rv1 = created.body.metadata.resourceVersion;
    await call(
      server,
      'PATCH',
      `${GK_PATH}/w1`,
      { spec: { delivery: 'file' } },
      { 'Content-Type': 'application/merge-patch+json' },
    );

    const fromRv = watch(server, `${GK_PATH}?watch=true&resourceVersion=${rv1}`);
    await until('replayed MODIFIED', () => fromRv.events.length >= 1);
    expect(fromRv.events.map((e) => e.type)).toEqual(['MODIFIED']);
    fromRv.stop();

    const fromZero = watch(
      server,
      `${GK_PATH}?watch=true&resourceVersion=0&labelSelector=tier%3Dgold&allowWatchBookmarks=true`,
    );
    await until('synthetic ADDED', () => fromZero.events.some((e) => e.type === 'ADDED'));
    // Relabel: the object leaves the selector, so this watch sees DELETED, not MODIFIED.
    await call(
      server,
      'PATCH',
      `${GK_PATH}/w1`,
      { metadata: { labels: { tier: 'silver' } } },
      { 'Content-Type': 'application/merge-patch+json' },
    );
    await until('DELETED on leaving the selector', () => fromZero.events.some((e) => e.type === 'DELETED'));
    await until('a bookmark', () => fromZero.events.some((e) => e.type === 'BOOKMARK'));
    fromZero.stop();

    server.hooks.compactHistory();
    const old = watch(server, `${GK_PATH}?watch=true&resourceVersion=${rv1}`);
    await until('stream end', () => old.ended());
    expect(old.events).toHaveLength(1);
    expect(old.events[0]!.type).toBe('ERROR');
    expect(old.events[0]!.object).toMatchObject({ reason: 'Expired', code: 410 });

    const timed = watch(server, `${GK_PATH}?watch=true&timeoutSeconds=1`);
    await until('timeoutSeconds closes the stream', () => timed.ended(), 3000);
    await call(server, 'DELETE', `${GK_PATH}/w1`);
  });

  it('patch preconditions and strategic merge on built-ins (lists merged by name)', async () => {
    const created = await call(server, 'POST', GK_PATH, gatewayKey('pre'));
    const stale = await call(
      server,
      'PATCH',
      `${GK_PATH}/pre`,
      { metadata: { resourceVersion: '1' }, spec: { delivery: 'file' } },
      { 'Content-Type': 'application/merge-patch+json' },
    );
    expect(stale.status).toBe(409);
    expect(stale.body.message).toContain('the object has been modified');
    const ok = await call(
      server,
      'PATCH',
      `${GK_PATH}/pre`,
      { metadata: { resourceVersion: created.body.metadata.resourceVersion }, spec: { delivery: 'file' } },
      { 'Content-Type': 'application/merge-patch+json' },
    );
    expect(ok.status).toBe(200);
    await call(server, 'DELETE', `${GK_PATH}/pre`);

    const deploy = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'd1' },
      spec: {
        template: {
          spec: {
            containers: [
              { name: 'a', image: 'a:1' },
              { name: 'b', image: 'b:1' },
            ],
          },
        },
      },
    };
    expect((await call(server, 'POST', '/apis/apps/v1/namespaces/default/deployments', deploy)).status).toBe(
      201,
    );
    const smp = await call(
      server,
      'PATCH',
      '/apis/apps/v1/namespaces/default/deployments/d1',
      {
        spec: {
          template: {
            spec: {
              '$setElementOrder/containers': [{ name: 'a' }, { name: 'b' }],
              containers: [{ name: 'b', image: 'b:2' }],
            },
          },
        },
      },
      { 'Content-Type': 'application/strategic-merge-patch+json' },
    );
    expect(smp.status).toBe(200);
    expect(smp.body.spec.template.spec.containers).toEqual([
      { name: 'a', image: 'a:1' },
      { name: 'b', image: 'b:2' },
    ]);
    expect(smp.body.metadata.generation).toBe(2);
  });

  it('deleting the CRD removes its objects and its discovery entries', async () => {
    const other = await startKubeApiServer({ crdPaths: [CRD] });
    try {
      expect((await call(other, 'POST', GK_PATH, gatewayKey('x'))).status).toBe(201);
      const del = await call(
        other,
        'DELETE',
        '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gatewaykeys.keyroll.dev',
      );
      expect(del.status).toBe(200);
      expect(other.hooks.objects('customresourcedefinitions')).toEqual([]);
      expect((await call(other, 'GET', '/apis/keyroll.dev/v1alpha1')).status).toBe(404);
      expect((await call(other, 'GET', GK_PATH)).status).toBe(404);
    } finally {
      await other.close();
    }
  });

  it('hooks: upsert stores status as given; dump exposes every object for greps; failures can drop connections', async () => {
    const pod = server.hooks.upsert({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'ready-pod', namespace: 'default', labels: { app: 'openclaw-gateway' } },
      spec: { containers: [{ name: 'c', image: 'x' }] },
      status: { phase: 'Running', podIP: '10.0.0.9', conditions: [{ type: 'Ready', status: 'True' }] },
    });
    expect((pod.status as { podIP: string }).podIP).toBe('10.0.0.9');
    const read = await call(server, 'GET', '/api/v1/namespaces/default/pods/ready-pod');
    expect(read.body.status.podIP).toBe('10.0.0.9');
    expect(JSON.stringify(server.hooks.dump())).toContain('ready-pod');
    server.hooks.injectFailure({ verb: 'list', resource: 'pods', code: 0, drop: true, count: 1 });
    await expect(call(server, 'GET', '/api/v1/namespaces/default/pods')).rejects.toThrow();
    expect((await call(server, 'GET', '/api/v1/namespaces/default/pods')).status).toBe(200);
  });
});
