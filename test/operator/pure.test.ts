import { describe, expect, it } from 'vitest';
import { type PassResult, summarize } from '../../src/engine/pass.ts';
import type { TargetResult } from '../../src/engine/target.ts';
import { parseOperatorConfig } from '../../src/operator/config.ts';
import { eventForDegraded, eventsForPass } from '../../src/operator/events.ts';
import { parseGatewayKey, parseSpec, referencedSecrets } from '../../src/operator/gateway-key.ts';
import { parsePod, parseSecret } from '../../src/operator/kube-port.ts';
import { decideLease, microTime } from '../../src/operator/leader.ts';
import { OperatorMetrics } from '../../src/operator/metrics.ts';
import { podTargets, selectorMatches } from '../../src/operator/pod-targets.ts';
import {
  MAX_TARGET_STATUSES,
  rotationCompleted,
  statusChanged,
  statusDegraded,
  statusFromPass,
  statusProgressing,
} from '../../src/operator/status.ts';
import { metricValue, parsePrometheus } from './support.ts';

const validSpec = {
  source: { secretRef: { name: 'kilocode-key', key: 'KILOCODE_API_KEY' } },
  targets: { selector: { matchLabels: { app: 'gw' } } },
  controllerTokenSecretRef: { name: 'gateway-token', key: 'OPENCLAW_GATEWAY_TOKEN' },
};

function result(name: string, outcome: TargetResult['outcome'], patched = false, pid = 100): TargetResult {
  const observed = {
    controller: { state: 'ready' },
    gateway: { state: 'running', pid, ready: true },
    key: { envHash: 'hmac-sha256:aa' },
    profiles: [{ agentId: 'main', profileId: 'kilocode:default', form: 'keyRef-env' }],
  };
  return {
    name,
    url: `http://127.0.0.1:1/${name}`,
    labels: {},
    outcome,
    message: outcome === 'converged' ? 'in sync' : `${name} failed: timeout`,
    desired: { envVar: 'K', delivery: 'restart', version: 'v2', envHash: 'x', fileHash: 'y' },
    before: observed,
    after: observed,
    actions: [],
    drift: [],
    patched,
    patch: null,
    attempts: patched ? 1 : 0,
    durationMs: 5,
  };
}

function pass(targets: TargetResult[], extra: Partial<PassResult> = {}): PassResult {
  return {
    keyVersion: 'v2',
    delivery: 'restart',
    dryRun: false,
    paused: false,
    summary: {
      total: targets.length,
      converged: targets.filter((t) => t.outcome === 'converged').length,
      drift: 0,
      notConverged: targets.filter((t) => t.outcome === 'not-converged').length,
      unreachable: targets.filter((t) => t.outcome === 'unreachable').length,
      skipped: 0,
      patched: targets.filter((t) => t.patched).length,
    },
    targets,
    durationMs: 10,
    ...extra,
  };
}

const t0 = new Date('2026-11-23T10:00:00.500Z');
const t1 = new Date('2026-11-23T10:01:00.500Z');

describe('GatewayKey spec', () => {
  it('applies defaults to a minimal valid spec', () => {
    const r = parseSpec(validSpec);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.spec.envVar).toBe('KILOCODE_API_KEY');
    expect(r.spec.delivery).toBe('restart');
    expect(r.spec.targets.port).toBe(18789);
    expect(r.spec.rollout).toEqual({ maxUnavailable: 1, paused: false, failureBudget: 1 });
  });

  it('names every bad field', () => {
    const r = parseSpec({
      ...validSpec,
      delivery: 'teleport',
      source: {},
      targets: { selector: {}, port: 0 },
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.reason).toContain('spec.delivery');
    expect(r.reason).toContain('spec.source: expected exactly one of secretRef or api');
    expect(r.reason).toContain('spec.targets.port');
  });

  it('indexes the Secrets a spec reads, even when the spec is otherwise invalid', () => {
    expect(referencedSecrets(validSpec).sort()).toEqual(['gateway-token', 'kilocode-key']);
    expect(referencedSecrets({ source: { secretRef: { name: 'a' } } })).toEqual(['a']);
    expect(referencedSecrets('nonsense')).toEqual([]);
  });

  it('caches an object with an invalid spec instead of dropping it', () => {
    const gk = parseGatewayKey({
      metadata: { name: 'a', namespace: 'ns', generation: 2 },
      spec: { bogus: true },
    });
    expect(gk?.generation).toBe(2);
    expect(gk?.status).toEqual({});
  });
});

