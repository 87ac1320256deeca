// A whole controller on one ManualClock (`startController`'s `clock`): its supervisor's
// timestamps and crash backoff and its front door's hold move with that clock and nothing else,
// while the gateway it runs (the stand-in) starts and answers in real time.
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { chat } from '../support/http.ts';
import { startTestController, suiteCapture, TOKEN, waitFor } from './helpers.ts';

const KEY = 'test-key-A-clock-aaaaaaaa';
const { captured, cleanups } = suiteCapture([TOKEN, KEY], 1000);

async function setup(clock: ManualClock, readyDelayMs = 50) {
  const t = await startTestController({
    prefix: 'keyroll-ctl-clock-',
    env: {
      OPENCLAW_GATEWAY_TOKEN: TOKEN,
      KILOCODE_API_KEY: KEY,
      STANDIN_READY_DELAY_MS: String(readyDelayMs),
    },
    upstreamKeys: [KEY],
    captured,
    expectGatewayGone: true,
    clock,
  });
  cleanups.push(() => t.stop());
  await t.ctl.bootstrapped;
  expect(await t.ctl.supervisor.waitForState('running', 10_000)).toBe(true);
  return t;
}

describe('a controller on a manual clock', () => {
  it('its supervisor reports the clock’s time, and respawns a crashed gateway when the clock says', async () => {
    const clock = new ManualClock(Date.parse('2030-01-01T00:00:00Z'));
    const { ctl } = await setup(clock);
    const sup = ctl.supervisor;
    const first = sup.getStats();
    expect(first.startedAt).toBe('2030-01-01T00:00:00.000Z');
    await clock.advance(5_000);
    expect(sup.getStats().uptime).toBe(5);

    process.kill(first.pid!, 'SIGKILL');
    await waitFor(() => sup.getState() === 'crashed', 10_000, 'the crash');
    // The first backoff (1 s) is on the clock: real time passing does not respawn it.
    await new Promise((r) => setTimeout(r, 300));
    await clock.advance(999);
    expect(sup.getStats()).toMatchObject({ state: 'crashed', spawns: 1, restarts: 1 });
    await clock.advance(1);
    expect(await sup.waitForState('running', 10_000)).toBe(true);
    const second = sup.getStats();
    expect(second).toMatchObject({ spawns: 2, restarts: 1, startedAt: '2030-01-01T00:00:06.000Z' });
    expect(second.pid).not.toBe(first.pid);
  });

  it('its front door’s hold is measured on the clock', async () => {
    const clock = new ManualClock(Date.parse('2030-01-01T00:00:00Z'));
    // A gateway slow enough to start that a request is held while it does.
    const { ctl } = await setup(clock, 1_500);
    const oldPid = ctl.supervisor.getStats().pid;
    await ctl.supervisor.restart(); // hold: requests wait for the new gateway
    expect(ctl.frontDoor.stats().state).toBe('holding');
    const held = chat(ctl.port, TOKEN, 20_000);
    await waitFor(() => ctl.frontDoor.stats().held === 1, 5_000, 'the request held');
    await clock.advance(7_000);
    expect((await held).status).toBe(200);
    expect(ctl.supervisor.getStats().pid).not.toBe(oldPid);
    expect(ctl.frontDoor.stats().lastHold).toEqual({
      heldRequests: 1,
      longestWaitMs: 7_000,
      refused: 0,
      endedAt: '2030-01-01T00:00:07.000Z',
    });
  });
});
