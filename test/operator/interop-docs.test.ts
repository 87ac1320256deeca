// docs/interop.md: every YAML block parses; the keyroll label sits where External Secrets Operator
// (spec.target.template.metadata.labels) and Vault Secrets Operator (spec.destination.labels) copy
// it onto the Secret they write, that Secret is the one the GatewayKey reads, no rollout restart is
// configured beside keyroll, and each GatewayKey is accepted by keyroll's schema and by the CRD
// (server-side dry run against the API test server).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseSpec } from '../../src/operator/gateway-key.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { REPO_ROOT } from '../support/sandbox.ts';
import { kubeRequest } from './support.ts';

type Doc = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  spec: Record<string, unknown>;
};

const markdown = readFileSync(join(REPO_ROOT, 'docs/interop.md'), 'utf8');
const blocks = [...markdown.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
const docs: Doc[] = blocks.flatMap((b) =>
  parseAllDocuments(b).map((d) => {
    expect(d.errors).toEqual([]);
    return d.toJSON() as Doc;
  }),
);
const LABEL = 'keyroll.dev/key-source';

let server: KubeApiServer;
beforeAll(async () => {
  server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'], namespaces: ['keyroll'] });
}, 30_000);
afterAll(async () => {
  await server?.close();
});

function gatewayKeyReading(secret: string): Doc {
  const gk = docs.find(
    (d) =>
      d.kind === 'GatewayKey' &&
      (d.spec.source as { secretRef?: { name: string } }).secretRef?.name === secret,
  );
  if (!gk) throw new Error(`no GatewayKey reads Secret ${secret}`);
  return gk;
}

describe('docs/interop.md', () => {
  it('has the two operators and a GatewayKey for each', () => {
    expect(blocks).toHaveLength(2);
    expect(docs.map((d) => d.kind)).toEqual([
      'ExternalSecret',
      'GatewayKey',
      'VaultStaticSecret',
      'GatewayKey',
    ]);
  });

  it('ExternalSecret: the label is in spec.target.template.metadata.labels, on the Secret the GatewayKey reads, with its data key', () => {
    const es = docs.find((d) => d.kind === 'ExternalSecret')!;
    expect(es.apiVersion).toMatch(/^external-secrets\.io\/v1(beta1)?$/);
    const target = es.spec.target as {
      name: string;
      template: { metadata: { labels: Record<string, string> }; data: Record<string, string> };
    };
    expect(target.template.metadata.labels[LABEL]).toBe('true');
    expect(es.metadata.labels?.[LABEL]).toBeUndefined(); // not on the ExternalSecret: ESO does not copy those
    const gk = gatewayKeyReading(target.name);
    const key = (gk.spec.source as { secretRef: { key: string } }).secretRef.key;
    expect(Object.keys(target.template.data)).toContain(key);
    // Every template variable is a secretKey the ExternalSecret fetches.
    const fetched = (es.spec.data as Array<{ secretKey: string }>).map((d) => d.secretKey);
    for (const v of Object.values(target.template.data)) {
      for (const m of v.matchAll(/\{\{\s*\.(\w+)\s*\}\}/g)) expect(fetched).toContain(m[1]);
    }
  });

  it('VaultStaticSecret: the label is in spec.destination.labels of a created Secret the GatewayKey reads; no rolloutRestartTargets', () => {
    const vss = docs.find((d) => d.kind === 'VaultStaticSecret')!;
    expect(vss.apiVersion).toBe('secrets.hashicorp.com/v1beta1');
    const dest = vss.spec.destination as { name: string; create: boolean; labels: Record<string, string> };
    expect(dest.labels[LABEL]).toBe('true');
    expect(dest.create).toBe(true);
    expect(vss.spec.rolloutRestartTargets).toBeUndefined();
    gatewayKeyReading(dest.name);
  });

  it('no Reloader annotation on anything', () => {
    for (const d of docs) {
      for (const k of Object.keys(d.metadata.annotations ?? {}))
        expect(k).not.toMatch(/reloader\.stakater\.com/);
    }
  });

  it("every GatewayKey passes keyroll's schema and the CRD (server-side dry run)", async () => {
    const gks = docs.filter((d) => d.kind === 'GatewayKey');
    expect(gks).toHaveLength(2);
    for (const gk of gks) {
      expect(parseSpec(gk.spec)).toMatchObject({ ok: true });
      const r = await kubeRequest(
        server,
        'POST',
        `/apis/keyroll.dev/v1alpha1/namespaces/${gk.metadata.namespace}/gatewaykeys?dryRun=All&fieldValidation=Strict`,
        gk,
      );
      expect(r.status, JSON.stringify(r.json)).toBe(201);
    }
    expect(server.hooks.objects('gatewaykeys.keyroll.dev', 'keyroll')).toEqual([]); // dry run: nothing stored
  });
});
