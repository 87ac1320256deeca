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

/** Header value by lower-case name from a request head (`\r\n`-separated lines after the request line). */
function header(lines: readonly string[], name: string): string | undefined {
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon === name.length && line.slice(0, colon).toLowerCase() === name)
      return line.slice(colon + 1).trim();
  }
  return undefined;
}

const authorization = `Bearer ${token}`;

/** Reads requests off one connection (in order, one at a time, as the agent sends them) and answers each. */
function serve(target: SimTarget, socket: Net.Socket): void {
  let buf = '';
  socket.setNoDelay(true);
  socket.setEncoding('latin1');
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: string) => {
    buf += chunk;
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > MAX_REQUEST_BYTES) socket.destroy();
        return;
      }
      const lines = buf.slice(0, end).split('\r\n');
      const [method, path] = lines[0]!.split(' ', 2);
      const length = Number(header(lines, 'content-length') ?? 0);
      if (!(length >= 0 && length <= MAX_REQUEST_BYTES)) return void socket.destroy();
      if (buf.length < end + 4 + length) return;
      const body = buf.slice(end + 4, end + 4 + length);
      buf = buf.slice(end + 4 + length);
      if (WAIT_MAX_MS > 0 && method === 'GET' && path === '/_kilo/state' && authorized(lines)) {
        const ms = header(lines, WAIT_HEADER);
        if (ms !== undefined) {
          const pid = header(lines, WAIT_PID_HEADER);
          target.read(socket, Number(ms), pid === undefined ? null : Number(pid));
          continue;
        }
      }
      socket.write(answer(target, lines, method, path, body));
    }
  });
}

const authorized = (lines: readonly string[]) => header(lines, 'authorization') === authorization;

function answer(target: SimTarget, lines: string[], method = '', path = '', body = ''): Buffer {
  if (!authorized(lines)) return UNAUTHORIZED;
  if (method === 'GET' && path === '/_kilo/state') {
    served.get++;
    return target.state();
  }
  if (method === 'POST' && path === '/_kilo/env/patch') {
    served.post++;
    let value: unknown;
    try {
      value = (JSON.parse(Buffer.from(body, 'latin1').toString('utf8')) as Record<string, unknown>)[ENV_VAR];
    } catch {
      value = undefined;
    }
    if (typeof value !== 'string') return BAD_BODY;
    return target.patch(value, header(lines, 'x-keyroll-key-version') ?? '');
  }
  return NO_ROUTE;
}

const servers: Net.Server[] = [];
const urls: string[] = [];
const initialKey = process.env.FLEET_KEY ?? null;
for (let i = 0; i < count; i++) {
  const target = new SimTarget(initialKey);
  const server = net.createServer({ noDelay: true }, (socket) => serve(target, socket));
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
