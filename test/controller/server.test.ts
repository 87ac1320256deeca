// Wire contract of the controller's HTTP handler against fakes: every status code and error string.
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { DeliveryResult } from '../../src/controller/delivery.ts';
import {
  createControllerHandler,
  type GatewayControl,
  type LifecycleState,
  listen,
  MAX_BODY_BYTES,
  validatePatch,
} from '../../src/controller/server.ts';
import {
  GatewayAlreadyRunningError,
  SupervisorShuttingDownError,
  type SupervisorState,
  type SupervisorStats,
} from '../../src/controller/supervisor.ts';
import { SecretRegistry, silentLogger } from '../../src/log.ts';
import { freePort } from '../support/http.ts';
import { TOKEN } from './helpers.ts';

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
});

function stats(state: SupervisorState): SupervisorStats {
  return {
    state,
    pid: 42,
    startedAt: null,
    uptime: 0,
    restarts: 0,
    requestedRestarts: 0,
    spawns: 1,
    lastExit: null,
    port: 1,
    lastRestart: null,
  };
}

interface Fake {
  lifecycle: LifecycleState;
  state: SupervisorState;
  startErr: Error | null;
  stopErr: Error | null;
  restartErr: Error | null;
  patches: Record<string, string>[];
  versions: (string | null)[];
}

async function serve(over: Partial<Fake> = {}, gatewayPort = 1) {
  const f: Fake = {
    lifecycle: { state: 'ready' },
    state: 'running',
    startErr: null,
    stopErr: null,
    restartErr: null,
    patches: [],
    versions: [],
    ...over,
  };
  const gateway: GatewayControl = {
    getStats: () => stats(f.state),
    getState: () => f.state,
    start: async () => {
      if (f.startErr) throw f.startErr;
    },
    stop: async () => {
      if (f.stopErr) throw f.stopErr;
    },
    restart: async () => {
      if (f.restartErr) throw f.restartErr;
    },
  };
  const handler = createControllerHandler({
    token: TOKEN,
    patchable: ['KILOCODE_API_KEY'],
    gatewayPort: () => gatewayPort,
    lifecycle: () => f.lifecycle,
    gateway,
    deliver: async (vars): Promise<DeliveryResult> => {
      f.patches.push(vars);
      return { signaled: true, migratedProfiles: 0 };
    },
    setKeyVersion: (v) => f.versions.push(v),
    observe: async () => ({ ok: 'state' }),
    version: () => ({ version: 'test' }),
    secrets: new SecretRegistry(),
    log: silentLogger(),
    readyProbeTimeoutMs: 500,
  });
  const h = await listen(handler, {
    port: 0,
    host: '127.0.0.1',
    headersTimeoutMs: 300,
    checkIntervalMs: 100,
  });
  closers.push(h.close);
  const url = `http://127.0.0.1:${h.port}`;
  const call = async (method: string, path: string, body?: string, headers: Record<string, string> = {}) => {
    const res = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, ...headers },
      ...(body === undefined ? {} : { body }),
      signal: AbortSignal.timeout(5_000),
    });
    const text = await res.text();
    return { status: res.status, body: JSON.parse(text) as unknown };
  };
  return { f, call, port: h.port };
}

describe('validatePatch (pure)', () => {
  it.each([
    ['{', 'Invalid JSON body'],
    ['', 'Invalid JSON body'],
    ['[]', 'Body must be a JSON object'],
    ['null', 'Body must be a JSON object'],
    ['"text"', 'Body must be a JSON object'],
    ['42', 'Body must be a JSON object'],
    ['{}', 'Body must contain at least one key'],
    ['{"PATH":"/bin"}', "Key 'PATH' is not patchable"],
    ['{"KILOCODE_API_KEY":5}', "Value for 'KILOCODE_API_KEY' must be a string"],
    ['{"KILOCODE_API_KEY":null}', "Value for 'KILOCODE_API_KEY' must be a string"],
    ['{"KILOCODE_API_KEY":""}', "Value for 'KILOCODE_API_KEY' must be a non-empty string"],
    ['{"KILOCODE_API_KEY":"test-key-ok-1","PATH":"x"}', "Key 'PATH' is not patchable"],
    ['{"test-key-in-key-position-123":"x"}', "Key '<invalid name>' is not patchable"],
  ])('%s → %s', (text, error) => {
    expect(validatePatch(text, ['KILOCODE_API_KEY'])).toEqual({ ok: false, error });
  });

  it('accepts an object of allow-listed strings', () => {
    expect(validatePatch('{"KILOCODE_API_KEY":"test-key-ok-1"}', ['KILOCODE_API_KEY'])).toEqual({
      ok: true,
      vars: { KILOCODE_API_KEY: 'test-key-ok-1' },
    });
  });
});

