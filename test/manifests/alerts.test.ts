// The monitoring Component's PrometheusRule, rendered with the real `kubectl kustomize`: the three
// alerts exist, and every metric, label and label value their expressions use is one the
// operator exports (its registry) and docs/operator.md documents (the Metrics table).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { OperatorMetrics } from '../../src/operator/metrics.ts';
import { REPO_ROOT } from '../support/sandbox.ts';
import { kubectl, MANIFESTS, type Obj, one, render, renderWith } from './render.ts';

interface Rule {
  alert?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
type RuleObj = Obj & { spec: { groups: Array<{ name: string; rules: Rule[] }> } };

interface DocumentedMetric {
  type: string;
  /** Label name → documented values (empty: any value). */
  labels: Map<string, string[]>;
}

/** The Metrics table of docs/operator.md: `| \`name\` | type | labels | counterpart |`. */
function documentedMetrics(markdown: string): Map<string, DocumentedMetric> {
  const out = new Map<string, DocumentedMetric>();
  for (const line of markdown.split('\n')) {
    const m = /^\| `(keyroll_[a-z0-9_]+)` \| (counter|gauge|histogram|summary) \|([^|]*)\|/.exec(line);
    if (!m) continue;
    const labels = new Map<string, string[]>();
    // `label` (`v1`, `v2`) …: values in the parentheses right after a label name.
    const re = /`([a-z_]+)`(?:\s*\(([^)]*)\))?/g;
    for (let l = re.exec(m[3]!); l; l = re.exec(m[3]!)) {
      const values = l[2] ? [...l[2].matchAll(/`([^`]+)`/g)].map((v) => v[1]!) : [];
      labels.set(l[1]!, values);
    }
    out.set(m[1]!, { type: m[2]!, labels });
  }
  return out;
}

const PROMQL_WORDS = new Set([
  'and',
  'or',
  'unless',
  'on',
  'ignoring',
  'by',
  'without',
  'group_left',
  'group_right',
  'bool',
  'offset',
  // Aggregation operators: `max by (l) (…)` puts the clause between the name and the parenthesis.
  'sum',
  'min',
  'max',
  'avg',
  'group',
  'stddev',
  'stdvar',
  'count',
  'count_values',
  'bottomk',
  'topk',
  'quantile',
]);

interface Selector {
  metric: string;
  matchers: Array<{ label: string; op: string; value: string }>;
}

/**
 * The vector selectors of a PromQL expression: every identifier that is not a keyword, a function
 * call, or a label list of on()/by()/…, with its `{…}` matchers. Enough for the rules here; an
 * expression it cannot account for fails the test rather than passing unchecked.
 */
function selectors(expr: string): Selector[] {
  const out: Selector[] = [];
  // Label lists of on/ignoring/by/without/group_*: not metric names.
  const text = expr.replace(/\b(on|ignoring|by|without|group_left|group_right)\s*\([^)]*\)/g, ' $1 ');
  const re =
    /([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?|"(?:[^"\\]|\\.)*"|[0-9.]+[smhdwy]?|[()+\-*/<>=!\s,[\]^%]+/y;
  let i = 0;
  while (i < text.length) {
    re.lastIndex = i;
    const m = re.exec(text);
    if (!m || m[0].length === 0)
      throw new Error(`cannot read PromQL at ${JSON.stringify(text.slice(i, i + 20))}`);
    i = re.lastIndex;
    const ident = m[1];
    if (!ident || m[3] || PROMQL_WORDS.has(ident)) continue; // punctuation, literal, function call, keyword
    const matchers: Selector['matchers'] = [];
    if (m[2]) {
      const body = m[2].slice(1, -1).trim();
      for (const part of body ? body.split(',') : []) {
        const mm = /^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*$/.exec(part);
        if (!mm) throw new Error(`cannot read matcher ${JSON.stringify(part)}`);
        matchers.push({ label: mm[1]!, op: mm[2]!, value: mm[3]! });
      }
    }
    out.push({ metric: ident, matchers });
  }
  return out;
}

describe.skipIf(!kubectl)('monitoring Component: PrometheusRule', () => {
  let rule: RuleObj;
  let rules: Rule[];
  const docs = documentedMetrics(readFileSync(join(REPO_ROOT, 'docs/operator.md'), 'utf8'));
  const statusSource = readFileSync(join(REPO_ROOT, 'src/operator/status.ts'), 'utf8');

  beforeAll(async () => {
    rule = one(await render(join(MANIFESTS, 'components', 'monitoring')), 'PrometheusRule') as RuleObj;
    rules = rule.spec.groups.flatMap((g) => g.rules);
  });

  it('the selector helpers read what they are given (and refuse what they cannot)', () => {
    expect(
      selectors(
        '(a_b{x="1",y=~"p|q"} == 1) and on(instance, pod) max by (k) (c) unless rate(d_total[5m]) > 0',
      ),
    ).toEqual([
      {
        metric: 'a_b',
        matchers: [
          { label: 'x', op: '=', value: '1' },
          { label: 'y', op: '=~', value: 'p|q' },
        ],
      },
      { metric: 'c', matchers: [] },
      { metric: 'd_total', matchers: [] },
    ]);
    expect(() => selectors('a{x=1}')).toThrow(/cannot read matcher/);
    expect(docs.get('keyroll_gatewaykey_condition')?.labels.get('type')).toEqual([
      'Ready',
      'Progressing',
      'Degraded',
    ]);
  });

  it('alerts on a stuck rotation, a rejected key and a Degraded GatewayKey', () => {
    expect(rule.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(rules.map((r) => r.alert).sort()).toEqual([
      'KeyrollGatewayKeyDegraded',
      'KeyrollKeyRejected',
      'KeyrollRotationStuck',
    ]);
    for (const r of rules) {
      expect(r.for, r.alert).toMatch(/^\d+[smh]$/);
      expect(['warning', 'critical'], r.alert).toContain(r.labels?.severity);
      expect(r.annotations?.summary, r.alert).toBeTruthy();
    }
    const byName = new Map(rules.map((r) => [r.alert, r]));
    const metricsOf = (a: string) => selectors(byName.get(a)!.expr).map((s) => s.metric);
    expect(metricsOf('KeyrollRotationStuck')).toContain('keyroll_gatewaykey_condition');
    expect(selectors(byName.get('KeyrollKeyRejected')!.expr)[0]!.matchers).toContainEqual({
      label: 'reason',
      op: '=',
      value: 'KeyRejected',
    });
    expect(byName.get('KeyrollRotationStuck')!.for).toBe('15m');
  });

  it('every metric an alert reads is documented in docs/operator.md and exported by the operator, with documented labels and values', async () => {
    const metrics = new OperatorMetrics();
    // One GatewayKey's status, so the per-GatewayKey gauges have series.
    metrics.reportStatus('ns', 'gk', {
      conditions: [
        { type: 'Ready', status: 'False', reason: 'KeyRejected', message: '', lastTransitionTime: '' },
        { type: 'Degraded', status: 'True', reason: 'KeyRejected', message: '', lastTransitionTime: '' },
      ],
    } as never);
    const exported = new Map(
      [...(await metrics.render()).matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]),
    );
    const used = new Set<string>();
    for (const r of rules) {
      const sel = selectors(r.expr);
      expect(sel.length, r.alert).toBeGreaterThan(0);
      for (const s of sel) {
        used.add(s.metric);
        const doc = docs.get(s.metric);
        expect(doc, `${r.alert}: ${s.metric} is not in the docs/operator.md Metrics table`).toBeDefined();
        expect(exported.get(s.metric), `${r.alert}: ${s.metric} is not exported`).toBe(doc!.type);
        for (const m of s.matchers) {
          expect([...doc!.labels.keys()], `${r.alert}: ${s.metric} has no label ${m.label}`).toContain(
            m.label,
          );
          if (m.op !== '=') continue;
          const values = doc!.labels.get(m.label)!;
          if (m.label === 'reason') {
            // Reasons are the operator's condition reasons, written in src/operator/status.ts.
            expect(statusSource, `${r.alert}: reason ${m.value}`).toContain(`'${m.value}'`);
          } else if (values.length > 0) {
            expect(values, `${r.alert}: ${s.metric}{${m.label}="${m.value}"}`).toContain(m.value);
          }
        }
      }
    }
    expect([...used].sort()).toEqual([
      'keyroll_gatewaykey_condition',
      'keyroll_gatewaykey_condition_reason',
      'keyroll_leader_election_master_status',
    ]);
  });

  it('keyroll_gatewaykey_condition_reason: one series per condition, following its reason; gone with the GatewayKey', async () => {
    const m = new OperatorMetrics();
    const status = (reason: string) =>
      ({
        conditions: [{ type: 'Degraded', status: 'True', reason, message: '', lastTransitionTime: '' }],
      }) as never;
    const series = async () =>
      (await m.render()).split('\n').filter((l) => l.startsWith('keyroll_gatewaykey_condition_reason{'));
    m.reportStatus('ns', 'gk', status('KeyRejected'));
    expect(await series()).toEqual([
      'keyroll_gatewaykey_condition_reason{namespace="ns",name="gk",type="Degraded",reason="KeyRejected"} 1',
    ]);
    m.reportStatus('ns', 'gk', status('SecretNotFound'));
    expect(await series()).toEqual([
      'keyroll_gatewaykey_condition_reason{namespace="ns",name="gk",type="Degraded",reason="SecretNotFound"} 1',
    ]);
    m.forget('ns', 'gk');
    expect(await series()).toEqual([]);
  });

  it("a user's `namespace:` moves the rule with the rest; the ServiceMonitor keeps the metrics' own namespace label", async () => {
    const objects = await renderWith(['monitoring'], 'observability');
    expect(one(objects, 'PrometheusRule', 'keyroll-operator').metadata.namespace).toBe('observability');
    const monitor = one(objects, 'ServiceMonitor', 'keyroll-operator') as unknown as {
      spec: { endpoints: Array<{ honorLabels?: boolean }> };
    };
    expect(monitor.spec.endpoints.every((e) => e.honorLabels === true)).toBe(true);
  });
});
