// The key's durable copy on Fly is the app secret: the fake's secrets endpoints (faithful to
// fly-go's flaps_secrets.go shapes, refusing what the API refuses), the client's calls, the staged
// write (no machine restarts, written once per key), taking a stale key out of a stopped machine's
// config with min_secrets_version, and the acceptance: after a rotation no machine config holds the
// key, and a `fly deploy` (configs rebuilt from a fly.toml-like base) keeps the new key.
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { FlyApiError, FlyClient } from '../../src/fly/client.ts';
import {
  configHoldsNoKey,
  secretVersionFor,
  takeKeyOut,
  withKey,
  withoutKey,
  writeAppSecret,
} from '../../src/fly/durable.ts';
import { createLogger, type Logger, silentLogger } from '../../src/log.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';

const FLY_TOKEN = 'test-fly-token-Sec7w3nB7xK2pL5mR';
const CONTROLLER_TOKEN = 'test-controller-token-secrets-0001';
const KEY_A = 'test-key-A-secrets-7f3e9c2b1a0d4e5f';
const KEY_B = 'test-key-B-secrets-0c1d2e3f4a5b6c7d';
const KEY_C = 'test-key-C-secrets-9a8b7c6d5e4f3a2b';
const APP = 'gw-secrets';
const VAR = 'KILOCODE_API_KEY';
const hash = (key: string) => fingerprintEnv(CONTROLLER_TOKEN, { [VAR]: key });

let fly: FakeFlyApi;
const logged: string[] = [];
let log: Logger;

function client(): FlyClient {
  return new FlyClient({ token: FLY_TOKEN, baseUrl: fly.baseUrl, timeoutMs: 2_000, minRetryDelayMs: 10 });
}

