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
// Two exchanges can share one write (`requestPair`, HTTP/1.1 pipelining, RFC 9112 §9.3.2): the
// second request is written right behind the first and answered after it. It is for a GET that
// only makes sense once the first succeeded: if the first fails, or is answered with anything but
// a 2xx, the connection is closed and the second is dropped unanswered (`cancelled`).
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

/**
 * `proxy`: the proxy refused (CONNECT not answered 200, a 407), or its variable is unusable.
 * `cancelled`: the second of a pair, dropped because the first was not answered with a 2xx.
 */
export type Http1ErrorKind =
  | 'network'
  | 'timeout'
  | 'too-large'
  | 'malformed'
  | 'lost'
  | 'proxy'
  | 'cancelled';

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
  /** The body as UTF-8 text (what the controller's JSON is), decoded once from the bytes read. */
  body: string;
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

/**
 * Idle connections of every origin, longest idle first, linked through the connections
 * themselves (Conn.older / Conn.newer), as each origin's are (Http1Client.lastIdle, Conn.below):
 * the Set and the array per origin this replaced grew and shrank their tables as connections
 * came and went (BENCHMARKS.md, reconcile fleet, S8-H2).
 */
let oldestIdle: Conn | null = null;
let newestIdle: Conn | null = null;
let idleCount = 0;
let sweeper: NodeJS.Timeout | null = null;

