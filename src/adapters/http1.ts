// Owns a small HTTP/1.1 client over node:net / node:tls for short JSON exchanges with one origin
// (the in-pod controller's API): keep-alive connections bounded in number and idle time, one
// timer for every call in flight, one abort listener per signal (src/abort.ts), a cap on the body kept.
//
// Why not node:http: a pass over 10,000 controllers opens a connection to each, and node:http's
// client machinery (ClientRequest, the agent, IncomingMessage streams, a timer and listeners per
// request) cost several times what the connection itself costs (BENCHMARKS.md, reconcile fleet).
// This client writes the request head as one string and parses the answer from the bytes it
// gets: status line, `content-length` or `transfer-encoding: chunked` or close-delimited bodies,
// `connection: close`, `keep-alive: timeout=N`; anything else it cannot frame is refused as
// malformed. Modules come from `process.getBuiltinModule`, as in loopback-http.ts.
//
// What node:http's agents did besides, it does too: TLS sessions are kept per origin and offered
// again on the next connection (an abbreviated handshake; certificate verification stays on), and
// under Node's NODE_USE_ENV_PROXY=1 / --use-env-proxy it goes through HTTP_PROXY / HTTPS_PROXY
// unless NO_PROXY names the origin (src/adapters/proxy-env.ts): an http origin by absolute-form
// requests to the proxy, an https origin by `CONNECT host:port` and TLS to the origin over it.

import type * as Net from 'node:net';
import type * as Tls from 'node:tls';
import { abortReason, onAbort } from '../abort.ts';
import {
  envProxySwitch,
  type HttpProxy,
  type ProxyEnv,
  type ProxySettings,
  proxyFor,
  proxySettings,
} from './proxy-env.ts';

const net: typeof Net = process.getBuiltinModule('node:net');
const tls: typeof Tls = process.getBuiltinModule('node:tls');

/** `proxy`: the proxy refused (CONNECT not answered 200, a 407), or its variable is unusable. */
export type Http1ErrorKind = 'network' | 'timeout' | 'too-large' | 'malformed' | 'lost' | 'proxy';

/**
 * A failed exchange. `code` is the system or TLS error code of a network error (ECONNREFUSED,
 * UNABLE_TO_VERIFY_LEAF_SIGNATURE…). Messages name a proxy by host and port only.
 */
export class Http1Error extends Error {
  override name = 'Http1Error';
  readonly kind: Http1ErrorKind;
  readonly code: string | undefined;
  constructor(kind: Http1ErrorKind, message: string, code?: string) {
    super(message);
    this.kind = kind;
    this.code = code;
  }
}

export interface Http1Response {
  status: number;
  body: Buffer;
}

export interface Http1Origin {
  protocol: 'http:' | 'https:';
  /** Host name or IP address, IPv6 without brackets. */
  hostname: string;
  port: number;
}

/**
 * Idle keep-alive connections are closed after this (or the server's `keep-alive: timeout` less
 * a second, when shorter), so that the client, not the server, closes an idle connection: a
 * reused socket the server has just closed would fail the request.
 */
export const IDLE_MS = 2_000;
/** At most this many idle connections across every origin; past it the longest idle is closed. */
export const MAX_IDLE = 1024;
/** A response head larger than this is not one a controller sends. */
const MAX_HEAD_BYTES = 16 * 1024;
const CRLF2 = Buffer.from('\r\n\r\n', 'latin1');

/** A header value node:http would refuse (CR, LF, other controls): refused here too, never sent. */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
export function assertHeaderValue(name: string, value: string): void {
  if (BAD_VALUE.test(value)) throw new TypeError(`Invalid character in header ${name}`);
}

// ---- one timer for every call in flight --------------------------------------------------------

/**
 * Calls in flight by timeout, each set in start order, so its first entry has the earliest
 * deadline: one timer, armed for the earliest deadline of all, expires what is due.
 */
const inFlight = new Map<number, Set<Call>>();
let timer: NodeJS.Timeout | null = null;
let timerAt = 0;