describe('status', () => {
  it('goes Ready when every target converged, and keeps transition times when nothing changes', () => {
    const s1 = statusFromPass({}, 3, pass([result('a', 'converged'), result('b', 'converged', true)]), t0);
    expect(s1.observedGeneration).toBe(3);
    expect(s1.desiredVersion).toBe('v2');
    expect(s1.targets).toEqual({ total: 2, converged: 2, progressing: 0, failed: 0 });
    expect(s1.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      reason: 'Converged',
    });
    const s2 = statusFromPass(s1, 3, pass([result('a', 'converged'), result('b', 'converged')]), t1);
    expect(statusChanged(s1, s2)).toBe(false);
  });

  it('sets lastRotationTime when every target proves a delivered version, and keeps it otherwise', () => {
    // Delivered and proven in this pass: rotated now (whole seconds, as metav1.Time).
    const s1 = statusFromPass({}, 1, pass([result('a', 'converged', true), result('b', 'converged')]), t0);
    expect(s1.lastRotationTime).toBe('2026-11-23T10:00:00Z');
    // A later pass with nothing delivered keeps it, byte for byte.
    const s2 = statusFromPass(s1, 1, pass([result('a', 'converged'), result('b', 'converged')]), t1);
    expect(s2.lastRotationTime).toBe('2026-11-23T10:00:00Z');
    expect(statusChanged(s1, s2)).toBe(false);
    // Delivered but not every target proves it: no rotation yet, the old time stays.
    const s3 = statusFromPass(
      s2,
      1,
      pass([result('a', 'converged', true), result('b', 'not-converged', true)]),
      t1,
    );
    expect(s3.lastRotationTime).toBe('2026-11-23T10:00:00Z');
    // Already in sync from the start (nothing delivered): never rotated by keyroll, so no time.
    expect(statusFromPass({}, 1, pass([result('a', 'converged')]), t0).lastRotationTime).toBeUndefined();
    // Delivered in an earlier pass and proven only now (the reconciler knows): rotated now.
    const late = statusFromPass(s3, 1, pass([result('a', 'converged'), result('b', 'converged')]), t1, true);
    expect(late.lastRotationTime).toBe('2026-11-23T10:01:00Z');
    // Degraded and Progressing keep it.
    expect(statusDegraded(late, 2, 'InvalidSpec', 'bad', t1).lastRotationTime).toBe('2026-11-23T10:01:00Z');
    expect(statusProgressing(late, 1, 'v3', 2, summarize([]), t1).lastRotationTime).toBe(
      '2026-11-23T10:01:00Z',
    );
    expect(rotationCompleted(pass([]))).toBe(false);
  });

  it('reports failures as Degraded with the target and the reason', () => {
    const s = statusFromPass({}, 1, pass([result('a', 'converged'), result('b', 'not-converged', true)]), t0);
    expect(s.targets).toEqual({ total: 2, converged: 1, progressing: 0, failed: 1 });
    expect(s.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({
      status: 'True',
      reason: 'DeliveryFailed',
      message: 'b: b failed: timeout',
    });
    expect(s.targetStatuses?.[0]).toMatchObject({
      name: 'b',
      converged: false,
      pid: 100,
      form: 'keyRef-env',
    });
  });

  it('bounds the per-target list and puts unconverged targets first', () => {
    const many = Array.from({ length: 50 }, (_, i) =>
      result(`p${String(i).padStart(2, '0')}`, i === 42 ? 'unreachable' : 'converged'),
    );
    const s = statusFromPass({}, 1, pass(many), t0);
    expect(s.targetStatuses).toHaveLength(MAX_TARGET_STATUSES);
    expect(s.targetStatuses?.[0]?.name).toBe('p42');
    expect(s.targets?.total).toBe(50);
  });

  it('Progressing while delivering, then Ready; lastTransitionTime moves only on flips', () => {
    const p = statusProgressing({}, 1, 'v2', 3, summarize([result('a', 'converged')]), t0);
    expect(p.conditions?.find((c) => c.type === 'Progressing')).toMatchObject({
      status: 'True',
      reason: 'DeliveringKey',
    });
    expect(p.targets).toEqual({ total: 3, converged: 1, progressing: 2, failed: 0 });
    const done = statusFromPass(
      p,
      1,
      pass([result('a', 'converged'), result('b', 'converged', true), result('c', 'converged', true)]),
      t1,
    );
    const progressing = done.conditions?.find((c) => c.type === 'Progressing');
    expect(progressing).toMatchObject({ status: 'False', lastTransitionTime: '2026-11-23T10:01:00Z' });
    const degraded = done.conditions?.find((c) => c.type === 'Degraded');
    expect(degraded?.lastTransitionTime).toBe('2026-11-23T10:00:00Z');
  });

  it('Degraded for a missing Secret drops the stale desiredVersion and keeps the last target counts', () => {
    const ok = statusFromPass({}, 1, pass([result('a', 'converged')]), t0);
    const d = statusDegraded(ok, 2, 'SecretNotFound', 'Secret ns/x not found', t1);
    expect(d.desiredVersion).toBeUndefined();
    expect(d.targets?.total).toBe(1);
    expect(d.observedGeneration).toBe(2);
    expect(d.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'SecretNotFound',
    });
  });

  it('no ready pods is NoTargets, not Ready', () => {
    const s = statusFromPass({}, 1, pass([]), t0);
    expect(s.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'NoTargets',
    });
  });
});

