// The CRD's openAPIV3Schema (with its CEL rules) and the operator's zod schema must accept and
// reject the same GatewayKey specs, and default them the same way.
//
// The CRD side runs the API test server's own structural-schema code (pruning, defaulting and
// validation with the apiserver's rules, test/support/kube/schema.ts). That server does not
// evaluate CEL, so each `x-kubernetes-validations` rule is evaluated here by an equivalent JS
// predicate, looked up by the rule's exact text: a rule added to or changed in the CRD without its
// twin below fails the test, and so does a twin whose rule is gone.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseSpec } from '../../src/operator/gateway-key.ts';
import {
  isObject,
  type Json,
  type JsonObject,
  pruneAndDefault,
  type Schema,
  validateSchema,
} from '../support/kube/schema.ts';

type Rule = { rule: string; message?: string };
type CelSchema = Schema & { 'x-kubernetes-validations'?: Rule[] };

const crd = parseYaml(readFileSync('manifests/crd/gatewaykey.yaml', 'utf8')) as {
  spec: { versions: Array<{ name: string; schema: { openAPIV3Schema: CelSchema } }> };
};
const schema = crd.spec.versions[0]!.schema.openAPIV3Schema;

const nonEmpty = (v: Json | undefined): boolean =>
  Array.isArray(v) ? v.length > 0 : isObject(v) ? Object.keys(v).length > 0 : false;

/** One JS predicate per CEL rule of the CRD, keyed by the rule text (`self` is the node's value). */
const CEL: Record<string, (self: JsonObject) => boolean> = {
  '!has(self.retire) || !has(self.retire.revokeUrl) || has(self.source.api)': (self) =>
    !isObject(self.retire) ||
    self.retire.revokeUrl === undefined ||
    (isObject(self.source) && self.source.api !== undefined),
  '(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)':
    (self) => nonEmpty(self.matchLabels) || nonEmpty(self.matchExpressions),
  "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)":
    (self) =>
      self.operator === 'In' || self.operator === 'NotIn'
        ? nonEmpty(self.values)
        : self.values === undefined || !nonEmpty(self.values),
};

function collectRules(s: CelSchema | undefined, out: string[] = []): string[] {
  if (!s) return out;
  for (const r of s['x-kubernetes-validations'] ?? []) out.push(r.rule);
  for (const sub of Object.values(s.properties ?? {})) collectRules(sub as CelSchema, out);
  collectRules(s.items as CelSchema | undefined, out);
  return out;
}

/** Evaluates every CEL rule on the nodes it is attached to; returns the failed rules' messages. */
function celErrors(
  v: Json | undefined,
  s: CelSchema | undefined,
  path: string,
  out: string[] = [],
): string[] {
  if (v === undefined || !s) return out;
  for (const r of s['x-kubernetes-validations'] ?? []) {
    const fn = CEL[r.rule];
    if (!fn) throw new Error(`CEL rule without a JS twin in this test: ${r.rule}`);
    if (!isObject(v) || !fn(v)) out.push(`${path}: ${r.message ?? r.rule}`);
  }
  if (isObject(v)) {
    for (const [k, sub] of Object.entries(s.properties ?? {}))
      celErrors(v[k], sub as CelSchema, `${path}.${k}`, out);
  } else if (Array.isArray(v) && s.items) {
    for (const [i, item] of v.entries()) celErrors(item, s.items as CelSchema, `${path}[${i}]`, out);
  }
  return out;
}

/** The CRD's verdict on a spec, as the apiserver would give it: the defaulted spec or the errors. */
function crdValidate(spec: unknown): { ok: true; spec: Json } | { ok: false; errors: string[] } {
  const obj = structuredClone({
    apiVersion: 'keyroll.dev/v1alpha1',
    kind: 'GatewayKey',
    metadata: { name: 'gw', namespace: 'default' },
    spec,
  }) as JsonObject;
  pruneAndDefault(obj, schema);
  const errors = validateSchema(obj, schema).map((e) => e.message);
  if (errors.length === 0) errors.push(...celErrors(obj, schema, ''));
  return errors.length === 0 ? { ok: true, spec: obj.spec! } : { ok: false, errors };
}

