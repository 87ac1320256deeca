// Owns the controller's front door: every client request outside /_kilo/* reaches the gateway
// through here (HTTP streamed both ways, SSE included, and WebSocket upgrades), and a planned
// restart either holds new requests until the next gateway is ready or re-routes them to a
// gateway started beside the old one, so that a rotation fails no client request.
//
// It also watches the answers go by: a 401 whose body says `authentication_error` is OpenClaw
// telling its client that the provider refused the key. Those counts, since the current gateway
// started or the key last changed, are what lets the reconciler say `KeyRejected` instead of
// "converged" while users get 401s.
import type * as Http from 'node:http';
import type { Duplex } from 'node:stream';
import { type Clock, systemClock } from '../clock.ts';
import type { KiloProxyFlow, KiloTraffic } from '../kilo-state.ts';
import type { Logger } from '../log.ts';
import { RequestCounter } from './metrics.ts';
import { CLOSE_SERVICE_RESTART, closeFrame, FrameBoundary } from './ws-frames.ts';

const http: typeof Http = process.getBuiltinModule('node:http');

export const PROXY_TOKEN_HEADER = 'x-kiloclaw-proxy-token';
/** Seconds a client is told to wait when the gateway cannot take its request. */
const RETRY_AFTER_S = '5';
/** Bytes of a response body inspected for a provider refusal. */
const SNIFF_BYTES = 4096;
const REFUSAL = /"type"\s*:\s*"authentication_error"/;

/** Request headers that belong to one hop, never forwarded (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  PROXY_TOKEN_HEADER,
]);

/** Where requests go: the gateway's loopback port and the PID serving it. */
export interface RouteTarget {
  port: number;
  pid: number;
}

/** The live-traffic counts `/_kilo/state` reports: the contract's own type. */
export type TrafficStats = KiloTraffic;

/** The front door's part of `/_kilo/state`'s `proxy`: the contract's own type. */
export type FrontDoorStats = KiloProxyFlow;

/** Cumulative counts for /metrics (unlike `TrafficStats`, never reset by a new gateway). */
export interface FrontDoorTotals {
  held: number;
  holdRefused: number;
  keyRejected: number;
  accepted: number;
}

export interface FrontDoorOptions {
  log: Logger;
  /** Longest a request waits during a hold; a hold older than this refuses new requests. */
  holdTimeoutMs: number;
  /** Most requests waiting at once; more are refused with 503. */
  holdMax: number;
  /** When set, every proxied request must carry it in `x-kiloclaw-proxy-token`. */
  proxyToken: string | null;
  /** Constant-time comparison (the controller's). */
  tokenEquals: (a: string, b: string) => boolean;
  /** The hold's time: its age, each held request's timeout (default systemClock). */
  clock?: Clock;
}

interface Upstream {
  port: number;
  inFlight: number;
  sockets: Set<WsPair>;
  idle: Set<() => void>;
}

interface Held {
  arrivedAt: number;
  start: (target: RouteTarget) => void;
  refuse: () => void;
  cancelTimeout: () => void;
  gone: boolean;
}

export class FrontDoor {
  readonly #o: FrontDoorOptions;
  readonly #clock: Clock;
  readonly #now: () => number;
  readonly #agent = new http.Agent({ keepAlive: true, maxFreeSockets: 64, timeout: 4_000 });
  readonly #upstreams = new Map<number, Upstream>();
  #target: RouteTarget | null = null;
  #holdSince: number | null = null;
  #held: Held[] = [];
  #hold = { heldRequests: 0, longestWaitMs: 0, refused: 0 };
  #lastHold: FrontDoorStats['lastHold'] = null;
  #traffic: TrafficStats = emptyTraffic(null);
  #totals: FrontDoorTotals = { held: 0, holdRefused: 0, keyRejected: 0, accepted: 0 };
  #closed = false;
  /** Answers by route and status, for /metrics: the HTTP handlers count theirs here too. */
  readonly requests = new RequestCounter();

  constructor(opts: FrontDoorOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#now = () => this.#clock.now();
  }

