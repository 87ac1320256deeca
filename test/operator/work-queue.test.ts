import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { WorkQueue } from '../../src/operator/work-queue.ts';

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('WorkQueue', () => {
  it('dedupes a key added many times while it waits', async () => {
    const clock = new ManualClock();
    const runs: string[] = [];
    const gate = deferred();
    const q = new WorkQueue(
      async (k) => {
        runs.push(k);
        if (k === 'x') await gate.promise;
        return undefined;
      },
      { concurrency: 1, baseDelayMs: 10, maxDelayMs: 100, clock },
    );
    q.add('x'); // occupies the only worker
    for (const k of ['a', 'b', 'a', 'b', 'a']) q.add(k);
    expect(q.depth).toBe(2);
    gate.resolve();
    await q.idle();
    expect(runs).toEqual(['x', 'a', 'b']);
  });

  it('never runs one key twice at once, and reruns it once when it changed during a run', async () => {
    const clock = new ManualClock();
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const gate = deferred();
    const q = new WorkQueue(
      async () => {
        runs++;
        active++;
        maxActive = Math.max(maxActive, active);
        if (runs === 1) await gate.promise;
        active--;
        return undefined;
      },
      { concurrency: 4, baseDelayMs: 10, maxDelayMs: 100, clock },
    );
    q.add('k');
    await new Promise((r) => setImmediate(r));
    q.add('k');
    q.add('k');
    q.add('k');
    gate.resolve();
    await q.idle();
    expect(maxActive).toBe(1);
    expect(runs).toBe(2);
  });

  it('retries failures with capped exponential backoff and never drops the key', async () => {
    const clock = new ManualClock();
    const attempts: number[] = [];
    const delays: number[] = [];
    const q = new WorkQueue(
      async () => {
        attempts.push(clock.now());
        if (attempts.length < 8) throw new Error('transient');
        return undefined;
      },
      { concurrency: 1, baseDelayMs: 100, maxDelayMs: 1000, clock },
    );
    q.onError = (_k, _e, retryIn) => delays.push(retryIn);
    q.add('k');
    await q.idle();
    for (let i = 0; i < 10; i++) {
      await clock.advance(1000);
      await q.idle();
    }
    expect(attempts).toHaveLength(8);
    expect(delays).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
    expect(q.pendingRetries).toBe(0);
  });

  it('honours requeueAfter as a planned wake-up, and an event pulls it forward', async () => {
    const clock = new ManualClock();
    const at: number[] = [];
    const q = new WorkQueue(
      async () => {
        at.push(clock.now());
        return { requeueAfterMs: 5000 };
      },
      { concurrency: 1, baseDelayMs: 100, maxDelayMs: 1000, clock },
    );
    q.add('k');
    await q.idle();
    await clock.advance(5000);
    await q.idle();
    expect(at).toEqual([0, 5000]);
    await clock.advance(1000);
    q.add('k'); // an event at t=6000
    await q.idle();
    expect(at).toEqual([0, 5000, 6000]);
    await q.shutdown();
    expect(clock.pending).toBe(0);
  });

  it('runs different keys concurrently up to the limit', async () => {
    const clock = new ManualClock();
    let active = 0;
    let maxActive = 0;
    const gates = [deferred(), deferred(), deferred()];
    let i = 0;
    const q = new WorkQueue(
      async () => {
        const g = gates[i++]!;
        active++;
        maxActive = Math.max(maxActive, active);
        await g.promise;
        active--;
        return undefined;
      },
      { concurrency: 2, baseDelayMs: 1, maxDelayMs: 1, clock },
    );
    q.add('a');
    q.add('b');
    q.add('c');
    await new Promise((r) => setImmediate(r));
    expect(active).toBe(2);
    for (const g of gates) g.resolve();
    await q.idle();
    expect(maxActive).toBe(2);
  });
});
