// Bad input at the front door (issue 10, "Bad input"): one `keyroll controller` process with the
// stand-in gateway, and clients that break the rules — an oversized header, a slowloris, a
// WebSocket client that never reads, 10,000 connections at once, 200 requests into a hold. Each
// is bounded or refused cleanly, and afterwards the controller still serves `/_kilo/state` on the
// admin port and the proxy on the public one. The controller runs as its own process: this one
// opens thousands of sockets, and its RSS is measured from /proc. No key and no token appears in
// anything it printed.
import { readdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ControllerProcess, type Json, spawnControllerProcess } from '../support/controller-process.ts';
import { type FakeUpstream, startFakeUpstream } from '../support/fake-upstream.ts';
import { killAllTracked, pidAlive } from '../support/processes.ts';

const TOKEN = 'test-token-limits-0123456789abcdef';
const KEY_A = 'test-key-A-limits-aaaaaaaaaaaaaaaa';
const KEY_B = 'test-key-B-limits-bbbbbbbbbbbbbbbb';
/** Node's default header limit is 16 KiB; the controller keeps it. */
const BIG_HEADER = 20_000;
/** The public port's headersTimeout (server.ts listen()) and how often Node checks it. */
const HEADERS_TIMEOUT_MS = 10_000;
const CHECK_INTERVAL_MS = 1_000;
const MAX_CONNECTIONS = 1_000;
const HOLD_TIMEOUT_MS = 3_000;
const HOLD_MAX = 50;

let upstream: FakeUpstream;
let ctl: ControllerProcess;
/** Slowloris sockets still open after their test (for the known-bug test that follows it). */
let lingering: { sockets: Socket[]; baseFds: number } | null = null;
/** Answers the test read (state bodies, refusals), for the secret grep with the controller's output. */
const captured: string[] = [];

beforeAll(async () => {
  upstream = await startFakeUpstream({ keys: [KEY_A] });
  ctl = await spawnControllerProcess({
    name: 'limits',
    token: TOKEN,
    key: KEY_A,
    upstreamBaseUrl: upstream.baseUrl,
    seedProfile: true,
    // As the gateway image runs it (the young generation capped at 1 MB; --lite-mode cannot run
    // the TypeScript sources).
    nodeFlags: ['--max-semi-space-size=1'],
    flags: [
      '--max-connections',
      String(MAX_CONNECTIONS),
      '--hold-timeout',
      `${HOLD_TIMEOUT_MS}ms`,
      '--hold-max',
      String(HOLD_MAX),
      '--patchable',
      'KILOCODE_API_KEY,STANDIN_READY_DELAY_MS',
    ],
    env: { STANDIN_READY_DELAY_MS: '200' },
  });
}, 60_000);

afterAll(async () => {
  try {
    if (ctl) {
      expect(ctl.proc.exitInfo(), 'the controller exited during the tests').toBeNull();
      await ctl.stop();
      const out = ctl.proc.lines.join('\n');
      expect(out).toContain('Controller listening');
      const all = `${out}\n${captured.join('\n')}`;
      for (const secret of [TOKEN, KEY_A, KEY_B])
        expect(all.includes(secret), 'a secret leaked into captured output').toBe(false);
    }
  } finally {
    await killAllTracked();
    await upstream?.close();
  }
}, 30_000);

