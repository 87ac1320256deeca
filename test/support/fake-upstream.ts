// Owns the fake Kilo Gateway upstream: an OpenAI-compatible endpoint on loopback that accepts
// only the keys it is told, answers 401 otherwise, and records which key each request carried.
//
// In a test: `const up = await startFakeUpstream({ keys: [A] })`, point the gateway at
// `up.baseUrl`, then assert on `up.requests` / `await up.waitForRequest(...)`.
// As a program (shell scripts, the demo):
//   node test/support/fake-upstream.ts --port 0 --keys-file FILE [--record FILE]
// prints one JSON line `{"baseUrl":"…","pid":N}` on stdout once listening, re-reads FILE (one
// key per line) on every request and appends one JSON line per request to the record file,
// carrying `keyHash` (see keyHash()) and never the key. Nothing it prints contains a key.
import { createHash } from 'node:crypto';
import { appendFileSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export const FAKE_UPSTREAM_CONTENT = 'FAKE-UPSTREAM-OK';
export const FAKE_MODEL_ID = 'kilo/auto';
const BASE_PATH = '/api/gateway/';
const MAX_BODY = 1024 * 1024;

/** First 16 hex digits of SHA-256(key): how the record file and scripts identify a key. */
export function keyHash(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 16);
}

export interface UpstreamRequest {
  /** The bearer key the request carried ('' when none). In memory only, never written out. */
  key: string;
  keyHash: string;
  /** True when the key was accepted (200). */
  ok: boolean;
  /** The X-KILOCODE-FEATURE header, or null. */
  feature: string | null;
  method: string;
  path: string;
  /** `stream` from the JSON body (chat completions only). */
  stream: boolean | null;
  status: number;
  at: number;
}

export interface FakeUpstreamOptions {
  keys?: string[];
  /** When set, the accepted keys are re-read from this file (one per line) on every request. */
  keysFile?: string;
  /** When set, one JSON line per request (without the key) is appended to this file. */
  recordFile?: string;
  port?: number;
  /** Delay before answering chat completions (to hold requests in flight). */
  delayMs?: number;
}

export interface FakeUpstream {
  /** `http://127.0.0.1:<port>/api/gateway/` (with the trailing slash OpenClaw's baseUrl has). */
  baseUrl: string;
  port: number;
  setKeys(keys: string[]): void;
  setDelayMs(ms: number): void;
  requests: UpstreamRequest[];
  /** Chat-completion requests only. */
  chatRequests(): UpstreamRequest[];
  /** Resolves with the first request (past or future) matching `pred`; rejects after the timeout. */
  waitForRequest(pred: (r: UpstreamRequest) => boolean, timeoutMs?: number): Promise<UpstreamRequest>;
  close(): Promise<void>;
}

function readKeysFile(path: string): string[] {
  try {
    return readFileSync(path, 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l.length > 0);
  } catch {
    // A missing keys file means "accept nothing", like an upstream with every key revoked.
    return [];
  }
}

