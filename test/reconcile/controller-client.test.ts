// The controller client's HTTP behaviour (keep-alive reuse, bounded idle sockets, timeouts, aborts,
// size bound); the `/_kilo/state` check itself is test/kilo-state.test.ts.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WAIT_HEADER, WAIT_PID_HEADER } from '../../src/kilo-state.ts';
import {
  ControllerError,
  httpControllerClient,
  IDLE_SOCKET_MS,
  MAX_RESPONSE_BYTES,
  parsePatchResponse,
} from '../../src/reconcile/controller-client.ts';
import { STATE_ANSWER, STATE_KEPT } from '../support/observed.ts';

const TOKEN = 'test-token-client-0123456789';

const STATE = STATE_ANSWER;

interface TestServer {
  url: string;
  server: Server;
  /** Every connection the server accepted, and whether it has closed. */
  connections: { socket: Socket; closed: boolean }[];
  requests: {
    method: string;
    url: string;
    authorization: string | undefined;
    body: string;
    wait: [ms: string | undefined, pid: string | undefined];
  }[];
}

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
});

async function serve(
  handler: (req: IncomingMessage, res: ServerResponse, body: string) => void = (_q, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(STATE));
  },
): Promise<TestServer> {
  const connections: TestServer['connections'] = [];
  const requests: TestServer['requests'] = [];
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += c;
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      authorization: req.headers.authorization,
      body,
      wait: [
        req.headers[WAIT_HEADER] as string | undefined,
        req.headers[WAIT_PID_HEADER] as string | undefined,
      ],
    });
    handler(req, res, body);
  });
  server.on('connection', (socket: Socket) => {
    const c = { socket, closed: false };
    connections.push(c);
    socket.on('close', () => {
      c.closed = true;
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server, connections, requests };
}

const never = () => new AbortController().signal;

describe('httpControllerClient', () => {
  it('reads the state with the bearer token and sends a patch with its headers and body', async () => {
    const s = await serve((req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify(req.method === 'POST' ? { ok: true, signaled: true, migratedProfiles: 1 } : STATE),
      );
    });
    const client = httpControllerClient({ url: `${s.url}/`, token: TOKEN, timeoutMs: 5_000 });
    const state = await client.getState(never());
    // The known fields only: `extra` and `futureField` are dropped.
    expect(state).toStrictEqual(STATE_KEPT);
    const patch = await client.patchEnv({ KILOCODE_API_KEY: 'test-key-client-0001' }, 'v2', never());
    expect(patch).toEqual({ ok: true, signaled: true, migratedProfiles: 1 });
    expect(s.requests.map((r) => [r.method, r.url, r.authorization])).toEqual([
      ['GET', '/_kilo/state', `Bearer ${TOKEN}`],
      ['POST', '/_kilo/env/patch', `Bearer ${TOKEN}`],
    ]);
    expect(JSON.parse(s.requests[1]!.body)).toEqual({ KILOCODE_API_KEY: 'test-key-client-0001' });
  });

  it('asks a state read to wait only when told to, within three quarters of its own timeout', async () => {
    const s = await serve();
    const client = httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 4_000 });
    await client.getState(never());
    await client.getState(never(), { ms: 1_500.7, pid: 4242 });
    await client.getState(never(), { ms: 20_000, pid: null });
    await client.getState(never(), { ms: 0, pid: 4242 });
    expect(s.requests.map((r) => r.wait)).toEqual([
      [undefined, undefined],
      ['1500', '4242'],
      ['3000', undefined],
      [undefined, undefined],
    ]);
  });

  it('keeps the connection for the next call, and closes it once idle for IDLE_SOCKET_MS', async () => {
    const s = await serve();
    const client = httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 5_000 });
    for (let i = 0; i < 5; i++) await client.getState(never());
    expect(s.requests).toHaveLength(5);
    expect(s.connections).toHaveLength(1);
    expect(s.connections[0]!.closed).toBe(false);
    const t0 = Date.now();
    while (!s.connections[0]!.closed && Date.now() - t0 < IDLE_SOCKET_MS * 3) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(s.connections[0]!.closed).toBe(true);
    // Closed by keyroll well before the server's own 5 s keep-alive timeout.
    expect(Date.now() - t0).toBeLessThan(4_500);
    // A later call opens a new connection and works.
    await client.getState(never());
    expect(s.connections).toHaveLength(2);
  }, 15_000);

  it('closeIdle closes the kept connection at once; the client still works after it', async () => {
    const s = await serve();
    const client = httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 5_000 });
    await client.getState(never());
    client.closeIdle?.();
    const t0 = Date.now();
    while (!s.connections[0]!.closed && Date.now() - t0 < 1_000) await new Promise((r) => setTimeout(r, 5));
    expect(s.connections[0]!.closed).toBe(true);
    expect(Date.now() - t0).toBeLessThan(IDLE_SOCKET_MS / 2);
    await client.getState(never());
    expect(s.connections).toHaveLength(2);
  });

  it('a path prefix in the base URL is kept', async () => {
    const s = await serve();
    await httpControllerClient({ url: `${s.url}/gw/7`, token: TOKEN, timeoutMs: 5_000 }).getState(never());
    expect(s.requests[0]!.url).toBe('/gw/7/_kilo/state');
  });

  it('times out a call that gets no answer, as a retryable timeout', async () => {
    const s = await serve(() => undefined);
    const client = httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 150 });
    const err = await client.getState(never()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ControllerError);
    expect((err as ControllerError).kind).toBe('timeout');
    expect((err as ControllerError).retryable).toBe(true);
    expect((err as Error).message).toBe('GET _kilo/state timed out after 150 ms');
  });

  it('rejects with the signal’s reason when aborted, and leaves no listener on the signal', async () => {
    const s = await serve(() => undefined);
    const client = httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 10_000 });
    const ac = new AbortController();
    const calls = Array.from({ length: 20 }, () => client.getState(ac.signal).catch((e: unknown) => e));
    const reason = new Error('pass cancelled');
    setTimeout(() => ac.abort(reason), 50);
    for (const e of await Promise.all(calls)) expect(e).toBe(reason);
    // An already aborted signal: nothing is sent.
    const before = s.requests.length;
    await expect(client.getState(ac.signal)).rejects.toBe(reason);
    expect(s.requests.length).toBe(before);
  });

  it('many calls on one long-lived signal add one abort listener to it, not one per call', async () => {
    const s = await serve();
    const ac = new AbortController();
    let added = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...args: Parameters<AbortSignal['addEventListener']>) => {
      added++;
      return add(...args);
    }) as AbortSignal['addEventListener'];
    const client = httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 5_000 });
    await Promise.all(Array.from({ length: 50 }, () => client.getState(ac.signal)));
    expect(added).toBe(1);
  });

  it('an unreachable controller is a retryable network error naming the code', async () => {
    const s = await serve();
    const url = s.url;
    await new Promise<void>((r) => s.server.close(() => r()));
    servers.splice(servers.indexOf(s.server), 1);
    const err = await httpControllerClient({ url, token: TOKEN, timeoutMs: 5_000 })
      .getState(never())
      .catch((e: unknown) => e);
    expect((err as ControllerError).kind).toBe('network');
    expect((err as ControllerError).retryable).toBe(true);
    expect((err as Error).message).toBe('GET _kilo/state failed: ECONNREFUSED');
  });

  it('an HTTP error carries the controller’s error string and status; 4xx is not retryable', async () => {
    const s = await serve((_q, res) => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'Unauthorized', code: 'bad_token' }));
    });
    const err = (await httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 5_000 })
      .getState(never())
      .catch((e: unknown) => e)) as ControllerError;
    expect(err.message).toBe('GET _kilo/state answered HTTP 401: Unauthorized (bad_token)');
    expect(err.status).toBe(401);
    expect(err.retryable).toBe(false);
  });

  it('refuses an answer larger than MAX_RESPONSE_BYTES without keeping it', async () => {
    const s = await serve((_q, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`"${'x'.repeat(MAX_RESPONSE_BYTES + 10)}"`);
    });
    const err = (await httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 5_000 })
      .getState(never())
      .catch((e: unknown) => e)) as ControllerError;
    expect(err.kind).toBe('invalid-response');
    expect(err.message).toBe(`GET _kilo/state: response larger than ${MAX_RESPONSE_BYTES} bytes`);
  });

  it('a malformed state names the fields the schema refused', async () => {
    const s = await serve((_q, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ...STATE, gateway: { state: 7 } }));
    });
    const err = (await httpControllerClient({ url: s.url, token: TOKEN, timeoutMs: 5_000 })
      .getState(never())
      .catch((e: unknown) => e)) as ControllerError;
    expect(err.kind).toBe('invalid-response');
    expect(err.message).toBe('GET _kilo/state: unexpected response (fields: gateway.state)');
  });
});

describe('parsePatchResponse', () => {
  it.each([
    [
      { ok: true, signaled: true, migratedProfiles: 2, extra: 1 },
      { ok: true, signaled: true, migratedProfiles: 2 },
    ],
    [
      { ok: true, signaled: false },
      { ok: true, signaled: false, migratedProfiles: 0 },
    ],
    [{ ok: true, signaled: true, migratedProfiles: null }, null],
    [{ ok: true, signaled: true, migratedProfiles: -1 }, null],
    [{ ok: true, signaled: true, migratedProfiles: 1.5 }, null],
    [{ ok: 'yes', signaled: true }, null],
    [{ ok: true }, null],
    [[{ ok: true, signaled: true }], null],
    [null, null],
  ])('%j → %j', (body, parsed) => {
    expect(parsePatchResponse(body)).toStrictEqual(parsed);
  });
});
