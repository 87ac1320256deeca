import { describe, expect, it } from 'vitest';
import { type Condition, getCondition, rfc3339, setCondition } from '../../src/operator/conditions.ts';

const t0 = new Date('2026-11-23T10:00:00.123Z');
const t1 = new Date('2026-11-23T10:05:00.999Z');

describe('setCondition', () => {
  it('adds a condition with whole-second RFC 3339 time', () => {
    const out = setCondition(
      [],
      { type: 'Ready', status: 'False', reason: 'Progressing', message: '0/3' },
      t0,
    );
    expect(out).toEqual([
      {
        type: 'Ready',
        status: 'False',
        reason: 'Progressing',
        message: '0/3',
        lastTransitionTime: '2026-11-23T10:00:00Z',
      },
    ]);
  });

  it('keeps the transition time when only reason or message change', () => {
    const a = setCondition([], { type: 'Ready', status: 'False', reason: 'Progressing', message: '0/3' }, t0);
    const b = setCondition(a, { type: 'Ready', status: 'False', reason: 'Progressing', message: '2/3' }, t1);
    expect(getCondition(b, 'Ready')?.lastTransitionTime).toBe(rfc3339(t0));
    expect(getCondition(b, 'Ready')?.message).toBe('2/3');
  });

  it('moves the transition time when the status flips', () => {
    const a = setCondition([], { type: 'Ready', status: 'False', reason: 'Progressing', message: '' }, t0);
    const b = setCondition(a, { type: 'Ready', status: 'True', reason: 'Converged', message: '' }, t1);
    expect(getCondition(b, 'Ready')?.lastTransitionTime).toBe('2026-11-23T10:05:00Z');
  });

  it('is stable: same input twice gives equal output, sorted by type', () => {
    let c: Condition[] = [];
    for (const now of [t0, t1]) {
      c = setCondition(c, { type: 'Ready', status: 'True', reason: 'Converged', message: '' }, now);
      c = setCondition(c, { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' }, now);
    }
    expect(c.map((x) => x.type)).toEqual(['Degraded', 'Ready']);
    expect(c.every((x) => x.lastTransitionTime === '2026-11-23T10:00:00Z')).toBe(true);
  });
});
