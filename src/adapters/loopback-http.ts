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

/**
 * The controller's readiness probe of its gateway: `GET /readyz` on the loopback port, 200 or not,
 * within a deadline. The supervisor asks it every 50 ms while a gateway starts and every
 * `/_kilo/state` observation asks it once, so it was the controller's most frequent allocation
 * while a rotation is watched (BENCHMARKS.md, controller memory). Hence, unlike `getLoopback`: one
 * agent for every probe (node:http builds a whole new Agent per request for `agent: false`), its
 * own deadline timer (no AbortSignal, no listener), and no body kept; once the answer is in,
 * nothing of the exchange is left to survive into V8's old space and wait for a full GC.
 */
export class ReadyProbe {
  /** One connection per probe (no keep-alive: a reused socket the gateway closed would say "not ready"). */
  readonly #agent = new http.Agent({ keepAlive: false });

  /** Whether the gateway on `port` answers `GET /readyz` with 200 within `timeoutMs`. Never rejects. */
  ready(port: number, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      let req: Http.ClientRequest;
      try {
        req = http.get({ host: '127.0.0.1', port, path: '/readyz', agent: this.#agent });
      } catch {
        resolve(false); // a port node:http refuses (out of range)
        return;
      }
      const settle = (ok: boolean) => {
        clearTimeout(timer);
        req.destroy();
        resolve(ok);
      };
      const timer = setTimeout(() => settle(false), timeoutMs);
      // Before anything can fail, so that no error of the exchange (settle's destroy() included)
      // is ever unhandled.
      req.on('error', () => settle(false));
      req.on('response', (res) => {
        const ok = res.statusCode === 200;
        res.on('error', () => settle(false));
        res.once('end', () => settle(ok));
        res.resume();
      });
    });
  }

  /** Closes the agent's sockets (shutdown): a probe in flight answers false. */
  close(): void {
    this.#agent.destroy();
  }
}