  /** Sends new requests (and every held one) to `target`; null refuses them with 503. */
  route(target: RouteTarget | null): void {
    if (target && this.#target?.pid !== target.pid) this.resetTraffic();
    this.#target = target;
    if (this.#holdSince !== null) {
      this.#lastHold = { ...this.#hold, endedAt: new Date(this.#now()).toISOString() };
      this.#holdSince = null;
    }
    const held = this.#held.splice(0);
    for (const h of held) {
      h.cancelTimeout();
      if (h.gone) continue;
      const waited = this.#now() - h.arrivedAt;
      if (this.#lastHold) this.#lastHold.longestWaitMs = Math.max(this.#lastHold.longestWaitMs, waited);
      if (target) h.start(target);
      else {
        if (this.#lastHold) this.#lastHold.refused++;
        this.#totals.holdRefused++;
        h.refuse();
      }
    }
    this.#o.log.info(
      { port: target?.port ?? null, pid: target?.pid ?? null, released: held.length },
      'Routing',
    );
  }

  /** From now on new requests wait (bounded) for the next `route()`. */
  hold(): void {
    if (this.#holdSince !== null) return;
    this.#holdSince = this.#now();
    this.#hold = { heldRequests: 0, longestWaitMs: 0, refused: 0 };
    this.#target = null;
    this.#o.log.info({ holdTimeoutMs: this.#o.holdTimeoutMs }, 'Holding new requests');
  }

  /**
   * Waits until no request is in flight to `port` (at most `timeoutMs`), then closes its
   * WebSockets with 1012 and drops idle connections to it. Resolves with what it found.
   */
  async drain(port: number, timeoutMs: number): Promise<{ timedOut: boolean; websocketsClosed: number }> {
    const up = this.#upstreams.get(port);
    if (!up) return { timedOut: false, websocketsClosed: 0 };
    let timedOut = false;
    if (up.inFlight > 0) {
      timedOut = !(await new Promise<boolean>((resolve) => {
        const done = (ok: boolean) => {
          clearTimeout(t);
          up.idle.delete(onIdle);
          resolve(ok);
        };
        const onIdle = () => done(true);
        const t = setTimeout(() => done(false), timeoutMs);
        up.idle.add(onIdle);
      }));
    }
    const websocketsClosed = up.sockets.size;
    for (const pair of [...up.sockets]) pair.closeForRestart();
    this.#dropIdleConnections(port);
    if (timedOut || websocketsClosed > 0) {
      this.#o.log.info({ port, timedOut, inFlight: up.inFlight, websocketsClosed }, 'Drained gateway');
    }
    return { timedOut, websocketsClosed };
  }

  /** The gateway can take a request now, or a planned restart will take it within the hold. */
  canServe(): boolean {
    if (this.#target) return true;
    return this.#holdSince !== null && this.#now() - this.#holdSince < this.#o.holdTimeoutMs;
  }

  /** Starts a new traffic window (a new key in file mode; a new gateway does it in `route`). */
  resetTraffic(): void {
    this.#traffic = emptyTraffic(new Date(this.#now()).toISOString());
  }

  traffic(): TrafficStats {
    return { ...this.#traffic };
  }

  totals(): FrontDoorTotals {
    return { ...this.#totals };
  }

  stats(): FrontDoorStats {
    let inFlight = 0;
    let websockets = 0;
    for (const up of this.#upstreams.values()) {
      inFlight += up.inFlight;
      websockets += up.sockets.size;
    }
    return {
      state: this.#target ? 'routing' : this.#holdSince !== null ? 'holding' : 'unavailable',
      target: this.#target?.port ?? null,
      inFlight,
      held: this.#held.length,
      websockets,
      lastHold: this.#lastHold,
    };
  }

  /** Refuses whatever waits, closes every WebSocket and upstream connection (controller shutdown). */
  close(): void {
    this.#closed = true;
    this.route(null);
    for (const up of this.#upstreams.values()) for (const pair of [...up.sockets]) pair.destroy();
    this.#agent.destroy();
  }

  /** The proxy token check (KiloClaw's `REQUIRE_PROXY_TOKEN`); true when not required. */
  tokenOk(headers: Http.IncomingHttpHeaders): boolean {
    const want = this.#o.proxyToken;
    if (want === null) return true;
    const got = headers[PROXY_TOKEN_HEADER];
    return typeof got === 'string' && this.#o.tokenEquals(got, want);
  }

  handleRequest(req: Http.IncomingMessage, res: Http.ServerResponse): void {
    if (!this.tokenOk(req.headers)) {
      sendJson(res, 401, { error: 'Unauthorized' });
      req.resume();
      return;
    }
    this.#admit(
      (target) => this.#forward(req, res, target),
      () => {
        sendJson(res, 503, { error: 'Gateway not ready' }, { 'retry-after': RETRY_AFTER_S });
        req.resume();
      },
      (onGone) => res.once('close', onGone),
    );
  }

  handleUpgrade(req: Http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => {});
    if (!this.tokenOk(req.headers)) {
      this.requests.count('websocket', 401);
      rawReply(socket, 401, { error: 'Unauthorized' });
      return;
    }
    this.#admit(
      (target) => this.#forwardUpgrade(req, socket, head, target),
      () => {
        this.requests.count('websocket', 503);
        rawReply(socket, 503, { error: 'Gateway not ready' }, { 'retry-after': RETRY_AFTER_S });
      },
      (onGone) => socket.once('close', onGone),
    );
  }

  /** Starts the request now, holds it, or refuses it. */
  #admit(
    start: (target: RouteTarget) => void,
    refuse: () => void,
    whenGone: (onGone: () => void) => void,
  ): void {
    if (this.#closed) {
      refuse();
      return;
    }
    if (this.#target) {
      start(this.#target);
      return;
    }
    const now = this.#now();
    const holding = this.#holdSince !== null && now - this.#holdSince < this.#o.holdTimeoutMs;
    if (!holding || this.#held.length >= this.#o.holdMax) {
      if (this.#holdSince !== null) {
        this.#hold.refused++;
        this.#totals.holdRefused++;
      }
      refuse();
      return;
    }
    const entry: Held = {
      arrivedAt: now,
      start,
      refuse,
      gone: false,
      cancelTimeout: this.#clock.setTimeout(() => {
        const i = this.#held.indexOf(entry);
        if (i >= 0) this.#held.splice(i, 1);
        this.#hold.refused++;
        this.#totals.holdRefused++;
        this.#hold.longestWaitMs = Math.max(this.#hold.longestWaitMs, this.#now() - entry.arrivedAt);
        if (!entry.gone) refuse();
      }, this.#o.holdTimeoutMs),
    };
    whenGone(() => {
      entry.gone = true;
    });
    this.#hold.heldRequests++;
    this.#totals.held++;
    this.#held.push(entry);
  }

  #upstream(port: number): Upstream {
    let up = this.#upstreams.get(port);
    if (!up) {
      up = { port, inFlight: 0, sockets: new Set(), idle: new Set() };
      this.#upstreams.set(port, up);
    }
    return up;
  }

  #release(up: Upstream): void {
    up.inFlight--;
    if (up.inFlight === 0) for (const fn of [...up.idle]) fn();
  }

  #forward(req: Http.IncomingMessage, res: Http.ServerResponse, target: RouteTarget): void {
    const up = this.#upstream(target.port);
    up.inFlight++;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      this.#release(up);
    };
    // A keep-alive connection the gateway closed just as it was reused fails before any answer
    // (ECONNRESET): a request without a body that cannot change anything is sent once more, on a
    // new connection, instead of answering 502 (as browsers and client-go do).
    const retriable =
      (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') &&
      (req.headers['content-length'] === undefined || req.headers['content-length'] === '0') &&
      req.headers['transfer-encoding'] === undefined;
    let preq: Http.ClientRequest;
    const send = (fresh: boolean) => {
      preq = http.request({
        host: '127.0.0.1',
        port: target.port,
        method: req.method,
        path: req.url,
        headers: forwardHeaders(req.headers, target.port, false),
        agent: fresh ? false : this.#agent,
      });
      const sent = preq;
      sent.on('response', (pres) => {
        const status = pres.statusCode ?? 502;
        res.writeHead(status, pres.statusMessage, responseHeaders(pres.headers));
        const sniff = this.#sniffer(req.method ?? 'GET', status, pres.headers['content-type'], target.pid);
        if (sniff) pres.on('data', sniff.feed);
        pres.pipe(res);
        pres.on('end', () => {
          sniff?.end();
          finish();
        });
        pres.on('error', () => {
          res.destroy();
          finish();
        });
      });
      sent.on('error', () => {
        if (!fresh && retriable && sent.reusedSocket && !res.headersSent && !res.destroyed) {
          send(true);
          sent.destroy();
          return;
        }
        finish();
        if (!res.headersSent) sendJson(res, 502, { error: 'Bad Gateway' });
        else res.destroy();
      });
      if (fresh) sent.end();
      else req.pipe(sent);
    };
    res.on('close', () => {
      // The client left before the answer ended: stop the gateway's work for it.
      if (!res.writableFinished) preq.destroy();
      finish();
    });
    send(false);
  }

