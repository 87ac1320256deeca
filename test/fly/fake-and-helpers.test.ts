// The fake's own behaviour the loop's tests will lean on (deploys, lease expiry on an injected
// clock, machines stopping mid-pass, the read/write log), and the pure helpers over machines.
import { afterEach, describe, expect, it } from 'vitest';
import {
  controllerUrl,
  detectDeploy,
  FlyClient,
  isLeaseHeld,
  type Machine,
  MachineAddressError,
} from '../../src/fly/client.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';

const TOKEN = 'test-fly-token-helpers-4k5j6h7g';
const APP = 'gw-app';
const KEY = 'test-key-A-fake-and-helpers-0001';

const started: FakeFlyApi[] = [];

async function fake(opts: Parameters<typeof startFakeFlyApi>[0] = {}): Promise<FakeFlyApi> {
  const f = await startFakeFlyApi({ token: TOKEN, ...opts });
  started.push(f);
  return f;
}

afterEach(async () => {
  await Promise.all(started.splice(0).map((f) => f.close()));
});

function machine(over: Partial<Machine>): Machine {
  return { id: 'm1', state: 'started', ...over };
}

describe('controllerUrl', () => {
  it('brackets the 6PN IPv6 address', () => {
    expect(controllerUrl(machine({ private_ip: 'fdaa:0:18:a7b:196:e274:9ce1:2' }), 18789)).toBe(
      'http://[fdaa:0:18:a7b:196:e274:9ce1:2]:18789',
    );
  });

  it('leaves IPv4 bare and honours a valid keyroll_port override', () => {
    expect(controllerUrl(machine({ private_ip: '127.0.0.1' }), 18789)).toBe('http://127.0.0.1:18789');
    const withPort = machine({ private_ip: '127.0.0.1', config: { metadata: { keyroll_port: '40123' } } });
    expect(controllerUrl(withPort, 18789)).toBe('http://127.0.0.1:40123');
    const badPort = machine({ private_ip: '::1', config: { metadata: { keyroll_port: '99999' } } });
    expect(controllerUrl(badPort, 18789)).toBe('http://[::1]:18789');
  });

  it('refuses a missing or non-IP address with a typed error', () => {
    expect(() => controllerUrl(machine({}), 1)).toThrow(MachineAddressError);
    expect(() => controllerUrl(machine({ private_ip: 'evil.example/x?' }), 1)).toThrow(MachineAddressError);
  });
});

describe('detectDeploy', () => {
  it('is quiet for a settled app and names the reasons during a rollout', () => {
    const settled = [
      machine({ id: 'a', config: { metadata: { fly_release_version: '4' } } }),
      machine({ id: 'b', state: 'stopped', config: { metadata: { fly_release_version: '4' } } }),
    ];
    expect(detectDeploy(settled)).toEqual({ deploying: false, reasons: [] });
    const rolling = [
      machine({ id: 'a', config: { metadata: { fly_release_version: '5' } } }),
      machine({ id: 'b', state: 'replacing', config: { metadata: { fly_release_version: '4' } } }),
    ];
    const d = detectDeploy(rolling);
    expect(d.deploying).toBe(true);
    expect(d.reasons).toEqual(['machine b is replacing', 'machines are on different releases (4, 5)']);
  });
});

