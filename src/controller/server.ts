// Owns the controller's HTTP surface: the /_kilo/* wire contract, auth, limits and timeouts, and
// which port serves what (the public port proxies everything else to the gateway).
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer, getLoopback, type LoopbackResponse } from '../adapters/loopback-http.ts';
import { constantTimeEqual, matchToken } from '../fingerprint.ts';
import { checkKeyValue, checkVersionLabel } from '../keys.ts';
import type { StateWait } from '../kilo-state.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import type { DeliveryResult } from './delivery.ts';
import { type FrontDoor, rawReply, sendJson as send } from './front-door.ts';
import { METRICS_CONTENT_TYPE, RequestCounter, renderMetrics } from './metrics.ts';
import { parseWait } from './state-wait.ts';
import {
  errInfo,
  GatewayAlreadyRunningError,
  type RestartCounts,
  SupervisorShuttingDownError,
  type SupervisorState,
  type SupervisorStats,
} from './supervisor.ts';

export const MAX_BODY_BYTES = 64 * 1024;

export type LifecycleState =
  | { state: 'bootstrapping'; phase: string }
  | { state: 'starting' }
  | { state: 'ready' }
  | { state: 'degraded'; stage: string };

export interface GatewayControl {
  getStats(): SupervisorStats;
  getState(): SupervisorState;
  start(): Promise<void>;
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** Restart counts by strategy and outcome, for /metrics (the Supervisor has them). */
  restartCounts?(): RestartCounts;
}

/**
 * What one listening port serves. `both`: health, readiness, `/_kilo/*` and the proxy (one port,
 * as in KiloClaw). With `--admin-port`: `public` serves health, readiness and the proxy; `admin`
 * serves health, readiness and `/_kilo/*`.
 */
export type PortRole = 'both' | 'public' | 'admin';

export interface ServerDeps {
  /** The controller token: `/_kilo/*` bearer. */
  token: string;
  /** Accepted too while the controller token is being rotated (KEYROLL_CONTROLLER_TOKEN_PREVIOUS). */
  previousToken?: string | null;
  patchable: readonly string[];
  /** The current gateway's loopback port (it changes with every surge restart). */
  gatewayPort: () => number;
  lifecycle: () => LifecycleState;
  gateway: GatewayControl;
  deliver: (vars: Record<string, string>) => Promise<DeliveryResult>;
  /** Records the label of the last patch (`X-Keyroll-Key-Version`). */
  setKeyVersion: (version: string | null) => void;
  /** `GET /_kilo/state`; fingerprints keyed with the token the caller authenticated with. */
  observe: (hmacKey: string) => Promise<unknown>;
  /**
   * `GET /_kilo/state` that asks to wait (src/controller/state-wait.ts): the state once the wait
   * is over, or null when the caller left (`gone`). Without it every read is answered at once.
   */
  observeWaiting?: ((hmacKey: string, wait: StateWait, gone: AbortSignal) => Promise<unknown>) | null;
  /** `GET /_kilo/version`'s body. */
  version: () => unknown;
  /** The proxy; without it every path outside `/_kilo/*` is 404. */
  frontDoor?: FrontDoor | null;
  secrets: SecretRegistry;
  log: Logger;
  readyProbeTimeoutMs?: number;
  /** Deadline for reading a `/_kilo/*` request body. */
  bodyTimeoutMs?: number;
}

/** A `/_kilo/*` route; `token` is the one the caller authenticated with (current or previous). */
type Handler = (req: IncomingMessage, res: ServerResponse, token: string) => Promise<void>;

/**
 * What the handlers of one controller share (its public and admin ports are two handlers over the
 * same deps): the answer counts when there is no front door, and the last rotation's time.
 */
interface Shared {
  requests: RequestCounter;
  lastRotationMs: number | null;
}
const sharedByDeps = new WeakMap<ServerDeps, Shared>();

