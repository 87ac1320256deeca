// Pacing: the limiter's arithmetic on a manual clock, and the client under bursts against the
// fake, whose own limiter enforces Fly's documented budgets and counts every 429.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FlyClient } from '../../src/fly/client.ts';
import {
  CLIENT_BUDGETS,
  DOCUMENTED_BUDGETS,
  type PaceClock,
  TokenBucketLimiter,
} from '../../src/fly/rate-limit.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';

const TOKEN = 'test-fly-token-rate-9s8d7f6g5h';
const APP = 'gw-app';

function manualClock(start = 1_000_000): PaceClock & { advance(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    sleep: async (ms) => {
      t += ms;
    },
    advance(ms) {
      t += ms;
    },
  };
}

describe('TokenBucketLimiter', () => {
  it('allows the burst at once, then one slot per interval, per key', () => {
    const clock = manualClock();
    const limiter = new TokenBucketLimiter({
      clock,
      budgets: { get: DOCUMENTED_BUDGETS.get, other: { ratePerSec: 1, burst: 3 } },
    });
    const waits = Array.from({ length: 6 }, () => limiter.reserve('update', 'm1'));
    expect(waits).toEqual([0, 0, 0, 1000, 2000, 3000]);
    // Another machine, and another action on the same machine, have their own buckets.
    expect(limiter.reserve('update', 'm2')).toBe(0);
    expect(limiter.reserve('lease_acquire', 'm1')).toBe(0);
  });

  it('refills with time and never banks more than the burst', () => {
    const clock = manualClock();
    const limiter = new TokenBucketLimiter({ clock, budgets: CLIENT_BUDGETS });
    expect([limiter.reserve('update', 'm'), limiter.reserve('update', 'm')]).toEqual([0, 0]);
    expect(limiter.reserve('update', 'm')).toBe(1000);
    clock.advance(60_000);
    expect([
      limiter.reserve('update', 'm'),
      limiter.reserve('update', 'm'),
      limiter.reserve('update', 'm'),
    ]).toEqual([0, 0, 1000]);
  });

  it('Get Machine has its own, larger budget', () => {
    const clock = manualClock();
    const limiter = new TokenBucketLimiter({ clock, budgets: CLIENT_BUDGETS });
    const waits = Array.from({ length: 10 }, () => limiter.reserve('get', 'm'));
    expect(waits.slice(0, 8)).toEqual(Array(8).fill(0));
    expect(waits.slice(8)).toEqual([200, 400]);
  });

  it('a Retry-After block holds the key until then and resumes at the sustained rate', () => {
    const clock = manualClock();
    const limiter = new TokenBucketLimiter({ clock, budgets: CLIENT_BUDGETS });
    limiter.block('get', 'm', clock.now() + 5_000);
    expect(limiter.reserve('get', 'm')).toBe(5_000);
    expect(limiter.reserve('get', 'm')).toBe(5_200);
    expect(limiter.reserve('get', 'other')).toBe(0);
  });

  it('take() sleeps on the injected clock and honours an aborted signal', async () => {
    const clock = manualClock();
    const limiter = new TokenBucketLimiter({ clock, budgets: CLIENT_BUDGETS });
    for (let i = 0; i < 3; i++) await limiter.take('update', 'm');
    expect(clock.now()).toBe(1_000_000 + 1000);
    const ctl = new AbortController();
    ctl.abort(new Error('stop'));
    await expect(limiter.take('update', 'm', ctl.signal)).rejects.toThrow('stop');
  });

  it('client budgets stay within the documented ones', () => {
    for (const k of ['get', 'other'] as const) {
      expect(CLIENT_BUDGETS[k].ratePerSec).toBeLessThanOrEqual(DOCUMENTED_BUDGETS[k].ratePerSec);
      expect(CLIENT_BUDGETS[k].burst).toBeLessThan(DOCUMENTED_BUDGETS[k].burst);
    }
  });
});

describe('client pacing against the fake', () => {
  let fly: FakeFlyApi;

  beforeEach(async () => {
    fly = await startFakeFlyApi({ token: TOKEN });
  });

  afterEach(async () => {
    await fly.close();
  });

  it('a burst of 30 reads of one machine completes with no budget exceeded', async () => {
    const m = fly.addMachine(APP);
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    const results = await Promise.all(Array.from({ length: 30 }, () => c.getMachine(APP, m.id)));
    expect(results.every((r) => r.id === m.id)).toBe(true);
    expect(fly.counters().get(`get:${m.id}`)).toEqual({ requests: 30, rateLimited: 0, injected: 0 });
  });

  it('a burst of 30 mixed calls over 5 machines completes with no budget exceeded', async () => {
    const ids = Array.from({ length: 5 }, () => fly.addMachine(APP).id);
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    const calls: Array<Promise<unknown>> = [];
    for (const id of ids) {
      calls.push(c.listMachines(APP));
      for (let i = 0; i < 3; i++) calls.push(c.getMachine(APP, id));
      calls.push(c.getLease(APP, id));
      calls.push(
        c.acquireLease(APP, id, { ttlSeconds: 30, description: 'keyroll' }).then(async (l) => {
          const m = await c.getMachine(APP, id);
          await c.updateMachine(APP, id, m.config ?? {}, { skipLaunch: true, leaseNonce: l.nonce });
          await c.updateMachine(APP, id, m.config ?? {}, { skipLaunch: true, leaseNonce: l.nonce });
          await c.updateMachine(APP, id, m.config ?? {}, { skipLaunch: true, leaseNonce: l.nonce });
          await c.releaseLease(APP, id, l.nonce);
        }),
      );
    }
    await Promise.all(calls);
    const totals = fly.totals();
    expect(totals.requests).toBeGreaterThanOrEqual(30 + 5 * 5);
    expect(totals.rateLimited).toBe(0);
    for (const id of ids) expect(fly.machine(APP, id).version).toBe(4);
  });

  it('control: a client without pacing does exceed the budget, and the fake counts it', async () => {
    const m = fly.addMachine(APP);
    const unpaced = new FlyClient({
      token: TOKEN,
      baseUrl: fly.baseUrl,
      retries: 0,
      budgets: { get: { ratePerSec: 1000, burst: 1000 }, other: { ratePerSec: 1000, burst: 1000 } },
    });
    const settled = await Promise.allSettled(Array.from({ length: 30 }, () => unpaced.getMachine(APP, m.id)));
    const rejected = settled.filter((s) => s.status === 'rejected');
    expect(rejected.length).toBeGreaterThan(0);
    expect(fly.counters().get(`get:${m.id}`)?.rateLimited).toBe(rejected.length);
  });

  it('after a server 429 the client backs off and the retry is not refused again', async () => {
    const m = fly.addMachine(APP);
    // Another client on the same token has spent this machine's update budget.
    const other = new FlyClient({
      token: TOKEN,
      baseUrl: fly.baseUrl,
      retries: 0,
      budgets: { get: { ratePerSec: 1000, burst: 1000 }, other: { ratePerSec: 1000, burst: 1000 } },
    });
    await Promise.allSettled(
      Array.from({ length: 3 }, () => other.updateMachine(APP, m.id, m.config, { skipLaunch: true })),
    );
    const before = fly.counters().get(`update:${m.id}`)?.rateLimited ?? 0;

    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl, minRetryDelayMs: 10 });
    const started = Date.now();
    await c.updateMachine(APP, m.id, m.config, { skipLaunch: true });
    const after = fly.counters().get(`update:${m.id}`)?.rateLimited ?? 0;
    expect(after - before).toBe(1); // the first attempt, refused; the retry waited long enough
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });
});
