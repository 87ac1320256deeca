// The assembled controller with the stand-in gateway and a fake upstream: rotation end to end.
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FILE_PROVIDER_ALIAS } from '../../src/controller/openclaw-config.ts';
import type { ProfilePort } from '../../src/controller/profile-port.ts';
import { createProfilePort } from '../../src/controller/profiles-adapter.ts';
import { fingerprintEnv, fingerprintValue } from '../../src/fingerprint.ts';
import { parseObservedState } from '../../src/kilo-state.ts';
import { chat } from '../support/http.ts';
import { observedOrThrow } from '../support/observed.ts';
import { pidAlive, startTestController, suiteCapture, TOKEN, waitFor } from './helpers.ts';

// biome-ignore lint/suspicious/noExplicitAny: responses are read field by field and asserted on.
type Json = Record<string, any>;

const KEY_A = 'test-key-A-ctl-aaaaaaaa';
const KEY_B = 'test-key-B-ctl-bbbbbbbb';

/** Everything the suite captured (log lines, response bodies), grepped for secrets at the end. */
const usedSecrets = new Set<string>([TOKEN, KEY_A, KEY_B]);
const { captured, cleanups } = suiteCapture(usedSecrets, 1000);

interface Setup {
  delivery?: 'restart' | 'file';
  profiles?: ProfilePort;
  seedPlaintext?: string;
  extraEnv?: Record<string, string>;
}

async function setup(opts: Setup = {}) {
  const delivery = opts.delivery ?? 'restart';
  const keyFileIn = (dir: string) => join(dir, 'keys', 'kilocode.key');
  const t = await startTestController({
    prefix: 'keyroll-ctl-',
    env: { OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: KEY_A, ...opts.extraEnv },
    seed: ({ dir, stateDir }) => {
      if (opts.seedPlaintext) {
        const agentDir = join(stateDir, 'agents', 'main', 'agent');
        mkdirSync(agentDir, { recursive: true });
        writeFileSync(
          join(agentDir, 'auth-profiles.json'),
          JSON.stringify({
            version: 1,
            profiles: {
              'kilocode:default': { type: 'api_key', provider: 'kilocode', key: opts.seedPlaintext },
            },
          }),
        );
      }
      mkdirSync(join(dir, 'keys'), { mode: 0o700 });
    },
    upstreamKeys: [KEY_A],
    flags: ({ dir }) => [
      '--delivery',
      delivery,
      ...(delivery === 'file' ? ['--key-file', keyFileIn(dir)] : []),
    ],
    profiles: ({ dir, stateDir, log }) =>
      opts.profiles ??
      createProfilePort({
        stateDir,
        provider: 'kilocode',
        target:
          delivery === 'file'
            ? { to: 'file', keyFile: keyFileIn(dir), providerAlias: FILE_PROVIDER_ALIAS }
            : { to: 'env', envVar: 'KILOCODE_API_KEY' },
        log,
      }),
    expectGatewayGone: true,
    captured,
  });
  cleanups.push(() => t.stop());
  const { ctl, stateDir } = t;
  const keyFile = keyFileIn(t.dir);
  const base = `http://127.0.0.1:${ctl.port}`;
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    captured.push(text);
    return { status: res.status, body: JSON.parse(text) as Json };
  };
  const state = async () => (await call('GET', '/_kilo/state')).body;
  const waitRunning = async (pred: (s: Json) => boolean = () => true) =>
    waitFor(
      async () => {
        const s = await state();
        return s.gateway.state === 'running' && s.gateway.ready && pred(s) ? s : null;
      },
      20_000,
      'gateway running',
    );
  return {
    ctl,
    call,
    state,
    waitRunning,
    upstream: t.upstream!,
    gatewayPort: t.config.gatewayPort,
    stateDir,
    keyFile,
    lines: t.lines,
  };
}

const envHashOf = (key: string) => fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key });

