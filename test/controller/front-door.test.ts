// The controller as the gateway's front door (stand-in gateway, fake upstream): proxying, the
// admin port split, hold and surge restarts under continuous traffic, and evidence from traffic.
import { createServer as createHttpServer, request } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { FrontDoor } from '../../src/controller/front-door.ts';
import { noopProfilePort } from '../../src/controller/profile-port.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { parseObservedState } from '../../src/kilo-state.ts';
import { silentLogger } from '../../src/log.ts';
import { failures, startTraffic } from '../support/traffic.ts';
import { startTestController, suiteCapture, TOKEN, waitFor } from './helpers.ts';

// biome-ignore lint/suspicious/noExplicitAny: responses are read field by field and asserted on.
type Json = Record<string, any>;

const KEY_A = 'test-key-A-door-aaaaaaaa';
const KEY_B = 'test-key-B-door-bbbbbbbb';
const { captured, cleanups } = suiteCapture([TOKEN, KEY_A, KEY_B], 1000);

async function setup(
  flags: string[] = [],
  extraEnv: Record<string, string> = {},
  profiles = noopProfilePort(),
) {
  const t = await startTestController({
    prefix: 'keyroll-door-',
    env: {
      OPENCLAW_GATEWAY_TOKEN: TOKEN,
      KILOCODE_API_KEY: KEY_A,
      STANDIN_READY_DELAY_MS: '300',
      ...extraEnv,
    },
    flags,
    surge: true,
    upstreamKeys: [KEY_A, KEY_B],
    profiles: () => profiles,
    expectGatewayGone: true,
    captured,
  });
  cleanups.push(() => t.stop());
  const { ctl } = t;
  const upstream = t.upstream!;
  const pub = `http://127.0.0.1:${ctl.port}`;
  const adm = `http://127.0.0.1:${ctl.adminPort}`;
  const call = async (method: string, path: string, body?: unknown, base = adm) => {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    captured.push(text);
    return { status: res.status, body: (text ? JSON.parse(text) : null) as Json };
  };
  const state = async () => (await call('GET', '/_kilo/state')).body;
  const waitServing = async (pred: (s: Json) => boolean = () => true) =>
    waitFor(
      async () => {
        const s = await state();
        return s.gateway.state === 'running' && s.proxy.state === 'routing' && pred(s) ? s : null;
      },
      20_000,
      'gateway serving through the proxy',
    );
  return { ctl, call, state, waitServing, upstream, pub, adm };
}

