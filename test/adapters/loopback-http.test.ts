// The controller's readiness probe (ReadyProbe, src/adapters/loopback-http.ts), which both the
// supervisor and /_kilo/state use: GET /readyz on loopback, true only for a 200, false for
// anything else within its deadline, and nothing left behind once it has answered (no timer, no
// socket: the probes of a starting gateway must not keep their exchanges alive into V8's old space).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ReadyProbe } from '../../src/adapters/loopback-http.ts';
import { waitFor } from '../controller/helpers.ts';
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
async function gateway(
  status: number | null,
): Promise<{ port: number; paths: string[]; open: () => Promise<number> }> {
  const paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(`${req.method} ${req.url}`);
    if (status === null) return; // hangs
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ready: status === 200, pad: 'x'.repeat(100_000) }));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const open = () =>
    new Promise<number>((resolve, reject) => server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
  return { port: (server.address() as AddressInfo).port, paths, open };
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

  it('leaves no timer and no connection behind once it has answered, whatever the answer', async () => {
    const up = await gateway(200);
    const hung = await gateway(null);
    const p = probe();
    const set = vi.spyOn(globalThis, 'setTimeout');
    const cleared = vi.spyOn(globalThis, 'clearTimeout');
    for (let i = 0; i < 5; i++) expect(await p.ready(up.port, 5_001)).toBe(true);
    expect(await p.ready(hung.port, 101)).toBe(false);
    // Its deadline timers, told apart by their delays: each one cleared once the answer was in.
    const deadlines = set.mock.calls.flatMap(([, ms], i) =>
      ms === 5_001 || ms === 101 ? [set.mock.results[i]!.value] : [],
    );
    expect(deadlines).toHaveLength(6);
    for (const t of deadlines) expect(cleared.mock.calls.some(([c]) => c === t)).toBe(true);
    vi.restoreAllMocks();
    // The gateway sees every probe's connection closed: none kept alive, none left hanging.
    await waitFor(
      async () => (await up.open()) === 0 && (await hung.open()) === 0,
      2_000,
      'connections closed',
    );
    expect(up.paths).toHaveLength(5);
  });

  it('answers false for a probe in flight when closed (controller shutdown)', async () => {
    const hung = await gateway(null);
    const p = probe();
    const pending = p.ready(hung.port, 10_000);
    await waitFor(() => hung.paths.length === 1, 2_000, 'the probe arrived');
    const t0 = Date.now();
    p.close();
    expect(await pending).toBe(false);
    expect(Date.now() - t0).toBeLessThan(1_000);
  });
});
