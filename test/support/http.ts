// Owns the small HTTP helpers tests share: a free loopback port and a bounded chat request.
import { createServer, type Server } from 'node:net';

/**
 * Ports for servers a test starts itself on a port it must name up front (a gateway's
 * `--gateway-port`, a surge port). They come from 20000–31999, below Linux's ephemeral range
 * (32768+), so no `listen(0)` anywhere can take one between this call and its use.
 *
 * No two freePort users hand out the same port while both live, in one vitest run or in two
 * beside each other (a helper's run and the CI's): each port handed out is reserved for the life
 * of the process by binding a Unix socket in Linux's abstract namespace named after it. The
 * binding is exclusive across processes, in the same network namespace as the TCP ports, and the
 * kernel drops it when the process ends however it ends (SIGKILL too): unlike lock files there is
 * nothing to clean up or to find stale, and unlike a range picked per process (a pid hashed)
 * nothing can overlap. Another process skips a reserved port; one file descriptor per port held.
 * Within a process no port is handed out twice. Each vitest worker (VITEST_POOL_ID; the pid
 * outside vitest) starts its walk through the range at its own slice, so workers rarely meet;
 * each candidate is also bound once to check that nothing else listens on it right now.
 * Elsewhere than Linux there is no reservation.
 */
const PORT_BASE = 20_000;
const RANGE = 12_000;
const SLICES = 16;
const start = ((Number(process.env.VITEST_POOL_ID ?? process.pid) || 0) % SLICES) * (RANGE / SLICES);
let cursor = 0;
const RESERVE = process.platform === 'linux';

/** Reserves `port` for this process (false: another process holds it); throws on any other error. */
function reserve(port: number): Promise<Server | false> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(false);
      else reject(new Error(`freePort: cannot reserve port ${port} (${err.code ?? err.message})`));
    });
    srv.listen({ path: `\0keyroll-test-port-${port}` }, () => resolve(srv.unref()));
  });
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  while (cursor < RANGE) {
    const port = PORT_BASE + ((start + cursor++) % RANGE);
    const held = RESERVE ? await reserve(port) : null;
    if (held === false) continue; // another process's
    if (await bindable(port)) return port;
    held?.close();
  }
  throw new Error(`freePort: every port in ${PORT_BASE}–${PORT_BASE + RANGE - 1} was handed out or taken`);
}

export interface ChatResult {
  status: number;
  /** Parsed JSON when the body is JSON, else the raw text. */
  body: unknown;
  text: string;
}

/**
 * `POST /v1/chat/completions` on a gateway at 127.0.0.1:`port` with the bearer `token`.
 * Bounded by `timeoutMs` (a first request through the real gateway can take several seconds).
 */
export async function chat(port: number, token: string, timeoutMs = 120_000): Promise<ChatResult> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON; keep the text
  }
  return { status: res.status, body, text };
}

/** GET a URL with a timeout; returns the status and the text (never throws on HTTP errors). */
export async function getText(url: string, timeoutMs = 5_000): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, text: await res.text() };
}