function sweep(): void {
  const now = Date.now();
  // Not in closeAt order (a server's keep-alive hint may shorten one): every entry is checked.
  for (let conn = oldestIdle; conn !== null; ) {
    const newer = conn.newer;
    if (conn.closeAt <= now) conn.destroy();
    conn = newer;
  }
  if (idleCount === 0 && sweeper) {
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
 * verified again (it was when it was made), as node:https resumes it. `reads`: read through
 * READ (Node ignores it over a tunnel; those answers come as 'data' events).
 */
function secure(host: string, port: number, socket: Net.Socket | null, reads: boolean): Tls.TLSSocket {
  const key = `${host}:${port}`;
  const session = tlsSessions.get(key);
  const s = tls.connect({
    host,
    port,
    ...(socket ? { socket } : reads ? { onread: READ } : {}),
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
function onRead(this: ConnSocket, n: number): boolean {
  this[kConn].data(readBuffer.subarray(0, n));
  return true; // false would pause the socket
}

/**
 * Every connection reads into this one buffer (`onread`), not into a new Buffer per read pushed
 * through the socket's Readable stream ('data' events, nextTick): ≈0.7 KB less garbage per
 * request (BENCHMARKS.md, reconcile fleet, S8-H2). A read is handled before the next one lands in
 * the buffer (libuv reads into it and calls back at once, on this one thread), so a call keeps a
 * copy of whatever it has not finished with (Call.data) and decodes the body before it answers
 * (Call.done). A connection under a CONNECT tunnel reads by 'data' events (Node ignores `onread`
 * for a TLS socket over another socket).
 */
const readBuffer = Buffer.allocUnsafeSlow(64 * 1024); // its own memory, never the pool's
const READ: Net.OnReadOpts = { buffer: readBuffer, callback: onRead as Net.OnReadOpts['callback'] };
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
function onConnect(this: ConnSocket): void {
  this[kConn].flush();
}

const PROXY_AUTH = ': proxy authentication required (credentials missing from the proxy URL, or refused)';

class Conn {
  readonly client: Http1Client;
  /** Where requests go; null while a CONNECT tunnel is being set up. */
  socket: ConnSocket | null = null;
  /** The connection to the proxy under a CONNECT tunnel. */
  tunnelSocket: Net.Socket | null = null;
  /** The request written before the socket connected, or before the tunnel was up. */
  queued: string | Buffer | null = null;
  call: Call | null = null;
  /** Whether a request was already answered on it (a reused connection may be stale). */
  reused = false;
  dead = false;
  closeAt = 0;
  /** In the idle lists: across every origin (older, newer) and its own (below, above). */
  idle = false;
  older: Conn | null = null;
  newer: Conn | null = null;
  below: Conn | null = null;
  above: Conn | null = null;
  constructor(client: Http1Client, socket: Net.Socket | null) {
    this.client = client;
    if (socket) this.attach(socket, true);
  }
  /** `reads`: the socket reads through `onread` (READ); else by 'data' events (a TLS tunnel). */
  attach(socket: Net.Socket, reads: boolean): void {
    this.socket = socket as ConnSocket;
    this.socket[kConn] = this;
    if (!reads) socket.on('data', onData);
    if (socket.connecting) socket.on('connect', onConnect);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.on('close', onClose);
  }
  write(data: string | Buffer): void {
    // Until the socket connects the request waits here, not in the socket: a net.Socket written
    // while connecting waits with two once() listeners, closures included, per connection (≈0.6 KB
    // of garbage per new connection; BENCHMARKS.md, reconcile fleet, S8-H2).
    if (this.socket === null || this.socket.connecting) this.queued = data;
    else this.socket.write(data, 'latin1');
  }
  flush(): void {
    const data = this.queued;
    if (data === null || this.socket === null) return;
    this.queued = null;
    this.socket.write(data, 'latin1');
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
      const socket = secure(client.origin.hostname, client.origin.port, proxied, false);
      this.attach(socket, false);
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
  /** Back to the idle lists after a complete exchange, for `ms` at most. */
  release(ms: number): void {
    this.call = null;
    this.reused = true;
    this.closeAt = Date.now() + ms;
    this.idle = true;
    this.older = newestIdle;
    if (newestIdle) newestIdle.newer = this;
    else oldestIdle = this;
    newestIdle = this;
    idleCount++;
    const client = this.client;
    this.below = client.lastIdle;
    if (client.lastIdle) client.lastIdle.above = this;
    client.lastIdle = this;
    if (idleCount > MAX_IDLE) oldestIdle!.destroy();
    sweeper ??= setInterval(sweep, Math.max(50, Math.floor(IDLE_MS / 8))).unref();
  }
  /** Out of the idle lists (taken for a call, or closed). */
  unlink(): void {
    if (!this.idle) return;
    this.idle = false;
    if (this.older) this.older.newer = this.newer;
    else oldestIdle = this.newer;
    if (this.newer) this.newer.older = this.older;
    else newestIdle = this.older;
    idleCount--;
    if (this.below) this.below.above = this.above;
    if (this.above) this.above.below = this.below;
    else this.client.lastIdle = this.below;
    this.older = this.newer = this.below = this.above = null;
  }
  destroy(): void {
    if (this.dead) return;
    this.dead = true;
    this.call = null;
    this.unlink();
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
  /** What is written: the head, or head and body in one buffer (one segment on the wire). */
  readonly out: string | Buffer;
  readonly timeoutMs: number;
  readonly maxBytes: number;
  readonly deadline: number;
  /** A GET on a reused connection that the server closed before answering is sent once more. */
  retried = false;
  /** The second of a pair (`requestPair`): written with this call, answered after it. */
  next: Call | null = null;
  resolve!: (r: Http1Response) => void;
  /** Stops listening to the call's signal (set when the call starts). */
  stopAbort: (() => void) | null = null;
  reject!: (e: unknown) => void;
  settled = false;
  conn: Conn | null = null;
  /** The answer so far: the read in hand, or a copy of what is kept across reads. */
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
    out: string | Buffer,
    timeoutMs: number,
    maxBytes: number,
  ) {
    this.client = client;
    this.method = method;
    this.out = out;
    this.timeoutMs = timeoutMs;
    this.maxBytes = maxBytes;
    this.deadline = Date.now() + timeoutMs;
  }

  start(fresh = false): void {
    const conn = fresh ? this.client.connect() : this.client.take();
    this.conn = conn;
    conn.call = this;
    conn.write(this.out);
  }

  data(chunk: Buffer): void {
    // Usually the whole answer is one read, parsed where it landed (the shared read buffer).
    this.buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk]);
    this.parse();
    // Not done with it: kept as a copy, as the read buffer is reused by the next read.
    const buf = this.buf;
    if (!this.settled && buf !== null && buf.buffer === readBuffer.buffer)
      this.buf = Buffer.copyBytesFrom(buf);
  }

  parse(): void {
    const buf = this.buf!;
    if (this.state === HEAD) {
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) this.fail(new Http1Error('malformed', 'response head too large'));
        return;
      }
      if (!this.readHead(buf, end)) return;
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
      // Bytes past the body: the server is out of step (or, in a pair, the second's answer).
      if (got > this.length && this.next === null) this.keepAlive = false;
      this.done(
        buf,
        this.bodyAt,
        this.bodyAt + this.length,
        this.next === null ? undefined : buf.subarray(this.bodyAt + this.length),
      );
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
        if (body.end < buf.length && this.next === null) this.keepAlive = false;
        this.done(body.body, 0, body.body.length, this.next === null ? undefined : buf.subarray(body.end));
      }
    } else if (got > this.maxBytes) this.tooLarge();
  }

  /**
   * Reads the status line and the framing headers from the head's bytes, `buf[0, end)`; false
   * when it failed the call. Byte by byte, without a string, a RegExp or a lower-case copy per
   * header (with the body decoded once, straight from the bytes read: ≈1.1 KB less garbage per
   * request; BENCHMARKS.md, reconcile fleet, S8-H2). Only a transfer-encoding line, rare here, is
   * read as a string.
   */
  readHead(buf: Buffer, end: number): boolean {
    // `HTTP/1.x NNN`, then a space or the end of the head.
    if (
      end < 12 ||
      !startsWith(buf, HTTP_1) ||
      (buf[7] !== 0x30 && buf[7] !== 0x31) ||
      buf[8] !== 0x20 ||
      !isDigit(buf[9]!) ||
      !isDigit(buf[10]!) ||
      !isDigit(buf[11]!) ||
      (end > 12 && buf[12] !== 0x20)
    )
      return this.malformed('bad status line');
    this.status = (buf[9]! - 0x30) * 100 + (buf[10]! - 0x30) * 10 + (buf[11]! - 0x30);
    this.keepAlive = buf[7] === 0x31;
    // content-length as its digits: two that differ, even by leading zeros, are refused.
    let length = -1;
    let lengthDigits = 0;
    let chunked = false;
    let from = buf.indexOf(CRLF);
    while (from < end) {
      const at = from + 2;
      const next = buf.indexOf(CRLF, at); // at most `end`, where the head's CRLFCRLF starts
      from = next;
      const colon = buf.indexOf(0x3a, at);
      if (colon <= at || colon >= next) return this.malformed('bad header line');
      if (isName(buf, at, colon, 'content-length')) {
        let a = colon + 1;
        let b = next;
        while (a < b && isSpace(buf[a]!)) a++;
        while (b > a && isSpace(buf[b - 1]!)) b--;
        let v = 0;
        for (let i = a; i < b && isDigit(buf[i]!); i++) v = v * 10 + buf[i]! - 0x30;
        const digits = b - a;
        // 1 to 15 digits and nothing else; a second one must say the same.
        if (
          digits < 1 ||
          digits > 15 ||
          !allDigits(buf, a, b) ||
          (length >= 0 && (digits !== lengthDigits || v !== length))
        )
          return this.malformed('bad content-length');
        length = v;
        lengthDigits = digits;
      } else if (isName(buf, at, colon, 'transfer-encoding')) {
        const codings = buf
          .toString('latin1', colon + 1, next)
          .toLowerCase()
          .split(',');
        if (codings.at(-1)!.trim() !== 'chunked') return this.malformed('unsupported transfer-encoding');
        chunked = true;
      } else if (isName(buf, at, colon, 'connection')) {
        if (hasToken(buf, colon + 1, next, 'close')) this.keepAlive = false;
      } else if (isName(buf, at, colon, 'keep-alive')) {
        const t = timeoutParam(buf, colon + 1, next);
        if (t >= 0) this.keepAliveMs = Math.min(IDLE_MS, Math.max(0, t * 1000 - 1000));
      }
    }
    if (this.status < 200) return true;
    if (this.status === 204 || this.status === 304) {
      this.state = LENGTH;
      this.length = 0;
    } else if (chunked) {
      // Both framings: chunked wins and the connection is not reused (RFC 9112 §6.3).
      if (length >= 0) this.keepAlive = false;
      this.state = CHUNKED;
    } else if (length >= 0) {
      this.length = length;
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
      this.done(this.buf, this.bodyAt, this.buf.length);
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

  /**
   * Answers with the body `buf[from, to)`, decoded now: `buf` may be the shared read buffer.
   * `rest`: bytes read past this answer (in a pair, the start of the second's).
   */
  done(buf: Buffer, from: number, to: number, rest?: Buffer): void {
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
    const next = this.next;
    const answer = { status: this.status, body: buf.toString('utf8', from, to) };
    if (next !== null) {
      this.next = null;
      this.resolve(answer);
      this.handOver(conn, next, rest);
      return;
    }
    if (this.keepAlive && this.keepAliveMs > 0) conn.release(this.keepAliveMs);
    else conn.destroy();
    this.resolve(answer);
  }

  /**
   * The first of a pair is answered: the second, already written, reads its answer on the same
   * connection. After anything but a 2xx it is dropped and the connection closed (the server
   * may be holding it). If the server closes the connection after the first, the second (a GET)
   * goes again on a new one, as a reused connection's GET does (Call.gone).
   */
  handOver(conn: Conn, next: Call, rest: Buffer | undefined): void {
    if (next.settled) return void conn.destroy();
    if (this.status < 200 || this.status > 299) {
      conn.destroy();
      next.fail(cancelled(this.status));
      return;
    }
    if (!this.keepAlive) {
      conn.destroy();
      next.start(true);
      return;
    }
    conn.reused = true;
    conn.call = next;
    next.conn = conn;
    if (rest !== undefined && rest.length > 0) next.data(rest);
  }

  fail(err: unknown): void {
    if (this.settled) return;
    this.settled = true;
    untrack(this);
    this.stopAbort?.();
    const conn = this.conn;
    this.conn = null;
    conn?.destroy();
    const next = this.next;
    this.next = null;
    next?.fail(err);
    this.reject(err);
  }
}

/** The second of a pair, dropped because the first was answered `status` (not a 2xx). */
const cancelled = (status: number): Http1Error =>
  new Http1Error('cancelled', `not sent: the request before it was answered HTTP ${status}`);

// ---- reading a head's bytes --------------------------------------------------------------------

const CRLF = Buffer.from('\r\n', 'latin1');
const HTTP_1 = 'HTTP/1.';

const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;

/** Whitespace as String.prototype.trim and RegExp `\s` see it in a latin1 string. */
const isSpace = (b: number): boolean => (b >= 0x09 && b <= 0x0d) || b === 0x20 || b === 0xa0;

/** Whether `buf` starts with the ASCII `prefix` (Buffer.compare allocated, per call). */
function startsWith(buf: Buffer, prefix: string): boolean {
  for (let i = 0; i < prefix.length; i++) if (buf[i] !== prefix.charCodeAt(i)) return false;
  return true;
}

function allDigits(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (!isDigit(buf[i]!)) return false;
  return true;
}

/** Whether `buf[from, to)` is `name` (lower-case ASCII) in any case. */
function isName(buf: Buffer, from: number, to: number, name: string): boolean {
  if (to - from !== name.length) return false;
  for (let i = 0; i < name.length; i++) {
    const b = buf[from + i]!;
    const c = name.charCodeAt(i);
    if (b !== c && !(b >= 0x41 && b <= 0x5a && b + 0x20 === c)) return false;
  }
  return true;
}

/** Whether the comma-separated list `buf[from, to)` holds `token` (lower-case), in any case. */
function hasToken(buf: Buffer, from: number, to: number, token: string): boolean {
  let a = from;
  while (a <= to) {
    let b = buf.indexOf(0x2c, a);
    if (b < 0 || b > to) b = to;
    let x = a;
    let y = b;
    while (x < y && isSpace(buf[x]!)) x++;
    while (y > x && isSpace(buf[y - 1]!)) y--;
    if (isName(buf, x, y, token)) return true;
    a = b + 1;
  }
  return false;
}

/** The N of the first `timeout=N` (any case) in `buf[from, to)`, or -1. */
function timeoutParam(buf: Buffer, from: number, to: number): number {
  for (let i = from; i + 8 < to; i++) {
    if (!isName(buf, i, i + 8, 'timeout=') || !isDigit(buf[i + 8]!)) continue;
    let n = 0;
    for (let j = i + 8; j < to && isDigit(buf[j]!); j++) n = n * 10 + buf[j]! - 0x30;
    return n;
  }
  return -1;
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
  /** This origin's most recently released idle connection (Conn.below: the one before), or null. */
  lastIdle: Conn | null = null;
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
  /** The last GET's head, and the path and header lines it was built from. */
  #lastGet: { head: string; path: string; headers: string } | null = null;
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
    while (this.lastIdle !== null) this.lastIdle.destroy();
  }

  /** This origin's most recently released idle connection, or a new one. */
  take(): Conn {
    const conn = this.lastIdle;
    if (conn === null) return this.connect();
    conn.unlink();
    return conn;
  }

  /** A new connection: to the origin, to the proxy (forward), or through it (a CONNECT tunnel). */
  connect(): Conn {
    const proxy = this.proxy;
    const { hostname: host, port } = proxy ?? this.origin;
    // Under a tunnel the proxy's answer to CONNECT is read by 'data' events (Conn.tunnel).
    const reads = proxy === null || this.forward;
    let socket: Net.Socket;
    if ((proxy ?? this.origin).protocol === 'https:') {
      socket = secure(host, port, null, reads);
      socket.setNoDelay(true);
    } else socket = net.connect({ host, port, noDelay: true, ...(reads ? { onread: READ } : {}) });
    if (reads) return new Conn(this, socket);
    const conn = new Conn(this, null);
    conn.tunnel(socket);
    return conn;
  }

  /**
   * A GET's head. The same GET again (a verification poll) writes the head built last time,
   * already flat, instead of joining its parts anew: ≈0.3 KB less garbage per poll
   * (BENCHMARKS.md, reconcile fleet, S8-H2).
   */
  #getHead(path: string, headers: string): string {
    const last = this.#lastGet;
    if (last !== null && last.path === path && last.headers === headers) return last.head;
    const head = `GET ${this.#target}${path} HTTP/1.1\r\n${this.#hostLines}${headers}\r\n`;
    this.#lastGet = { head, path, headers };
    return head;
  }

  /** What a request writes: its head, or head and body in one buffer (one segment on the wire). */
  #bytes(method: 'GET' | 'POST', path: string, headers: string, body: string | undefined): string | Buffer {
    if (method === 'GET' && body === undefined) return this.#getHead(path, headers);
    const head = `${method} ${this.#target}${path} HTTP/1.1\r\n${this.#hostLines}${headers}`;
    if (body === undefined) return `${head}\r\n`;
    const size = Buffer.byteLength(body);
    const full = `${head}content-length: ${size}\r\n\r\n`;
    const out = Buffer.allocUnsafe(full.length + size);
    out.write(full, 0, 'latin1');
    out.write(body, full.length, 'utf8');
    return out;
  }

  /** Why no request can start now (aborted, an unusable proxy variable), or null. */
  #refusal(signal: AbortSignal): unknown {
    if (signal.aborted) return abortReason(signal);
    if (this.invalidProxy !== null)
      return new Http1Error('proxy', this.invalidProxy, 'ERR_PROXY_INVALID_CONFIG');
    return null;
  }

  /** A call's promise, its timer and abort listener set; `start` runs once they are. */
  #settle(call: Call, signal: AbortSignal, start: boolean): Promise<Http1Response> {
    return new Promise<Http1Response>((resolve, reject) => {
      call.resolve = resolve;
      call.reject = reject;
      track(call);
      // One real listener per signal however many calls share it (src/abort.ts).
      call.stopAbort = onAbort(signal, (reason) => call.fail(reason));
      if (start) call.start();
    });
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
    const refused = this.#refusal(opts.signal);
    if (refused !== null) return Promise.reject(refused);
    const call = new Call(
      this,
      method,
      this.#bytes(method, path, headers, body),
      opts.timeoutMs,
      opts.maxBytes,
    );
    return this.#settle(call, opts.signal, true);
  }

  /**
   * Two exchanges, `second` (a GET) written in the same write as `first`, on one connection:
   * one write and one turn fewer than two requests, and the second is at the server as soon as
   * the first is. The second is answered after the first, and only when the first is answered
   * with a 2xx; otherwise it rejects `cancelled` and the connection is closed. A failure of the
   * first (network, timeout, abort) is the second's too. Through a proxy (which may not pass
   * pipelined requests on) the second is sent after the first's 2xx, on the same terms.
   */
  requestPair(
    first: { method: 'GET' | 'POST'; path: string; headers: string; body?: string },
    second: { path: string; headers: string },
    opts: Http1CallOptions,
  ): [Promise<Http1Response>, Promise<Http1Response>] {
    const refused = this.#refusal(opts.signal);
    if (refused !== null) return [Promise.reject(refused), Promise.reject(refused)];
    if (this.proxy !== null) {
      const one = this.request(first.method, first.path, first.headers, first.body, opts);
      const two = one.then((res) =>
        res.status >= 200 && res.status <= 299
          ? this.request('GET', second.path, second.headers, undefined, opts)
          : Promise.reject(cancelled(res.status)),
      );
      return [one, two];
    }
    const a = this.#bytes(first.method, first.path, first.headers, first.body);
    const b = this.#bytes('GET', second.path, second.headers, undefined) as string;
    // One buffer for both: one write, one segment on the wire.
    const out = Buffer.allocUnsafe(Buffer.byteLength(a, 'latin1') + b.length);
    const at = typeof a === 'string' ? out.write(a, 0, 'latin1') : a.copy(out, 0);
    out.write(b, at, 'latin1');
    const one = new Call(this, first.method, out, opts.timeoutMs, opts.maxBytes);
    // Its own bytes, for the case where it must go again on a new connection (Call.handOver).
    const two = new Call(this, 'GET', b, opts.timeoutMs, opts.maxBytes);
    one.next = two;
    const answered = this.#settle(two, opts.signal, false);
    return [this.#settle(one, opts.signal, true), answered];
  }
}
