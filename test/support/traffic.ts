// Owns client traffic through the controller's front door, for the rotation tests, the demo and
// the benchmarks: HTTP clients that send requests back to back (plain, streamed, or a gateway
// probe) and WebSocket clients that stay connected and reconnect after a 1012, every outcome kept.

export type HttpClientKind = 'chat' | 'chat-stream' | 'healthz';

export interface RequestOutcome {
  client: string;
  kind: HttpClientKind;
  startedAt: number;
  endedAt: number;
  status: number;
  /** Set when no HTTP answer came (connection refused, reset, timeout). */
  error: string | null;
  /** The gateway answered 2xx and (for chats) the body was complete. */
  ok: boolean;
  /** `keyhash=…` from the fake upstream's answer: which key served this request (chats only). */
  keyhash: string | null;
}

export interface WsEvent {
  client: string;
  at: number;
  /** `hello`: the gateway completed its handshake (OpenClaw's hello-ok, the stand-in's hello). */
  event: 'open' | 'hello' | 'refused' | 'close' | 'error';
  code?: number;
}

export interface TrafficOptions {
  /** The controller's public port. */
  port: number;
  /** Bearer token for the gateway's chat endpoint. */
  token: string;
  clients: HttpClientKind[];
  /** WebSocket clients (each reconnects after a close). */
  websockets?: number;
  /**
   * Gateway token for OpenClaw's WebSocket handshake (answer `connect.challenge` with a `connect`
   * request as a backend client); without it the socket stays silent (OpenClaw closes a socket
   * that has not connected after 15 s).
   */
  wsToken?: string;
  /** Pause between two requests of one client. */
  gapMs?: number;
  requestTimeoutMs?: number;
}

export interface TrafficRun {
  outcomes: RequestOutcome[];
  wsEvents: WsEvent[];
  /**
   * Resolves once every HTTP client has finished a request it started after `since`; rejects
   * after `timeoutMs` (default 240 s) naming the clients not served.
   */
  servedSince(since: number, timeoutMs?: number): Promise<void>;
  /** Stops sending, waits for the requests in flight, closes the sockets. */
  stop(): Promise<void>;
}

const CHAT_BODY = (stream: boolean) =>
  JSON.stringify({ model: 'openclaw', stream, messages: [{ role: 'user', content: 'hi' }] });

async function once(opts: TrafficOptions, kind: HttpClientKind, client: string): Promise<RequestOutcome> {
  const startedAt = Date.now();
  const base = `http://127.0.0.1:${opts.port}`;
  try {
    const res =
      kind === 'healthz'
        ? await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(opts.requestTimeoutMs ?? 120_000) })
        : await fetch(`${base}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${opts.token}`, 'content-type': 'application/json' },
            body: CHAT_BODY(kind === 'chat-stream'),
            signal: AbortSignal.timeout(opts.requestTimeoutMs ?? 120_000),
          });
    const text = await res.text();
    // A stream that carries an error event (OpenClaw streams a refused key as one) is a failure.
    const complete = kind !== 'chat-stream' || (text.includes('[DONE]') && !text.includes('"error"'));
    return {
      client,
      kind,
      startedAt,
      endedAt: Date.now(),
      status: res.status,
      error: null,
      ok: res.status >= 200 && res.status < 300 && complete,
      keyhash: /keyhash=([0-9a-f]{16})/.exec(text)?.[1] ?? null,
    };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return {
      client,
      kind,
      startedAt,
      endedAt: Date.now(),
      status: 0,
      error: cause?.code ?? (err as Error).name ?? 'error',
      ok: false,
      keyhash: null,
    };
  }
}