describe('controller (stand-in gateway)', () => {
  it('restart mode: the new key reaches the upstream through a new process (not SIGUSR1, not reload, not a snapshot)', async () => {
    const { ctl, call, waitRunning, upstream, gatewayPort } = await setup();
    await ctl.bootstrapped;
    expect((await call('GET', '/_kilo/health')).body).toEqual({ status: 'ok', state: 'ready' });
    const before = await waitRunning();
    expect(before.key.envHash).toBe(envHashOf(KEY_A));
    expect((await chat(gatewayPort, TOKEN, 10_000)).status).toBe(200);

    upstream.setKeys([KEY_B]); // the upstream now accepts only B
    const patch = await call(
      'POST',
      '/_kilo/env/patch',
      { KILOCODE_API_KEY: KEY_B },
      { 'x-keyroll-key-version': 'v2' },
    );
    expect(patch).toEqual({ status: 200, body: { ok: true, signaled: true, migratedProfiles: 0 } });

    const after = await waitRunning((s) => s.gateway.pid !== before.gateway.pid);
    // A SIGUSR1 or `secrets reload` delivery keeps the PID; a snapshot-once env keeps hash A.
    expect(after.gateway.pid).not.toBe(before.gateway.pid);
    expect(after.key).toEqual({ envHash: envHashOf(KEY_B), fileHash: null, version: 'v2' });
    expect(after.controller).toMatchObject({ state: 'ready', delivery: 'restart' });
    // The reconciler reads this response with its own schema: the two must agree.
    expect(parseObservedState(after).ok).toBe(true);
    const r = await chat(gatewayPort, TOKEN, 10_000);
    expect(r.status).toBe(200);
    expect(upstream.chatRequests().at(-1)).toMatchObject({ key: KEY_B, ok: true });
    expect(pidAlive(before.gateway.pid)).toBe(false);
  });

  it('ten concurrent patches cost at most two restarts and the last key wins', async () => {
    const { ctl, call, waitRunning, upstream, gatewayPort } = await setup();
    await ctl.bootstrapped;
    await waitRunning();
    const keys = Array.from({ length: 10 }, (_, i) => `test-key-burst-${i}-cccccccc`);
    for (const k of keys) usedSecrets.add(k);
    upstream.setKeys([keys[9]!]);
    const answers = await Promise.all(
      keys.map((k, i) =>
        new Promise((r) => setTimeout(r, i * 5)).then(() =>
          call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: k }),
        ),
      ),
    );
    for (const a of answers) expect(a.status).toBe(200);
    const s = await waitRunning((st) => st.key.envHash === envHashOf(keys[9]!));
    const status = (await call('GET', '/_kilo/gateway/status')).body;
    expect(status.requestedRestarts).toBeGreaterThanOrEqual(1);
    expect(status.requestedRestarts).toBeLessThanOrEqual(2);
    // Nothing else is queued: the state stays on the last key.
    await new Promise((r) => setTimeout(r, 500));
    expect((await call('GET', '/_kilo/gateway/status')).body.requestedRestarts).toBe(
      status.requestedRestarts,
    );
    expect(s.gateway.state).toBe('running');
    expect((await chat(gatewayPort, TOKEN, 10_000)).status).toBe(200);
    expect(upstream.chatRequests().at(-1)?.key).toBe(keys[9]);
  });

  it('wrong token, bad bodies and oversized bodies apply nothing', async () => {
    const { ctl, call, waitRunning } = await setup();
    await ctl.bootstrapped;
    const before = await waitRunning();
    const attempts = [
      await call(
        'POST',
        '/_kilo/env/patch',
        { KILOCODE_API_KEY: KEY_B },
        { authorization: 'Bearer wrong-token' },
      ),
      await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B }, { authorization: '' }),
      await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B, PATH: '/x' }),
      await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: 1 }),
      await call(
        'POST',
        '/_kilo/env/patch',
        JSON.stringify({ KILOCODE_API_KEY: KEY_B, pad: 'x'.repeat(70_000) }),
      ),
    ];
    expect(attempts.map((a) => a.status)).toEqual([401, 401, 400, 400, 413]);
    await new Promise((r) => setTimeout(r, 300));
    const after = await waitRunning();
    expect(after.gateway.pid).toBe(before.gateway.pid);
    expect(after.key.envHash).toBe(envHashOf(KEY_A));
    expect((await call('GET', '/_kilo/gateway/status')).body).toMatchObject({
      requestedRestarts: 0,
      spawns: 1,
    });
  });

  it('gateway routes: start 409 while running, stop, patch while stopped, start, restart', async () => {
    const { ctl, call, waitRunning } = await setup();
    await ctl.bootstrapped;
    const first = await waitRunning();
    expect(await call('POST', '/_kilo/gateway/start')).toEqual({
      status: 409,
      body: { error: 'Gateway already running or starting' },
    });
    expect((await call('GET', '/_kilo/gateway/ready')).status).toBe(200);
    expect(await call('POST', '/_kilo/gateway/stop')).toEqual({ status: 200, body: { ok: true } });
    expect(pidAlive(first.gateway.pid)).toBe(false);
    expect((await call('GET', '/_kilo/gateway/status')).body).toMatchObject({ state: 'stopped', pid: null });
    expect(await call('GET', '/_kilo/gateway/ready')).toEqual({
      status: 503,
      body: { ready: false, error: 'Gateway not running' },
    });
    // Not running: nothing to signal, but the next spawn carries the new key.
    expect((await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B })).body).toEqual({
      ok: true,
      signaled: false,
      migratedProfiles: 0,
    });
    expect(await call('POST', '/_kilo/gateway/start')).toEqual({ status: 200, body: { ok: true } });
    const second = await waitRunning();
    expect(second.key.envHash).toBe(envHashOf(KEY_B));
    expect(await call('POST', '/_kilo/gateway/restart')).toEqual({ status: 200, body: { ok: true } });
    const third = await waitRunning();
    expect(third.gateway.pid).not.toBe(second.gateway.pid);
    expect(third.gateway.restarts).toBe(0); // requested restarts are not crashes
  });

  it('migrates a seeded plaintext profile at bootstrap; state shows keyRef-env', async () => {
    const legacy = 'test-key-legacy-plaintext-dddd';
    usedSecrets.add(legacy);
    const { ctl, waitRunning, stateDir } = await setup({ seedPlaintext: legacy });
    await ctl.bootstrapped;
    const s = await waitRunning();
    expect(s.profiles).toEqual([
      expect.objectContaining({ agentId: 'main', profileId: 'kilocode:default', form: 'keyRef-env' }),
    ]);
    expect(observedOrThrow(s).profiles).toHaveLength(1);
    const store = readFileSync(join(stateDir, 'agents', 'main', 'agent', 'auth-profiles.json'), 'utf8');
    expect(store).not.toContain(legacy);
    expect(store).toContain('keyRef');
  });

  it('file mode: zero failed requests across a rotation, same PID, B from the first request after the patch', async () => {
    const { ctl, call, waitRunning, upstream, gatewayPort, keyFile } = await setup({
      delivery: 'file',
      seedPlaintext: KEY_A,
    });
    await ctl.bootstrapped;
    const before = await waitRunning();
    expect(before.profiles).toEqual([expect.objectContaining({ form: 'keyRef-file' })]);
    expect(before.key.fileHash).toBe(fingerprintValue(TOKEN, KEY_A));
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    upstream.setKeys([KEY_A, KEY_B]); // overlap window

    let running = true;
    let failures = 0;
    let sent = 0;
    const client = (async () => {
      while (running) {
        const r = await chat(gatewayPort, TOKEN, 10_000);
        sent++;
        if (r.status !== 200) failures++;
      }
    })();
    await waitFor(() => sent >= 3, 10_000, 'client warm');
    const patch = await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B });
    const returnedAt = Date.now();
    expect(patch.body).toEqual({ ok: true, signaled: true, migratedProfiles: 0 });
    const firstAfter = await chat(gatewayPort, TOKEN, 10_000);
    expect(firstAfter.status).toBe(200);
    expect(upstream.chatRequests().filter((r) => r.at >= returnedAt)[0]?.key).toBe(KEY_B);
    await waitFor(
      () => upstream.chatRequests().filter((r) => r.at >= returnedAt).length >= 5,
      10_000,
      'more',
    );
    running = false;
    await client;
    expect(failures).toBe(0);
    expect(
      upstream
        .chatRequests()
        .filter((r) => r.at > returnedAt + 50)
        .every((r) => r.key === KEY_B),
    ).toBe(true);
    const after = await state(call);
    expect(after.gateway.pid).toBe(before.gateway.pid);
    expect(after.key.fileHash).toBe(fingerprintValue(TOKEN, KEY_B));
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
  });

  it('a failed bootstrap stage leaves the controller up and degraded, with recovery routes', async () => {
    const failing: ProfilePort = {
      migrate: async () => ({ profilesMigrated: 0, storesFailed: 1, backupsHardened: 0 }),
      scan: async () => [],
      hardenBackups: async () => 0,
    };
    const { ctl, call } = await setup({ profiles: failing });
    await ctl.bootstrapped;
    expect((await call('GET', '/_kilo/health')).body).toEqual({
      status: 'ok',
      state: 'degraded',
      error: 'Startup failed during migrate',
    });
    expect((await call('GET', '/_kilo/gateway/status')).body).toMatchObject({ state: 'stopped', pid: null });
    expect((await call('GET', '/_kilo/state')).body.controller.state).toBe('degraded');
  });

  it('shows the bootstrap phase and answers 503 Service starting meanwhile', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const slow: ProfilePort = {
      migrate: async () => {
        await gate;
        return { profilesMigrated: 0, storesFailed: 0, backupsHardened: 0 };
      },
      scan: async () => [],
      hardenBackups: async () => 0,
    };
    const { ctl, call, waitRunning } = await setup({ profiles: slow });
    expect((await call('GET', '/_kilo/health')).body).toEqual({
      status: 'ok',
      state: 'bootstrapping',
      phase: 'migrate',
    });
    expect(await call('GET', '/_kilo/state')).toEqual({
      status: 503,
      body: { error: 'Service starting', state: 'bootstrapping' },
    });
    release();
    await ctl.bootstrapped;
    await waitRunning();
  });
});

async function state(call: (m: string, p: string) => Promise<{ body: Json }>) {
  return (await call('GET', '/_kilo/state')).body;
}