async function raw(method: string, path: string, body?: unknown, token = FLY_TOKEN) {
  const res = await fetch(`${fly.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : null, text };
}

beforeEach(async () => {
  fly = await startFakeFlyApi({ token: FLY_TOKEN });
  logged.length = 0;
  log = createLogger({
    level: 'debug',
    destination: new Writable({
      write(chunk, _e, cb) {
        logged.push(String(chunk));
        cb();
      },
    }),
  });
});

afterEach(async () => {
  await fly.close();
});

describe('fake Machines API: app secrets', () => {
  it('lists names and opaque digests, never values; every set bumps the secrets version', async () => {
    fly.addApp(APP);
    const first = await raw('POST', `/v1/apps/${APP}/secrets/${VAR}`, { value: KEY_A });
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ name: VAR, version: 1 });
    expect(first.text).not.toContain(KEY_A);
    const again = await raw('POST', `/v1/apps/${APP}/secrets/${VAR}`, { value: KEY_A });
    expect(again.json?.version).toBe(2);
    expect(again.json?.digest).toBe(first.json?.digest); // same value, same digest
    const other = await raw('POST', `/v1/apps/${APP}/secrets/${VAR}`, { value: KEY_B });
    expect(other.json?.digest).not.toBe(first.json?.digest);
    const list = await raw('GET', `/v1/apps/${APP}/secrets?show_secrets=true`);
    expect(list.status).toBe(200);
    expect(list.json).toEqual({
      secrets: [
        {
          name: VAR,
          digest: other.json?.digest,
          created_at: expect.any(String),
          updated_at: expect.any(String),
        },
      ],
    });
    expect(list.text).not.toContain(KEY_B);
    expect(fly.secretsVersion(APP)).toBe(3);
    const bulk = await raw('POST', `/v1/apps/${APP}/secrets`, { values: { OTHER: 'x', [VAR]: null } });
    expect(bulk.json?.version).toBe(4);
    expect(fly.secretNames(APP)).toEqual(['OTHER']);
    const del = await raw('DELETE', `/v1/apps/${APP}/secrets/OTHER`);
    expect(del.json).toEqual({ version: 5 });
  });

  it('refuses what the API refuses, and changes nothing then', async () => {
    // Many writes in a row: without the fake's rate limiter (tested elsewhere), so each answer is the handler's.
    await fly.close();
    fly = await startFakeFlyApi({ token: FLY_TOKEN, rateLimit: false });
    fly.addApp(APP);
    await raw('POST', `/v1/apps/${APP}/secrets/${VAR}`, { value: KEY_A });
    const cases: Array<[string, string, unknown, number, string?]> = [
      ['POST', `/v1/apps/${APP}/secrets/${VAR}`, { value: KEY_B }, 401, 'test-fly-token-wrong'],
      ['POST', `/v1/apps/nope/secrets/${VAR}`, { value: KEY_B }, 404],
      ['POST', `/v1/apps/${APP}/secrets/${VAR}`, '{not json', 400],
      ['POST', `/v1/apps/${APP}/secrets/${VAR}`, { value: 42 }, 400],
      ['POST', `/v1/apps/${APP}/secrets/${VAR}`, {}, 400],
      ['POST', `/v1/apps/${APP}/secrets/BAD-NAME`, { value: KEY_B }, 400],
      ['POST', `/v1/apps/${APP}/secrets`, { values: { OK: 'x', 'NOT OK': 'y' } }, 400],
      ['POST', `/v1/apps/${APP}/secrets`, { values: {} }, 400],
      ['DELETE', `/v1/apps/${APP}/secrets/ABSENT`, undefined, 404],
      ['PUT', `/v1/apps/${APP}/secrets/${VAR}`, { value: KEY_B }, 404],
    ];
    for (const [method, path, body, status, token] of cases) {
      const r = await raw(method, path, body, token);
      expect(r.status, `${method} ${path} ${JSON.stringify(body)}`).toBe(status);
      expect(r.text).not.toContain(KEY_B);
    }
    expect(fly.secretValue(APP, VAR)).toBe(KEY_A);
    expect(fly.secretNames(APP)).toEqual([VAR]);
    expect(fly.secretsVersion(APP)).toBe(1);
  });

  it('secrets reach a machine at its next boot only; a name in config.env shadows the secret', async () => {
    const m = fly.addMachine(APP, { env: {} });
    fly.putSecret(APP, VAR, KEY_A);
    expect(fly.bootedEnv(APP, m.id)[VAR]).toBeUndefined(); // booted before the secret existed
    fly.setMachineState(APP, m.id, 'stopped');
    fly.setMachineState(APP, m.id, 'started');
    expect(fly.bootedEnv(APP, m.id)[VAR]).toBe(KEY_A);
    fly.setMachineConfig(APP, m.id, { ...fly.machine(APP, m.id).config, env: { [VAR]: KEY_C } });
    fly.setMachineState(APP, m.id, 'started');
    expect(fly.bootedEnv(APP, m.id)[VAR]).toBe(KEY_C);
  });

  it('an update whose min_secrets_version the app has not reached is refused (412)', async () => {
    const m = fly.addMachine(APP, { state: 'stopped' });
    fly.putSecret(APP, VAR, KEY_A);
    const c = client();
    const cur = await c.getMachine(APP, m.id);
    const err = await c
      .updateMachine(APP, m.id, cur.config ?? {}, { skipLaunch: true, minSecretsVersion: 2 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FlyApiError);
    expect((err as FlyApiError).code).toBe('precondition_failed');
    await c.updateMachine(APP, m.id, cur.config ?? {}, { skipLaunch: true, minSecretsVersion: 1 });
    expect(fly.machine(APP, m.id).minSecretsVersion).toBe(1);
  });
});

describe('client: app secrets', () => {
  it('listAppSecrets and setAppSecret round-trip; a failure names the call, never the value', async () => {
    fly.addApp(APP);
    const c = client();
    expect(await c.listAppSecrets(APP)).toEqual([]);
    const set = await c.setAppSecret(APP, VAR, KEY_A);
    expect(set).toMatchObject({ name: VAR, version: 1 });
    expect((await c.listAppSecrets(APP)).map((s) => s.name)).toEqual([VAR]);
    // A Fly error that echoes the value: scrubbed from the detail.
    fly.inject({ action: 'secret_set', status: 400, body: { error: `bad value ${KEY_B}` } });
    const err = (await c.setAppSecret(APP, VAR, KEY_B).catch((e: unknown) => e)) as FlyApiError;
    expect(err).toBeInstanceOf(FlyApiError);
    expect(err.message).toBe(`Fly API secret_set ${APP} failed: bad_request (HTTP 400)`);
    expect(`${err.message} ${err.detail}`).not.toContain(KEY_B);
    expect(err.detail).toContain('[REDACTED]');
    const missing = (await c.listAppSecrets('nope').catch((e: unknown) => e)) as FlyApiError;
    expect(missing.code).toBe('not_found');
  });
});

describe('durable delivery through the app secret', () => {
  it('writes the secret once per key (staged: no machine changes, restarts or boots); again when someone else changed it', async () => {
    const started = fly.addMachine(APP, { env: {} });
    const stopped = fly.addMachine(APP, { state: 'stopped', env: {} });
    const c = client();
    const input = {
      fly: c,
      app: APP,
      envVar: VAR,
      key: KEY_A,
      desiredHash: hash(KEY_A),
      signal: AbortSignal.timeout(5_000),
      log,
    };
    const w1 = await writeAppSecret(input);
    expect(w1).toMatchObject({ status: 'written', version: 1 });
    expect(fly.secretValue(APP, VAR)).toBe(KEY_A);
    expect(secretVersionFor(c, APP, VAR, hash(KEY_A))).toBe(1);
    expect(secretVersionFor(c, APP, VAR, hash(KEY_B))).toBeNull();
    fly.resetLog();
    expect(await writeAppSecret(input)).toMatchObject({ status: 'current', version: 1 });
    expect(fly.writes()).toEqual([]); // the second pass reads one listing, writes nothing
    // Rotation: written again.
    expect(await writeAppSecret({ ...input, key: KEY_B, desiredHash: hash(KEY_B) })).toMatchObject({
      status: 'written',
      version: 2,
    });
    // Someone else sets the secret (fly secrets set): the digest changed, keyroll writes its key again.
    fly.putSecret(APP, VAR, KEY_C);
    expect(await writeAppSecret({ ...input, key: KEY_B, desiredHash: hash(KEY_B) })).toMatchObject({
      status: 'written',
      version: 4,
    });
    expect(fly.secretValue(APP, VAR)).toBe(KEY_B);
    // Nothing at the machines: same versions, states, no restart, nothing booted with the key.
    for (const [m, state] of [
      [started, 'started'],
      [stopped, 'stopped'],
    ] as const) {
      const now = fly.machine(APP, m.id);
      expect(now.state).toBe(state);
      expect(now.instance_id).toBe(m.instance_id);
      expect(now.restarts).toBe(0);
      expect(now.bootedEnv[VAR]).toBeUndefined();
    }
    // A fresh process (another client) does not know the digest: it writes once, then remembers.
    const other = client();
    expect(
      (await writeAppSecret({ ...input, fly: other, key: KEY_B, desiredHash: hash(KEY_B) })).status,
    ).toBe('written');
    expect(
      (await writeAppSecret({ ...input, fly: other, key: KEY_B, desiredHash: hash(KEY_B) })).status,
    ).toBe('current');
    expect(logged.join('')).not.toMatch(new RegExp(`${KEY_A}|${KEY_B}|${KEY_C}|${FLY_TOKEN}`));
  });

  it('takes a stale key out of a stopped machine config (skip_launch, min_secrets_version, under the lease); refuses a started one', async () => {
    const stopped = fly.addMachine(APP, { state: 'stopped', env: { [VAR]: KEY_A, KEEP: 'yes' } });
    const started = fly.addMachine(APP, { env: { [VAR]: KEY_A } });
    const c = client();
    const base = {
      fly: c,
      app: APP,
      envVar: VAR,
      desiredHash: hash(KEY_B),
      leaseTtlSeconds: 30,
      signal: AbortSignal.timeout(5_000),
      log,
    };
    await writeAppSecret({ ...base, key: KEY_B });
    const r = await takeKeyOut({ ...base, machineId: stopped.id });
    expect(r).toEqual({
      status: 'written',
      message: 'key taken out of config.env, min_secrets_version 1, skip_launch',
    });
    const after = fly.machine(APP, stopped.id);
    expect(after.config.env).toEqual({ KEEP: 'yes' });
    expect(after.minSecretsVersion).toBe(1);
    expect(after.state).toBe('stopped');
    expect(after.restarts).toBe(0);
    expect(fly.leaseOf(APP, stopped.id)).toBeNull(); // released
    expect((await takeKeyOut({ ...base, machineId: stopped.id })).status).toBe('already');
    // Its next boot gets the new key from the secret.
    fly.setMachineState(APP, stopped.id, 'started');
    expect(fly.bootedEnv(APP, stopped.id)[VAR]).toBe(KEY_B);
    // A started machine: never updated (any update would reboot or stop it).
    expect((await takeKeyOut({ ...base, machineId: started.id })).status).toBe('state-changed');
    expect(fly.storedEnv(APP, started.id)[VAR]).toBe(KEY_A);
    // Someone else's lease: skipped.
    const s2 = fly.addMachine(APP, { state: 'stopped', env: { [VAR]: KEY_A } });
    fly.holdLease(APP, s2.id, { owner: 'ops@example.com' });
    expect(await takeKeyOut({ ...base, machineId: s2.id })).toMatchObject({
      status: 'lease-held',
      owner: 'ops@example.com',
    });
    expect(fly.storedEnv(APP, s2.id)[VAR]).toBe(KEY_A);
  });

  it('pure helpers: no key in the config is durable-correct, even the desired key in it is not', () => {
    expect(configHoldsNoKey({ env: { OTHER: 'x' } }, VAR)).toBe(true);
    expect(configHoldsNoKey(undefined, VAR)).toBe(true);
    expect(configHoldsNoKey({ env: { [VAR]: KEY_B } }, VAR)).toBe(false);
    const cfg = { image: 'x', env: { [VAR]: KEY_A, OTHER: 'y' }, services: [{ p: 1 }] };
    expect(withoutKey(cfg, VAR)).toEqual({ image: 'x', env: { OTHER: 'y' }, services: [{ p: 1 }] });
    expect(cfg.env[VAR]).toBe(KEY_A); // a copy
  });

  it('acceptance: after a rotation no machine config holds the key, and a fly deploy keeps the new key (the config layout loses it)', async () => {
    // Three machines deployed the old way: the key in config.env.
    const ms = [
      fly.addMachine(APP, { env: { [VAR]: KEY_A, LOG_LEVEL: 'info' } }),
      fly.addMachine(APP, { state: 'stopped', env: { [VAR]: KEY_A, LOG_LEVEL: 'info' } }),
      fly.addMachine(APP, { state: 'stopped', env: { [VAR]: KEY_A, LOG_LEVEL: 'info' } }),
    ];
    const c = client();
    const base = {
      fly: c,
      app: APP,
      envVar: VAR,
      desiredHash: hash(KEY_B),
      leaseTtlSeconds: 30,
      signal: AbortSignal.timeout(5_000),
      log: silentLogger(),
    };
    // Rotate to B: the secret, then every stopped machine's config; the started one is the
    // controller's (live) until it is seen stopped, then its config too.
    await writeAppSecret({ ...base, key: KEY_B });
    for (const m of ms.slice(1))
      expect((await takeKeyOut({ ...base, machineId: m.id })).status).toBe('written');
    fly.setMachineState(APP, ms[0]!.id, 'stopped');
    expect((await takeKeyOut({ ...base, machineId: ms[0]!.id })).status).toBe('written');
    for (const m of ms) expect(fly.storedEnv(APP, m.id)).toEqual({ LOG_LEVEL: 'info' });

    // fly deploy: configs rebuilt from fly.toml ([env] without secrets), every machine rebooted.
    fly.deploy(APP, { env: { LOG_LEVEL: 'info' } });
    for (const m of ms) {
      expect(fly.machine(APP, m.id).state).toBe('started');
      expect(fly.bootedEnv(APP, m.id)[VAR]).toBe(KEY_B);
      expect(fly.storedEnv(APP, m.id)[VAR]).toBeUndefined();
    }

    // The layout this replaces: a key written into config.env is gone after a deploy, and the
    // machines boot with whatever the secret holds (here: nothing or an older key).
    const legacy = 'gw-legacy';
    const lm = fly.addMachine(legacy, { state: 'stopped', env: { LOG_LEVEL: 'info' } });
    const cur = await c.getMachine(legacy, lm.id);
    await c.updateMachine(legacy, lm.id, withKey(cur.config, VAR, KEY_B), { skipLaunch: true });
    fly.deploy(legacy, { env: { LOG_LEVEL: 'info' } });
    expect(fly.bootedEnv(legacy, lm.id)[VAR]).toBeUndefined();
  });
});