function sharedOf(deps: ServerDeps): Shared {
  let s = sharedByDeps.get(deps);
  if (!s) {
    s = { requests: deps.frontDoor?.requests ?? new RequestCounter(), lastRotationMs: null };
    sharedByDeps.set(deps, s);
  }
  return s;
}

/** The `route` label of an answer: a fixed set, never the request's own path. */
const OWN_ROUTES = new Set(['/health', '/readyz', '/metrics', '/_kilo/health']);

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** `Authorization: Bearer <token>`: scheme case-insensitive, token compared in constant time. */
export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const parts = header.trim().split(/\s+/);
  if (parts.length !== 2 || parts[0]!.toLowerCase() !== 'bearer') return false;
  return constantTimeEqual(parts[1]!, token);
}

/** The accepted token a `Bearer` header carries (the current one or the previous one), or null. */
export function authorizedToken(
  header: string | undefined,
  token: string,
  previous: string | null,
): string | null {
  if (!header) return null;
  const parts = header.trim().split(/\s+/);
  if (parts.length !== 2 || parts[0]!.toLowerCase() !== 'bearer') return null;
  return matchToken(parts[1]!, [token, previous]);
}

class BodyTooLarge extends Error {}
class BodyTimeout extends Error {}

/** The body, at most `limit` bytes, within `timeoutMs` (a slow body is cut, not waited for). */
async function readBody(req: IncomingMessage, limit: number, timeoutMs: number): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw new BodyTooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    req.destroy(new BodyTimeout());
  }, timeoutMs);
  try {
    for await (const chunk of req) {
      const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
      size += b.length;
      if (size > limit) throw new BodyTooLarge();
      chunks.push(b);
    }
  } catch (err) {
    throw timedOut ? new BodyTimeout() : err;
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

type PatchCheck = { ok: true; vars: Record<string, string> } | { ok: false; error: string };

/** Pure: validates the whole env/patch body before anything is applied (KiloClaw's strings). */
export function validatePatch(text: string, patchable: readonly string[]): PatchCheck {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { ok: false, error: 'Invalid JSON body' };
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { ok: false, error: 'Body must be a JSON object' };
  }
  const entries = Object.entries(body);
  if (entries.length === 0) return { ok: false, error: 'Body must contain at least one key' };
  const vars: Record<string, string> = {};
  for (const [key, value] of entries) {
    // A key is echoed only when it looks like a variable name: a caller who put a secret in the
    // key position must not get it back.
    const shown = ENV_NAME.test(key) ? key : '<invalid name>';
    if (!patchable.includes(key)) return { ok: false, error: `Key '${shown}' is not patchable` };
    if (typeof value !== 'string') return { ok: false, error: `Value for '${shown}' must be a string` };
    // Every patchable variable is a credential the gateway sends on: one printable token, so a
    // value can never smuggle a second header line or an empty key into the child.
    const why = checkKeyValue(value);
    if (why !== null) return { ok: false, error: `Value for '${shown}' ${why}` };
    vars[key] = value;
  }
  return { ok: true, vars };
}