/** Starts the clients; they run until `stop()`. */
export function startTraffic(opts: TrafficOptions): TrafficRun {
  const outcomes: RequestOutcome[] = [];
  const wsEvents: WsEvent[] = [];
  let running = true;
  const loops = opts.clients.map(async (kind, i) => {
    const name = `${kind}-${i}`;
    while (running) {
      outcomes.push(await once(opts, kind, name));
      if (opts.gapMs) await new Promise((r) => setTimeout(r, opts.gapMs));
    }
  });
  const sockets = new Set<WebSocket>();
  const wsLoops = Array.from({ length: opts.websockets ?? 0 }, async (_, i) => {
    const name = `ws-${i}`;
    while (running) {
      await new Promise<void>((resolve) => {
        const ws = new WebSocket(`ws://127.0.0.1:${opts.port}/`);
        sockets.add(ws);
        ws.onopen = () => wsEvents.push({ client: name, at: Date.now(), event: 'open' });
        ws.onmessage = (m) => {
          const msg = parseFrame(m.data);
          if (msg?.hello !== undefined) wsEvents.push({ client: name, at: Date.now(), event: 'hello' });
          if (msg?.type === 'event' && msg.event === 'connect.challenge' && opts.wsToken) {
            ws.send(JSON.stringify(connectRequest(opts.wsToken)));
          }
          if (msg?.type === 'res' && msg.id === CONNECT_ID) {
            wsEvents.push({ client: name, at: Date.now(), event: msg.ok ? 'hello' : 'refused' });
          }
        };
        ws.onerror = () => wsEvents.push({ client: name, at: Date.now(), event: 'error' });
        ws.onclose = (e) => {
          sockets.delete(ws);
          wsEvents.push({ client: name, at: Date.now(), event: 'close', code: e.code });
          resolve();
        };
      });
      if (running) await new Promise((r) => setTimeout(r, 100));
    }
  });
  const names = opts.clients.map((kind, i) => `${kind}-${i}`);
  return {
    outcomes,
    wsEvents,
    servedSince: async (since, timeoutMs = 240_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const done = new Set(outcomes.filter((o) => o.startedAt > since).map((o) => o.client));
        const waiting = names.filter((c) => !done.has(c));
        if (waiting.length === 0) return;
        if (Date.now() > deadline) {
          throw new Error(`${waiting.join(', ')} not served after ${new Date(since).toISOString()}`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    stop: async () => {
      running = false;
      for (const ws of sockets) ws.close(1000);
      await Promise.all([...loops, ...wsLoops]);
    },
  };
}

const CONNECT_ID = 'keyroll-traffic-connect';

/**
 * OpenClaw's gateway protocol handshake (docs/gateway/protocol.md of the package): a backend
 * client authenticating with the shared gateway token.
 */
function connectRequest(token: string) {
  return {
    type: 'req',
    id: CONNECT_ID,
    method: 'connect',
    params: {
      minProtocol: 3,
      maxProtocol: 4,
      client: { id: 'gateway-client', version: '0.1.0', platform: 'linux', mode: 'backend' },
      role: 'operator',
      scopes: ['operator.read'],
      caps: [],
      commands: [],
      permissions: {},
      auth: { token },
      locale: 'en-US',
      userAgent: 'keyroll-traffic/0.1.0',
    },
  };
}

// biome-ignore lint/suspicious/noExplicitAny: frames are probed field by field.
function parseFrame(data: unknown): Record<string, any> | null {
  try {
    return JSON.parse(String(data));
  } catch {
    return null;
  }
}

/** Outcomes that failed, in a form fit for an assertion message. */
export function failures(outcomes: readonly RequestOutcome[]): string[] {
  return outcomes
    .filter((o) => !o.ok)
    .map((o) => `${o.client} ${new Date(o.startedAt).toISOString()} → ${o.status || o.error}`);
}

/** p50 / p99 / max of request durations in ms. */
export function latency(outcomes: readonly RequestOutcome[]): { p50: number; p99: number; max: number } {
  const d = outcomes.map((o) => o.endedAt - o.startedAt).sort((a, b) => a - b);
  const at = (q: number) => d[Math.min(d.length - 1, Math.floor(q * d.length))] ?? 0;
  return { p50: at(0.5), p99: at(0.99), max: d.at(-1) ?? 0 };
}
