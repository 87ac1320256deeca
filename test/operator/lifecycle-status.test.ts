// The key lifecycle in GatewayKey status, pure: Ready counts every pod the selector matches (the
// unobserved ones named), and PreviousKeyRetirable says whether the previous key may be revoked.
import { describe, expect, it } from 'vitest';
import { EMPTY_LIFECYCLE, type KeyLifecycle } from '../../src/lifecycle/lifecycle.ts';
import { getCondition } from '../../src/operator/conditions.ts';
import type { GatewayKeyStatus } from '../../src/operator/gateway-key.ts';
import { statusWithLifecycle, statusWithUnobserved } from '../../src/operator/status.ts';

const NOW = new Date('2026-12-02T18:00:00Z');
const T = '2026-12-02T17:59:00.000Z';

function ready(status: 'True' | 'False', reason: string): GatewayKeyStatus {
  return {
    desiredVersion: 'v2',
    targets: { total: 2, converged: status === 'True' ? 2 : 1, progressing: 0, failed: 0 },
    conditions: [
      { type: 'Ready', status, reason, message: 'm', lastTransitionTime: T, observedGeneration: 1 },
    ],
  };
}

describe('statusWithUnobserved()', () => {
  it('nothing unobserved: the status as it was', () => {
    const s = ready('True', 'Converged');
    expect(statusWithUnobserved(s, { count: 0, names: [] }, 1, NOW)).toBe(s);
  });

  it('a NotReady pod turns Ready=True into False, counted in total and named', () => {
    const s = statusWithUnobserved(ready('True', 'Converged'), { count: 1, names: ['gw-2'] }, 1, NOW);
    expect(s.targets).toEqual({ total: 3, converged: 2, progressing: 0, failed: 0, unobserved: 1 });
    expect(getCondition(s.conditions, 'Ready')).toMatchObject({
      status: 'False',
      reason: 'TargetsUnobserved',
      message:
        '2/3 targets run key version v2; 1 pod(s) matched but not observable (not ready or no IP): gw-2',
    });
  });

  it('keeps a more telling Ready=False reason (KeyRejected, TargetsNotConverged), still counting the pod', () => {
    const s = statusWithUnobserved(ready('False', 'KeyRejected'), { count: 7, names: ['a', 'b'] }, 1, NOW);
    expect(getCondition(s.conditions, 'Ready')?.reason).toBe('KeyRejected');
    expect(s.targets?.unobserved).toBe(7);
    expect(s.targets?.total).toBe(9);
  });
});

describe('statusWithLifecycle()', () => {
  const lc = (previous: KeyLifecycle['previous']): KeyLifecycle => ({
    current: { version: 'v2', firstSeen: T, provenAt: T },
    previous,
  });
  const cases: Array<[string, KeyLifecycle, string, string, RegExp]> = [
    ['no previous key', lc([]), 'False', 'NoPreviousKey', /^$/],
    [
      'blocked by an unobserved pod',
      lc([
        {
          version: 'v1',
          state: 'Blocked',
          supersededAt: T,
          reason: 'TargetUnobserved',
          message: 'cannot observe gw-2',
        },
      ]),
      'False',
      'TargetUnobserved',
      /v1: cannot observe gw-2/,
    ],
    [
      'in its grace',
      lc([
        {
          version: 'v1',
          state: 'Pending',
          supersededAt: T,
          reason: 'Grace',
          message: 'retirable after the grace',
        },
      ]),
      'False',
      'Grace',
      /v1/,
    ],
    [
      'retirable',
      lc([{ version: 'v1', state: 'Retirable', supersededAt: T, retirableAt: T }]),
      'True',
      'Retirable',
      /key version v1 may be retired: every target proved v2/,
    ],
    ['being revoked', lc([{ version: 'v1', state: 'Retiring', supersededAt: T }]), 'True', 'Retiring', /v1/],
    [
      'retired',
      lc([{ version: 'v1', state: 'Retired', supersededAt: T, retiredAt: T }]),
      'False',
      'Retired',
      /key version v1 retired at 2026-12-02T17:59:00.000Z/,
    ],
    [
      'the oldest open one decides (A retired, B retirable)',
      lc([
        { version: 'v0', state: 'Retired', supersededAt: T, retiredAt: T },
        { version: 'v1', state: 'Retirable', supersededAt: T },
      ]),
      'True',
      'Retirable',
      /v1/,
    ],
  ];
  it.each(cases)('%s', (_name, l, status, reason, message) => {
    const s = statusWithLifecycle(ready('True', 'Converged'), l, 1, NOW);
    expect(s.lifecycle).toEqual(l);
    const c = getCondition(s.conditions, 'PreviousKeyRetirable');
    expect(c).toMatchObject({ status, reason });
    expect(c?.message).toMatch(message);
  });

  it('no current version yet: the status as it was', () => {
    const s = ready('True', 'Converged');
    expect(statusWithLifecycle(s, EMPTY_LIFECYCLE, 1, NOW)).toBe(s);
  });
});