/** A WebSocket through the front door that records what it receives. */
function openWs(port: number) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket`);
  const messages: Json[] = [];
  const closed = new Promise<number>((r) => {
    ws.onclose = (e) => r(e.code);
  });
  ws.onmessage = (m) => messages.push(JSON.parse(String(m.data)));
  const opened = new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error('websocket failed'));
  });
  return { ws, messages, closed, opened };
}

describe('front door (stand-in gateway)', () => {
  it('proxies HTTP both ways: JSON, a streamed upload, SSE, Host rewritten, /readyz', async () => {
    const { ctl, pub, waitServing } = await setup();
    await ctl.bootstrapped;
    await waitServing();
    expect(await (await fetch(`${pub}/readyz`)).json()).toEqual({ ready: true });
    const health = await fetch(`${pub}/healthz`);
    expect(await health.json()).toEqual({ ok: true, status: 'live' });

    const seen = (await (
      await fetch(`${pub}/__standin/headers`, { headers: { 'x-custom': 'kept' } })
    ).json()) as Json;
    expect(seen.headers.host).toBe(`127.0.0.1:${ctl.supervisor.getStats().port}`);
    expect(seen.headers['x-custom']).toBe('kept');

    // 4 MiB uploaded in chunks and streamed back: nothing is buffered whole on the way.
    const chunk = Buffer.alloc(64 * 1024, 'k');
    const body = new ReadableStream({
      start(c) {
        for (let i = 0; i < 64; i++) c.enqueue(chunk);
        c.close();
      },
    });
    const echo = await fetch(`${pub}/__standin/echo`, {
      method: 'POST',
      body,
      duplex: 'half',
    } as RequestInit);
    expect((await echo.arrayBuffer()).byteLength).toBe(64 * chunk.length);

    // SSE events arrive one by one, before the stream ends.
    const sse = await fetch(`${pub}/__standin/stream?n=5&ms=150`);
    expect(sse.headers.get('content-type')).toBe('text/event-stream');
    const reader = sse.body!.getReader();
    const t0 = Date.now();
    const first = await reader.read();
    const firstAt = Date.now() - t0;
    let rest = '';
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      rest += Buffer.from(r.value).toString();
    }
    expect(Buffer.from(first.value!).toString()).toContain('"i":0');
    expect(firstAt).toBeLessThan(500); // the stream takes ≥ 600 ms in all
    expect(rest).toContain('[DONE]');
  });

  it('with --admin-port: /_kilo/* only on the admin port, the proxy only on the public one', async () => {
    const { ctl, call, pub, adm, waitServing } = await setup(['--admin-port', '0']);
    await ctl.bootstrapped;
    await waitServing();
    expect(ctl.adminPort).not.toBe(ctl.port);
    expect((await call('GET', '/_kilo/state', undefined, pub)).status).toBe(404);
    expect((await call('GET', '/_kilo/state', undefined, adm)).status).toBe(200);
    expect((await fetch(`${adm}/healthz`)).status).toBe(404);
    expect((await fetch(`${pub}/healthz`)).status).toBe(200);
    for (const base of [pub, adm]) {
      expect((await fetch(`${base}/health`)).status).toBe(200);
      expect((await fetch(`${base}/_kilo/health`)).status).toBe(200);
    }
    const version = await call('GET', '/_kilo/version');
    expect(version.body).toMatchObject({ apiVersion: 'keyroll.dev/v1', openclawVersion: null });
    expect(version.body.capabilities).toEqual(
      expect.arrayContaining(['proxy', 'restart-strategy:surge', 'state', 'state:wait']),
    );
    expect([...version.body.capabilities].sort()).toEqual(version.body.capabilities);
  });

  it('--require-proxy-token: 401 without the token; the token is stripped before the gateway', async () => {
    const { ctl, pub, waitServing } = await setup(['--require-proxy-token']);
    await ctl.bootstrapped;
    await waitServing();
    const denied = await fetch(`${pub}/__standin/headers`);
    expect(denied.status).toBe(401);
    expect(await denied.json()).toEqual({ error: 'Unauthorized' });
    const ok = await fetch(`${pub}/__standin/headers`, {
      headers: { 'x-kiloclaw-proxy-token': TOKEN, 'x-forwarded-for': '203.0.113.9' },
    });
    const seen = (await ok.json()) as Json;
    expect(seen.headers['x-kiloclaw-proxy-token']).toBeUndefined();
    expect(seen.headers['x-forwarded-for']).toBe('203.0.113.9');
    const ws = new WebSocket(`ws://127.0.0.1:${ctl.port}/socket`);
    const code = await new Promise<string>((r) => {
      ws.onopen = () => r('open');
      ws.onerror = () => r('refused');
    });
    expect(code).toBe('refused');
  });

  it('gateway stopped → 503 Gateway not ready with Retry-After; /readyz 503; back after start', async () => {
    const { ctl, call, pub, waitServing } = await setup();
    await ctl.bootstrapped;
    await waitServing();
    expect((await call('POST', '/_kilo/gateway/stop')).status).toBe(200);
    const r = await fetch(`${pub}/healthz`);
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('5');
    expect(await r.json()).toEqual({ error: 'Gateway not ready' });
    expect((await fetch(`${pub}/readyz`)).status).toBe(503);
    expect((await call('POST', '/_kilo/gateway/start')).status).toBe(200);
    await waitServing();
    expect((await fetch(`${pub}/healthz`)).status).toBe(200);
  });

  for (const strategy of ['hold', 'surge'] as const) {
    it(`${strategy}: three rotations under continuous traffic fail no request; every request after the switch carries B`, async () => {
      const { ctl, call, state, waitServing, upstream } = await setup(['--restart-strategy', strategy]);
      await ctl.bootstrapped;
      await waitServing();
      upstream.setDelayMs(150); // chats in flight across every switch
      const traffic = startTraffic({
        port: ctl.port,
        token: TOKEN,
        clients: ['chat', 'chat', 'healthz'],
        websockets: 1,
      });
      const keys = [KEY_B, KEY_A, KEY_B];
      const switches: number[] = [];
      for (const key of keys) {
        const before = await state();
        await new Promise((r) => setTimeout(r, 300));
        const patch = await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: key });
        expect(patch.body).toMatchObject({ ok: true, signaled: true });
        const after = await waitServing(
          (s) =>
            s.gateway.pid !== before.gateway.pid &&
            s.key.envHash === fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key }),
        );
        switches.push(Date.now());
        expect(after.proxy.lastRestart).toMatchObject({ strategy, fallback: null });
        if (strategy === 'surge') expect(after.gateway.state).toBe('running');
        expect(parseObservedState(after).ok).toBe(true);
        await new Promise((r) => setTimeout(r, 400));
      }
      await traffic.stop();
      expect(failures(traffic.outcomes)).toEqual([]);
      expect(traffic.outcomes.filter((o) => o.kind === 'chat').length).toBeGreaterThan(10);
      // After the last switch, the upstream saw only B.
      const last = switches.at(-1)!;
      const late = upstream.chatRequests().filter((r) => r.at > last + 50);
      expect(late.length).toBeGreaterThan(0);
      expect(late.every((r) => r.key === KEY_B)).toBe(true);
      // The WebSocket client: at most one 1012 per rotation, and it reconnected each time.
      const closes = traffic.wsEvents.filter((e) => e.event === 'close');
      const restarts = closes.filter((e) => e.code === 1012);
      expect(restarts.length).toBeGreaterThanOrEqual(1);
      expect(restarts.length).toBeLessThanOrEqual(keys.length);
      expect(closes.filter((e) => e.code !== 1012 && e.code !== 1000 && e.code !== 1005)).toEqual([]);
      expect(traffic.wsEvents.filter((e) => e.event === 'open').length).toBe(restarts.length + 1);
    }, 60_000);
  }

  it('surge falls back to hold when a SQLite store must be migrated (only possible with no gateway running)', async () => {
    // A store that shows a plaintext profile until a migration of every layout has run.
    let plaintext = true;
    const profiles = {
      ...noopProfilePort(),
      scan: async () => [
        {
          agentId: 'main',
          store: 'sqlite-agent' as const,
          profileId: 'kilocode:default',
          form: plaintext ? ('plaintext' as const) : ('keyRef-env' as const),
        },
      ],
      migrate: async (layouts?: string[]) => {
        const all = !layouts || layouts.includes('sqlite-agent');
        if (all && plaintext) {
          plaintext = false;
          return { profilesMigrated: 1, storesFailed: 0, backupsHardened: 0 };
        }
        return { profilesMigrated: 0, storesFailed: 0, backupsHardened: 0 };
      },
    };
    const { ctl, call, state, waitServing } = await setup(['--restart-strategy', 'surge'], {}, profiles);
    await ctl.bootstrapped;
    const before = await waitServing();
    plaintext = true; // e.g. an agent wrote a plaintext key after start-up
    await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B });
    const after = await waitServing((st) => st.gateway.pid !== before.gateway.pid);
    expect(after.proxy.lastRestart).toMatchObject({
      strategy: 'hold',
      fallback: 'profile migration due in sqlite-agent',
    });
    expect(plaintext).toBe(false); // migrated while no gateway ran
    expect((await state()).profiles.map((p: Json) => p.form)).toEqual(['keyRef-env']);
    // The next restart has nothing to migrate: a real surge.
    await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_A });
    const again = await waitServing((st) => st.gateway.pid !== after.gateway.pid);
    expect(again.proxy.lastRestart).toMatchObject({ strategy: 'surge', fallback: null });
  });

  it('a WebSocket carries messages both ways and is closed with 1012 when its gateway stops', async () => {
    const { ctl, call, waitServing } = await setup();
    await ctl.bootstrapped;
    const before = await waitServing();
    const c = openWs(ctl.port);
    await c.opened;
    c.ws.send('ping-1');
    await waitFor(() => c.messages.find((m) => m.echo === 'ping-1'), 5_000, 'echo');
    expect(c.messages[0]).toEqual({ hello: before.gateway.pid });
    await call('POST', '/_kilo/gateway/restart');
    expect(await c.closed).toBe(1012);
  });

  it('hold is bounded: a gateway that never gets ready → held requests answered 503 within --hold-timeout', async () => {
    const { ctl, call, pub, waitServing } = await setup(
      ['--hold-timeout', '400ms', '--patchable', 'KILOCODE_API_KEY,STANDIN_READY_DELAY_MS'],
      {},
    );
    await ctl.bootstrapped;
    await waitServing();
    await call('POST', '/_kilo/env/patch', { STANDIN_READY_DELAY_MS: '00060000' });
    await waitFor(
      async () => (await call('GET', '/_kilo/state')).body.proxy.state === 'holding',
      5_000,
      'hold',
    );
    const t0 = Date.now();
    const r = await fetch(`${pub}/healthz`);
    const waited = Date.now() - t0;
    expect(r.status).toBe(503);
    expect(r.headers.get('retry-after')).toBe('5');
    expect(waited).toBeLessThan(2_000);
    // Once the hold is older than its bound, /readyz says so and requests are refused at once.
    await new Promise((res) => setTimeout(res, 500));
    expect((await fetch(`${pub}/readyz`)).status).toBe(503);
  });

  it('traffic: a refused key is counted as keyRejected, a later success as accepted', async () => {
    const { ctl, state, waitServing, upstream, pub } = await setup();
    await ctl.bootstrapped;
    await waitServing();
    const chatOnce = (stream: boolean) =>
      fetch(`${pub}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'openclaw', stream, messages: [{ role: 'user', content: 'hi' }] }),
      }).then(async (r) => ({ status: r.status, text: await r.text() }));
    upstream.setKeys([KEY_B]);
    const refused = await chatOnce(false);
    expect(refused.status).toBe(401);
    let s = await state();
    expect(s.traffic).toMatchObject({ keyRejected: 1, accepted: 0 });
    expect(s.traffic.lastKeyRejectedAt).not.toBeNull();
    // A wrong gateway token is the client's problem, not the key's: not counted.
    const badToken = await fetch(`${pub}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: 'Bearer not-the-token-000000000', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(badToken.status).toBe(401);
    expect((await state()).traffic.keyRejected).toBe(1);
    upstream.setKeys([KEY_A]);
    expect((await chatOnce(false)).status).toBe(200);
    s = await state();
    expect(s.traffic).toMatchObject({ keyRejected: 1, accepted: 1 });
    expect(Date.parse(s.traffic.lastAcceptedAt)).toBeGreaterThanOrEqual(
      Date.parse(s.traffic.lastKeyRejectedAt),
    );
  });

  it('a header larger than the limit → 431; the controller keeps serving', async () => {
    const { ctl, pub, waitServing } = await setup();
    await ctl.bootstrapped;
    await waitServing();
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: ctl.port, path: '/healthz', headers: { 'x-big': 'b'.repeat(20_000) } },
        (res) => resolve(res.statusCode ?? 0),
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(431);
    expect((await fetch(`${pub}/healthz`)).status).toBe(200);
  });
});

