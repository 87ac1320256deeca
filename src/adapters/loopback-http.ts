// Owns the controller's HTTP plumbing: node:http without pulling in undici.
//
// Why not `import … from 'node:http'` and `fetch`: an ESM import of node:http builds a namespace
// from every export, which runs the lazy `WebSocket`/`CloseEvent`/`MessageEvent` getters and loads
// Node's bundled undici; `fetch` loads it too. That is ≈13 MB of a controller that should idle
// beside the gateway in a few tens of MB (BENCHMARKS.md). `process.getBuiltinModule` hands back
// the CommonJS module as is, so nothing is loaded that the controller does not use. (The bundle
// imports every builtin this way; doing it here keeps the sources run without undici too.)
import type * as Http from 'node:http';

const http: typeof Http = process.getBuiltinModule('node:http');

export const createServer: typeof Http.createServer = http.createServer;

export interface LoopbackResponse {
  status: number;
  /** The body as text, cut at `maxBytes`. */
  text: string;
}

/**
 * GET `http://127.0.0.1:<port><path>`, bounded by `signal` (the whole exchange, body included)
 * and by `maxBytes` of body kept. Rejects on connection errors and on abort.
 */
export function getLoopback(
  port: number,
  path: string,
  opts: { signal: AbortSignal; maxBytes?: number },
): Promise<LoopbackResponse> {
  const maxBytes = opts.maxBytes ?? 64 * 1024;
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, signal: opts.signal, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let kept = 0;
      res.on('data', (chunk: Buffer) => {
        if (kept >= maxBytes) return;
        const part = chunk.subarray(0, maxBytes - kept);
        chunks.push(part);
        kept += part.length;
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
      res.on('close', () => {
        if (!res.complete) reject(new Error('connection closed before the response ended'));
      });
    });
    req.on('error', reject);
  });
}

/** Whether the gateway on `port` answers `GET /readyz` with 200 before `signal` fires. */
export async function readyzOk(port: number, signal: AbortSignal): Promise<boolean> {
  try {
    return (await getLoopback(port, '/readyz', { signal })).status === 200;
  } catch {
    return false;
  }
}