describe('controller HTTP handler', () => {
  it('health routes need no auth and reveal only the lifecycle state', async () => {
    const { f, call } = await serve({ lifecycle: { state: 'bootstrapping', phase: 'onboard' } });
    expect(await call('GET', '/health', undefined, { authorization: '' })).toEqual({
      status: 200,
      body: { status: 'ok' },
    });
    expect((await call('GET', '/_kilo/health', undefined, { authorization: '' })).body).toEqual({
      status: 'ok',
      state: 'bootstrapping',
      phase: 'onboard',
    });
    f.lifecycle = { state: 'degraded', stage: 'doctor' };
    expect((await call('GET', '/_kilo/health')).body).toEqual({
      status: 'ok',
      state: 'degraded',
      error: 'Startup failed during doctor',
    });
    f.lifecycle = { state: 'starting' };
    expect((await call('GET', '/_kilo/health')).body).toEqual({ status: 'ok', state: 'starting' });
  });

  it('authenticated routes answer 503 Service starting until bootstrap is over', async () => {
    const { f, call } = await serve({ lifecycle: { state: 'bootstrapping', phase: 'migrate' } });
    expect(await call('GET', '/_kilo/gateway/status')).toEqual({
      status: 503,
      body: { error: 'Service starting', state: 'bootstrapping' },
    });
    expect(await call('POST', '/_kilo/env/patch', '{"KILOCODE_API_KEY":"test-key-early-1"}')).toEqual({
      status: 503,
      body: { error: 'Service starting', state: 'bootstrapping' },
    });
    expect(f.patches).toEqual([]);
    // Without the token it is still a 401: the gate never reveals more than auth allows.
    expect((await call('GET', '/_kilo/gateway/status', undefined, { authorization: '' })).status).toBe(401);
    f.lifecycle = { state: 'degraded', stage: 'doctor' };
    expect((await call('GET', '/_kilo/gateway/status')).status).toBe(200); // recovery routes stay up
  });

  it('bearer auth: missing, wrong, wrong scheme → 401; scheme is case-insensitive', async () => {
    const { call } = await serve();
    const unauthorized = { status: 401, body: { error: 'Unauthorized' } };
    expect(await call('GET', '/_kilo/gateway/status', undefined, { authorization: '' })).toEqual(
      unauthorized,
    );
    expect(await call('GET', '/_kilo/gateway/status', undefined, { authorization: 'Bearer nope' })).toEqual(
      unauthorized,
    );
    expect(
      await call('GET', '/_kilo/gateway/status', undefined, { authorization: `Basic ${TOKEN}` }),
    ).toEqual(unauthorized);
    expect(await call('GET', '/_kilo/state', undefined, { authorization: `Bearer ${TOKEN}x` })).toEqual(
      unauthorized,
    );
    expect(
      (await call('GET', '/_kilo/gateway/status', undefined, { authorization: `bEaReR ${TOKEN}` })).status,
    ).toBe(200);
  });

  it('unknown /_kilo routes → 401 controller_route_unavailable; other paths → 404', async () => {
    const { call } = await serve();
    const unavailable = {
      status: 401,
      body: { error: 'Unauthorized', code: 'controller_route_unavailable' },
    };
    expect(await call('GET', '/_kilo/nope')).toEqual(unavailable);
    expect(await call('GET', '/_kilo/doctor', undefined, { authorization: '' })).toEqual(unavailable);
    expect(await call('GET', '/_kilo/env/patch')).toEqual(unavailable); // wrong method
    expect(await call('GET', '/_kilo')).toEqual(unavailable);
    expect((await call('GET', '/')).status).toBe(404);
    expect((await call('GET', '/v1/models')).status).toBe(404);
  });

  it('GET /_kilo/version answers with the bearer only', async () => {
    const { call } = await serve();
    expect(await call('GET', '/_kilo/version')).toEqual({ status: 200, body: { version: 'test' } });
    expect(
      await call('GET', '/_kilo/version', undefined, { authorization: 'Bearer wrong-token-0123456789' }),
    ).toEqual({
      status: 401,
      body: { error: 'Unauthorized' },
    });
  });

  it('start/stop/restart: 200, 409 and 500 with the reference strings', async () => {
    const { f, call } = await serve();
    expect(await call('POST', '/_kilo/gateway/start')).toEqual({ status: 200, body: { ok: true } });
    f.startErr = new GatewayAlreadyRunningError('x');
    expect(await call('POST', '/_kilo/gateway/start')).toEqual({
      status: 409,
      body: { error: 'Gateway already running or starting' },
    });
    f.startErr = new Error('spawn ENOENT');
    expect(await call('POST', '/_kilo/gateway/start')).toEqual({
      status: 500,
      body: { error: 'Failed to start gateway' },
    });
    expect(await call('POST', '/_kilo/gateway/stop')).toEqual({ status: 200, body: { ok: true } });
    f.stopErr = new Error('boom');
    expect(await call('POST', '/_kilo/gateway/stop')).toEqual({
      status: 500,
      body: { error: 'Failed to stop gateway' },
    });
    expect(await call('POST', '/_kilo/gateway/restart')).toEqual({ status: 200, body: { ok: true } });
    f.restartErr = new SupervisorShuttingDownError('x');
    expect(await call('POST', '/_kilo/gateway/restart')).toEqual({
      status: 409,
      body: { error: 'Gateway is shutting down' },
    });
    f.restartErr = new Error('boom');
    expect(await call('POST', '/_kilo/gateway/restart')).toEqual({
      status: 500,
      body: { error: 'Failed to restart gateway' },
    });
  });

  it('gateway/ready: 503 not running, 502 unreachable, else the gateway answer with 200/503', async () => {
    const gwPort = await freePort();
    const { f, call } = await serve({ state: 'stopped' }, gwPort);
    expect(await call('GET', '/_kilo/gateway/ready')).toEqual({
      status: 503,
      body: { ready: false, error: 'Gateway not running' },
    });
    f.state = 'crashed';
    expect((await call('GET', '/_kilo/gateway/ready')).status).toBe(503);
    f.state = 'starting';
    expect(await call('GET', '/_kilo/gateway/ready')).toEqual({
      status: 502,
      body: { ready: false, error: 'Failed to reach gateway' },
    });
    let ready = false;
    const gw: Server = createServer((_req, res) => {
      res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ready, failing: ready ? [] : ['startup'] }));
    });
    await new Promise<void>((r) => gw.listen(gwPort, '127.0.0.1', r));
    closers.push(() => new Promise((r) => gw.close(() => r())));
    expect(await call('GET', '/_kilo/gateway/ready')).toEqual({
      status: 503,
      body: { ready: false, failing: ['startup'] },
    });
    ready = true;
    f.state = 'running';
    expect(await call('GET', '/_kilo/gateway/ready')).toEqual({
      status: 200,
      body: { ready: true, failing: [] },
    });
  });

  it('env/patch: 400 with the exact strings and nothing applied; 200 {ok, signaled, migratedProfiles}', async () => {
    const { f, call } = await serve();
    for (const [body, error] of [
      ['nope', 'Invalid JSON body'],
      ['[1]', 'Body must be a JSON object'],
      ['{}', 'Body must contain at least one key'],
      ['{"PATH":"/tmp"}', "Key 'PATH' is not patchable"],
      ['{"KILOCODE_API_KEY":true}', "Value for 'KILOCODE_API_KEY' must be a string"],
      ['{"KILOCODE_API_KEY":"test-key-ok-2","OTHER":"x"}', "Key 'OTHER' is not patchable"],
    ] as const) {
      expect(await call('POST', '/_kilo/env/patch', body)).toEqual({ status: 400, body: { error } });
    }
    expect(f.patches).toEqual([]);
    expect(
      await call('POST', '/_kilo/env/patch', '{"KILOCODE_API_KEY":"test-key-ok-3"}', {
        authorization: 'Bearer x',
      }),
    ).toEqual({ status: 401, body: { error: 'Unauthorized' } });
    expect(f.patches).toEqual([]);
    expect(
      await call('POST', '/_kilo/env/patch', '{"KILOCODE_API_KEY":"test-key-ok-4"}', {
        'x-keyroll-key-version': 'v7',
      }),
    ).toEqual({ status: 200, body: { ok: true, signaled: true, migratedProfiles: 0 } });
    expect(f.patches).toEqual([{ KILOCODE_API_KEY: 'test-key-ok-4' }]);
    expect(f.versions).toEqual(['v7']);
    expect(
      await call('POST', '/_kilo/env/patch', '{"KILOCODE_API_KEY":"test-key-ok-5"}', {
        'x-keyroll-key-version': 'has space',
      }),
    ).toEqual({ status: 400, body: { error: 'Invalid X-Keyroll-Key-Version header' } });
    expect(f.patches).toHaveLength(1);
  });

  it('a body over 64 KiB → 413 and nothing applied', async () => {
    const { f, call } = await serve();
    const big = JSON.stringify({ KILOCODE_API_KEY: 'x'.repeat(MAX_BODY_BYTES) });
    expect(await call('POST', '/_kilo/env/patch', big)).toEqual({
      status: 413,
      body: { error: 'Payload too large' },
    });
    expect(f.patches).toEqual([]);
  });

  it('a client that never finishes its headers is cut off', async () => {
    const { port } = await serve();
    const sock = connect(port, '127.0.0.1');
    const t0 = Date.now();
    const closed = new Promise<string>((resolve) => {
      let data = '';
      sock.on('data', (d) => {
        data += String(d);
      });
      sock.on('close', () => resolve(data));
    });
    sock.write('GET /_kilo/gateway/status HTTP/1.1\r\nHost: x\r\n'); // and then nothing
    const answer = await closed;
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
  });
});