function track(call: Call): void {
  let set = inFlight.get(call.timeoutMs);
  if (!set) {
    set = new Set();
    inFlight.set(call.timeoutMs, set);
  }
  set.add(call);
  if (!timer || call.deadline < timerAt) arm(call.deadline);
}

function untrack(call: Call): void {
  inFlight.get(call.timeoutMs)?.delete(call);
}

function arm(at: number): void {
  if (timer) clearTimeout(timer);
  timerAt = at;
  timer = setTimeout(expire, Math.max(1, at - Date.now()));
  timer.unref();
}

function expire(): void {
  timer = null;
  const now = Date.now();
  let next = Number.POSITIVE_INFINITY;
  for (const [ms, set] of inFlight) {
    for (const call of set) {
      if (call.deadline > now) {
        next = Math.min(next, call.deadline);
        break;
      }
      call.fail(new Http1Error('timeout', `timed out after ${ms} ms`));
    }
    if (set.size === 0) inFlight.delete(ms);
  }
  if (next !== Number.POSITIVE_INFINITY) arm(next);
}

// ---- idle connections --------------------------------------------------------------------------

/** Idle connections of every origin, longest idle first. */
const idle = new Set<Conn>();
let sweeper: NodeJS.Timeout | null = null;

function sweep(): void {
  const now = Date.now();
  // Not in closeAt order (a server's keep-alive hint may shorten one): every entry is checked.
  for (const conn of idle) if (conn.closeAt <= now) conn.destroy();
  if (idle.size === 0 && sweeper) {
    clearInterval(sweeper);
    sweeper = null;
  }
}

// ---- TLS sessions ------------------------------------------------------------------------------

/** At most this many origins' TLS sessions are kept (a few KB each); past it the least recently used goes. */
export const MAX_TLS_SESSIONS = 1024;

