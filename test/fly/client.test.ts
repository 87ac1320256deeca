// The Fly client against the fake Machines API: round trips, leases, schema tolerance and
// rejection, retries and timeouts, and no secret in any error or log line.
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FlyApiError, FlyClient, type FlyClientOptions, isLeaseHeld } from '../../src/fly/client.ts';
import { createLogger } from '../../src/log.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';

const TOKEN = 'test-fly-token-Zq8w3nB7xK2pL5mR';
const KEY_A = 'test-key-A-7f3e9c2b1a0d4e5f6a7b';
const KEY_B = 'test-key-B-0c1d2e3f4a5b6c7d8e9f';
const APP = 'gw-app';

let fly: FakeFlyApi;

function client(over: Partial<FlyClientOptions> = {}): FlyClient {
  return new FlyClient({
    token: TOKEN,
    baseUrl: fly.baseUrl,
    timeoutMs: 2_000,
    minRetryDelayMs: 10,
    maxRetryDelayMs: 50,
    ...over,
  });
}

async function rejection(p: Promise<unknown>): Promise<FlyApiError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FlyApiError);
    return err as FlyApiError;
  }
  throw new Error('expected the call to fail');
}

beforeEach(async () => {
  fly = await startFakeFlyApi({ token: TOKEN });
});

afterEach(async () => {
  await fly.close();
});

describe('machines', () => {
  it('lists and gets machines with the documented fields', async () => {
    const a = fly.addMachine(APP, { env: { KILOCODE_API_KEY: KEY_A } });
    fly.addMachine(APP, { state: 'stopped' });
    const c = client();

    const list = await c.listMachines(APP);
    expect(list.map((m) => m.id).sort()).toEqual(fly.machineIds(APP).sort());
    expect(list.map((m) => m.state).sort()).toEqual(['started', 'stopped']);

    const m = await c.getMachine(APP, a.id);
    expect(m.private_ip).toBe(a.private_ip);
    expect(m.instance_id).toBe(a.instance_id);
    expect(m.config?.env).toEqual({ KILOCODE_API_KEY: KEY_A });
    // Unknown fields survive parsing (needed to send the whole config back).
    expect(m).toHaveProperty('image_ref');
    expect(m.config).toHaveProperty('guest');
  });

  it('unknown app and machine are typed not_found', async () => {
    fly.addMachine(APP);
    const c = client();
    expect((await rejection(c.listMachines('nope'))).code).toBe('not_found');
    const err = await rejection(c.getMachine(APP, 'missing'));
    expect(err.code).toBe('not_found');
    expect(err.status).toBe(404);
    expect(err.retryable).toBe(false);
  });

  it('a wrong token is unauthorized and not retried', async () => {
    fly.addMachine(APP);
    const err = await rejection(client({ token: 'test-fly-token-wrong-000000' }).listMachines(APP));
    expect(err.code).toBe('unauthorized');
    expect(fly.requests).toHaveLength(1);
  });

  it('updates under a lease with skip_launch: config stored, version bumped, not relaunched', async () => {
    const before = fly.addMachine(APP, { env: { KILOCODE_API_KEY: KEY_A, OTHER: 'x' } });
    const c = client();

    const lease = await c.acquireLease(APP, before.id, { ttlSeconds: 30, description: 'keyroll rotation' });
    expect(lease.nonce).toMatch(/\S+/);
    expect(lease.expiresAtMs).toBeGreaterThan(Date.now());
    expect(lease.description).toBe('keyroll rotation');
    expect((await c.getLease(APP, before.id))?.nonce).toBe(lease.nonce);

    const m = await c.getMachine(APP, before.id);
    const config = { ...m.config, env: { ...m.config?.env, KILOCODE_API_KEY: KEY_B } };
    const updated = await c.updateMachine(APP, before.id, config, {
      skipLaunch: true,
      leaseNonce: lease.nonce,
      currentVersion: m.instance_id,
    });

    expect(updated.instance_id).not.toBe(before.instance_id);
    expect(fly.storedEnv(APP, before.id)).toEqual({ KILOCODE_API_KEY: KEY_B, OTHER: 'x' });
    const after = fly.machine(APP, before.id);
    expect(after.version).toBe(before.version + 1);
    expect(after.restarts).toBe(0);
    // Fly replaces the running version and does not launch the new one.
    expect(after.state).toBe('stopped');
    expect(updated.state).toBe('stopped');
    expect(after.config.image).toBe(before.config.image);
    expect(after.config.guest).toEqual(before.config.guest);
    expect(fly.requests.find((r) => r.action === 'update')?.hadNonce).toBe(true);

    await c.releaseLease(APP, before.id, lease.nonce);
    expect(fly.leaseOf(APP, before.id)).toBeNull();
    expect(await c.getLease(APP, before.id)).toBeNull();
  });

  it('an update without skip_launch restarts the machine into the new env', async () => {
    const m = fly.addMachine(APP, { env: { KILOCODE_API_KEY: KEY_A } });
    const c = client();
    await c.updateMachine(
      APP,
      m.id,
      { ...m.config, env: { KILOCODE_API_KEY: KEY_B } },
      { skipLaunch: false },
    );
    expect(fly.machine(APP, m.id).restarts).toBe(1);
    expect(fly.bootedEnv(APP, m.id)).toEqual({ KILOCODE_API_KEY: KEY_B });
  });

  it('sends min_secrets_version and current_version; unmet preconditions are typed', async () => {
    const m = fly.addMachine(APP, { env: { KILOCODE_API_KEY: KEY_A } });
    fly.setSecretsVersion(APP, 2);
    const c = client();
    const tooNew = await rejection(
      c.updateMachine(APP, m.id, m.config, { skipLaunch: true, minSecretsVersion: 3 }),
    );
    expect(tooNew.code).toBe('precondition_failed');
    await c.updateMachine(APP, m.id, m.config, { skipLaunch: true, minSecretsVersion: 2 });
    expect(fly.machine(APP, m.id).minSecretsVersion).toBe(2);

    const stale = await rejection(
      c.updateMachine(APP, m.id, m.config, { skipLaunch: true, currentVersion: m.instance_id }),
    );
    expect(stale.code).toBe('precondition_failed');
    expect(stale.status).toBe(412);
  });
});