describe('events', () => {
  it('one KeyRotated for a pass that delivered; nothing for a calm pass', () => {
    const prev = statusFromPass({}, 1, pass([result('a', 'converged')]), t0);
    const delivered = pass([result('a', 'converged', true), result('b', 'converged', true)]);
    const next = statusFromPass(prev, 1, delivered, t1);
    const ev = eventsForPass(delivered, prev, next);
    expect(ev).toHaveLength(1);
    expect(ev[0]).toMatchObject({ type: 'Normal', reason: 'KeyRotated' });
    expect(ev[0]?.message).toContain('version v2 to 2 target(s)');
    const calm = pass([result('a', 'converged')]);
    expect(eventsForPass(calm, next, statusFromPass(next, 1, calm, t1))).toEqual([]);
  });

  it('a Degraded Warning only when the cause changes', () => {
    const d1 = statusDegraded({}, 1, 'SecretNotFound', 'gone', t0);
    expect(eventForDegraded({}, d1)).toMatchObject({ type: 'Warning', reason: 'SecretNotFound' });
    expect(eventForDegraded(d1, statusDegraded(d1, 1, 'SecretNotFound', 'gone', t1))).toBeNull();
    expect(eventForDegraded(d1, statusDegraded(d1, 1, 'KeyNotFound', 'no key', t1))).not.toBeNull();
  });
});

/** A target whose gateway runs the desired key while the provider rejects it. */
function keyRejected(name: string, outcome: TargetResult['outcome'] = 'not-converged'): TargetResult {
  return {
    ...result(name, outcome),
    reason: 'KeyRejected',
    message:
      'the provider rejected the desired key on 3 responses since 2026-12-02T11:00:00.000Z, none accepted after',
    drift: [{ code: 'key-rejected', message: 'the provider rejected the key on 3 responses' }],
    actions: [{ type: 'none', code: 'KeyRejected', reason: 'the provider rejected the desired key' }],
  };
}