/** The controller still works: `/_kilo/state` on the admin port, a proxied request and a chat. */
async function stillServing(): Promise<Json> {
  expect(pidAlive(ctl.pid)).toBe(true);
  const s = await ctl.waitServing(() => true, 15_000);
  captured.push(JSON.stringify(s));
  const health = await fetch(`${ctl.pub}/healthz`, { signal: AbortSignal.timeout(5_000) });
  expect(health.status).toBe(200);
  expect(await health.json()).toEqual({ ok: true, status: 'live' });
  const chat = await fetch(`${ctl.pub}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await chat.text();
  captured.push(text);
  expect(chat.status, text).toBe(200);
  return s;
}

/** One request with node:http (no pooling); resolves with the status, or the error code. */
function rawGet(port: number, path: string, headers: Record<string, string> = {}): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.end();
  });
}

/** One request on its own connection: status, Retry-After, body, and how long it took. */
function rawRequest(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  timeoutMs = 15_000,
): Promise<{ status: number; retryAfter: string | null; body: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => {
        const ra = res.headers['retry-after'];
        resolve({
          status: res.statusCode ?? 0,
          retryAfter: typeof ra === 'string' ? ra : null,
          body,
          ms: Date.now() - started,
        });
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Open file descriptors of the controller (its sockets among them). */
const controllerFds = () => readdirSync(`/proc/${ctl.pid}/fd`).length;

describe('front door limits (controller process, stand-in gateway)', () => {
  it('a request header over the limit → 431 on both ports; the controller keeps serving', async () => {
    const big = { 'x-big': 'b'.repeat(BIG_HEADER) };
    expect(await rawGet(ctl.port, '/healthz', big)).toBe(431);
    expect(await rawGet(ctl.port, '/v1/chat/completions', big)).toBe(431);
    expect(await rawGet(ctl.adminPort, '/_kilo/state', { ...big, authorization: `Bearer ${TOKEN}` })).toBe(
      431,
    );
    // Just under the limit is fine: the bound is the header limit, not some smaller one.
    expect(await rawGet(ctl.port, '/healthz', { 'x-big': 'b'.repeat(12_000) })).toBe(200);
    await stillServing();
  });

  it('a slowloris (one header byte a second) is answered 408 and cut within headersTimeout; others are served meanwhile', async () => {
    const baseFds = controllerFds();
    const started = Date.now();
    // 20 clients that close once the controller does, and 10 that keep their socket open and keep
    // trickling after the 408 (an attacker has no reason to close).
    const slowloris = (keepOpen: boolean) => {
      const s = connect({ port: ctl.port, host: '127.0.0.1', allowHalfOpen: keepOpen });
      let received = '';
      let timer: NodeJS.Timeout | undefined;
      s.on('data', (d) => {
        received += d.toString('latin1');
      });
      s.on('error', () => {});
      s.on('connect', () => {
        s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ');
        timer = setInterval(() => {
          if (s.writable) s.write('a');
        }, 1_000);
      });
      s.on('close', () => clearInterval(timer));
      // The controller's FIN: 'end' (a client that does not keep its socket closes right after).
      const cut = new Promise<{ afterMs: number; received: string }>((resolve) => {
        s.on('end', () => resolve({ afterMs: Date.now() - started, received }));
        s.on('close', () => resolve({ afterMs: Date.now() - started, received }));
      });
      return { s, cut };
    };
    const polite = Array.from({ length: 20 }, () => slowloris(false));
    const stubborn = Array.from({ length: 10 }, () => slowloris(true));
    lingering = { sockets: stubborn.map((x) => x.s), baseFds };
    try {
      // While they trickle, everyone else is served.
      await sleep(3_000);
      // (Descriptors are counted with a little noise: pooled connections to the gateway come and go.)
      expect(controllerFds() - baseFds).toBeGreaterThanOrEqual(polite.length + stubborn.length - 4);
      expect((await fetch(`${ctl.pub}/healthz`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
      expect((await ctl.state()).status).toBe(200);
      const cuts = await Promise.all([...polite, ...stubborn].map((x) => x.cut));
      for (const c of cuts) {
        // No earlier than the deadline allows and no later than the deadline plus one check of it
        // (and scheduling slack on a loaded host); the answer says why, never 200.
        expect(c.afterMs).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - CHECK_INTERVAL_MS);
        expect(c.afterMs).toBeLessThan(HEADERS_TIMEOUT_MS + CHECK_INTERVAL_MS + 2_000);
        expect(c.received).toMatch(/^HTTP\/1\.1 408 /);
      }
      await until(() => polite.every((x) => x.s.destroyed), 2_000, 'the polite clients to close');
      // The polite ones are released by the controller (the stubborn ones: the next test).
      await until(
        () => controllerFds() - baseFds <= stubborn.length + 4,
        3_000,
        'the controller to release the closed connections',
      );
    } finally {
      for (const x of polite) x.s.destroy();
    }
    await stillServing();
  }, 30_000);

  // The 'clientError' handler in listen() once answered 408 with socket.end() alone: the server
  // allows half-open sockets, so a client that kept sending kept its connection, and its place
  // under --max-connections, for ever (each byte resets the idle timeout). It now destroys the
  // socket once the answer is written.
  it('a slowloris that keeps sending after its 408 is released by the controller', async () => {
    expect(lingering).not.toBeNull();
    const { sockets, baseFds } = lingering!;
    try {
      expect(sockets.every((s) => !s.destroyed)).toBe(true);
      await until(() => controllerFds() - baseFds <= 4, 2_000, 'the controller to release them');
    } finally {
      for (const s of sockets) s.destroy();
      lingering = null;
      await until(() => controllerFds() - baseFds <= 4, 3_000, 'the connections to go once closed here');
    }
  });

  it('a WebSocket client that never reads: the controller’s RSS stays bounded, others are served', async () => {
    // 100 × 1 MiB messages, each echoed back by the stand-in: 100 MiB the client never reads.
    // A relay without backpressure holds all of it (measured: +102 to +111 MiB); with it, what
    // shows is the garbage of moving 100 MiB the other way before the GC runs (+28 to +45 MiB).
    const MESSAGE = 1024 * 1024;
    const MESSAGES = 100;
    const BOUND_MIB = 60;
    await stillServing();
    const warm = await openWs(ctl.port);
    warm.ws.send('warm');
    await until(() => warm.messages.some((m) => m.echo === 'warm'), 5_000, 'warm-up echo');
    warm.ws.close();
    await until(async () => (await ctl.state()).body.proxy.websockets === 0, 5_000, 'warm-up closed');
    const baseline = ctl.rssKiB();

    const s = connect(ctl.port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      let head = '';
      const onData = (d: Buffer) => {
        head += d.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        s.off('data', onData);
        s.pause(); // from here on nothing is read: the kernel's buffers fill, then the controller's
        if (/^HTTP\/1\.1 101 /.test(head)) resolve();
        else reject(new Error(`no upgrade: ${head.slice(0, 80)}`));
      };
      s.on('data', onData);
      s.write(
        'GET /socket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    const frame = maskedTextFrame(MESSAGE);
    let peak = baseline;
    const sampler = setInterval(() => {
      peak = Math.max(peak, ctl.rssKiB());
    }, 50);
    try {
      for (let i = 0; i < MESSAGES; i++) {
        if (!s.write(frame)) await new Promise((r) => s.once('drain', r));
      }
      // Every message has left this process; the echoes pile up wherever they can.
      await sleep(1_500);
      expect((await ctl.state()).body.proxy.websockets).toBe(1);
      // Meanwhile a plain request and another WebSocket are served.
      expect((await fetch(`${ctl.pub}/healthz`, { signal: AbortSignal.timeout(5_000) })).status).toBe(200);
      const other = await openWs(ctl.port);
      other.ws.send('still-here');
      await until(() => other.messages.some((m) => m.echo === 'still-here'), 5_000, 'second client echo');
      other.ws.close();
      peak = Math.max(peak, ctl.rssKiB());
    } finally {
      clearInterval(sampler);
      s.destroy();
    }
    const grewMiB = (peak - baseline) / 1024;
    expect(grewMiB, `RSS ${baseline} KiB → peak ${peak} KiB`).toBeLessThan(BOUND_MIB);
    // The abandoned socket is let go.
    await until(async () => (await ctl.state()).body.proxy.websockets === 0, 5_000, 'websocket released');
    await stillServing();
  }, 30_000);

  it(`10,000 connections at once (cap ${MAX_CONNECTIONS}): the excess is closed, no crash; admin answers; the proxy serves after`, async () => {
    const N = 10_000;
    // This process holds all of them at once: it needs the descriptors (Node raises its soft
    // limit to the hard one at start; `ulimit -n` is 20000 on the CI host).
    const limit = Number(/^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]);
    expect(limit, 'ulimit -n too low for this test').toBeGreaterThan(N + 2_000);
    const baseFds = controllerFds();
    const sockets: Socket[] = [];
    let closed = 0;
    let errors = 0;
    for (let i = 0; i < N; i++) {
      const s = connect(ctl.port, '127.0.0.1');
      s.on('error', () => {
        errors++;
      });
      s.on('close', () => {
        closed++;
      });
      sockets.push(s);
    }
    let maxFds = baseFds;
    const admin: number[] = [];
    try {
      // During the flood: the admin port answers, the controller never holds more sockets than
      // the cap, and it closes the rest. The excess is closed by the controller, though not every
      // one of them: a connection the kernel completed past the full accept queue (SYN cookies)
      // never reaches the controller, and this side of it stays open until it is closed here
      // (measured: about 300 of 9,000). (The connections kept get 408 after headersTimeout, but
      // this side never reads, so that does not count here.)
      const enough = 0.8 * (N - MAX_CONNECTIONS);
      let enoughSince: number | null = null;
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline && (enoughSince === null || Date.now() - enoughSince < 500)) {
        // On a connection of its own each time (a pooled one can race the keep-alive timeout).
        const st = await rawRequest(
          ctl.adminPort,
          '/_kilo/state',
          { authorization: `Bearer ${TOKEN}` },
          10_000,
        );
        admin.push(st.ms);
        expect(st.status).toBe(200);
        maxFds = Math.max(maxFds, controllerFds());
        if (enoughSince === null && closed >= enough) enoughSince = Date.now();
        await sleep(100);
      }
      const note = `closed ${closed}, errors ${errors}, controller fds ${baseFds} → max ${maxFds}, admin answers in ${admin.join('/')} ms`;
      expect(maxFds - baseFds, note).toBeLessThanOrEqual(MAX_CONNECTIONS + 16);
      // It did keep connections up to the cap (the cap is a limit, not "refuse everything").
      expect(maxFds - baseFds, note).toBeGreaterThanOrEqual(MAX_CONNECTIONS - 16);
      expect(closed, note).toBeGreaterThanOrEqual(enough);
      expect(ctl.proc.exitInfo()).toBeNull();
      expect(pidAlive(ctl.pid)).toBe(true);
    } finally {
      for (const s of sockets) s.destroy();
    }
    // Once they are gone, the proxy serves again.
    await until(
      async () => (await rawGet(ctl.port, '/healthz')) === 200,
      10_000,
      'the proxy to serve after the flood',
    );
    await stillServing();
    expect(controllerFds() - baseFds).toBeLessThan(16);
    // A loaded host (two cores shared with other suites) stretches every step of this one.
  }, 45_000);

  it(`a hold never exceeds its bound: 200 requests into a slow restart → 503 + Retry-After within hold-timeout, beyond --hold-max ${HOLD_MAX} at once`, async () => {
    const before = await stillServing();
    // The next gateway takes 7 s to get ready: longer than the hold. (Zero-padded: every
    // patchable value must look like a key, at least 8 characters.)
    const patch = await ctl.patch({ STANDIN_READY_DELAY_MS: '00007000' });
    expect(patch.body).toMatchObject({ ok: true, signaled: true });
    await until(async () => (await ctl.state()).body.proxy.state === 'holding', 5_000, 'the hold');
    const N = 200;
    let maxHeld = 0;
    let bursting = true;
    const watcher = (async () => {
      while (bursting) {
        maxHeld = Math.max(maxHeld, (await ctl.state()).body.proxy.held);
        await sleep(100);
      }
    })();
    const answers = await Promise.all(Array.from({ length: N }, () => rawRequest(ctl.port, '/healthz')));
    bursting = false;
    await watcher;
    for (const a of answers) captured.push(a.body);
    // Every request is answered 503 with Retry-After (the gateway is not ready before the hold
    // ends), none later than the hold's bound plus slack: on a loaded host a request can take a
    // second just to reach the controller.
    const slow = answers.filter((a) => a.status !== 503 || a.ms >= HOLD_TIMEOUT_MS + 2_500);
    expect(slow.map((a) => `${a.status} after ${a.ms} ms`)).toEqual([]);
    for (const a of answers) {
      expect(a.retryAfter).toBe('5');
      expect(JSON.parse(a.body)).toEqual({ error: 'Gateway not ready' });
    }
    // A held request is answered no sooner than hold-timeout after it was sent, a refused one at
    // once: at most --hold-max waited, every other one was refused without waiting.
    const waited = answers.filter((a) => a.ms >= HOLD_TIMEOUT_MS).length;
    expect(waited).toBeGreaterThan(0);
    expect(waited).toBeLessThanOrEqual(HOLD_MAX);
    expect(maxHeld).toBeLessThanOrEqual(HOLD_MAX);

    // The slow gateway gets ready; the hold's record agrees; traffic flows again.
    const after = await ctl.waitServing((s) => s.gateway.pid !== before.gateway.pid, 20_000);
    captured.push(JSON.stringify(after));
    const hold = after.proxy.lastHold;
    expect(hold.heldRequests).toBeGreaterThanOrEqual(waited);
    expect(hold.heldRequests).toBeLessThanOrEqual(HOLD_MAX);
    expect(hold.longestWaitMs).toBeGreaterThanOrEqual(HOLD_TIMEOUT_MS);
    expect(hold.longestWaitMs).toBeLessThan(HOLD_TIMEOUT_MS + 1_000);
    expect(hold.refused).toBe(N);
    await stillServing();
  }, 30_000);
});

/** A client → server text frame (masked, as RFC 6455 requires of clients) with `size` bytes. */
function maskedTextFrame(size: number): Buffer {
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const header = Buffer.alloc(14);
  header[0] = 0x81; // FIN + text
  header[1] = 0x80 | 127;
  header.writeBigUInt64BE(BigInt(size), 2);
  mask.copy(header, 10);
  const payload = Buffer.alloc(size, 'x');
  for (let i = 0; i < size; i++) payload[i] = payload[i]! ^ mask[i & 3]!;
  return Buffer.concat([header, payload]);
}

async function openWs(port: number) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket`);
  const messages: Json[] = [];
  ws.onmessage = (m) => messages.push(JSON.parse(String(m.data)) as Json);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error('websocket failed'));
  });
  return { ws, messages };
}

async function until(fn: () => unknown, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}