/** The last TLS session of each origin (`host:port`), least recently used first. */
export class TlsSessions {
  readonly max: number;
  readonly #byOrigin = new Map<string, Buffer>();
  constructor(max: number) {
    this.max = max;
  }
  get size(): number {
    return this.#byOrigin.size;
  }
  has(key: string): boolean {
    return this.#byOrigin.has(key);
  }
  /** The origin's session, now the most recently used. */
  get(key: string): Buffer | undefined {
    const session = this.#byOrigin.get(key);
    if (session !== undefined) {
      this.#byOrigin.delete(key);
      this.#byOrigin.set(key, session);
    }
    return session;
  }
  set(key: string, session: Buffer): void {
    this.#byOrigin.delete(key);
    this.#byOrigin.set(key, session);
    if (this.#byOrigin.size > this.max) this.#byOrigin.delete(this.#byOrigin.keys().next().value!);
  }
  delete(key: string): void {
    this.#byOrigin.delete(key);
  }
}

/**
 * Shared by every client: the controller client makes a client per target and pass, and the
 * next pass's connection to a target should still resume the last one's session.
 */
export const tlsSessions = new TlsSessions(MAX_TLS_SESSIONS);

const kSession = Symbol('http1.session');
type SessionSocket = Tls.TLSSocket & { [kSession]: string };

function onSession(this: SessionSocket, session: Buffer): void {
  tlsSessions.set(this[kSession], session);
}

/**
 * TLS to host:port (over `socket` when tunnelled), certificate and name verified against the
 * default CAs (never turned off), offering the origin's last session. A resumed session is not
 * verified again (it was when it was made), as node:https resumes it.
 */
function secure(host: string, port: number, socket?: Net.Socket): Tls.TLSSocket {
  const key = `${host}:${port}`;
  const session = tlsSessions.get(key);
  const s = tls.connect({
    host,
    port,
    ...(socket ? { socket } : {}),
    ...(net.isIP(host) ? {} : { servername: host }),
    ALPNProtocols: ['http/1.1'],
    ...(session ? { session } : {}),
  }) as SessionSocket;
  s[kSession] = key;
  s.on('session', onSession);
  return s;
}

/**
 * A connection failed: its TLS session, if any, is not offered again (as node:https evicts it).
 * A session only outlives a handshake whose certificate verified: a failed check is an error.
 */
function evict(socket: Net.Socket): void {
  const key = (socket as Partial<SessionSocket>)[kSession];
  if (key !== undefined) tlsSessions.delete(key);
}

/** A TLS failure's own words beside its code (`certificate has expired`); errno codes speak alone. */
function reasonOf(err: NodeJS.ErrnoException): string | undefined {
  return err.code && !/^E[A-Z]+$/.test(err.code) ? err.message : undefined;
}

// ---- a connection and a call -------------------------------------------------------------------

const kConn = Symbol('http1.conn');
type ConnSocket = Net.Socket & { [kConn]: Conn };

// Listeners shared by every socket (no closures per connection): `this` is the socket.
function onData(this: ConnSocket, chunk: Buffer): void {
  this[kConn].data(chunk);
}
function onEnd(this: ConnSocket): void {
  this[kConn].end();
}
function onError(this: ConnSocket, err: NodeJS.ErrnoException): void {
  evict(this);
  this[kConn].gone(err.code ?? err.message, reasonOf(err));
}
function onClose(this: ConnSocket): void {
  this[kConn].gone('ECONNRESET');
}

const PROXY_AUTH = ': proxy authentication required (credentials missing from the proxy URL, or refused)';

class Conn {
  readonly client: Http1Client;
  /** Where requests go; null while a CONNECT tunnel is being set up. */
  socket: ConnSocket | null = null;
  /** The connection to the proxy under a CONNECT tunnel. */
  tunnelSocket: Net.Socket | null = null;
  /** The request written before the tunnel was up. */
  queued: string | Buffer | null = null;
  call: Call | null = null;
  /** Whether a request was already answered on it (a reused connection may be stale). */
  reused = false;
  dead = false;
  closeAt = 0;
  constructor(client: Http1Client, socket: Net.Socket | null) {
    this.client = client;
    if (socket) this.attach(socket);
  }
  attach(socket: Net.Socket): void {
    this.socket = socket as ConnSocket;
    this.socket[kConn] = this;
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.on('close', onClose);
  }
  write(data: string | Buffer): void {
    if (this.socket === null) this.queued = data;
    else this.socket.write(data, 'latin1');
  }
  /**
   * `CONNECT` through the proxy on `proxied`; on its 200 the origin's TLS starts over it and the
   * queued request goes out. Any other answer fails the call naming the proxy by host and port.
   */
  tunnel(proxied: Net.Socket): void {
    this.tunnelSocket = proxied;
    const client = this.client;
    const proxy = client.proxy!;
    let buf: Buffer | null = null;
    const refused = (what: string) => {
      const call = this.call;
      this.destroy();
      call?.fail(new Http1Error('proxy', `proxy ${proxy.name} ${what}`, 'ERR_PROXY_TUNNEL'));
    };
    const onEnded = () => refused('closed the connection before answering CONNECT');
    const onAnswer = (chunk: Buffer) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) refused('sent a malformed answer to CONNECT');
        return;
      }
      proxied.off('data', onAnswer).off('end', onEnded).off('close', onEnded);
      const status = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(buf.toString('latin1', 0, end))?.[1];
      if (status === undefined) return refused('sent a malformed answer to CONNECT');
      // Only a 200 opens the tunnel, as in node:https; a 407 is the proxy asking who we are.
      if (status !== '200') {
        return refused(
          `answered CONNECT ${client.authority} with HTTP ${status}${status === '407' ? PROXY_AUTH : ''}`,
        );
      }
      if (buf.length > end + 4) return refused('sent bytes after its answer to CONNECT');
      const socket = secure(client.origin.hostname, client.origin.port, proxied);
      this.attach(socket);
      if (this.queued !== null) socket.write(this.queued, 'latin1');
      this.queued = null;
    };
    proxied.on('data', onAnswer);
    proxied.on('end', onEnded);
    proxied.on('close', onEnded);
    proxied.on('error', (err: NodeJS.ErrnoException) => {
      evict(proxied);
      this.gone(err.code ?? err.message, reasonOf(err));
    });
    proxied.write(
      `CONNECT ${client.authority} HTTP/1.1\r\nhost: ${client.authority}\r\n${proxy.authLine}\r\n`,
      'latin1',
    );
  }
  data(chunk: Buffer): void {
    if (this.call) this.call.data(chunk);
    else this.destroy(); // bytes nobody asked for: the connection is out of step
  }
  end(): void {
    // Closed first, so that nothing of this connection reaches the call once it moves on.
    const call = this.call;
    this.destroy();
    call?.end();
  }
  gone(code: string, reason?: string): void {
    const call = this.call;
    this.destroy();
    call?.gone(code, reason);
  }
  /** Back to the idle set after a complete exchange, for `ms` at most. */
  release(ms: number): void {
    this.call = null;
    this.reused = true;
    this.closeAt = Date.now() + ms;
    idle.add(this);
    this.client.idle.push(this);
    if (idle.size > MAX_IDLE) idle.values().next().value!.destroy();
    sweeper ??= setInterval(sweep, Math.max(50, Math.floor(IDLE_MS / 8))).unref();
  }
  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.call = null;
    idle.delete(this);
    const list = this.client.idle;
    const at = list.indexOf(this);
    if (at >= 0) list.splice(at, 1);
    this.socket?.destroy();
    this.tunnelSocket?.destroy();
  }
}

