import { describe, expect, it } from 'vitest';
import { type PassResult, summarize } from '../../src/engine/pass.ts';
import type { Outcome, TargetResult } from '../../src/engine/target.ts';
import type { ObservedState } from '../../src/kilo-state.ts';
import { plan } from '../../src/reconcile/plan.ts';
import { renderDiff, renderJson, renderReconcile, renderResultLine } from '../../src/reconcile/report.ts';
import { reasonOf, status } from '../../src/reconcile/status.ts';
import { KEY_NEW, KEY_OLD, observed, TOKEN, traffic, want } from './support/fixtures.ts';
import { expectGolden } from './support/golden.ts';

function result(
  name: string,
  outcome: Outcome,
  before: ObservedState | null,
  after: ObservedState | null,
  extra: Partial<TargetResult> = {},
): TargetResult {
  const d = want();
  const reason = before && outcome !== 'converged' ? reasonOf(status(d, before).drift) : undefined;
  return {
    ...(reason ? { reason } : {}),
    name,
    url: `http://10.0.0.${name.length}:18789`,
    labels: {},
    outcome,
    message:
      extra.message ??
      (outcome === 'converged'
        ? 'in sync'
        : before
          ? status(d, before)
              .drift.map((x) => x.message)
              .join('; ')
          : ''),
    desired: d,
    before,
    after,
    actions: before ? plan(d, before) : [],
    drift: before && outcome !== 'converged' ? status(d, before).drift : [],
    patched: false,
    patch: null,
    attempts: 0,
    durationMs: 1234,
    ...extra,
  };
}

function pass(targets: TargetResult[], dryRun: boolean): PassResult {
  return {
    keyVersion: 'v2',
    delivery: 'restart',
    dryRun,
    paused: false,
    summary: summarize(targets),
    targets,
    durationMs: 5678,
  };
}

const plaintext = [{ agentId: 'main', store: 'sqlite', profileId: 'kilocode:default', form: 'plaintext' }];

describe('diff report', () => {
  const fleet = pass(
    [
      result('web-1', 'drift', observed({ profiles: plaintext }), null),
      result('web-2', 'converged', observed({ gateway: { pid: 5151 } }, KEY_NEW), null),
      result(
        'web-3',
        'drift',
        observed({ gateway: { state: 'backoff', pid: null, ready: false, restarts: 4 } }, KEY_NEW),
        null,
      ),
      result('web-4', 'unreachable', null, null, {
        message: 'cannot observe: GET _kilo/state failed: ECONNREFUSED',
      }),
      result('web-5', 'drift', observed({ profiles: [] }), null),
    ],
    true,
  );

  it('renders like a unified diff per target (golden)', () => {
    expectGolden('diff-fleet.txt', renderDiff(fleet));
  });

  it('renders an all-in-sync fleet (golden)', () => {
    expectGolden(
      'diff-in-sync.txt',
      renderDiff(pass([result('solo', 'converged', observed({}, KEY_NEW), null)], true)),
    );
  });

  it('never contains a key or the token, in text or JSON', () => {
    for (const text of [renderDiff(fleet), renderJson(fleet)]) {
      for (const secret of [KEY_OLD, KEY_NEW, TOKEN]) expect(text).not.toContain(secret);
    }
  });
});