export function createControllerHandler(deps: ServerDeps, role: PortRole = 'both') {
  const { log } = deps;
  const probeTimeout = deps.readyProbeTimeoutMs ?? 2_000;
  const bodyTimeout = deps.bodyTimeoutMs ?? 30_000;
  const adminHere = role !== 'public';
  const proxyHere = role !== 'admin' ? (deps.frontDoor ?? null) : null;
  const shared = sharedOf(deps);
  // `/metrics` is the controller's on the admin port only; on a port that proxies, it is the
  // gateway's path like any other, and the controller's own is `/_kilo/metrics`.
  const metricsHere = role === 'admin';

  const metrics = async (_req: IncomingMessage, res: ServerResponse) => {
    const fd = deps.frontDoor ?? null;
    const stats = deps.gateway.getStats();
    const fdStats = fd?.stats();
    const totals = fd?.totals();
    const counts = deps.gateway.restartCounts?.();
    const last = stats.lastRestart;
    const text = await renderMetrics({
      requests: shared.requests.entries(),
      inFlight: fdStats?.inFlight ?? 0,
      websockets: fdStats?.websockets ?? 0,
      holdQueueDepth: fdStats?.held ?? 0,
      heldTotal: totals?.held ?? 0,
      holdRefusedTotal: totals?.holdRefused ?? 0,
      keyRejectedTotal: totals?.keyRejected ?? 0,
      acceptedTotal: totals?.accepted ?? 0,
      restarts: counts?.byOutcome ?? [],
      surgeFallbacksTotal: counts?.surgeFallbacks ?? 0,
      gatewayCrashesTotal: counts?.crashes ?? stats.restarts,
      gatewayUp: stats.state === 'running',
      lastRotationMs: shared.lastRotationMs,
      lastRestartAtMs: last ? Date.parse(last.at) : null,
      lastRestartDurationMs: last?.durationMs ?? null,
    });
    res.writeHead(200, {
      'content-type': METRICS_CONTENT_TYPE,
      'content-length': String(Buffer.byteLength(text)),
      'cache-control': 'no-store',
    });
    res.end(text);
  };

  const lifecycleBody = () => {
    const l = deps.lifecycle();
    if (l.state === 'bootstrapping') return { status: 'ok', state: l.state, phase: l.phase };
    if (l.state === 'degraded')
      return { status: 'ok', state: l.state, error: `Startup failed during ${l.stage}` };
    return { status: 'ok', state: l.state };
  };

  const routes: Record<string, Handler> = {
    'GET /_kilo/gateway/status': async (_req, res) => send(res, 200, deps.gateway.getStats()),

    'POST /_kilo/gateway/start': async (_req, res) => {
      try {
        await deps.gateway.start();
        send(res, 200, { ok: true });
      } catch (err) {
        if (err instanceof GatewayAlreadyRunningError) {
          send(res, 409, { error: 'Gateway already running or starting' });
        } else if (err instanceof SupervisorShuttingDownError) {
          send(res, 409, { error: 'Gateway is shutting down' });
        } else {
          log.error({ err: errInfo(err) }, 'Gateway start failed');
          send(res, 500, { error: 'Failed to start gateway' });
        }
      }
    },

    'POST /_kilo/gateway/stop': async (_req, res) => {
      try {
        await deps.gateway.stop();
        send(res, 200, { ok: true });
      } catch (err) {
        log.error({ err: errInfo(err) }, 'Gateway stop failed');
        send(res, 500, { error: 'Failed to stop gateway' });
      }
    },

    'POST /_kilo/gateway/restart': async (_req, res) => {
      try {
        await deps.gateway.restart();
        send(res, 200, { ok: true });
      } catch (err) {
        if (err instanceof SupervisorShuttingDownError) {
          send(res, 409, { error: 'Gateway is shutting down' });
        } else {
          log.error({ err: errInfo(err) }, 'Gateway restart failed');
          send(res, 500, { error: 'Failed to restart gateway' });
        }
      }
    },

    'GET /_kilo/gateway/ready': async (_req, res) => {
      const s = deps.gateway.getState();
      if (s !== 'running' && s !== 'starting') {
        send(res, 503, { ready: false, error: 'Gateway not running' });
        return;
      }
      let upstream: LoopbackResponse;
      try {
        upstream = await getLoopback(deps.gatewayPort(), '/readyz', {
          signal: AbortSignal.timeout(probeTimeout),
          maxBytes: MAX_BODY_BYTES,
        });
      } catch {
        send(res, 502, { ready: false, error: 'Failed to reach gateway' });
        return;
      }
      let body: unknown;
      const ok = upstream.status >= 200 && upstream.status < 300;
      try {
        body = JSON.parse(upstream.text);
      } catch {
        body = { ready: ok };
      }
      send(res, ok ? 200 : 503, body);
    },

    'POST /_kilo/env/patch': async (req, res) => {
      const versionHeader = req.headers['x-keyroll-key-version'];
      // HTTP's optional whitespace only (Node strips it already): String.trim() would also drop a
      // no-break space (byte 0xA0) and accept a label the sources refuse (found by the fuzz test).
      const version =
        typeof versionHeader === 'string' ? versionHeader.replace(/^[ \t]+|[ \t]+$/g, '') : null;
      if (version !== null && checkVersionLabel(version) !== null) {
        send(res, 400, { error: 'Invalid X-Keyroll-Key-Version header' });
        return;
      }
      const text = await readBody(req, MAX_BODY_BYTES, bodyTimeout);
      const check = validatePatch(text, deps.patchable);
      if (!check.ok) {
        send(res, 400, { error: check.error });
        return;
      }
      // Registered before anything else runs, so no log line can carry the new values.
      for (const [name, v] of Object.entries(check.vars)) deps.secrets.add(v, `env:${name}`);
      let result: DeliveryResult;
      try {
        result = await deps.deliver(check.vars);
      } catch (err) {
        log.error({ err: errInfo(err) }, 'Env patch delivery failed');
        send(res, 500, { error: 'Failed to apply env patch' });
        return;
      }
      deps.setKeyVersion(version);
      shared.lastRotationMs = Date.now();
      log.info(
        {
          keys: Object.keys(check.vars),
          signaled: result.signaled,
          migratedProfiles: result.migratedProfiles,
          version,
        },
        'Env patched',
      );
      send(res, 200, { ok: true, signaled: result.signaled, migratedProfiles: result.migratedProfiles });
    },

    'GET /_kilo/state': async (req, res, token) => {
      const asked = parseWait(req.headers);
      if (!asked.ok) return send(res, 400, { error: asked.error });
      const { wait } = asked;
      const waiting = deps.observeWaiting;
      if (!wait || !waiting) return send(res, 200, await deps.observe(token));
      const state = await whileConnected(res, (gone) => waiting(token, wait, gone));
      if (state !== null) send(res, 200, state);
    },

    'GET /_kilo/version': async (_req, res) => send(res, 200, deps.version()),

    'GET /_kilo/metrics': metrics,
  };

  const canServe = () => deps.frontDoor?.canServe() ?? deps.gateway.getState() === 'running';

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req.url);
    const kilo = path === '/_kilo' || path.startsWith('/_kilo/');
    const own = kilo || OWN_ROUTES.has(path) || !proxyHere;
    const route = !own
      ? 'proxy'
      : kilo
        ? routes[`${req.method} ${path}`]
          ? path
          : '/_kilo/*'
        : OWN_ROUTES.has(path)
          ? path
          : 'other';
    // Counted once the answer is over; `none`: the client left before one was sent.
    res.once('close', () => shared.requests.count(route, res.headersSent ? res.statusCode : 'none'));
    try {
      if (req.method === 'GET' && path === '/health') return send(res, 200, { status: 'ok' });
      if (req.method === 'GET' && path === '/_kilo/health') return send(res, 200, lifecycleBody());
      // For the orchestrator: can a client be served now (or within a planned restart's hold)?
      if (req.method === 'GET' && path === '/readyz') {
        return canServe() ? send(res, 200, { ready: true }) : send(res, 503, { ready: false });
      }
      const isMetrics = metricsHere && req.method === 'GET' && path === '/metrics';
      if (!kilo && !isMetrics) {
        if (proxyHere) return proxyHere.handleRequest(req, res);
        return send(res, 404, { error: 'Not found' });
      }
      if (!adminHere) return send(res, 404, { error: 'Not found' });
      const handler = isMetrics ? metrics : routes[`${req.method} ${path}`];
      if (!handler) return send(res, 401, { error: 'Unauthorized', code: 'controller_route_unavailable' });
      const token = authorizedToken(req.headers.authorization, deps.token, deps.previousToken ?? null);
      if (token === null) return send(res, 401, { error: 'Unauthorized' });
      const l = deps.lifecycle();
      // Metrics answer during start-up too: that the gateway is not up yet is worth scraping.
      if ((l.state === 'bootstrapping' || l.state === 'starting') && handler !== metrics) {
        return send(res, 503, { error: 'Service starting', state: l.state });
      }
      await handler(req, res, token);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        send(res, 413, { error: 'Payload too large' }, { connection: 'close' });
        req.resume();
        return;
      }
      if (err instanceof BodyTimeout) {
        res.destroy();
        return;
      }
      log.error({ err: errInfo(err), path }, 'Request failed');
      send(res, 500, { error: 'Internal error' });
    }
  }

  /** WebSocket upgrades: proxied on the public side; `/_kilo/*` never upgrades. */
  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    const path = pathOf(req.url);
    if (!proxyHere || path === '/_kilo' || path.startsWith('/_kilo/')) {
      shared.requests.count('websocket', 404);
      rawReply(socket, 404, { error: 'Not found' });
      return;
    }
    proxyHere.handleUpgrade(req, socket, head);
  }

  return Object.assign(handle, { upgrade });
}