/** Parse state of one response. */
const HEAD = 0;
const LENGTH = 1;
const CHUNKED = 2;
const UNTIL_CLOSE = 3;

class Call {
  readonly client: Http1Client;
  readonly method: string;
  readonly head: string;
  readonly body: string | undefined;
  readonly signal: AbortSignal;
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly deadline: number;
  /** A GET on a reused connection that the server closed before answering is sent once more. */
  retried = false;
  resolve!: (r: Http1Response) => void;
  /** Stops listening to the call's signal (set when the call starts). */
  stopAbort: (() => void) | null = null;
  reject!: (e: unknown) => void;
  settled = false;
  conn: Conn | null = null;
  buf: Buffer | null = null;
  state = HEAD;
  status = 0;
  keepAlive = true;
  keepAliveMs = IDLE_MS;
  /** Where the body starts in `buf`, and its length when framed by content-length. */
  bodyAt = 0;
  length = 0;
  constructor(
    client: Http1Client,
    method: string,
    head: string,
    body: string | undefined,
    signal: AbortSignal,
    timeoutMs: number,
    maxBytes: number,
  ) {
    this.client = client;
    this.method = method;
    this.head = head;
    this.body = body;
    this.signal = signal;
    this.timeoutMs = timeoutMs;
    this.maxBytes = maxBytes;
    this.deadline = Date.now() + timeoutMs;
  }

  start(fresh = false): void {
    const conn = fresh ? this.client.connect() : this.client.take();
    this.conn = conn;
    conn.call = this;
    // One write (one segment on the wire): the head alone, or head and body in one buffer.
    if (this.body === undefined) conn.write(this.head);
    else conn.write(Buffer.concat([Buffer.from(this.head, 'latin1'), Buffer.from(this.body, 'utf8')]));
  }

  data(chunk: Buffer): void {
    this.buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
    this.parse();
  }

