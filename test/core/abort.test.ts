import { describe, expect, it } from 'vitest';
import { onAbort } from '../../src/abort.ts';
import { systemClock } from '../../src/clock.ts';

/** A signal that counts the listeners added to it (the EventTarget itself does not tell). */
function countingSignal(): { ac: AbortController; added: () => number } {
  const ac = new AbortController();
  let n = 0;
  const add = ac.signal.addEventListener.bind(ac.signal);
  ac.signal.addEventListener = ((...args: Parameters<AbortSignal['addEventListener']>) => {
    n++;
    add(...args);
  }) as AbortSignal['addEventListener'];
  return { ac, added: () => n };
}

describe('onAbort: one listener per signal', () => {
  it('calls every waiter with the reason, through one listener, and not one that stopped', () => {
    const { ac, added } = countingSignal();
    const seen: unknown[] = [];
    const stops = Array.from({ length: 500 }, (_, i) => onAbort(ac.signal, (r) => seen.push([i, r])));
    stops[7]!();
    expect(added()).toBe(1);
    const reason = new Error('stop');
    ac.abort(reason);
    expect(seen).toHaveLength(499);
    expect(seen).not.toContainEqual([7, reason]);
    expect(seen[0]).toEqual([0, reason]);
  });

  it('gives an AbortError when the signal aborts without a reason of its own', () => {
    const ac = new AbortController();
    let got: unknown;
    onAbort(ac.signal, (r) => {
      got = r;
    });
    ac.abort();
    expect((got as Error).name).toBe('AbortError');
  });
});

describe('systemClock.sleep on a shared signal', () => {
  it('adds one abort listener however many sleeps share the signal, and each resolves', async () => {
    const { ac, added } = countingSignal();
    await Promise.all(Array.from({ length: 200 }, () => systemClock.sleep(1, ac.signal)));
    await systemClock.sleep(1, ac.signal);
    expect(added()).toBe(1);
  });

  it("rejects every sleeper with the signal's reason when it aborts, at once", async () => {
    const ac = new AbortController();
    const started = Date.now();
    const sleeps = [systemClock.sleep(60_000, ac.signal), systemClock.sleep(60_000, ac.signal)];
    const reason = new Error('shutting down');
    ac.abort(reason);
    for (const s of sleeps) await expect(s).rejects.toBe(reason);
    expect(Date.now() - started).toBeLessThan(5_000);
    await expect(systemClock.sleep(10, ac.signal)).rejects.toBe(reason);
  });

  it('sleeps without a signal', async () => {
    const started = performance.now();
    await systemClock.sleep(20);
    expect(performance.now() - started).toBeGreaterThanOrEqual(19);
  });
});