describe('leases', () => {
  it('a lease held by someone else is a typed, non-retryable lease_held and blocks the update', async () => {
    const m = fly.addMachine(APP, { env: { KILOCODE_API_KEY: KEY_A } });
    fly.holdLease(APP, m.id, { owner: 'ops@example.test' });
    const c = client();

    const acquire = await rejection(c.acquireLease(APP, m.id, { ttlSeconds: 30, description: 'keyroll' }));
    expect(isLeaseHeld(acquire)).toBe(true);
    expect(acquire.status).toBe(409);
    expect(acquire.retryable).toBe(false);
    expect(acquire.machineId).toBe(m.id);

    const update = await rejection(
      c.updateMachine(APP, m.id, { ...m.config, env: { KILOCODE_API_KEY: KEY_B } }, { skipLaunch: true }),
    );
    expect(isLeaseHeld(update)).toBe(true);
    expect(fly.storedEnv(APP, m.id)).toEqual({ KILOCODE_API_KEY: KEY_A });

    const other = await c.getLease(APP, m.id);
    expect(other?.owner).toBe('ops@example.test');
    // One request each: a held lease is not retried within the call.
    expect(fly.requests.filter((r) => r.action === 'lease_acquire')).toHaveLength(1);
    expect(fly.requests.filter((r) => r.action === 'update')).toHaveLength(1);
  });

  it('extends our own lease with its nonce; a wrong nonce cannot release it', async () => {
    const m = fly.addMachine(APP);
    const c = client();
    const lease = await c.acquireLease(APP, m.id, { ttlSeconds: 5, description: 'keyroll' });
    const again = await c.acquireLease(APP, m.id, {
      ttlSeconds: 60,
      description: 'keyroll',
      nonce: lease.nonce,
    });
    expect(again.nonce).toBe(lease.nonce);
    expect(again.expiresAtMs).toBeGreaterThan(lease.expiresAtMs ?? 0);

    const wrong = await rejection(c.releaseLease(APP, m.id, 'not-the-nonce'));
    expect(wrong.code).toBe('bad_request');
    expect(fly.leaseOf(APP, m.id)).not.toBeNull();
    const none = fly.addMachine(APP);
    expect((await rejection(c.releaseLease(APP, none.id, 'x'))).code).toBe('lease_not_found');
  });
});