  parse(): void {
    const buf = this.buf!;
    if (this.state === HEAD) {
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) this.fail(new Http1Error('malformed', 'response head too large'));
        return;
      }
      if (!this.readHead(buf.toString('latin1', 0, end))) return;
      if (this.status < 200) {
        // An interim answer (100 Continue, 103 Early Hints): the real one follows.
        this.buf = buf.length > end + 4 ? buf.subarray(end + 4) : null;
        this.state = HEAD;
        this.status = 0;
        if (this.buf) this.parse();
        return;
      }
      this.bodyAt = end + 4;
    }
    const got = buf.length - this.bodyAt;
    if (this.state === LENGTH) {
      if (got < this.length) return;
      // Bytes past the body: the server is out of step; do not reuse the connection.
      if (got > this.length) this.keepAlive = false;
      this.done(buf.subarray(this.bodyAt, this.bodyAt + this.length));
    } else if (this.state === CHUNKED) {
      if (got > this.maxBytes * 2 + 64 * 1024) {
        this.tooLarge();
        return;
      }
      const body = dechunk(buf, this.bodyAt);
      if (body === 'bad') this.fail(new Http1Error('malformed', 'bad chunked encoding'));
      else if (body !== null) {
        if (body.body.length > this.maxBytes) {
          this.tooLarge();
          return;
        }
        if (body.end < buf.length) this.keepAlive = false;
        this.done(body.body);
      }
    } else if (got > this.maxBytes) this.tooLarge();
  }

  /** Reads the status line and the framing headers; false when it failed the call. */
  readHead(head: string): boolean {
    const m = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(head);
    if (!m) return this.malformed('bad status line');
    this.status = Number(m[2]);
    this.keepAlive = m[1] === '1';
    let length: string | null = null;
    let chunked = false;
    let from = head.indexOf('\r\n');
    while (from >= 0) {
      const next = head.indexOf('\r\n', from + 2);
      const line = head.slice(from + 2, next < 0 ? head.length : next);
      from = next;
      const colon = line.indexOf(':');
      if (colon <= 0) return this.malformed('bad header line');
      const name = line.slice(0, colon).toLowerCase();
      if (name === 'content-length') {
        const v = line.slice(colon + 1).trim();
        if (!/^\d{1,15}$/.test(v) || (length !== null && length !== v))
          return this.malformed('bad content-length');
        length = v;
      } else if (name === 'transfer-encoding') {
        const codings = line
          .slice(colon + 1)
          .toLowerCase()
          .split(',');
        if (codings.at(-1)!.trim() !== 'chunked') return this.malformed('unsupported transfer-encoding');
        chunked = true;
      } else if (name === 'connection') {
        if (/(?:^|,)\s*close\s*(?:,|$)/i.test(line.slice(colon + 1))) this.keepAlive = false;
      } else if (name === 'keep-alive') {
        const t = /timeout=(\d+)/i.exec(line);
        if (t) this.keepAliveMs = Math.min(IDLE_MS, Math.max(0, Number(t[1]) * 1000 - 1000));
      }
    }
    if (this.status < 200) return true;
    if (this.status === 204 || this.status === 304) {
      this.state = LENGTH;
      this.length = 0;
    } else if (chunked) {
      // Both framings: chunked wins and the connection is not reused (RFC 9112 §6.3).
      if (length !== null) this.keepAlive = false;
      this.state = CHUNKED;
    } else if (length !== null) {
      this.length = Number(length);
      if (this.length > this.maxBytes) {
        this.tooLarge();
        return false;
      }
      this.state = LENGTH;
    } else {
      this.state = UNTIL_CLOSE;
      this.keepAlive = false;
    }
    return true;
  }

  malformed(what: string): false {
    this.fail(new Http1Error('malformed', what));
    return false;
  }

  tooLarge(): void {
    this.fail(new Http1Error('too-large', `response larger than ${this.maxBytes} bytes`));
  }

  /** The server closed its side. */
  end(): void {
    if (this.state === UNTIL_CLOSE && this.buf) {
      const conn = this.conn;
      this.done(this.buf.subarray(this.bodyAt));
      conn?.destroy();
    } else this.gone('ECONNRESET');
  }

  /** The connection is gone (closed, reset, or an error with this code and the TLS reason). */
  gone(code: string, reason?: string): void {
    if (this.settled) return;
    if (this.state === HEAD && this.buf === null) {
      if (this.conn?.reused && this.method === 'GET' && !this.retried) {
        // An idle connection the server closed as we reused it: once more, on a new one.
        this.retried = true;
        this.conn = null;
        this.start(true);
        return;
      }
      const why = reason === undefined ? '' : ` (${reason})`;
      this.fail(new Http1Error('network', `failed: ${code}${why}${this.client.via}`, code));
    } else this.fail(new Http1Error('lost', `response body lost (${code})`, code));
  }

  done(body: Buffer): void {
    if (this.settled) return;
    if (this.status === 407 && this.client.forward) {
      // The proxy's answer, not the origin's: said as such.
      const proxy = this.client.proxy!;
      this.fail(new Http1Error('proxy', `proxy ${proxy.name} answered HTTP 407${PROXY_AUTH}`));
      return;
    }
    this.settled = true;
    untrack(this);
    this.stopAbort?.();
    const conn = this.conn!;
    this.conn = null;
    if (this.keepAlive && this.keepAliveMs > 0) conn.release(this.keepAliveMs);
    else conn.destroy();
    this.resolve({ status: this.status, body });
  }

  fail(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    untrack(this);
    this.stopAbort?.();
    const conn = this.conn;
    this.conn = null;
    conn?.destroy();
    this.reject(err);
  }
}

