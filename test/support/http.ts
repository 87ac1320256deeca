// Owns the small HTTP helpers tests share: a free loopback port and a bounded chat request.
import { createServer } from 'node:net';

/**
 * Ports for servers a test starts itself on a port it must name up front (a gateway's
 * `--gateway-port`, a surge port). They come from 20000–31999, below Linux's ephemeral range
 * (32768+), so no `listen(0)` anywhere can take one between this call and its use; each vitest
 * worker (VITEST_POOL_ID; the pid outside vitest) draws from its own slice and never hands out a
 * port twice, so parallel test files cannot collide either. Each candidate is bound once to check
 * it is free right now.
 */
const PORT_BASE = 20_000;
const SLICES = 16;
const SLICE_SIZE = 750;
const slice = (Number(process.env.VITEST_POOL_ID ?? process.pid) || 0) % SLICES;
let cursor = Math.floor(Math.random() * SLICE_SIZE);
let handedOut = 0;

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  for (let tries = 0; tries < SLICE_SIZE; tries++) {
    if (handedOut >= SLICE_SIZE) break;
    const port = PORT_BASE + slice * SLICE_SIZE + (cursor % SLICE_SIZE);
    cursor++;
    handedOut++;
    if (await bindable(port)) return port;
  }
  throw new Error(`freePort: no free port left in this worker's slice (${SLICE_SIZE} ports)`);
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
