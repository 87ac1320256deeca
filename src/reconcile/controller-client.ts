// Owns HTTP to one in-pod controller: `GET /_kilo/state` and `POST /_kilo/env/patch`, bounded and typed.
//
// Plain node:http(s) with one keep-alive agent per protocol shared by every client, not `fetch`: a
// pass over 10,000 targets makes one or a few small requests to each, and fetch's per-request
// machinery (WHATWG streams, Headers, Response, AbortSignal.any/timeout per call) cost most of
// keyroll's CPU per target and much of its garbage (BENCHMARKS.md, reconcile fleet). Modules come
// from `process.getBuiltinModule`, as in src/adapters/loopback-http.ts, so undici is not loaded.
import type * as Http from 'node:http';
import type * as Https from 'node:https';
import type { Socket } from 'node:net';
import { type ObservedState, parseObservedState } from '../kilo-state.ts';

const http: typeof Http = process.getBuiltinModule('node:http');
const https: typeof Https = process.getBuiltinModule('node:https');

export type ControllerErrorKind = 'network' | 'timeout' | 'http' | 'invalid-response';

/** A failed controller call; `retryable` is true for network errors, timeouts, 429 and 5xx only. */
export class ControllerError extends Error {
  override name = 'ControllerError';
  readonly kind: ControllerErrorKind;
  readonly status: number | undefined;
  readonly retryable: boolean;
  constructor(kind: ControllerErrorKind, message: string, status?: number) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.retryable =
      kind === 'network' || kind === 'timeout' || status === 429 || (status !== undefined && status >= 500);
  }
}