describe('fake Fly API', () => {
  it('shows a deploy through the API: replacing state, a deploy lease, mixed releases; then settles', async () => {
    const fly = await fake();
    const ids = [fly.addMachine(APP).id, fly.addMachine(APP).id, fly.addMachine(APP).id];
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    expect(detectDeploy(await c.listMachines(APP)).deploying).toBe(false);

    fly.startDeploy(APP, { rolled: 1 });
    const during = await c.listMachines(APP);
    const d = detectDeploy(during);
    expect(d.deploying).toBe(true);
    expect(d.reasons).toContain(`machine ${ids[1]} is replacing`);
    const err = await c
      .acquireLease(APP, ids[1]!, { ttlSeconds: 10, description: 'k' })
      .catch((e: unknown) => e);
    expect(isLeaseHeld(err)).toBe(true);
    expect((await c.getLease(APP, ids[1]!))?.description).toBe('fly deploy');

    fly.finishDeploy(APP);
    expect(detectDeploy(await c.listMachines(APP)).deploying).toBe(false);
    expect(await c.getLease(APP, ids[1]!)).toBeNull();
  });

  it('expires leases on the injected clock', async () => {
    let now = 1_700_000_000_000;
    const fly = await fake({ now: () => now, rateLimit: false });
    const m = fly.addMachine(APP);
    fly.holdLease(APP, m.id, { ttlSeconds: 10 });
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    const held = await c
      .acquireLease(APP, m.id, { ttlSeconds: 5, description: 'k' })
      .catch((e: unknown) => e);
    expect(isLeaseHeld(held)).toBe(true);
    now += 10_001;
    const ours = await c.acquireLease(APP, m.id, { ttlSeconds: 5, description: 'k' });
    expect(ours.expiresAtMs).toBe(Math.floor((now + 5_000) / 1000) * 1000);
    expect(fly.leaseOf(APP, m.id)?.nonce).toBe(ours.nonce);
  });

  it('a machine stopped mid-pass shows as stopped; a skip_launch write waits for its next boot', async () => {
    const fly = await fake();
    const m = fly.addMachine(APP, { env: { KILOCODE_API_KEY: 'test-key-A-old-000000' } });
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    fly.setMachineState(APP, m.id, 'stopped');
    expect((await c.getMachine(APP, m.id)).state).toBe('stopped');
    await c.updateMachine(APP, m.id, { ...m.config, env: { KILOCODE_API_KEY: KEY } }, { skipLaunch: true });
    expect(fly.machine(APP, m.id).state).toBe('stopped');
    expect(fly.machine(APP, m.id).restarts).toBe(0);
    expect(fly.storedEnv(APP, m.id)).toEqual({ KILOCODE_API_KEY: KEY });
    expect(fly.bootedEnv(APP, m.id)).toEqual({ KILOCODE_API_KEY: 'test-key-A-old-000000' });
    fly.setMachineState(APP, m.id, 'started');
    expect(fly.bootedEnv(APP, m.id)).toEqual({ KILOCODE_API_KEY: KEY });
  });

  it('logs requests as reads or writes, with no nonce or env value in the log', async () => {
    const fly = await fake();
    const m = fly.addMachine(APP, { env: { KILOCODE_API_KEY: KEY } });
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    await c.listMachines(APP);
    await c.getMachine(APP, m.id);
    expect(fly.writes()).toEqual([]);
    const lease = await c.acquireLease(APP, m.id, { ttlSeconds: 5, description: 'k' });
    await c.updateMachine(APP, m.id, m.config, { skipLaunch: true, leaseNonce: lease.nonce });
    await c.releaseLease(APP, m.id, lease.nonce);
    expect(fly.writes().map((r) => `${r.method} ${r.action}`)).toEqual([
      'POST lease_acquire',
      'POST update',
      'DELETE lease_release',
    ]);
    const log = JSON.stringify(fly.requests);
    expect(log).not.toContain(KEY);
    expect(log).not.toContain(lease.nonce);
    expect(log).not.toContain(TOKEN);
  });

  it('injected failures can target one machine and a count', async () => {
    const fly = await fake();
    const a = fly.addMachine(APP);
    const b = fly.addMachine(APP);
    fly.inject({ action: 'get', scope: a.id, status: 404, count: 2 });
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    expect((await c.getMachine(APP, b.id)).id).toBe(b.id);
    for (let i = 0; i < 2; i++) {
      expect(await c.getMachine(APP, a.id).catch((e: { code: string }) => e.code)).toBe('not_found');
    }
    expect((await c.getMachine(APP, a.id)).id).toBe(a.id);
    expect(fly.counters().get(`get:${a.id}`)).toEqual({ requests: 3, rateLimited: 0, injected: 2 });
  });

  it('an injected delay slows the real answer without failing it', async () => {
    const fly = await fake();
    const m = fly.addMachine(APP);
    fly.inject({ action: 'get', delayMs: 300 });
    const c = new FlyClient({ token: TOKEN, baseUrl: fly.baseUrl });
    const t = Date.now();
    expect((await c.getMachine(APP, m.id)).id).toBe(m.id);
    expect(Date.now() - t).toBeGreaterThanOrEqual(280);
  });
});
