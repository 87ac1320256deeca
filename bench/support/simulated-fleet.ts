// A fleet of simulated in-pod controllers in one process, for the reconcile fleet benchmark: each
// target is its own TCP listener on loopback speaking the controller's wire contract as the test
// suite's fake controller does (test/reconcile/support/fake-controller.ts: `/_kilo/state`,
// `/_kilo/env/patch`, a restart keeps the gateway not ready for RESTART_MS, then a new PID and the
// fingerprints of the delivered key), but built to cost as little CPU per request as possible, so
// that the benchmark measures keyroll and not the simulator: HTTP/1.1 over `node:net` with a
// minimal request reader instead of node:http, each target's `/_kilo/state` response (status line,
// headers, body) kept as one Buffer and rebuilt only when the target changes, and one fingerprint
// per distinct key (every target shares the token, so a key's fingerprints are the same for all).
// A state read that asks to wait (src/kilo-state.ts) is held until the target's gateway is back,
// as keyroll's controller holds it; FLEET_WAIT=0 makes every target answer at once instead (an
// older keyroll controller: no `controller.waitMaxMs`), so the reconciler polls.
//
// Prints `{"urls": [...]}` as one JSON line, then answers each `stats` line on stdin with one JSON
// line: requests served since the previous `stats` by method, the CPU (ms) this process used since
// then, and its RSS (MB).
//   argv[2]: targets; env FLEET_TOKEN, FLEET_KEY (the key every gateway runs at start), RESTART_MS,
//   FLEET_WAIT (default 1)
import type * as Net from 'node:net';
import { createInterface } from 'node:readline';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { WAIT_HEADER, WAIT_PID_HEADER } from '../../src/kilo-state.ts';

const net: typeof Net = process.getBuiltinModule('node:net');
const count = Number(process.argv[2] ?? 500);
const token = process.env.FLEET_TOKEN ?? '';
const restartMs = Number(process.env.RESTART_MS ?? 200);
const WAIT_MAX_MS = process.env.FLEET_WAIT === '0' ? 0 : 20_000;
const ENV_VAR = 'KILOCODE_API_KEY';
/** A request head or body past this is not one the reconciler sends; the connection is dropped. */
const MAX_REQUEST_BYTES = 64 * 1024;

const envHashes = new Map<string, string>();
const envHashOf = (key: string) => {
  let h = envHashes.get(key);
  if (h === undefined) {
    h = fingerprintEnv(token, { [ENV_VAR]: key });
    envHashes.set(key, h);
  }
  return h;
};

let nextPid = 40_000;
const served = { get: 0, post: 0 };

function response(status: number, reason: string, body: string): Buffer {
  return Buffer.from(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
      `keep-alive: timeout=5\r\n\r\n${body}`,
    'latin1',
  );
}
const UNAUTHORIZED = response(401, 'Unauthorized', '{"error":"Unauthorized"}');
const NO_ROUTE = response(
  401,
  'Unauthorized',
  '{"error":"Unauthorized","code":"controller_route_unavailable"}',
);
const BAD_BODY = response(400, 'Bad Request', `{"error":"Value for '${ENV_VAR}' must be a string"}`);
const PATCHED = response(200, 'OK', '{"ok":true,"signaled":true,"migratedProfiles":0}');
const PATCHED_UNSIGNALED = response(200, 'OK', '{"ok":true,"signaled":false,"migratedProfiles":0}');

/** A state read held until its target's gateway is back or `until` (ms since the epoch). */
interface HeldRead {
  socket: Net.Socket;
  pid: number | null;
  until: number;
}
const holding = new Set<SimTarget>();
/** Answers held reads whose time is up; one sweep for all (a held read normally ends at its restart). */
setInterval(() => {
  const now = Date.now();
  for (const t of holding) t.answerHeld(now);
}, 250).unref();

/** One simulated controller and its gateway. */
class SimTarget {
  pid: number | null = nextPid++;
  running = true;
  startedAt = new Date().toISOString();
  envHash: string | null;
  version: string | null;
  #state: Buffer | null = null;
  held: HeldRead[] = [];
  constructor(key: string | null) {
    this.envHash = key === null ? null : envHashOf(key);
    this.version = key === null ? null : 'v-initial';
  }
  /** The whole `GET /_kilo/state` response, built once per change. */
  state(): Buffer {
    this.#state ??= response(
      200,
      'OK',
      JSON.stringify({
        controller: {
          version: '0.0.0-sim',
          state: 'ready',
          delivery: 'restart',
          ...(WAIT_MAX_MS > 0 ? { waitMaxMs: WAIT_MAX_MS } : {}),
        },
        gateway: {
          state: this.running ? 'running' : 'restarting',
          pid: this.pid,
          startedAt: this.startedAt,
          restarts: 0,
          ready: this.running,
          lastExit: null,
        },
        key: { envHash: this.envHash, fileHash: null, version: this.version },
        profiles: [{ agentId: 'main', profileId: 'kilocode:default', store: 'sqlite', form: 'keyRef-env' }],
      }),
    );
    return this.#state;
  }
  patch(key: string, version: string): Buffer {
    const signaled = this.running;
    this.running = false;
    this.#state = null;
    setTimeout(() => {
      this.running = true;
      this.pid = nextPid++;
      this.startedAt = new Date().toISOString();
      this.envHash = envHashOf(key);
      this.version = version;
      this.#state = null;
      this.answerHeld(0);
    }, restartMs);
    return signaled ? PATCHED : PATCHED_UNSIGNALED;
  }
  /** Whether a read that waits for a gateway other than `pid` is answered now (kilo-state's `waitOver`). */
  waitOver(pid: number | null): boolean {
    return this.running && (pid === null || this.pid !== pid);
  }
  /** Answers the held reads that are over, or whose time is up at `now`. */
  answerHeld(now: number): void {
    this.held = this.held.filter((h) => {
      if (!this.waitOver(h.pid) && h.until > now) return true;
      served.get++;
      if (!h.socket.destroyed) h.socket.write(this.state());
      return false;
    });
    if (this.held.length === 0) holding.delete(this);
  }
  /** Holds a read that asks to wait (headers already checked), or answers it now. */
  read(socket: Net.Socket, ms: number, pid: number | null): void {
    if (this.waitOver(pid) || ms <= 0) {
      served.get++;
      socket.write(this.state());
      return;
    }
    this.held.push({ socket, pid, until: Date.now() + Math.min(ms, WAIT_MAX_MS) });
    holding.add(this);
  }
}

