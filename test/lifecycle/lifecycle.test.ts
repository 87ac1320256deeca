// The key lifecycle's rule, as a table of observations: a previous version is retirable only once
// every target (Ready or not) proves the current one, nothing is pending and the grace passed.
import { describe, expect, it } from 'vitest';
import {
  advance,
  EMPTY_LIFECYCLE,
  type KeyLifecycle,
  KeyLifecycleSchema,
  markRetired,
  markRetiring,
  summarize,
  type TargetProof,
} from '../../src/lifecycle/lifecycle.ts';

const policy = { retireAfterMs: 60_000, keepRetired: 2 };
const proving = (...names: string[]): TargetProof[] =>
  names.map((name) => ({ name, observed: true, proves: true }));

/** The lifecycle after the key went A → B with three targets, each given. */
function rotated(targets: TargetProof[], now = 1_000_000, pending = false) {
  const a = advance(EMPTY_LIFECYCLE, summarize('A', proving('p1', 'p2', 'p3'), false), now - 500_000, policy);
  return advance(a.lifecycle, summarize('B', targets, pending), now, policy);
}

describe('advance', () => {
  it('a first version has nothing to retire, and is proven once every target shows it', () => {
    const r = advance(EMPTY_LIFECYCLE, summarize('A', proving('p1'), false), 0, policy);
    expect(r.lifecycle.current).toMatchObject({ version: 'A', provenAt: new Date(0).toISOString() });
    expect(r.lifecycle.previous).toEqual([]);
    expect(r.next).toBeNull();
    expect(r.events.map((e) => e.type)).toEqual(['Rotated', 'Proven']);
  });

  it('a rotation queues the old version as Pending until every target proves the new one', () => {
    const r = rotated([...proving('p1', 'p2'), { name: 'p3', observed: true, proves: false }]);
    expect(r.lifecycle.previous).toEqual([
      expect.objectContaining({ version: 'A', state: 'Pending', reason: 'AwaitingProof', blockedBy: ['p3'] }),
    ]);
    expect(r.lifecycle.current?.provenAt).toBeNull();
    expect(r.next).toBeNull();
  });

  it('an unobservable target blocks retirement and is named', () => {
    const r = rotated([...proving('p1', 'p2'), { name: 'p3', observed: false, proves: false }]);
    expect(r.lifecycle.previous[0]).toMatchObject({
      state: 'Blocked',
      reason: 'TargetUnobserved',
      blockedBy: ['p3'],
    });
    expect(r.events).toContainEqual({
      type: 'Blocked',
      version: 'A',
      reason: 'TargetUnobserved',
      targets: ['p3'],
    });
    expect(r.next).toBeNull();
  });

  it('a large fleet is summarised: counts, ten names kept, five shown', () => {
    const many = Array.from({ length: 30 }, (_, i) => ({ name: `t${i}`, observed: false, proves: false }));
    const r = rotated([...proving('p1'), ...many]);
    expect(r.lifecycle.previous[0]?.blockedBy).toHaveLength(10);
    expect(r.lifecycle.previous[0]?.message).toBe('cannot observe t0, t1, t2, t3, t4 and 25 more');
  });

  it('no target at all blocks retirement: nothing proved the new key', () => {
    const r = rotated([]);
    expect(r.lifecycle.previous[0]).toMatchObject({ state: 'Blocked', reason: 'NoTargets' });
  });

  it('a pending delivery holds retirement even when every observed target proves it', () => {
    const r = rotated(proving('p1', 'p2', 'p3'), 1_000_000, true);
    expect(r.lifecycle.previous[0]).toMatchObject({ state: 'Pending', message: 'a delivery is pending' });
    expect(r.lifecycle.current?.provenAt).toBeNull();
  });

  it('full proof starts the grace; the version is Retirable only after it', () => {
    const now = 1_000_000;
    const r = rotated(proving('p1', 'p2', 'p3'), now);
    expect(r.lifecycle.previous[0]).toMatchObject({
      state: 'Pending',
      reason: 'Grace',
      retirableAt: new Date(now + 60_000).toISOString(),
    });
    const early = advance(
      r.lifecycle,
      summarize('B', proving('p1', 'p2', 'p3'), false),
      now + 59_999,
      policy,
    );
    expect(early.next).toBeNull();
    const due = advance(r.lifecycle, summarize('B', proving('p1', 'p2', 'p3'), false), now + 60_000, policy);
    expect(due.next).toMatchObject({ version: 'A', state: 'Retirable' });
    expect(due.events).toContainEqual({ type: 'Retirable', version: 'A', current: 'B' });
  });

  it('a target losing its proof during the grace restarts it', () => {
    const now = 1_000_000;
    const r = rotated(proving('p1', 'p2', 'p3'), now);
    const lost = advance(
      r.lifecycle,
      summarize('B', [...proving('p1', 'p2'), { name: 'p3', observed: false, proves: false }], false),
      now + 30_000,
      policy,
    );
    expect(lost.lifecycle.current?.provenAt).toBeNull();
    const back = advance(
      lost.lifecycle,
      summarize('B', proving('p1', 'p2', 'p3'), false),
      now + 61_000,
      policy,
    );
    expect(back.next).toBeNull();
    expect(back.lifecycle.current?.provenAt).toBe(new Date(now + 61_000).toISOString());
  });

  it('A → B → C before A is retired: A then B, oldest first, both held by the proof of C', () => {
    const t0 = 1_000_000;
    const b = rotated(proving('p1'), t0);
    const c = advance(
      b.lifecycle,
      summarize('C', [{ name: 'p1', observed: true, proves: false }], false),
      t0 + 10_000,
      policy,
    );
    expect(c.lifecycle.previous.map((p) => [p.version, p.state])).toEqual([
      ['A', 'Pending'],
      ['B', 'Pending'],
    ]);
    const proven = advance(c.lifecycle, summarize('C', proving('p1'), false), t0 + 20_000, policy);
    const due = advance(proven.lifecycle, summarize('C', proving('p1'), false), t0 + 80_000, policy);
    expect(due.next?.version).toBe('A');
    const afterA = markRetired(markRetiring(due.lifecycle, 'A'), 'A', t0 + 81_000);
    const again = advance(afterA, summarize('C', proving('p1'), false), t0 + 82_000, policy);
    expect(again.next?.version).toBe('B');
  });

  it('a retirement under way (Retiring) stays next across a rotation, and a rollback never queues the current version', () => {
    const t0 = 1_000_000;
    const b = rotated(proving('p1'), t0);
    const due = advance(b.lifecycle, summarize('B', proving('p1'), false), t0 + 60_000, policy);
    const retiringA = markRetiring(due.lifecycle, 'A');
    const toC = advance(
      retiringA,
      summarize('C', [{ name: 'p1', observed: true, proves: false }], false),
      t0 + 61_000,
      policy,
    );
    expect(toC.next).toMatchObject({ version: 'A', state: 'Retiring' });
    // Back to B while A is being retired: B leaves the queue (it is current again).
    const backToB = advance(toC.lifecycle, summarize('B', proving('p1'), false), t0 + 62_000, policy);
    expect(backToB.lifecycle.previous.map((p) => p.version)).toEqual(['A', 'C']);
    expect(backToB.lifecycle.current?.version).toBe('B');
  });

  it('a rollback to a retired version is reported, never hidden', () => {
    const t0 = 1_000_000;
    const b = rotated(proving('p1'), t0);
    const retired = markRetired(markRetiring(b.lifecycle, 'A'), 'A', t0 + 1);
    const back = advance(retired, summarize('A', proving('p1'), false), t0 + 2, policy);
    expect(back.events).toContainEqual({ type: 'CurrentWasRetired', version: 'A' });
  });

  it('refuses to mark the current version for retirement', () => {
    const r = rotated(proving('p1'));
    expect(() => markRetiring(r.lifecycle, 'B')).toThrow(/current version B/);
  });

  it('keeps only the newest retired entries', () => {
    let lc: KeyLifecycle = EMPTY_LIFECYCLE;
    for (const [i, v] of ['A', 'B', 'C', 'D', 'E'].entries()) {
      lc = advance(lc, summarize(v, proving('p1'), false), i * 1_000, policy).lifecycle;
      for (const p of lc.previous.filter((p) => p.state !== 'Retired'))
        lc = markRetired(lc, p.version, i * 1_000);
    }
    lc = advance(lc, summarize('E', proving('p1'), false), 10_000, policy).lifecycle;
    expect(lc.previous.map((p) => p.version)).toEqual(['C', 'D']);
    expect(KeyLifecycleSchema.safeParse(lc).success).toBe(true);
  });
});
