// Owns the controller's readiness probe of its gateway: `GET /readyz` on the loopback port, 200 or
// not, within a deadline. The supervisor asks it every 50 ms while a gateway starts and every
// `/_kilo/state` read asks it once, so it is the controller's most frequent allocation while a
// rotation is watched (BENCHMARKS.md, controller memory): it reuses one agent (node:http makes a
// whole new Agent per request for `agent: false`), keeps no body, and leaves nothing behind when
// the answer is in — no listener on the caller's signal and no timer, so nothing of the exchange
// survives into V8's old space to wait for a full GC.
import type * as Http from 'node:http';

const http: typeof Http = process.getBuiltinModule('node:http');

export class ReadyProbe {
  /** One connection per probe (no keep-alive: a reused socket the gateway closed would say "not ready"). */
  readonly #agent = new http.Agent({ keepAlive: false });

  /**
   * Whether the gateway on `port` answers `GET /readyz` with 200 before `deadline` (a number of
   * ms, or a signal that aborts the probe). Never rejects.
   */
  ready(port: number, deadline: number | AbortSignal): Promise<boolean> {
    const signal = typeof deadline === 'number' ? null : deadline;
    if (signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      let req: Http.ClientRequest;
      try {
        req = http.get({ host: '127.0.0.1', port, path: '/readyz', agent: this.#agent });
      } catch {
        resolve(false); // a port node:http refuses (out of range)
        return;
      }
      // First, so that no error of the exchange (its destroy() below included) is ever unhandled.
      req.on('error', () => settle(false));
      const settle = (ok: boolean) => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        req.destroy();
        resolve(ok);
      };
      const onAbort = () => settle(false);
      if (signal) signal.addEventListener('abort', onAbort, { once: true });
      else timer = setTimeout(onAbort, deadline as number);
      req.on('response', (res) => {
        const ok = res.statusCode === 200;
        res.on('error', () => settle(false));
        res.once('end', () => settle(ok));
        res.resume();
      });
    });
  }

  /** Closes the agent's sockets (controller shutdown). */
  close(): void {
    this.#agent.destroy();
  }
}