describe('KeyRejected', () => {
  const cond = (s: ReturnType<typeof statusFromPass>, type: string) =>
    s.conditions?.find((c) => c.type === type);

  it('Ready=False and Degraded=True with reason KeyRejected, the message naming the pods', () => {
    const s = statusFromPass(
      {},
      1,
      pass([result('gw-0', 'converged'), keyRejected('gw-1'), keyRejected('gw-2')]),
      t0,
    );
    expect(cond(s, 'Ready')).toMatchObject({ status: 'False', reason: 'KeyRejected' });
    expect(cond(s, 'Progressing')).toMatchObject({ status: 'False', reason: 'KeyRejected' });
    const degraded = cond(s, 'Degraded');
    expect(degraded).toMatchObject({ status: 'True', reason: 'KeyRejected' });
    expect(degraded?.message).toMatch(/^the provider rejects key version v2 on 2 pod\(s\): gw-1, gw-2 /);
    expect(degraded?.message).not.toContain('also not converged');
    expect(s.targets).toEqual({ total: 3, converged: 1, progressing: 0, failed: 2 });
    expect(s.targetStatuses?.[0]).toMatchObject({
      name: 'gw-1',
      converged: false,
      message: expect.stringMatching(/^KeyRejected: the provider rejected the desired key on 3 responses/),
    });
  });

  it('wins over DeliveryFailed and names the other failed pods too', () => {
    const s = statusFromPass({}, 1, pass([result('gw-0', 'not-converged', true), keyRejected('gw-1')]), t0);
    const degraded = cond(s, 'Degraded');
    expect(degraded?.reason).toBe('KeyRejected');
    expect(degraded?.message).toMatch(/on 1 pod\(s\): gw-1 .*; also not converged: gw-0$/);
  });

  it('also while the rollout is paused (the evidence needs no delivery)', () => {
    const s = statusFromPass({}, 1, pass([keyRejected('gw-1', 'drift')], { paused: true, dryRun: true }), t0);
    expect(cond(s, 'Degraded')).toMatchObject({ status: 'True', reason: 'KeyRejected' });
  });

  it('an old key the provider rejects is not KeyRejected: a failed delivery stays DeliveryFailed', () => {
    const old = {
      ...result('gw-1', 'not-converged', true),
      drift: [{ code: 'key-rejected' as const, message: 'x' }],
    };
    const s = statusFromPass({}, 1, pass([old]), t0);
    expect(cond(s, 'Degraded')?.reason).toBe('DeliveryFailed');
  });

  it('keeps Degraded=KeyRejected while a later pass delivers, and clears once accepted later', () => {
    const rejected = statusFromPass({}, 1, pass([keyRejected('gw-1')]), t0);
    const progressing = statusProgressing(rejected, 1, 'v3', 1, summarize([]), t1);
    expect(cond(progressing, 'Degraded')?.reason).toBe('KeyRejected');
    const ok = statusFromPass(rejected, 1, pass([result('gw-1', 'converged')]), t1);
    expect(cond(ok, 'Ready')).toMatchObject({ status: 'True', reason: 'Converged' });
    expect(cond(ok, 'Degraded')).toMatchObject({ status: 'False', reason: 'AsExpected' });
  });

  it('one KeyRejected Warning per change of the affected pods, no DeliveryFailed for them', () => {
    const p1 = pass([result('gw-0', 'converged'), keyRejected('gw-1')]);
    const s1 = statusFromPass({}, 1, p1, t0);
    const e1 = eventsForPass(p1, {}, s1);
    expect(e1).toEqual([{ type: 'Warning', reason: 'KeyRejected', message: cond(s1, 'Degraded')?.message }]);
    expect(e1[0]?.message).toContain('gw-1');

    // The same cause on the next pass (the operator keeps re-observing): no new Event.
    const s2 = statusFromPass(s1, 1, p1, t1);
    expect(statusChanged(s1, s2)).toBe(false);
    expect(eventsForPass(p1, s1, s2)).toEqual([]);

    // Another pod joins: a new Warning naming both.
    const p3 = pass([keyRejected('gw-0'), keyRejected('gw-1')]);
    const s3 = statusFromPass(s2, 1, p3, t1);
    const e3 = eventsForPass(p3, s2, s3);
    expect(e3.map((e) => e.reason)).toEqual(['KeyRejected']);
    expect(e3[0]?.message).toContain('gw-0, gw-1');

    // Accepted later: Ready again, a Normal Converged Event.
    const p4 = pass([result('gw-0', 'converged'), result('gw-1', 'converged')]);
    const s4 = statusFromPass(s3, 1, p4, t1);
    expect(eventsForPass(p4, s3, s4)).toEqual([
      expect.objectContaining({ type: 'Normal', reason: 'Converged' }),
    ]);
  });

  it('a KeyRejected target beside a failed delivery: both Warnings, the failed one without the rejected pod', () => {
    const p = pass([result('gw-0', 'not-converged', true), keyRejected('gw-1')]);
    const s = statusFromPass({}, 1, p, t0);
    const events = eventsForPass(p, {}, s);
    expect(events.map((e) => e.reason).sort()).toEqual(['DeliveryFailed', 'KeyRejected']);
    const failed = events.find((e) => e.reason === 'DeliveryFailed');
    expect(failed?.message).toMatch(/^1 target\(s\) do not run key version v2: gw-0: /);
  });
});