  /** Counts one answer of the current gateway; inspects the body only where a refusal can be. */
  #sniffer(method: string, status: number, contentType: string | undefined, pid: number) {
    if (this.#target?.pid !== pid) return null;
    const t = this.#traffic;
    t.responses++;
    const stream = typeof contentType === 'string' && contentType.includes('text/event-stream');
    const accepting = status >= 200 && status < 300 && method === 'POST';
    if (status !== 401 && !(accepting && stream)) {
      if (accepting) this.#count('accepted', pid);
      return null;
    }
    let seen = '';
    let decided = false;
    const decide = () => {
      if (decided) return;
      decided = true;
      if (REFUSAL.test(seen)) this.#count('keyRejected', pid);
      else if (accepting) this.#count('accepted', pid);
    };
    return {
      feed: (chunk: Buffer) => {
        if (decided) return;
        seen += chunk.subarray(0, SNIFF_BYTES - seen.length).toString('latin1');
        if (seen.length >= SNIFF_BYTES || REFUSAL.test(seen)) decide();
      },
      end: decide,
    };
  }

  #count(what: 'accepted' | 'keyRejected', pid: number): void {
    if (this.#target?.pid !== pid) return;
    const at = new Date(this.#now()).toISOString();
    this.#traffic[what]++;
    this.#totals[what]++;
    if (what === 'accepted') this.#traffic.lastAcceptedAt = at;
    else this.#traffic.lastKeyRejectedAt = at;
  }

  #forwardUpgrade(req: Http.IncomingMessage, socket: Duplex, head: Buffer, target: RouteTarget): void {
    if (socket.destroyed) return;
    const up = this.#upstream(target.port);
    const preq = http.request({
      host: '127.0.0.1',
      port: target.port,
      method: req.method,
      path: req.url,
      headers: forwardHeaders(req.headers, target.port, true),
      agent: false,
    });
    preq.on('upgrade', (pres, upSocket, upHead) => {
      if (socket.destroyed) {
        upSocket.destroy();
        return;
      }
      this.requests.count('websocket', 101);
      socket.write(statusBlock(101, 'Switching Protocols', pres.rawHeaders));
      const pair = new WsPair(socket, upSocket, () => up.sockets.delete(pair));
      up.sockets.add(pair);
      pair.start(upHead, head);
    });
    preq.on('response', (pres) => {
      // The gateway answered without upgrading: relay its answer and end.
      this.requests.count('websocket', pres.statusCode ?? 502);
      socket.write(statusBlock(pres.statusCode ?? 502, pres.statusMessage ?? '', pres.rawHeaders));
      pres.pipe(socket);
    });
    preq.on('error', () => {
      if (socket.destroyed) return;
      this.requests.count('websocket', 502);
      rawReply(socket, 502, { error: 'Bad Gateway' });
    });
    socket.once('close', () => preq.destroy());
    preq.end();
  }