describe('schemas', () => {
  it('tolerates unknown fields anywhere and keeps them', async () => {
    const m = fly.addMachine(APP);
    fly.inject({
      action: 'get',
      status: 200,
      body: {
        id: m.id,
        state: 'started',
        private_ip: m.private_ip,
        brand_new_field: { nested: [1, 2] },
        config: { image: 'x', env: { A: 'b' }, future_knob: true },
      },
    });
    const got = await client().getMachine(APP, m.id);
    expect(got.id).toBe(m.id);
    expect(got).toHaveProperty('brand_new_field');
    expect(got.config).toHaveProperty('future_knob', true);
  });

  it('tolerates a state it does not know', async () => {
    const m = fly.addMachine(APP, { state: 'hibernating-v2' });
    expect((await client().getMachine(APP, m.id)).state).toBe('hibernating-v2');
  });

  it('rejects malformed responses with invalid_response naming the fields, not the values', async () => {
    const m = fly.addMachine(APP);
    const c = client();
    fly.inject({ action: 'get', status: 200, body: { id: 42, config: { env: { KILOCODE_API_KEY: 7 } } } });
    const wrongTypes = await rejection(c.getMachine(APP, m.id));
    expect(wrongTypes.code).toBe('invalid_response');
    expect(wrongTypes.detail).toContain('id');
    expect(wrongTypes.detail).toContain('state');
    expect(wrongTypes.detail).toContain('config.env.KILOCODE_API_KEY');

    fly.inject({ action: 'get', status: 200, rawBody: '<html>oops</html>' });
    expect((await rejection(c.getMachine(APP, m.id))).code).toBe('invalid_response');

    fly.inject({ action: 'list', status: 200, body: { machines: [] } });
    expect((await rejection(c.listMachines(APP))).code).toBe('invalid_response');

    fly.inject({ action: 'lease_acquire', status: 201, body: { status: 'success', data: { owner: 'x' } } });
    const lease = await rejection(c.acquireLease(APP, m.id, { ttlSeconds: 5, description: 'k' }));
    expect(lease.code).toBe('invalid_response');
    expect(lease.detail).toContain('data.nonce');
  });
});