/**
 * A header's value from a request head: `lower` is the head in lower case (same offsets), so a
 * name is found with one indexOf and no string per line; the value is cut from `head` itself.
 * `needle`: `\r\n` + the lower-case name + `:`.
 */
function header(head: string, lower: string, needle: string): string | undefined {
  const at = lower.indexOf(needle);
  if (at < 0) return undefined;
  const eol = head.indexOf('\r\n', at + needle.length);
  return head.slice(at + needle.length, eol < 0 ? head.length : eol).trim();
}
const AUTHORIZATION = '\r\nauthorization:';
const CONTENT_LENGTH = '\r\ncontent-length:';
const WAIT_MS = `\r\n${WAIT_HEADER}:`;
const WAIT_PID = `\r\n${WAIT_PID_HEADER}:`;
const KEY_VERSION = '\r\nx-keyroll-key-version:';
const authorization = `Bearer ${token}`;
const CRLF2 = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Reads requests off one connection (in order, one at a time, as the agent sends them) and answers
 * each. Bytes, not a decoded stream: the head is read as one latin1 string once it is complete.
 * The server is half-open, so a client's FIN closes the socket at once (one close, no shutdown).
 */
function serve(target: SimTarget, socket: Net.Socket): void {
  let buf: Buffer | null = null;
  socket.on('error', destroySocket);
  socket.on('end', destroySocket);
  socket.on('data', (chunk: Buffer) => {
    buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
    for (;;) {
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        if (buf.length > MAX_REQUEST_BYTES) socket.destroy();
        return;
      }
      const head = buf.toString('latin1', 0, end);
      const lower = head.toLowerCase();
      const length = Number(header(head, lower, CONTENT_LENGTH) ?? 0);
      if (!(length >= 0 && length <= MAX_REQUEST_BYTES)) return void socket.destroy();
      const next = end + 4 + length;
      if (buf.length < next) return;
      const body = length === 0 ? '' : buf.toString('utf8', end + 4, next);
      const get = head.startsWith('GET /_kilo/state ');
      const authorized = header(head, lower, AUTHORIZATION) === authorization;
      if (WAIT_MAX_MS > 0 && get && authorized) {
        const ms = header(head, lower, WAIT_MS);
        if (ms !== undefined) {
          const pid = header(head, lower, WAIT_PID);
          target.read(socket, Number(ms), pid === undefined ? null : Number(pid));
          buf = consumed(buf, next);
          if (buf === null) return;
          continue;
        }
      }
      socket.write(answer(target, head, lower, authorized, get, body));
      buf = consumed(buf, next);
      if (buf === null) return;
    }
  });
}

function destroySocket(this: Net.Socket): void {
  this.destroy();
}

/** What is left of `buf` after its first `n` bytes, or null. */
const consumed = (buf: Buffer, n: number): Buffer | null => (n >= buf.length ? null : buf.subarray(n));

function answer(
  target: SimTarget,
  head: string,
  lower: string,
  authorized: boolean,
  get: boolean,
  body: string,
): Buffer {
  if (!authorized) return UNAUTHORIZED;
  if (get) {
    served.get++;
    return target.state();
  }
  if (head.startsWith('POST /_kilo/env/patch ')) {
    served.post++;
    let value: unknown;
    try {
      value = (JSON.parse(body) as Record<string, unknown>)[ENV_VAR];
    } catch {
      value = undefined;
    }
    if (typeof value !== 'string') return BAD_BODY;
    return target.patch(value, header(head, lower, KEY_VERSION) ?? '');
  }
  return NO_ROUTE;
}

const servers: Net.Server[] = [];
const urls: string[] = [];
const initialKey = process.env.FLEET_KEY ?? null;
for (let i = 0; i < count; i++) {
  const target = new SimTarget(initialKey);
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => serve(target, socket));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  servers.push(server);
  urls.push(`http://127.0.0.1:${(server.address() as Net.AddressInfo).port}`);
}
process.stdout.write(`${JSON.stringify({ urls })}\n`);

let cpuBefore = process.cpuUsage();
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'stats') return;
  const cpu = process.cpuUsage(cpuBefore);
  cpuBefore = process.cpuUsage();
  process.stdout.write(
    `${JSON.stringify({ ...served, cpuMs: (cpu.user + cpu.system) / 1000, rssMb: process.memoryUsage().rss / 1e6 })}\n`,
  );
  served.get = 0;
  served.post = 0;
});
process.on('SIGTERM', () => {
  for (const s of servers) s.close();
  process.exit(0);
});
