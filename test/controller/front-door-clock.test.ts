// The front door's hold on an injected clock: a 60 s hold, its bound and its figures, driven by a
// ManualClock over real loopback HTTP, in no wall time.
import { createServer, type Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { FrontDoor } from '../../src/controller/front-door.ts';
import { silentLogger } from '../../src/log.ts';
import { waitFor } from './helpers.ts';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as { port: number }).port;
}

async function setup() {
  const clock = new ManualClock(1_000_000);
  const door = new FrontDoor({
    log: silentLogger(),
    holdTimeoutMs: 60_000,
    holdMax: 10,
    proxyToken: null,
    tokenEquals: (a, b) => a === b,
    clock,
  });
  cleanups.push(() => door.close());
  const gatewayPort = await listen(createServer((_req, res) => res.end('ok')));
  const frontPort = await listen(createServer((req, res) => door.handleRequest(req, res)));
  const get = () =>
    fetch(`http://127.0.0.1:${frontPort}/x`).then(async (r) => ({
      status: r.status,
      retryAfter: r.headers.get('retry-after'),
      text: await r.text(),
    }));
  /** Holds, and sends one request that the hold keeps waiting. */
  const holdOne = async () => {
    door.hold();
    const held = get();
    await waitFor(() => door.stats().held === 1, 5_000, 'the request held');
    return { held }; // wrapped: an async function would wait for the answer itself
  };
  return { clock, door, gatewayPort, get, holdOne };
}

describe('front door hold on the injected clock', () => {
  it('a held request is refused with 503 exactly when the hold timeout has passed on the clock', async () => {
    const { clock, door, gatewayPort, get, holdOne } = await setup();
    const { held } = await holdOne();
    await clock.advance(59_999);
    expect(door.stats()).toMatchObject({ state: 'holding', held: 1 });
    expect(door.canServe()).toBe(true);
    await clock.advance(1);
    expect(await held).toMatchObject({ status: 503, retryAfter: expect.any(String) });
    // The hold is older than its bound: a new request is refused at once, not held.
    expect(door.canServe()).toBe(false);
    expect((await get()).status).toBe(503);
    expect(door.stats().held).toBe(0);
    door.route({ port: gatewayPort, pid: 1 });
    expect(door.stats().lastHold).toEqual({
      heldRequests: 1,
      longestWaitMs: 60_000,
      refused: 2,
      endedAt: new Date(1_060_000).toISOString(),
    });
  });

  it('a request released by route() waited what the clock says', async () => {
    const { clock, door, gatewayPort, holdOne } = await setup();
    const { held } = await holdOne();
    await clock.advance(2_500);
    door.route({ port: gatewayPort, pid: 1 });
    expect(await held).toMatchObject({ status: 200, text: 'ok' });
    expect(door.stats().lastHold).toEqual({
      heldRequests: 1,
      longestWaitMs: 2_500,
      refused: 0,
      endedAt: new Date(1_002_500).toISOString(),
    });
    expect(clock.pending).toBe(0); // the release cancelled the request's hold timeout
  });
});
