// The controller's readiness probe (src/controller/ready-probe.ts): GET /readyz on loopback, true
// only for a 200, false for anything else within its deadline, and nothing left behind once it
// has answered (no listener on the caller's signal: the supervisor's per-probe signals must not
// keep the exchange alive into V8's old space).
import { getEventListeners } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ReadyProbe } from '../../src/controller/ready-probe.ts';
import { freePort } from '../support/http.ts';

const servers: Server[] = [];
const probes: ReadyProbe[] = [];
afterEach(async () => {
  for (const p of probes.splice(0)) p.close();
  await Promise.all(
    servers.splice(0).map((s) => new Promise((r) => s.close(r)).then(() => s.closeAllConnections())),
  );
});

/** A gateway stand-in whose /readyz answers `status` (null: never answers). */
async function gateway(status: number | null): Promise<{ port: number; paths: string[] }> {
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(`${req.method} ${req.url}`);
    if (status === null) return; // hangs
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ready: status === 200, pad: 'x'.repeat(100_000) }));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, paths };
}

function probe(): ReadyProbe {
  const p = new ReadyProbe();
  probes.push(p);
  return p;
}

describe('ReadyProbe', () => {
  it('is true for a 200 from GET /readyz, false for a 503', async () => {
    const up = await gateway(200);
    const down = await gateway(503);
    const p = probe();
    expect(await p.ready(up.port, 1_000)).toBe(true);
    expect(await p.ready(down.port, 1_000)).toBe(false);
    expect(up.paths).toEqual(['GET /readyz']);
  });

  it('is false when nothing listens, and for a port node:http refuses', async () => {
    expect(await probe().ready(await freePort(), 1_000)).toBe(false);
    expect(await probe().ready(70_000, 1_000)).toBe(false);
  });

  it('is false at its deadline when the gateway does not answer', async () => {
    const hung = await gateway(null);
    const t0 = Date.now();
    expect(await probe().ready(hung.port, 200)).toBe(false);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(Date.now() - t0).toBeLessThan(2_000);
  });

  it('is false once the caller aborts, and leaves no listener on the signal either way', async () => {
    const hung = await gateway(null);
    const up = await gateway(200);
    const p = probe();
    const ac = new AbortController();
    const pending = p.ready(hung.port, ac.signal);
    await new Promise((r) => setTimeout(r, 50));
    expect(getEventListeners(ac.signal, 'abort')).toHaveLength(1);
    ac.abort();
    expect(await pending).toBe(false);
    const signal = AbortSignal.timeout(5_000);
    expect(await p.ready(up.port, signal)).toBe(true);
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    expect(await p.ready(up.port, AbortSignal.abort())).toBe(false);
  });
});
