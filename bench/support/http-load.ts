// Owns the front-door benchmark's own loopback HTTP load: one timed request on a keep-alive
// connection, paired direct-vs-proxied latency, closed-loop throughput, server-sent-event readers,
// and the quantiles the figures are reported as.
import { Agent, request } from 'node:http';

export interface BenchRequest {
  label: string;
  method: 'GET' | 'POST';
  path: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface Timed {
  status: number;
  ms: number;
}

const REQUEST_TIMEOUT_MS = 30_000;

/** One request on `agent`; resolves once the whole answer has been read. */
export function timedRequest(agent: Agent, port: number, r: BenchRequest): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...r.headers };
    if (r.body !== undefined) headers['content-length'] = String(Buffer.byteLength(r.body));
    const t0 = performance.now();
    const req = request(
      { host: '127.0.0.1', port, method: r.method, path: r.path, headers, agent },
      (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('request timed out')));
    req.end(r.body);
  });
}

/** `sorted[floor(q·n)]` (the convention of test/support/traffic.ts `latency()`). */
export function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
}

export interface PairedLatency {
  direct: number[];
  proxied: number[];
  /** proxied − direct, per pair. */
  diff: number[];
  /** Answers other than 2xx, or no answer. */
  errors: number;
}

/**
 * `n` pairs of the same request, one to the gateway's own port and one through the proxy, each on
 * its own keep-alive connection, strictly one at a time; the order inside a pair alternates so
 * neither side always runs second. `warmup` pairs first, not counted.
 */
export async function pairedLatency(
  directPort: number,
  proxiedPort: number,
  r: BenchRequest,
  n: number,
  warmup: number,
): Promise<PairedLatency> {
  const agents = {
    direct: new Agent({ keepAlive: true, maxSockets: 1 }),
    proxied: new Agent({ keepAlive: true, maxSockets: 1 }),
  };
  const out: PairedLatency = { direct: [], proxied: [], diff: [], errors: 0 };
  const one = async (side: 'direct' | 'proxied') => {
    try {
      const t = await timedRequest(agents[side], side === 'direct' ? directPort : proxiedPort, r);
      if (t.status < 200 || t.status > 299) out.errors++;
      return t.ms;
    } catch {
      out.errors++;
      return Number.NaN;
    }
  };
  try {
    for (let i = 0; i < warmup + n; i++) {
      let d: number;
      let p: number;
      if (i % 2 === 0) {
        d = await one('direct');
        p = await one('proxied');
      } else {
        p = await one('proxied');
        d = await one('direct');
      }
      if (i < warmup || Number.isNaN(d) || Number.isNaN(p)) continue;
      out.direct.push(d);
      out.proxied.push(p);
      out.diff.push(p - d);
    }
  } finally {
    agents.direct.destroy();
    agents.proxied.destroy();
  }
  return out;
}

export interface Throughput {
  requests: number;
  errors: number;
  perSecond: number;
}

/** `clients` closed loops, each on its own keep-alive connection, for `durationMs`. */
export async function throughput(
  port: number,
  r: BenchRequest,
  clients: number,
  durationMs: number,
): Promise<Throughput> {
  const agents = Array.from({ length: clients }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
  let requests = 0;
  let errors = 0;
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  try {
    await Promise.all(
      agents.map(async (agent) => {
        while (performance.now() < deadline) {
          try {
            const t = await timedRequest(agent, port, r);
            if (t.status >= 200 && t.status < 300) requests++;
            else errors++;
          } catch {
            errors++;
          }
        }
      }),
    );
  } finally {
    for (const a of agents) a.destroy();
  }
  const secs = (performance.now() - t0) / 1000;
  return { requests, errors, perSecond: requests / secs };
}

export interface StreamClients {
  /** Stops starting new streams, waits for the open ones to end. */
  stop(): Promise<{ streams: number; failed: number; events: number }>;
}

/**
 * `n` clients that each read a server-sent-event stream at `path` to its end (`data: [DONE]`),
 * then open the next one, until stopped. A stream that breaks or lacks [DONE] counts as failed.
 */
export function startStreamClients(port: number, path: string, n: number): StreamClients {
  let running = true;
  let streams = 0;
  let failed = 0;
  let events = 0;
  const agent = new Agent({ keepAlive: true, maxSockets: n });
  const readOne = () =>
    new Promise<void>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
        let tail = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          events += chunk.split('\n\n').length - 1;
          tail = (tail + chunk).slice(-64);
        });
        res.on('end', () => {
          streams++;
          if (res.statusCode !== 200 || !tail.includes('[DONE]')) failed++;
          resolve();
        });
        res.on('error', () => {
          failed++;
          resolve();
        });
      });
      req.on('error', () => {
        failed++;
        setTimeout(resolve, 100);
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('stream timed out')));
      req.end();
    });
  const loops = Array.from({ length: n }, async () => {
    while (running) await readOne();
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return { streams, failed, events };
    },
  };
}