describe('targets', () => {
  const pod = (name: string, labels: Record<string, string>, ready = true, port?: string) =>
    parsePod({
      metadata: {
        name,
        namespace: 'ns',
        resourceVersion: '1',
        labels,
        annotations: port ? { 'keyroll.dev/port': port } : {},
      },
      status: {
        phase: 'Running',
        podIP: '10.0.0.1',
        conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
      },
    });

  it('selects ready matching pods at pod IP and the annotation port', () => {
    const pods = [
      pod('b', { app: 'gw' }, true, '9000'),
      pod('a', { app: 'gw' }),
      pod('c', { app: 'gw' }, false),
      pod('d', { app: 'other' }),
    ];
    const { targets, notReady } = podTargets(
      pods.filter((p) => p !== null),
      'ns',
      { matchLabels: { app: 'gw' } },
      18789,
    );
    expect(targets.map((t) => [t.name, t.url])).toEqual([
      ['a', 'http://10.0.0.1:18789'],
      ['b', 'http://10.0.0.1:9000'],
    ]);
    expect(notReady).toBe(1);
  });

  it('implements matchExpressions', () => {
    const sel = {
      matchExpressions: [
        { key: 'tier', operator: 'In' as const, values: ['a', 'b'] },
        { key: 'canary', operator: 'DoesNotExist' as const },
      ],
    };
    expect(selectorMatches(sel, { tier: 'a' })).toBe(true);
    expect(selectorMatches(sel, { tier: 'c' })).toBe(false);
    expect(selectorMatches(sel, { tier: 'a', canary: '1' })).toBe(false);
  });

  it('keeps only what a key source needs from a Secret', () => {
    const s = parseSecret({
      metadata: {
        name: 'k',
        namespace: 'ns',
        resourceVersion: '5',
        annotations: { 'keyroll.dev/version': 'v1' },
      },
      data: { K: 'dGVzdA==' },
      type: 'Opaque',
    });
    expect(s).toEqual({
      namespace: 'ns',
      name: 'k',
      resourceVersion: '5',
      annotations: { 'keyroll.dev/version': 'v1' },
      data: { K: 'dGVzdA==' },
    });
  });
});

