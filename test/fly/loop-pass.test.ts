// runFlyPass with in-memory controllers (the `client` seam) and the fake Fly API: the per-pass
// deadline, --require-durable, a machine with no address, and a failed config write.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FlyClient } from '../../src/fly/client.ts';
import { type FlyPassOptions, runFlyPass } from '../../src/fly/loop.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';
import { type MemController, memController, memPassOptions } from './support/mem-controllers.ts';

const APP = 'pass-app';
const TOKEN = 'test-token-pass-0123456789';
const FLY_TOKEN = 'test-fly-token-pass-0123456789';
const OLD = 'test-key-A-pass-000000000001';
const NEW = 'test-key-B-pass-000000000002';

let fly: FakeFlyApi;
let controllers: Map<string, MemController>;

beforeEach(async () => {
  fly = await startFakeFlyApi({ token: FLY_TOKEN });
  controllers = new Map();
});
afterEach(async () => {
  await fly.close();
});

function addStarted(id: string, port: number, key = OLD, configKey = OLD): MemController {
  fly.addMachine(APP, {
    id,
    private_ip: '127.0.0.1',
    env: { KILOCODE_API_KEY: configKey },
    metadata: { keyroll_port: String(port) },
  });
  const c = memController(TOKEN, key);
  controllers.set(`http://127.0.0.1:${port}`, c);
  return c;
}

function options(over: Partial<FlyPassOptions> = {}): FlyPassOptions {
  const client = new FlyClient({ token: FLY_TOKEN, baseUrl: fly.baseUrl });
  return memPassOptions({ fly: client, app: APP, token: TOKEN, key: NEW, controllers }, over);
}

describe('runFlyPass', () => {
  it('a pass deadline ends the pass, reports the unfinished machine, and releases every lease', async () => {
    const a = addStarted('a', 1001);
    const b = addStarted('b', 1002);
    b.hang = true;
    const r = await runFlyPass(
      options({
        passDeadlineMs: 1_500,
        rollout: { concurrency: 1, maxUnavailable: 1, failureBudget: 5, paused: false },
      }),
    );
    expect(r.status).toBe('deadline');
    expect(r.converged).toBe(false);
    const byId = Object.fromEntries(r.machines.map((m) => [m.id, m]));
    expect(byId.a).toMatchObject({ outcome: 'converged', live: 'ok', changed: 'live' });
    expect(byId.b).toMatchObject({ outcome: 'not-converged', live: 'stale', changed: null });
    expect(byId.b!.message).toMatch(
      /pass deadline \(2 s\) reached before this machine was proven; next pass/,
    );
    expect(a.posts + b.posts).toBe(2);
    expect(fly.leaseOf(APP, 'a')).toBeNull();
    expect(fly.leaseOf(APP, 'b')).toBeNull();
  });

  it('--require-durable: a started machine with a live key but a stale config is not converged', async () => {
    addStarted('a', 1001, NEW, OLD);
    const lax = await runFlyPass(options());
    expect(lax.machines[0]).toMatchObject({
      durable: 'deferred',
      live: 'ok',
      outcome: 'converged',
      action: 'none',
    });
    expect(lax.converged).toBe(true);
    const strict = await runFlyPass(options({ requireDurable: true }));
    expect(strict.machines[0]).toMatchObject({
      durable: 'deferred',
      outcome: 'not-converged',
      action: 'none',
    });
    expect(strict.converged).toBe(false);
    // No machine write (the config of a started machine is never touched); the app secret is.
    expect(fly.writes().filter((w) => w.machineId !== null)).toEqual([]);
  });

  it('a started machine without a private address is reported, not contacted', async () => {
    fly.addMachine(APP, { id: 'noip', private_ip: '', env: { KILOCODE_API_KEY: OLD } });
    const r = await runFlyPass(options());
    expect(r.machines[0]).toMatchObject({ live: 'no-address', outcome: 'not-converged', action: 'none' });
    expect(r.machines[0]!.message).toMatch(/private_ip is missing/);
  });

  it('a failed config write (412 current_version) is not converged and leaves the lease released', async () => {
    fly.addMachine(APP, {
      id: 's',
      state: 'stopped',
      private_ip: '127.0.0.1',
      env: { KILOCODE_API_KEY: OLD },
    });
    fly.inject({
      action: 'update',
      scope: 's',
      status: 412,
      body: { error: 'current_version does not match' },
    });
    const r = await runFlyPass(options());
    expect(r.machines[0]).toMatchObject({
      durable: 'stale',
      outcome: 'not-converged',
      action: 'durable',
      changed: null,
    });
    expect(r.machines[0]!.message).toMatch(
      /config write failed: Fly API update pass-app\/s failed: precondition_failed \(HTTP 412\); next pass/,
    );
    expect(fly.storedEnv(APP, 's').KILOCODE_API_KEY).toBe(OLD);
    expect(fly.leaseOf(APP, 's')).toBeNull();
    const again = await runFlyPass(options());
    expect(again.machines[0]).toMatchObject({ durable: 'ok', outcome: 'converged', changed: 'durable' });
    expect(fly.storedEnv(APP, 's').KILOCODE_API_KEY).toBeUndefined();
    expect(fly.secretValue(APP, 'KILOCODE_API_KEY')).toBe(NEW);
    expect(JSON.stringify([r, again])).not.toContain(NEW);
  });
});