const valid = {
  source: { secretRef: { name: 'kilocode-key', key: 'KILOCODE_API_KEY' } },
  targets: { selector: { matchLabels: { app: 'gw' } } },
  controllerTokenSecretRef: { name: 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
};
const sel = (selector: unknown) => ({ ...valid, targets: { selector } });
const api = { url: 'https://keys.example/current', tokenSecretRef: { name: 'api-token', key: 'token' } };

const SAMPLES: Array<[string, boolean, unknown]> = [
  ['minimal spec', true, valid],
  [
    'every field set',
    true,
    {
      ...valid,
      envVar: 'OTHER_KEY',
      provider: 'openrouter',
      delivery: 'file',
      targets: {
        selector: {
          matchLabels: { app: 'gw' },
          matchExpressions: [
            { key: 'tier', operator: 'In', values: ['a', 'b'] },
            { key: 'canary', operator: 'DoesNotExist' },
          ],
        },
        port: 8080,
      },
      rollout: { maxUnavailable: 3, paused: true, failureBudget: 2 },
    },
  ],
  ['selector by expression only', true, sel({ matchExpressions: [{ key: 'app', operator: 'Exists' }] })],
  [
    'Exists with an empty values list',
    true,
    sel({ matchExpressions: [{ key: 'app', operator: 'Exists', values: [] }] }),
  ],
  ['dotted Secret name', true, { ...valid, source: { secretRef: { name: 'kilo.key-1', key: 'a.b_c-d' } } }],
  ['unknown field (pruned by the CRD, stripped by zod)', true, { ...valid, colour: 'blue' }],
  ['empty selector', false, sel({})],
  ['selector with empty lists', false, sel({ matchLabels: {}, matchExpressions: [] })],
  ['In without values', false, sel({ matchExpressions: [{ key: 'app', operator: 'In' }] })],
  [
    'NotIn with an empty values list',
    false,
    sel({ matchExpressions: [{ key: 'app', operator: 'NotIn', values: [] }] }),
  ],
  [
    'Exists with values',
    false,
    sel({ matchExpressions: [{ key: 'app', operator: 'Exists', values: ['x'] }] }),
  ],
  ['unknown selector operator', false, sel({ matchExpressions: [{ key: 'app', operator: 'Near' }] })],
  ['empty expression key', false, sel({ matchExpressions: [{ key: '', operator: 'Exists' }] })],
  ['no source', false, { ...valid, source: {} }],
  ['both secretRef and api', false, { ...valid, source: { ...valid.source, api } }],
  ['api source', true, { ...valid, source: { api } }],
  [
    'api source with mint, refresh and every retire field',
    true,
    {
      ...valid,
      source: { api: { ...api, mintUrl: 'https://keys.example/mint', refreshBefore: '72h' } },
      retire: { after: '90s', revokeUrl: 'https://keys.example/revoke', webhook: 'http://hook.example/x' },
    },
  ],
  ['retire.after alone (revokeUrl and webhook optional)', true, { ...valid, retire: { after: '1h30m' } }],
  ['retire webhook with a Secret source', true, { ...valid, retire: { webhook: 'https://hook.example/' } }],
  [
    'retire.revokeUrl with a Secret source (no token to revoke with)',
    false,
    { ...valid, retire: { revokeUrl: 'https://keys.example/revoke' } },
  ],
  ['retire.after without a unit', false, { ...valid, retire: { after: '60' } }],
  ['retire.after negative', false, { ...valid, retire: { after: '-1s' } }],
  ['retire.webhook not http(s)', false, { ...valid, retire: { webhook: 'ftp://hook.example/' } }],
  ['api mintUrl not http(s)', false, { ...valid, source: { api: { ...api, mintUrl: 'keys.example/mint' } } }],
  ['api without tokenSecretRef', false, { ...valid, source: { api: { url: api.url } } }],
  ['unknown delivery', false, { ...valid, delivery: 'teleport' }],
  ['port 0', false, { ...valid, targets: { ...valid.targets, port: 0 } }],
  ['port 65536', false, { ...valid, targets: { ...valid.targets, port: 65536 } }],
  ['port as a string', false, { ...valid, targets: { ...valid.targets, port: '18789' } }],
  ['envVar starting with a digit', false, { ...valid, envVar: '1KEY' }],
  ['envVar of 129 characters', false, { ...valid, envVar: `K${'A'.repeat(128)}` }],
  ['empty provider', false, { ...valid, provider: '' }],
  ['Secret name with capitals', false, { ...valid, source: { secretRef: { name: 'Kilo', key: 'k' } } }],
  ['Secret name with an empty label', false, { ...valid, source: { secretRef: { name: 'a..b', key: 'k' } } }],
  [
    'token Secret name with an underscore',
    false,
    { ...valid, controllerTokenSecretRef: { name: 'gw_token', key: 'k' } },
  ],
  ['data key with a slash', false, { ...valid, source: { secretRef: { name: 'kilo', key: 'a/b' } } }],
  ['no controllerTokenSecretRef', false, { source: valid.source, targets: valid.targets }],
  ['no targets', false, { source: valid.source, controllerTokenSecretRef: valid.controllerTokenSecretRef }],
  ['maxUnavailable 0', false, { ...valid, rollout: { maxUnavailable: 0 } }],
  ['failureBudget 1.5', false, { ...valid, rollout: { failureBudget: 1.5 } }],
  ['paused as a string', false, { ...valid, rollout: { paused: 'yes' } }],
];

describe('CRD schema and zod schema agree', () => {
  it('has a JS twin for every CEL rule of the CRD, and no twin without a rule', () => {
    expect(collectRules(schema).sort()).toEqual(Object.keys(CEL).sort());
  });

  it.each(SAMPLES)('%s: accepted=%s by both', (_name, accepted, spec) => {
    const byCrd = crdValidate(spec);
    const byZod = parseSpec(structuredClone(spec));
    expect(
      { crd: byCrd.ok, zod: byZod.ok },
      JSON.stringify({ crd: byCrd.ok ? 'ok' : byCrd.errors, zod: byZod.ok ? 'ok' : byZod.reason }),
    ).toEqual({ crd: accepted, zod: accepted });
    // Both apply the same defaults.
    if (byCrd.ok && byZod.ok) expect(byZod.spec).toEqual(byCrd.spec);
  });

  it('the table is large enough to mean something', () => {
    expect(SAMPLES.length).toBeGreaterThanOrEqual(15);
    expect(SAMPLES.filter(([, ok]) => !ok).length).toBeGreaterThanOrEqual(10);
  });
});