/** Runs `fn` with a signal that aborts if the client goes away before `res` is answered. */
async function whileConnected<T>(res: ServerResponse, fn: (gone: AbortSignal) => Promise<T>): Promise<T> {
  const gone = new AbortController();
  const left = () => gone.abort();
  if (res.destroyed) left();
  else res.once('close', left);
  try {
    return await fn(gone.signal);
  } finally {
    res.off('close', left);
  }
}

function pathOf(url: string | undefined): string {
  try {
    return new URL(url ?? '/', 'http://controller').pathname;
  } catch {
    return '/';
  }
}

export interface ListenOptions {
  port: number;
  host: string;
  /** Whole-request deadline (slow bodies); 0 = none (the proxy port, where requests may be held). */
  requestTimeoutMs?: number;
  /** A socket with no bytes either way for this long is closed (0 = never). */
  idleTimeoutMs?: number;
  /** Connections beyond this are closed at once. */
  maxConnections?: number;
  headersTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  /** How often Node checks those deadlines. */
  checkIntervalMs?: number;
  /** Where errors of the listening server go (EMFILE on accept, say): logged, never fatal. */
  log?: Logger;
}

export async function listen(
  handler: ((req: IncomingMessage, res: ServerResponse) => Promise<void>) & {
    upgrade?: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  },
  opts: ListenOptions,
): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const headersTimeout = opts.headersTimeoutMs ?? 10_000;
  const server = createServer(
    {
      requestTimeout: opts.requestTimeoutMs ?? 30_000,
      headersTimeout,
      keepAliveTimeout: opts.keepAliveTimeoutMs ?? 5_000,
      connectionsCheckingInterval: opts.checkIntervalMs ?? Math.min(1_000, headersTimeout),
    },
    (req, res) => void handler(req, res),
  );
  if (opts.idleTimeoutMs !== undefined) server.setTimeout(opts.idleTimeoutMs, (socket) => socket.destroy());
  if (opts.maxConnections !== undefined) server.maxConnections = opts.maxConnections;
  const upgrade = handler.upgrade;
  if (upgrade) server.on('upgrade', (req, socket, head) => upgrade(req, socket, head));
  // A client that breaks the protocol gets 400 and is cut; never an unhandled error.
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy();
    const status =
      err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    const reason =
      status === 431 ? 'Request Header Fields Too Large' : status === 408 ? 'Request Timeout' : 'Bad Request';
    // Destroyed once written: a half-closed socket that keeps sending would keep its place under
    // --max-connections for ever (each byte resets the idle timeout).
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`, () =>
      socket.destroy(),
    );
  });
  // A server error after listen (EMFILE on accept, say) is logged and never fatal: the listener
  // stays for the server's life (an 'error' event with none would crash the process).
  let listening = false;
  server.on('error', (err: NodeJS.ErrnoException) => {
    if (!listening) return; // a failed listen is the caller's error, thrown below
    opts.log?.error({ err: errInfo(err), port: opts.port, host: opts.host }, 'HTTP server error');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      listening = true;
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  // server.close waits for upgraded sockets too; the front door closes those itself.
  return { server, port, close };
}