/** A controller's answer to `POST /_kilo/env/patch`. */
export interface PatchResponse {
  ok: boolean;
  signaled: boolean;
  migratedProfiles: number;
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The patch answer with only its known fields (`migratedProfiles` 0 when an older controller
 * omits it), or null when it is not one. Hand-written, as the `/_kilo/state` check is: a rotation
 * pass reads one per target.
 */
export function parsePatchResponse(body: unknown): PatchResponse | null {
  if (!isObj(body) || typeof body.ok !== 'boolean' || typeof body.signaled !== 'boolean') return null;
  const m = body.migratedProfiles === undefined ? 0 : body.migratedProfiles;
  if (!Number.isSafeInteger(m) || (m as number) < 0) return null;
  return { ok: body.ok, signaled: body.signaled, migratedProfiles: m as number };
}

/** `: error (code)` from a controller's error body `{error, code?}`, or '' when it is not one. */
function errorDetail(body: unknown): string {
  if (!isObj(body) || typeof body.error !== 'string') return '';
  if (body.code !== undefined && typeof body.code !== 'string') return '';
  const code = body.code ? ` (${body.code})` : '';
  return `: ${body.error.slice(0, 200)}${code}`;
}

/** The port the pipeline talks to; tests and other drivers may provide their own. */
export interface ControllerClient {
  getState(signal: AbortSignal): Promise<ObservedState>;
  patchEnv(vars: Record<string, string>, version: string, signal: AbortSignal): Promise<PatchResponse>;
}

export interface HttpControllerOptions {
  url: string;
  token: string;
  timeoutMs: number;
}

/** A controller answer is a few hundred bytes; anything past this is not one. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/**
 * Idle keep-alive sockets are closed after this, below the controller's 5 s keepAliveTimeout
 * (src/controller/server.ts) so that keyroll, not the server, closes an idle connection: a reused
 * socket the server has just closed would fail the request.
 */
export const IDLE_SOCKET_MS = 2_000;

/**
 * At most this many idle sockets are kept across all controllers; past it the longest-idle one is
 * closed. A converged pass talks to each target once, so keeping every connection until
 * IDLE_SOCKET_MS would hold one socket per target; a rotation re-observes the targets in flight
 * (at most 1,000, the concurrency bound) every poll interval, and those stay connected.
 */
export const MAX_IDLE_SOCKETS = 1024;

/** A keep-alive agent whose idle sockets are bounded in number (oldest closed first) and in time. */
function boundedAgent<A extends Http.Agent>(Base: new (o: Http.AgentOptions) => A): A {
  // Idle sockets in the order they became idle, with the time each must be closed by.
  const idle = new Map<Socket, number>();
  const watched = new WeakSet<Socket>();
  let sweeper: NodeJS.Timeout | null = null;
  const sweep = () => {
    const now = Date.now();
    for (const [socket, closeAt] of idle) {
      if (closeAt <= now) {
        idle.delete(socket);
        socket.destroy();
      }
    }
    if (idle.size === 0 && sweeper) {
      clearInterval(sweeper);
      sweeper = null;
    }
  };
  // No socket timeouts: the agent answers each one with a scan of every origin's idle sockets,
  // which with a socket per target made closing them quadratic. One sweep closes what expired.
  const agent = new Base({ keepAlive: true, scheduling: 'lifo' });
  const reuse = agent.reuseSocket.bind(agent);
  // `reuseSocket` is the agent's documented hook for a pooled socket taken by a request.
  agent.reuseSocket = (duplex, req) => {
    idle.delete(duplex as Socket);
    reuse(duplex, req);
  };
  agent.on('free', (socket: Socket) => {
    if (socket.destroyed) return;
    if (!watched.has(socket)) {
      watched.add(socket);
      socket.once('close', () => idle.delete(socket));
    }
    // The agent armed the server's Keep-Alive hint (less a second) as the socket's timeout;
    // keep the shorter of that and IDLE_SOCKET_MS, enforced by the sweep instead.
    const limit = Math.min(socket.timeout || IDLE_SOCKET_MS, IDLE_SOCKET_MS);
    socket.setTimeout(0);
    idle.delete(socket);
    idle.set(socket, Date.now() + limit);
    if (idle.size > MAX_IDLE_SOCKETS) {
      const oldest = idle.keys().next().value as Socket;
      idle.delete(oldest);
      oldest.destroy();
    }
    if (!sweeper) {
      sweeper = setInterval(sweep, Math.max(50, Math.floor(IDLE_SOCKET_MS / 8)));
      sweeper.unref();
    }
  });
  return agent;
}

let agents: { http: Http.Agent; https: Https.Agent } | null = null;
function agentFor(protocol: string): Http.Agent {
  agents ??= { http: boundedAgent(http.Agent), https: boundedAgent(https.Agent) };
  return protocol === 'https:' ? agents.https : agents.http;
}

/**
 * Abort listeners by signal, one real listener per signal: a pass hands every call the same
 * long-lived signal, and an EventTarget checks each new listener against all it holds, so a
 * listener per request in flight made adding one cost as much as the requests in flight.
 */
const aborts = new WeakMap<AbortSignal, Set<() => void>>();
function onAbort(signal: AbortSignal, fn: () => void): () => void {
  let set = aborts.get(signal);
  if (!set) {
    const fns = new Set<() => void>();
    set = fns;
    aborts.set(signal, fns);
    signal.addEventListener(
      'abort',
      () => {
        aborts.delete(signal);
        for (const f of fns) f();
      },
      { once: true },
    );
  }
  set.add(fn);
  return () => set.delete(fn);
}

interface Endpoint {
  protocol: string;
  hostname: string;
  port: string;
  path: string;
}

function endpoints(base: string, paths: readonly string[]): Endpoint[] {
  const u = new URL(base.endsWith('/') ? base : `${base}/`);
  // An IPv6 literal comes back bracketed from URL; node:http wants it bare.
  const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  // The base's query, if any, is dropped as new URL(path, base) drops it.
  return paths.map((p) => ({ protocol: u.protocol, hostname, port: u.port, path: `${u.pathname}${p}` }));
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * Retried at once (a GET only), not through the retry policy: an idle socket the server closed
 * as we reused it. A POST goes through the retry policy like any network error.
 */
function staleSocket(err: NodeJS.ErrnoException, req: Http.ClientRequest): boolean {
  return req.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE');
}

export function httpControllerClient(opts: HttpControllerOptions): ControllerClient {
  const [statePath, patchPath] = endpoints(opts.url, ['_kilo/state', '_kilo/env/patch']) as [
    Endpoint,
    Endpoint,
  ];
  const authorization = `Bearer ${opts.token}`;

  /** One exchange; resolves with the status and the parsed body (null when empty or not JSON). */
  function exchange(
    method: 'GET' | 'POST',
    at: Endpoint,
    name: string,
    signal: AbortSignal,
    extra: Record<string, string>,
    body: string | undefined,
    firstTry: boolean,
  ): Promise<{ status: number; body: unknown }> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(abortReason(signal));
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: unknown, value?: { status: number; body: unknown }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stopListening();
        if (err) reject(err);
        else resolve(value!);
      };
      const req = (at.protocol === 'https:' ? https : http).request({
        method,
        protocol: at.protocol,
        hostname: at.hostname,
        port: at.port,
        path: at.path,
        agent: agentFor(at.protocol),
        headers: {
          authorization,
          accept: 'application/json',
          ...extra,
          ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}),
        },
      });
      const stopListening = onAbort(signal, () => {
        finish(abortReason(signal));
        req.destroy();
      });
      timer = setTimeout(() => {
        finish(new ControllerError('timeout', `${name} timed out after ${opts.timeoutMs} ms`));
        req.destroy();
      }, opts.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (settled) return;
        if (firstTry && method === 'GET' && staleSocket(err, req)) {
          settled = true;
          clearTimeout(timer);
          stopListening();
          exchange(method, at, name, signal, extra, body, false).then(resolve, reject);
          return;
        }
        finish(new ControllerError('network', `${name} failed: ${err.code ?? err.message}`));
      });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            finish(
              new ControllerError(
                'invalid-response',
                `${name}: response larger than ${MAX_RESPONSE_BYTES} bytes`,
                res.statusCode,
              ),
            );
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => {
          const text =
            chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = null;
          if (text) {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = null;
            }
          }
          finish(null, { status: res.statusCode ?? 0, body: parsed });
        });
        res.on('aborted', () =>
          finish(new ControllerError('network', `${name}: response body lost (aborted)`)),
        );
        res.on('error', () => finish(new ControllerError('network', `${name}: response body lost (error)`)));
        res.on('close', () => {
          if (!res.complete) finish(new ControllerError('network', `${name}: response body lost (closed)`));
        });
      });
      req.end(body);
    });
  }

  async function call(
    method: 'GET' | 'POST',
    at: Endpoint,
    path: string,
    signal: AbortSignal,
    extra: Record<string, string> = {},
    body?: string,
  ): Promise<unknown> {
    const name = `${method} ${path}`;
    const res = await exchange(method, at, name, signal, extra, body, true);
    if (res.status < 200 || res.status > 299) {
      // Controllers answer with fixed error strings that never echo a value; keep the first 200
      // characters, and the CLI scrubs known secrets from everything it prints as a backstop.
      throw new ControllerError(
        'http',
        `${name} answered HTTP ${res.status}${errorDetail(res.body)}`,
        res.status,
      );
    }
    return res.body;
  }

  return {
    async getState(signal) {
      const body = await call('GET', statePath, '_kilo/state', signal);
      const parsed = parseObservedState(body);
      if (!parsed.ok) {
        throw new ControllerError(
          'invalid-response',
          `GET _kilo/state: unexpected response (fields: ${parsed.fields.join(', ')})`,
        );
      }
      return parsed.state;
    },
    async patchEnv(vars, version, signal) {
      const body = await call(
        'POST',
        patchPath,
        '_kilo/env/patch',
        signal,
        { 'content-type': 'application/json', 'x-keyroll-key-version': version },
        JSON.stringify(vars),
      );
      const parsed = parsePatchResponse(body);
      if (!parsed) {
        throw new ControllerError('invalid-response', 'POST _kilo/env/patch: unexpected response');
      }
      return parsed;
    },
  };
}
