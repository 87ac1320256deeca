// Owns the small HTTP helpers tests share: a free loopback port and a bounded chat request.
import { createServer } from 'node:net';

/** A TCP port that was free on 127.0.0.1 a moment ago (for programs that need a fixed --port). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = addr && typeof addr === 'object' ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('freePort: no port'))));
    });
  });
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
