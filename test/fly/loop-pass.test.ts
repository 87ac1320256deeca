// runFlyPass with in-memory controllers (the `client` seam) and the fake Fly API: the per-pass
// deadline, --require-durable, a machine with no address, and a failed config write.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { FlyClient } from '../../src/fly/client.ts';
import { type FlyPassOptions, runFlyPass } from '../../src/fly/loop.ts';
import type { ObservedState } from '../../src/kilo-state.ts';
import { silentLogger } from '../../src/log.ts';
import type { ControllerClient } from '../../src/reconcile/controller-client.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';

const APP = 'pass-app';
const TOKEN = 'test-token-pass-0123456789';
const FLY_TOKEN = 'test-fly-token-pass-0123456789';
const OLD = 'test-key-A-pass-000000000001';
const NEW = 'test-key-B-pass-000000000002';

interface MemController {
  envHash: string;
  pid: number;
  hang: boolean;
  posts: number;
}

function memClient(controllers: Map<string, MemController>): FlyPassOptions['client'] {
  return (url): ControllerClient => {
    const c = controllers.get(url)!;
    return {
      async getState(): Promise<ObservedState> {
        return {
          controller: { state: 'ready', delivery: 'restart' },
          gateway: { state: 'running', pid: c.pid, ready: true },
          key: { envHash: c.envHash },
          profiles: [],
        };
      },
      async patchEnv(vars, _version, signal) {
        c.posts++;
        if (c.hang) {
          await new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
        }
        c.envHash = fingerprintEnv(TOKEN, vars);
        c.pid++;
        return { ok: true, signaled: true, migratedProfiles: 0 };
      },
    };
  };
}

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
  const c = { envHash: fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key }), pid: 100, hang: false, posts: 0 };
  controllers.set(`http://127.0.0.1:${port}`, c);
  return c;
}

function options(over: Partial<FlyPassOptions> = {}): FlyPassOptions {
  return {
    fly: new FlyClient({ token: FLY_TOKEN, baseUrl: fly.baseUrl }),
    app: APP,
    key: { key: NEW, version: 'v2' },
    spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' },
    token: TOKEN,
    controllerPort: 18789,
    controllerTimeoutMs: 1000,
    rollout: { concurrency: 10, maxUnavailable: 2, failureBudget: 5, paused: false },
    maxChanges: 10,
    requireDurable: false,
    dryRun: false,
    env: {
      clock: systemClock,
      log: silentLogger(),
      retry: { retries: 0, minTimeoutMs: 10, maxTimeoutMs: 10 },
      deadlineMs: 5_000,
      pollIntervalMs: 20,
      signal: new AbortController().signal,
    },
    passDeadlineMs: 30_000,
    client: memClient(controllers),
    ...over,
  };
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
