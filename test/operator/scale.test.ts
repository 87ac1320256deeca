// The operator's per-GatewayKey bookkeeping at fleet size: what every reconcile touches must cost
// the same at the 1,000th GatewayKey as at the first. Two things did not (BENCHMARKS.md, Operator):
// the secret registry rebuilt and recompiled one RegExp of every value on each new value (two per
// GatewayKey), and the per-GatewayKey gauges walked every series of every GatewayKey to drop one.
import { describe, expect, it } from 'vitest';
import { REDACTED, SecretRegistry } from '../../src/log.ts';
import { OperatorMetrics } from '../../src/operator/metrics.ts';
import { metricValue, parsePrometheus } from './support.ts';

const KEYS = 2_000;
const key = (i: number) => `test-key-scale-${String(i).padStart(5, '0')}-${'q'.repeat(24)}`;

describe('secret registry: a value per GatewayKey, scrubbed from the next line on', () => {
  it(`${KEYS} GatewayKeys registering a token and a key each, a status message scrubbed after each`, () => {
    const r = new SecretRegistry();
    const started = performance.now();
    for (let i = 0; i < KEYS; i++) {
      r.add('test-token-scale-shared-0000', `controller-token:ns/gk-${i}`);
      r.add(key(i), `key:ns/gk-${i}`);
      const msg = `spec.source.secretRef: key ${key(i)} of gk-${i}; previous ${key(i - 1)}`;
      expect(r.scrub(msg)).toBe(
        `spec.source.secretRef: key ${REDACTED} of gk-${i}; previous ${i > 0 ? REDACTED : key(-1)}`,
      );
    }
    const ms = performance.now() - started;
    // Rebuilding a pattern of every value on each add took seconds here (quadratic); now linear.
    expect(ms).toBeLessThan(5_000);
    expect(r.size).toBe(KEYS + 1);
  });

  it('a slot keeps its current and previous value; the one before is no longer scrubbed', () => {
    const r = new SecretRegistry();
    r.add(key(1), 'key:ns/a');
    r.add(key(2), 'key:ns/a');
    r.add(key(1), 'key:ns/b'); // the same value held by another slot too
    r.add(key(3), 'key:ns/a'); // a drops key(1); b still holds it
    expect(r.scrub(`${key(1)} ${key(2)} ${key(3)}`)).toBe(`${REDACTED} ${REDACTED} ${REDACTED}`);
    r.add(key(4), 'key:ns/b');
    r.add(key(5), 'key:ns/b'); // now nobody holds key(1)
    expect(r.scrub(`x${key(1)}x`)).toBe(`x${key(1)}x`);
    expect(r.values().sort()).toEqual([key(2), key(3), key(4), key(5)].sort());
  });

  it("one value's JSON-escaped form is another value: dropping one keeps the other scrubbed", () => {
    const r = new SecretRegistry();
    const quoted = 'test-key-"quoted"-01';
    const literal = JSON.stringify(quoted).slice(1, -1); // test-key-\"quoted\"-01, a value of its own
    r.add(quoted, 'a');
    r.add(literal, 'b');
    r.add('test-key-other-0001', 'a');
    r.add('test-key-other-0002', 'a'); // quoted is gone
    expect(r.scrub(`[${literal}]`)).toBe(`[${REDACTED}]`);
    expect(r.scrub(`[${quoted}]`)).toBe(`[${quoted}]`);
  });

  it('overlapping values: the earliest start wins, the longest there', () => {
    const r = new SecretRegistry();
    r.add('abcdef-123456', 's1');
    r.add('abcdef-123456-789012', 's2');
    r.add('123456-789012-zzzzzz', 's3');
    expect(r.scrub('<abcdef-123456-789012-zzzzzz>')).toBe(`<${REDACTED}-zzzzzz>`);
    expect(r.scrub('<123456-789012-zzzzzz> <abcdef-123456>')).toBe(`<${REDACTED}> <${REDACTED}>`);
  });
});

describe('per-GatewayKey metrics at fleet size', () => {
  it(`${KEYS} GatewayKeys reported twice, one forgotten: one series per condition reason, the rest untouched`, async () => {
    const m = new OperatorMetrics();
    const status = (reason: string, ready: 'True' | 'False') => ({
      lastRotationTime: '2026-12-02T10:00:00Z',
      conditions: [
        { type: 'Ready', status: ready, reason, message: '', lastTransitionTime: 'x' },
        {
          type: 'Degraded',
          status: 'False' as const,
          reason: 'AsExpected',
          message: '',
          lastTransitionTime: 'x',
        },
      ],
    });
    const started = performance.now();
    for (let i = 0; i < KEYS; i++) {
      m.reportStatus('ns', `gk-${i}`, status('NoTargets', 'False'));
      m.targets.set({ namespace: 'ns', name: `gk-${i}`, state: 'converged' }, 0);
    }
    for (let i = 0; i < KEYS; i++) m.reportStatus('ns', `gk-${i}`, status('Converged', 'True'));
    m.forget('ns', 'gk-7');
    // Walking every series of every GatewayKey on each report took seconds at this size.
    expect(performance.now() - started).toBeLessThan(5_000);

    const text = await m.render();
    const reasons = parsePrometheus(text).samples.filter(
      (s) => s.name === 'keyroll_gatewaykey_condition_reason' && s.labels.name === 'gk-8',
    );
    expect(reasons.map((s) => `${s.labels.type}=${s.labels.reason}`).sort()).toEqual([
      'Degraded=AsExpected',
      'Ready=Converged',
    ]);
    expect(
      metricValue(
        text,
        'keyroll_gatewaykey_condition{namespace="ns",name="gk-8",type="Ready",status="True"}',
      ),
    ).toBe(1);
    expect(
      metricValue(
        text,
        'keyroll_gatewaykey_condition{namespace="ns",name="gk-8",type="Progressing",status="True"}',
      ),
    ).toBe(0);
    expect(text).not.toContain('name="gk-7"');
    expect(metricValue(text, 'keyroll_gatewaykey_targets{')).toBe(0);
    expect(parsePrometheus(text).samples.filter((s) => s.labels.state === 'converged')).toHaveLength(
      KEYS - 1,
    );
  });
});