function bearer(req: IncomingMessage): string {
  const h = req.headers.authorization ?? '';
  const m = /^Bearer\s+(.*)$/i.exec(h);
  return m?.[1]?.trim() ?? '';
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += b.length;
    if (size > MAX_BODY) throw new Error('body too large');
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function streamFlag(body: string): boolean | null {
  try {
    const parsed: unknown = JSON.parse(body);
    if (parsed && typeof parsed === 'object' && 'stream' in parsed) {
      return parsed.stream === true;
    }
    return false;
  } catch {
    return null;
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function completionId(): string {
  return `chatcmpl-fake-${Date.now().toString(36)}`;
}

function sendCompletion(res: ServerResponse, stream: boolean, hash: string): void {
  const content = `${FAKE_UPSTREAM_CONTENT} keyhash=${hash}`;
  const id = completionId();
  const created = Math.floor(Date.now() / 1000);
  if (!stream) {
    json(res, 200, {
      id,
      object: 'chat.completion',
      created,
      model: FAKE_MODEL_ID,
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
    });
    return;
  }
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const chunk = (delta: Record<string, unknown>, finish: string | null) =>
    `data: ${JSON.stringify({
      id,
      object: 'chat.completion.chunk',
      created,
      model: FAKE_MODEL_ID,
      choices: [{ index: 0, delta, finish_reason: finish }],
    })}\n\n`;
  res.write(chunk({ role: 'assistant', content: '' }, null));
  res.write(chunk({ content }, null));
  res.write(chunk({}, 'stop'));
  res.write(
    `data: ${JSON.stringify({
      id,
      object: 'chat.completion.chunk',
      created,
      model: FAKE_MODEL_ID,
      choices: [],
      usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
    })}\n\n`,
  );
  res.end('data: [DONE]\n\n');
}

export async function startFakeUpstream(opts: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  let keys = new Set(opts.keys ?? []);
  let delayMs = opts.delayMs ?? 0;
  const requests: UpstreamRequest[] = [];
  const waiters = new Set<(r: UpstreamRequest) => void>();

  const accepted = (key: string): boolean => {
    if (key === '') return false;
    if (opts.keysFile) return readKeysFile(opts.keysFile).includes(key) || keys.has(key);
    return keys.has(key);
  };

  const record = (r: UpstreamRequest) => {
    requests.push(r);
    if (opts.recordFile) {
      const { key: _key, ...rest } = r;
      appendFileSync(opts.recordFile, `${JSON.stringify(rest)}\n`);
    }
    for (const w of waiters) w(r);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const key = bearer(req);
    const hash = key ? keyHash(key) : '';
    const feature = req.headers['x-kilocode-feature'];
    const base = {
      key,
      keyHash: hash,
      feature: typeof feature === 'string' ? feature : null,
      method,
      path,
      at: Date.now(),
    };

    if (method === 'GET' && path === `${BASE_PATH}models`) {
      // Model discovery is not authenticated here: OpenClaw may call it with or without a key.
      record({ ...base, ok: true, stream: null, status: 200 });
      json(res, 200, {
        object: 'list',
        data: [{ id: FAKE_MODEL_ID, object: 'model', created: 0, owned_by: 'kilo', name: 'Kilo Auto' }],
      });
      return;
    }
    if (method === 'POST' && path === `${BASE_PATH}chat/completions`) {
      let body: string;
      try {
        body = await readBody(req);
      } catch {
        json(res, 413, { error: { message: 'Request body too large', type: 'invalid_request_error' } });
        return;
      }
      const stream = streamFlag(body);
      const ok = accepted(key);
      record({ ...base, ok, stream, status: ok ? 200 : 401 });
      if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
      if (!ok) {
        json(res, 401, { error: { message: 'Invalid API key', type: 'authentication_error' } });
        return;
      }
      sendCompletion(res, stream === true, hash);
      return;
    }
    record({ ...base, ok: false, stream: null, status: 404 });
    json(res, 404, { error: { message: 'Not found', type: 'not_found' } });
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) json(res, 500, { error: { message: 'fake upstream failed', type: 'api_error' } });
      else res.destroy();
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', fail);
      ok();
    });
  });
  const port = (server.address() as AddressInfo).port;

  return {
    baseUrl: `http://127.0.0.1:${port}${BASE_PATH}`,
    port,
    requests,
    setKeys(next) {
      keys = new Set(next);
    },
    setDelayMs(ms) {
      delayMs = ms;
    },
    chatRequests: () => requests.filter((r) => r.path.endsWith('/chat/completions')),
    waitForRequest(pred, timeoutMs = 30_000) {
      const seen = requests.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolveReq, reject) => {
        const onReq = (r: UpstreamRequest) => {
          if (!pred(r)) return;
          clearTimeout(timer);
          waiters.delete(onReq);
          resolveReq(r);
        };
        const timer = setTimeout(() => {
          waiters.delete(onReq);
          reject(new Error(`fake upstream: no matching request within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(onReq);
      });
    },
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: '0' },
      'keys-file': { type: 'string' },
      record: { type: 'string' },
      'delay-ms': { type: 'string', default: '0' },
    },
    strict: true,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write('fake-upstream: --port must be an integer 0-65535\n');
    process.exit(2);
  }
  if (!values['keys-file']) {
    process.stderr.write('fake-upstream: --keys-file FILE is required\n');
    process.exit(2);
  }
  const up = await startFakeUpstream({
    port,
    keysFile: resolve(values['keys-file']),
    recordFile: values.record ? resolve(values.record) : undefined,
    delayMs: Number(values['delay-ms']) || 0,
  });
  process.stdout.write(`${JSON.stringify({ baseUrl: up.baseUrl, pid: process.pid })}\n`);
  const shutdown = () => {
    void up.close().then(() => process.exit(0));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`fake-upstream: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