/**
 * The body of a chunked message starting at `at`: null while incomplete, 'bad' when it is not
 * chunked encoding. Trailers are read past and dropped.
 */
function dechunk(buf: Buffer, at: number): { body: Buffer; end: number } | null | 'bad' {
  const parts: Buffer[] = [];
  let pos = at;
  for (;;) {
    const eol = buf.indexOf('\r\n', pos, 'latin1');
    if (eol < 0) return buf.length - pos > 1024 ? 'bad' : null;
    const line = buf.toString('latin1', pos, eol);
    const m = /^([0-9a-fA-F]{1,8})(?:;.*)?$/.exec(line);
    if (!m) return 'bad';
    const size = Number.parseInt(m[1]!, 16);
    pos = eol + 2;
    if (size === 0) {
      // Trailer section: header lines up to an empty line.
      for (;;) {
        const t = buf.indexOf('\r\n', pos, 'latin1');
        if (t < 0) return null;
        if (t === pos) return { body: parts.length === 1 ? parts[0]! : Buffer.concat(parts), end: t + 2 };
        pos = t + 2;
      }
    }
    if (buf.length < pos + size + 2) return null;
    if (buf[pos + size] !== 13 || buf[pos + size + 1] !== 10) return 'bad';
    parts.push(buf.subarray(pos, pos + size));
    pos += size + 2;
  }
}

export interface Http1CallOptions {
  signal: AbortSignal;
  timeoutMs: number;
  /** Bodies larger than this are refused (`too-large`) without being kept. */
  maxBytes: number;
}

export interface Http1ClientOptions {
  /**
   * Where HTTP_PROXY, HTTPS_PROXY and NO_PROXY are read from, as node:http's Agent takes
   * `proxyEnv`: given, they are used whatever Node's switch says; absent, the process's own
   * environment when the switch is on (NODE_USE_ENV_PROXY=1 or --use-env-proxy), else no proxy.
   */
  proxyEnv?: ProxyEnv;
}

/** The process's proxies, read once (Node reads them once at startup too), or null for none. */
let processProxies: ProxySettings | null | undefined;
function processProxySettings(): ProxySettings | null {
  if (processProxies === undefined) {
    processProxies = envProxySwitch(process.env, process.execArgv) ? proxySettings(process.env) : null;
  }
  return processProxies;
}

