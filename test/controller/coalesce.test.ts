// Sharing of observation and migration runs among concurrent callers.
import { describe, expect, it } from 'vitest';
import { coalesce } from '../../src/controller/coalesce.ts';

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

describe('coalesce', () => {
  it('callers during a run share the next run, which starts only after the current one ends', async () => {
    const gates = [gate(), gate()];
    const started: number[] = [];
    let runs = 0;
    const observe = coalesce(async () => {
      const n = runs++;
      started.push(n);
      await gates[n]!.opened;
      return n;
    });
    const first = observe();
    const second = observe(); // arrives while run 0 is going: must not be served run 0
    const third = observe();
    expect(started).toEqual([0]);
    gates[0]!.open();
    expect(await first).toBe(0);
    await new Promise((r) => setImmediate(r));
    expect(started).toEqual([0, 1]);
    gates[1]!.open();
    expect(await second).toBe(1);
    expect(await third).toBe(1);
    expect(runs).toBe(2);
  });

  it('a failed run rejects its callers only, and the next caller starts a fresh run', async () => {
    let runs = 0;
    const flaky = coalesce(async () => {
      runs++;
      if (runs === 1) throw new Error('boom');
      return runs;
    });
    await expect(flaky()).rejects.toThrow('boom');
    expect(await flaky()).toBe(2);
  });

  it('a queued run starts even when the run before it failed', async () => {
    const g = gate();
    let runs = 0;
    const f = coalesce(async () => {
      runs++;
      if (runs === 1) {
        await g.opened;
        throw new Error('first fails');
      }
      return 'second';
    });
    const a = f();
    const b = f();
    g.open();
    await expect(a).rejects.toThrow('first fails');
    expect(await b).toBe('second');
  });
});