  #dropIdleConnections(port: number): void {
    const name = `127.0.0.1:${port}:`;
    for (const s of this.#agent.freeSockets[name] ?? []) s.destroy();
  }
}

/** One proxied WebSocket: client ↔ gateway bytes, relayed with backpressure both ways. */
class WsPair {
  readonly #client: Duplex;
  readonly #gateway: Duplex;
  readonly #frames = new FrameBoundary();
  readonly #onGone: () => void;
  #closing = false;
  #gone = false;

  constructor(client: Duplex, gateway: Duplex, onGone: () => void) {
    this.#client = client;
    this.#gateway = gateway;
    this.#onGone = onGone;
  }

  start(gatewayHead: Buffer, clientHead: Buffer): void {
    const client = this.#client;
    const gateway = this.#gateway;
    gateway.on('error', () => {});
    (client as { setTimeout?: (ms: number) => void }).setTimeout?.(0);
    if (clientHead.length > 0) gateway.write(clientHead);
    if (gatewayHead.length > 0) this.#fromGateway(gatewayHead);
    gateway.on('data', (chunk: Buffer) => this.#fromGateway(chunk));
    client.on('drain', () => gateway.resume());
    client.pipe(gateway);
    const gone = () => this.destroy();
    client.once('close', gone);
    gateway.once('close', () => {
      // The gateway went away by itself: let the client read what was sent, then end it.
      if (!this.#closing) client.end();
      this.#finish();
    });
  }

  /** Closes the client with 1012 at the next frame boundary, and the gateway side at once. */
  closeForRestart(): void {
    if (this.#closing || this.#gone) return;
    this.#closing = true;
    this.#client.unpipe(this.#gateway);
    if (this.#frames.atBoundary) this.#sendClose();
    // A gateway mid-frame gets a moment to finish it; a client that does not read is cut.
    setTimeout(() => this.destroy(), 2_000).unref();
  }

  destroy(): void {
    this.#client.destroy();
    this.#gateway.destroy();
    this.#finish();
  }

  #fromGateway(chunk: Buffer): void {
    if (this.#gone) return;
    if (this.#closing) {
      const n = this.#frames.feed(chunk, true);
      this.#client.write(chunk.subarray(0, n));
      if (this.#frames.atBoundary) this.#sendClose();
      return;
    }
    this.#frames.feed(chunk);
    if (!this.#client.write(chunk)) this.#gateway.pause();
  }

  #sendClose(): void {
    this.#gateway.destroy();
    if (this.#client.writableLength > 64 * 1024) {
      this.destroy();
      return;
    }
    this.#client.end(closeFrame(CLOSE_SERVICE_RESTART, 'gateway restart'));
    this.#finish();
  }

  #finish(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#onGone();
  }
}

function emptyTraffic(since: string | null): TrafficStats {
  return {
    since,
    responses: 0,
    accepted: 0,
    keyRejected: 0,
    lastAcceptedAt: null,
    lastKeyRejectedAt: null,
  };
}

/** Request headers for the gateway: Host rewritten; hop-by-hop and the proxy token removed. */
export function forwardHeaders(
  headers: Http.IncomingHttpHeaders,
  port: number,
  upgrade: boolean,
): Http.OutgoingHttpHeaders {
  const out: Http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    // KiloClaw strips the client's forwarding claims from upgrades.
    if (upgrade && (name === 'forwarded' || name === 'x-real-ip' || name.startsWith('x-forwarded-')))
      continue;
    out[name] = value;
  }
  out.host = `127.0.0.1:${port}`;
  if (upgrade) {
    out.connection = 'Upgrade';
    out.upgrade = headers.upgrade ?? 'websocket';
  }
  return out;
}

function responseHeaders(headers: Http.IncomingHttpHeaders): Http.OutgoingHttpHeaders {
  const out: Http.OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name)) continue;
    out[name] = value;
  }
  return out;
}

function statusBlock(status: number, message: string, rawHeaders: string[]): string {
  let text = `HTTP/1.1 ${status} ${message}\r\n`;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) text += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return `${text}\r\n`;
}

/** A JSON answer (the controller's own routes and the proxy's refusals); nothing once headers went. */
export function sendJson(
  res: Http.ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) return;
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

/** An HTTP answer written straight to a socket (an upgrade that is refused), then the end. */
export function rawReply(
  socket: Duplex,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
) {
  if (socket.destroyed) return;
  const text = JSON.stringify(body);
  const lines = [
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(text)}`,
    'connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${lines.join('\r\n')}\r\n\r\n${text}`);
}