/** HTTP/1.1 to one origin, its keep-alive connections reused (one request per connection at a time). */
export class Http1Client {
  readonly origin: Http1Origin;
  /** `host` header value. */
  readonly host: string;
  /** `host:port`, the target of a CONNECT (set only when there is a proxy). */
  readonly authority: string = '';
  /** This origin's idle connections, most recently used last. */
  readonly idle: Conn[] = [];
  /** The proxy connections go through, or null for a direct connection. */
  readonly proxy: HttpProxy | null = null;
  /** Requests go to the proxy in absolute form (an http origin through a proxy). */
  readonly forward: boolean = false;
  /** ` via proxy host:port` for error messages, or ''. */
  readonly via: string = '';
  /** Why the proxy variable cannot be used: every request fails with it. */
  readonly invalidProxy: string | null = null;
  /** The request target's prefix (`http://host` through a forward proxy) and the lines after it. */
  readonly #target: string = '';
  readonly #hostLines: string;
  constructor(origin: Http1Origin, opts?: Http1ClientOptions) {
    this.origin = origin;
    const h = origin.hostname.includes(':') ? `[${origin.hostname}]` : origin.hostname;
    const dflt = origin.protocol === 'https:' ? 443 : 80;
    this.host = origin.port === dflt ? h : `${h}:${origin.port}`;
    this.#hostLines = `host: ${this.host}\r\n`;
    const proxies = opts?.proxyEnv ? proxySettings(opts.proxyEnv) : processProxySettings();
    if (proxies === null) return;
    const proxy = proxyFor(proxies, origin.protocol, origin.hostname, origin.port);
    if (proxy === null) return;
    if ('invalid' in proxy) {
      this.invalidProxy = proxy.invalid;
      return;
    }
    this.proxy = proxy;
    this.authority = `${h}:${origin.port}`;
    this.via = ` via proxy ${proxy.name}`;
    if (origin.protocol === 'http:') {
      this.forward = true;
      this.#target = `http://${this.host}`;
      this.#hostLines += proxy.authLine;
    }
  }

  /** Closes this origin's idle connections (calls in flight keep theirs). */
  closeIdle(): void {
    for (const conn of this.idle.splice(0)) conn.destroy();
  }

  /** An idle connection of this origin, or a new one. */
  take(): Conn {
    const conn = this.idle.pop();
    if (conn) {
      idle.delete(conn);
      return conn;
    }
    return this.connect();
  }

  /** A new connection: to the origin, to the proxy (forward), or through it (a CONNECT tunnel). */
  connect(): Conn {
    const proxy = this.proxy;
    const { hostname: host, port } = proxy ?? this.origin;
    let socket: Net.Socket;
    if ((proxy ?? this.origin).protocol === 'https:') {
      socket = secure(host, port);
      socket.setNoDelay(true);
    } else socket = net.connect({ host, port, noDelay: true });
    if (proxy === null || this.forward) return new Conn(this, socket);
    const conn = new Conn(this, null);
    conn.tunnel(socket);
    return conn;
  }

  /**
   * One exchange. `headers` are the request's header lines after `host`, each ending in CRLF
   * (values already checked with assertHeaderValue). Rejects with an Http1Error, or the
   * signal's reason when it aborts.
   */
  request(
    method: 'GET' | 'POST',
    path: string,
    headers: string,
    body: string | undefined,
    opts: Http1CallOptions,
  ): Promise<Http1Response> {
    if (opts.signal.aborted) return Promise.reject(abortReason(opts.signal));
    if (this.invalidProxy !== null) {
      return Promise.reject(new Http1Error('proxy', this.invalidProxy, 'ERR_PROXY_INVALID_CONFIG'));
    }
    const length = body === undefined ? '' : `content-length: ${Buffer.byteLength(body)}\r\n`;
    const head = `${method} ${this.#target}${path} HTTP/1.1\r\n${this.#hostLines}${headers}${length}\r\n`;
    const call = new Call(this, method, head, body, opts.signal, opts.timeoutMs, opts.maxBytes);
    return new Promise<Http1Response>((resolve, reject) => {
      call.resolve = resolve;
      call.reject = reject;
      track(call);
      // One real listener per signal however many calls share it (src/abort.ts).
      call.stopAbort = onAbort(opts.signal, (reason) => call.fail(reason));
      call.start();
    });
  }
}