describe('reconcile report', () => {
  const before = observed({ profiles: plaintext });
  const after = observed({ gateway: { pid: 4311, restarts: 1 } }, KEY_NEW);
  const fleet = pass(
    [
      result('web-1', 'converged', before, after, {
        patched: true,
        attempts: 1,
        message: 'delivered and verified',
        patch: { ok: true, signaled: true, migratedProfiles: 1 },
      }),
      result(
        'web-2',
        'converged',
        observed({ gateway: { pid: 5151 } }, KEY_NEW),
        observed({ gateway: { pid: 5151 } }, KEY_NEW),
        {
          actions: [{ type: 'none', reason: 'in sync' }],
          durationMs: 12,
        },
      ),
      result('web-3', 'not-converged', observed(), observed(), {
        patched: true,
        attempts: 1,
        message:
          'not converged within 120 s after the patch (controller answered signaled:true): state still shows envHash 111111111111 after the patch, desired 222222222222',
        durationMs: 120_000,
      }),
      result('web-4', 'skipped', observed(), observed(), {
        message: 'failure budget spent (1/1); not delivered',
      }),
    ],
    false,
  );

  it('renders a table with proof and reasons (golden)', () => {
    expectGolden('reconcile-fleet.txt', renderReconcile(fleet));
  });

  it('renders one plain line per target for non-TTY progress', () => {
    expect(renderResultLine(fleet.targets[0]!)).toMatch(
      /^web-1: converged pid 4242 → 4311 envHash [0-9a-f]{12} → [0-9a-f]{12} \[migrate-profiles,deliver-key,wait-for-ready\] 1\.2s\n$/,
    );
  });
});

describe('KeyRejected in the reports', () => {
  const rejected = traffic({ accepted: 0, rejected: 3 });
  const diff = pass(
    [
      result('kr-1', 'drift', observed({ traffic: rejected }, KEY_NEW), null),
      result('kr-2', 'converged', observed({ traffic: traffic() }, KEY_NEW), null),
      result('kr-3', 'drift', observed({ traffic: traffic({ rejected: 2 }) }), null),
      result(
        'kr-4',
        'converged',
        observed({ traffic: traffic({ rejected: 1, acceptedAt: '2026-12-02T11:06:00.000Z' }) }, KEY_NEW),
        null,
      ),
    ],
    true,
  );

  it('diff: a traffic line, the KeyRejected plan and a count (golden)', () => {
    expect(diff.targets.map((t) => t.reason)).toEqual(['KeyRejected', undefined, undefined, undefined]);
    expectGolden('diff-key-rejected.txt', renderDiff(diff));
  });

  const rejectedNow = observed({ traffic: rejected }, KEY_NEW);
  const reconciled = pass(
    [
      result('kr-1', 'not-converged', rejectedNow, rejectedNow, {
        message: plan(want(), rejectedNow)
          .map((a) => a.reason)
          .join('; '),
      }),
      result('kr-2', 'converged', observed({ traffic: traffic() }, KEY_NEW), null),
      result(
        'kr-3',
        'not-converged',
        observed(),
        observed({ gateway: { pid: 5000 }, traffic: rejected }, KEY_NEW),
        {
          patched: true,
          attempts: 1,
          reason: 'KeyRejected',
          message:
            'not converged within 120 s after the patch (controller answered signaled:true): the provider rejected the key on 3 responses since 2026-12-02T11:00:00.000Z, none accepted after',
        },
      ),
    ],
    false,
  );

  it('reconcile: the reason before each message, and a count in the summary (golden)', () => {
    const text = renderReconcile(reconciled);
    expect(text).toMatch(
      /^kr-1: not-converged: KeyRejected: the provider rejected the desired key on 3 responses/m,
    );
    expect(text).toMatch(/^kr-3: not-converged: KeyRejected: not converged within 120 s/m);
    expect(text).toMatch(/, 2 key rejected — key version v2/);
    expectGolden('reconcile-key-rejected.txt', text);
    expect(renderResultLine(reconciled.targets[0]!)).toMatch(
      /^kr-1: not-converged .*: KeyRejected: the provider/,
    );
  });

  it('JSON carries the reason, the action code and the traffic; never a secret', () => {
    for (const p of [diff, reconciled]) {
      const json = JSON.parse(renderJson(p));
      expect(json.targets[0].reason).toBe('KeyRejected');
      expect(json.targets[0].actions).toEqual([
        expect.objectContaining({ type: 'none', code: 'KeyRejected' }),
      ]);
      expect(json.targets[0].before.traffic).toMatchObject({ keyRejected: 3, accepted: 0 });
      expect(json.targets[1].reason).toBeUndefined();
      for (const text of [renderJson(p), renderDiff(p), renderReconcile(p)])
        for (const secret of [KEY_OLD, KEY_NEW, TOKEN]) expect(text).not.toContain(secret);
    }
  });
});