describe('retries and timeouts', () => {
  it('honours 429 Retry-After, then succeeds', async () => {
    const m = fly.addMachine(APP);
    fly.inject({ action: 'get', scope: m.id, status: 429, retryAfterSec: 1 });
    const started = Date.now();
    const got = await client().getMachine(APP, m.id);
    expect(got.id).toBe(m.id);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    const count = fly.counters().get(`get:${m.id}`);
    expect(count).toEqual({ requests: 2, rateLimited: 0, injected: 1 });
  });

  it('caps Retry-After and gives up after its retries with a retryable rate_limited', async () => {
    const m = fly.addMachine(APP);
    fly.inject({ action: 'update', status: 429, retryAfterSec: 3600, count: 10 });
    const started = Date.now();
    const err = await rejection(
      client({ retries: 2, maxRetryAfterMs: 100 }).updateMachine(APP, m.id, m.config, { skipLaunch: true }),
    );
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(err.code).toBe('rate_limited');
    expect(err.retryable).toBe(true);
    expect(err.retryAfterMs).toBe(3_600_000);
    expect(fly.requests.filter((r) => r.action === 'update')).toHaveLength(3);
  });

  it('retries a 5xx read, but not a 5xx write', async () => {
    const m = fly.addMachine(APP);
    const c = client();
    fly.inject({ action: 'get', status: 503, count: 2 });
    expect((await c.getMachine(APP, m.id)).id).toBe(m.id);
    expect(fly.requests.filter((r) => r.action === 'get')).toHaveLength(3);

    fly.inject({ action: 'update', status: 500 });
    const err = await rejection(c.updateMachine(APP, m.id, m.config, { skipLaunch: true }));
    expect(err.code).toBe('server_error');
    expect(err.retryable).toBe(true);
    expect(fly.requests.filter((r) => r.action === 'update')).toHaveLength(1);
  });

  it('times out a hanging read after its retries, within the bound', async () => {
    const m = fly.addMachine(APP);
    fly.inject({ action: 'get', hang: true, count: Number.POSITIVE_INFINITY });
    const started = Date.now();
    const err = await rejection(client({ timeoutMs: 200, retries: 2 }).getMachine(APP, m.id));
    expect(err.code).toBe('timeout');
    expect(err.status).toBeNull();
    expect(err.retryable).toBe(true);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(fly.requests.filter((r) => r.action === 'get')).toHaveLength(3);
  });

  it('times out a hanging write once, without resending it', async () => {
    const m = fly.addMachine(APP);
    fly.inject({ action: 'update', hang: true, count: Number.POSITIVE_INFINITY });
    const err = await rejection(
      client({ timeoutMs: 200 }).updateMachine(APP, m.id, m.config, { skipLaunch: true }),
    );
    expect(err.code).toBe('timeout');
    expect(fly.requests.filter((r) => r.action === 'update')).toHaveLength(1);
  });

  it('the whole call is bounded by totalTimeoutMs, pacing included', async () => {
    const m = fly.addMachine(APP);
    fly.inject({ action: 'get', hang: true, count: Number.POSITIVE_INFINITY });
    const started = Date.now();
    const err = await rejection(client({ timeoutMs: 5_000, totalTimeoutMs: 300 }).getMachine(APP, m.id));
    expect(err.code).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it("the caller's signal aborts the call as aborted", async () => {
    const m = fly.addMachine(APP);
    fly.inject({ action: 'get', hang: true, count: Number.POSITIVE_INFINITY });
    const ctl = new AbortController();
    const p = client().getMachine(APP, m.id, { signal: ctl.signal });
    setTimeout(() => ctl.abort(), 50);
    expect((await rejection(p)).code).toBe('aborted');
  });

  it('a refused connection is a retryable network error', async () => {
    const url = fly.baseUrl;
    await fly.close();
    const err = await rejection(
      new FlyClient({ token: TOKEN, baseUrl: url, retries: 1, minRetryDelayMs: 10 }).listMachines(APP),
    );
    expect(err.code).toBe('network');
    expect(err.retryable).toBe(true);
    fly = await startFakeFlyApi({ token: TOKEN }); // for afterEach
  });
});

describe('secrets', () => {
  it('no token or env value appears in any error or log line', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const log = createLogger({ level: 'debug', destination: sink });
    const m = fly.addMachine(APP, { env: { KILOCODE_API_KEY: KEY_A } });
    const c = client({ log, retries: 1 });
    const config = { ...m.config, env: { KILOCODE_API_KEY: KEY_B } };
    const errors: unknown[] = [];

    // Fly echoing the value and the token back in its error text.
    fly.inject({ action: 'update', status: 400, body: { error: `bad env value ${KEY_B} for ${TOKEN}` } });
    fly.inject({ action: 'update', status: 422, rawBody: `plain ${KEY_B} ${TOKEN}` });
    fly.inject({ action: 'update', status: 429, retryAfterSec: 0, count: 5, body: { error: KEY_B } });
    fly.inject({ action: 'update', status: 500, body: { error: `${TOKEN}` } });
    fly.holdLease(APP, m.id);
    for (let i = 0; i < 5; i++) {
      errors.push(await c.updateMachine(APP, m.id, config, { skipLaunch: true }).catch((e: unknown) => e));
    }
    errors.push(
      await new FlyClient({ token: `${TOKEN}-wrong`, baseUrl: fly.baseUrl })
        .listMachines(APP)
        .catch((e) => e),
    );
    errors.push(await c.getMachine(APP, 'missing').catch((e: unknown) => e));

    expect(errors.every((e) => e instanceof FlyApiError)).toBe(true);
    expect((errors[0] as FlyApiError).detail).toContain('[REDACTED]');
    const captured = [
      ...errors.flatMap((e) => {
        const err = e as FlyApiError;
        return [
          String(err),
          err.message,
          err.stack ?? '',
          err.detail ?? '',
          JSON.stringify(err),
          inspect(err),
        ];
      }),
      ...lines,
    ].join('\n');
    expect(lines.length).toBeGreaterThan(0);
    for (const secret of [TOKEN, KEY_A, KEY_B]) expect(captured).not.toContain(secret);
  });
});
