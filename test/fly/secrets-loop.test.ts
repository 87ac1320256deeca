// Acceptance (issue 14, Fly secrets) through runFlyPass with in-memory controllers and the fake Fly
// API: after a rotation no machine's config holds the key, the app secret does (set staged, no
// machine restarted by it), a simulated `fly deploy` (configs rebuilt from a fly.toml-like base)
// boots every machine with the new key, and a converged fleet gets no Fly write.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { FlyClient } from '../../src/fly/client.ts';
import { type FlyPassOptions, runFlyPass } from '../../src/fly/loop.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';
import { type MemController, memController, memPassOptions } from './support/mem-controllers.ts';

const APP = 'secrets-app';
const VAR = 'KILOCODE_API_KEY';
const TOKEN = 'test-token-secrets-loop-0123456789';
const FLY_TOKEN = 'test-fly-token-secrets-loop-01234';
const OLD = 'test-key-A-secrets-loop-0000000001';
const NEW = 'test-key-B-secrets-loop-0000000002';

let fly: FakeFlyApi;
const controllers = new Map<string, MemController>();

function options(client: FlyClient, over: Partial<FlyPassOptions> = {}): FlyPassOptions {
  return memPassOptions({ fly: client, app: APP, token: TOKEN, key: NEW, controllers }, over);
}

/** A fresh process's client (a `--once` run): it knows nothing about earlier writes. */
const freshClient = () => new FlyClient({ token: FLY_TOKEN, baseUrl: fly.baseUrl });

beforeEach(async () => {
  fly = await startFakeFlyApi({ token: FLY_TOKEN, rateLimit: false });
  controllers.clear();
  // The layout before this change: the key in every machine's config.env.
  for (const [i, id] of ['m1', 'm2'].entries()) {
    const port = 2000 + i;
    fly.addMachine(APP, {
      id,
      private_ip: '127.0.0.1',
      env: { [VAR]: OLD, LOG_LEVEL: 'info' },
      metadata: { keyroll_port: String(port) },
    });
    controllers.set(`http://127.0.0.1:${port}`, memController(TOKEN, OLD));
  }
  for (const [i, id] of ['s1', 's2'].entries()) {
    fly.addMachine(APP, {
      id,
      state: 'stopped',
      private_ip: '127.0.0.1',
      env: { [VAR]: OLD, LOG_LEVEL: 'info' },
      metadata: { keyroll_port: String(2002 + i) },
    });
  }
});

/** Each machine's controller after a boot: it runs the env Fly injected (what bootedEnv says). */
function controllersBootedFromFly(): void {
  for (const [i, id] of ['m1', 'm2', 's1', 's2'].entries()) {
    const key = fly.bootedEnv(APP, id)[VAR] ?? '';
    controllers.set(`http://127.0.0.1:${2000 + i}`, memController(TOKEN, key, 500 + i));
  }
}

afterEach(async () => {
  await fly.close();
});

describe('keyroll fly keeps the key in the app secret', () => {
  it('a dry run writes nothing at Fly, the secret included', async () => {
    const r = await runFlyPass(options(freshClient(), { dryRun: true }));
    expect(r.machines.find((m) => m.id === 's1')?.durable).toBe('stale');
    expect(fly.writes()).toEqual([]);
    expect(fly.secretNames(APP)).toEqual([]);
  });

  it('after a rotation no machine config holds the key; a fly deploy boots every machine with the new key; a converged fleet gets no write', async () => {
    const loop = freshClient(); // the forever loop's client, across passes
    const first = await runFlyPass(options(loop));
    // The secret holds the new key, set once, staged: no machine restarted by it.
    expect(fly.secretValue(APP, VAR)).toBe(NEW);
    expect(fly.writes().filter((w) => w.action === 'secret_set')).toHaveLength(1);
    for (const id of ['m1', 'm2']) {
      expect(fly.machine(APP, id).restarts).toBe(0);
      expect(fly.machine(APP, id).state).toBe('started');
    }
    // Live through the controllers; stopped configs lost the key; started configs deferred.
    expect([...controllers.values()].map((c) => c.envHash)).toEqual([
      fingerprintEnv(TOKEN, { [VAR]: NEW }),
      fingerprintEnv(TOKEN, { [VAR]: NEW }),
    ]);
    expect(fly.storedEnv(APP, 's1')).toEqual({ LOG_LEVEL: 'info' });
    expect(fly.machine(APP, 's1').minSecretsVersion).toBe(fly.secretsVersion(APP));
    expect(first.machines.map((m) => [m.id, m.durable, m.outcome])).toEqual([
      ['m1', 'deferred', 'converged'],
      ['m2', 'deferred', 'converged'],
      ['s1', 'ok', 'converged'],
      ['s2', 'ok', 'converged'],
    ]);
    expect(JSON.stringify(first)).not.toContain(NEW);

    // The started machines stop (autostop, a planned stop): the next pass takes the key out of their configs.
    fly.setMachineState(APP, 'm1', 'stopped');
    fly.setMachineState(APP, 'm2', 'stopped');
    fly.resetLog();
    const second = await runFlyPass(options(loop));
    expect(second.converged).toBe(true);
    expect(
      fly
        .writes()
        .map((w) => `${w.action}:${w.machineId ?? w.app}`)
        .sort(),
    ).toEqual([
      'lease_acquire:m1',
      'lease_acquire:m2',
      'lease_release:m1',
      'lease_release:m2',
      'update:m1',
      'update:m2',
    ]);
    for (const id of ['m1', 'm2', 's1', 's2']) expect(fly.storedEnv(APP, id)[VAR]).toBeUndefined();

    // fly deploy: configs rebuilt from fly.toml (its [env]), every machine rebooted.
    fly.deploy(APP, { env: { LOG_LEVEL: 'info' } });
    for (const id of ['m1', 'm2', 's1', 's2']) {
      expect(fly.machine(APP, id).state).toBe('started');
      expect(fly.bootedEnv(APP, id)[VAR]).toBe(NEW);
      expect(fly.storedEnv(APP, id)[VAR]).toBeUndefined();
    }
    controllersBootedFromFly();
    // Converged, same process: no Fly write (one listing of machines, one of secrets).
    fly.resetLog();
    const third = await runFlyPass(options(loop));
    expect(third.converged).toBe(true);
    expect(fly.writes()).toEqual([]);
    // A fresh process finds the fleet proving the key and the secret present: no write either.
    const fourth = await runFlyPass(options(freshClient()));
    expect(fourth.converged).toBe(true);
    expect(fly.writes()).toEqual([]);
    expect([...controllers.values()].every((c) => c.posts === 0)).toBe(true); // nothing delivered after the deploy
  });

  it('someone else changes the secret (fly secrets set): the next pass sets the desired key again', async () => {
    const loop = freshClient();
    await runFlyPass(options(loop));
    fly.putSecret(APP, VAR, OLD);
    fly.resetLog();
    await runFlyPass(options(loop));
    expect(fly.secretValue(APP, VAR)).toBe(NEW);
    expect(fly.writes().filter((w) => w.action === 'secret_set')).toHaveLength(1);
  });

  it('Fly refusing the secret fails the pass before any delivery', async () => {
    fly.inject({ action: 'secret_set', status: 500, count: 1 });
    await expect(runFlyPass(options(freshClient()))).rejects.toThrow(/Fly API secret_set secrets-app failed/);
    expect([...controllers.values()].every((c) => c.posts === 0)).toBe(true);
    expect(fly.storedEnv(APP, 's1')[VAR]).toBe(OLD);
  });
});