describe('front door: a keep-alive connection the gateway closes as it is reused', () => {
  it('a GET is sent again on a new connection (200); a POST is not (502)', async () => {
    // A gateway that answers the first request of each connection (keep-alive) and resets the
    // connection when a second one arrives on it: the race of a keep-alive timeout, made certain.
    const gateway = createNetServer((socket) => {
      let seen = 0;
      let buf = '';
      socket.on('error', () => {});
      socket.on('data', (chunk) => {
        buf += chunk.toString('latin1');
        while (buf.includes('\r\n\r\n')) {
          const head = buf.slice(0, buf.indexOf('\r\n\r\n'));
          const len = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          buf = buf.slice(head.length + 4 + len);
          seen++;
          if (seen > 1) {
            socket.resetAndDestroy();
            return;
          }
          socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok');
        }
      });
    });
    await new Promise<void>((r) => gateway.listen(0, '127.0.0.1', r));
    const gatewayPort = (gateway.address() as { port: number }).port;
    const door = new FrontDoor({
      log: silentLogger(),
      holdTimeoutMs: 1_000,
      holdMax: 10,
      proxyToken: null,
      tokenEquals: (a, b) => a === b,
    });
    door.route({ port: gatewayPort, pid: 1 });
    const front = createHttpServer((req, res) => door.handleRequest(req, res));
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const frontPort = (front.address() as { port: number }).port;
    cleanups.push(async () => {
      door.close();
      await new Promise((r) => front.close(r));
      await new Promise((r) => gateway.close(r));
    });
    const call = (method: string) =>
      fetch(`http://127.0.0.1:${frontPort}/x`, {
        method,
        ...(method === 'POST' ? { body: '{}' } : {}),
      }).then(async (r) => ({ status: r.status, text: await r.text() }));
    expect(await call('GET')).toEqual({ status: 200, text: 'ok' });
    // The front door's agent reuses the connection: the gateway resets it; the GET goes again.
    expect(await call('GET')).toEqual({ status: 200, text: 'ok' });
    expect(await call('GET')).toEqual({ status: 200, text: 'ok' });
    // A POST may have changed something: never sent twice.
    expect((await call('POST')).status).toBe(502);
  });
});