describe('leader election', () => {
  it('formats MicroTime with six fractional digits', () => {
    expect(microTime(Date.parse('2026-11-23T10:00:39.406Z'))).toBe('2026-11-23T10:00:39.406000Z');
    expect(microTime(0)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  });

  it('decides create, renew, wait and takeover by the local observation time', () => {
    const lease = (holder: string) => ({
      metadata: { name: 'l', resourceVersion: '1' },
      spec: { holderIdentity: holder, leaseDurationSeconds: 15 },
    });
    expect(decideLease(null, 'me', 0, 0, 15_000)).toEqual({ action: 'create' });
    expect(decideLease(lease('me'), 'me', 0, 0, 15_000)).toEqual({ action: 'renew' });
    expect(decideLease(lease('other'), 'me', 14_999, 0, 15_000)).toEqual({ action: 'wait', holder: 'other' });
    expect(decideLease(lease('other'), 'me', 15_000, 0, 15_000)).toEqual({
      action: 'takeover',
      reason: 'expired',
    });
    expect(decideLease(lease(''), 'me', 0, 0, 15_000)).toEqual({ action: 'takeover', reason: 'released' });
  });
});

describe('config', () => {
  it('parses flags over env with defaults', () => {
    const c = parseOperatorConfig(
      { resync: '30s', metricsPort: '0' },
      { POD_NAMESPACE: 'gw', POD_NAME: 'op-1' },
    );
    expect(c).toMatchObject({
      namespace: 'gw',
      identity: 'op-1',
      resync: 30_000,
      metricsPort: 0,
      leaseName: 'keyroll-operator',
      concurrency: 4,
    });
  });

  it('names the bad flag and the expected form', () => {
    expect(() => parseOperatorConfig({ resync: 'soon' }, {})).toThrow(/--resync: expected a duration/);
    expect(() => parseOperatorConfig({ concurrency: 'x' }, {})).toThrow(
      /--concurrency: expected a whole number/,
    );
    expect(() => parseOperatorConfig({ leaseDuration: '5s', renewDeadline: '10s' }, {})).toThrow(
      /--renew-deadline: must be shorter/,
    );
  });
});

describe('metrics', () => {
  it('renders the Prometheus text format with the default process and nodejs metrics', async () => {
    const m = new OperatorMetrics();
    m.reconciles.inc({ result: 'success' });
    m.reconcileDuration.observe(0.2);
    m.targets.set({ namespace: 'ns', name: 'a', state: 'converged' }, 3);
    m.reportStatus('ns', 'a', {
      lastRotationTime: '2026-11-23T10:00:00Z',
      conditions: [
        { type: 'Ready', status: 'True', reason: 'Converged', message: '', lastTransitionTime: 'x' },
      ],
    });
    const text = await m.render();
    const { types } = parsePrometheus(text);
    expect(types.get('process_cpu_seconds_total')).toBe('counter');
    expect(types.get('nodejs_heap_size_used_bytes')).toBe('gauge');
    expect(metricValue(text, 'keyroll_reconcile_total{result="success"}')).toBe(1);
    expect(metricValue(text, 'keyroll_reconcile_time_seconds_bucket{le="0.5"}')).toBe(1);
    expect(metricValue(text, 'keyroll_reconcile_time_seconds_count')).toBe(1);
    expect(metricValue(text, 'keyroll_gatewaykey_targets{state="converged",name="a",namespace="ns"}')).toBe(
      3,
    );
    expect(
      metricValue(text, 'keyroll_gatewaykey_condition{namespace="ns",name="a",type="Ready",status="True"}'),
    ).toBe(1);
    expect(
      metricValue(text, 'keyroll_gatewaykey_condition{namespace="ns",name="a",type="Ready",status="False"}'),
    ).toBe(0);
    expect(
      metricValue(text, 'keyroll_gatewaykey_last_rotation_timestamp_seconds{namespace="ns",name="a"}'),
    ).toBe(Date.parse('2026-11-23T10:00:00Z') / 1000);
    m.forget('ns', 'a');
    expect(await m.render()).not.toContain('name="a"');
  });
});
