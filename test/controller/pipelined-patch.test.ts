// The reconciler's patch with a state read written behind it (ControllerClient.patchEnvThenState,
// HTTP/1.1 pipelining) against keyroll's own controller in front of the stand-in gateway: the
// controller answers the patch, holds the read until the new gateway is ready, and answers it
// with the new pid and fingerprint; a refused patch leaves nothing held and logs no error.
import { describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { httpControllerClient } from '../../src/reconcile/controller-client.ts';
import { startTestController, suiteCapture, TOKEN, waitFor } from './helpers.ts';

const KEY_A = 'test-key-A-pipe-aaaaaaaa';
const KEY_B = 'test-key-B-pipe-bbbbbbbb';
const { captured, cleanups } = suiteCapture([TOKEN, KEY_A, KEY_B], 1000);

async function setup() {
  const t = await startTestController({
    prefix: 'keyroll-pipe-',
    env: { OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: KEY_A, STANDIN_READY_DELAY_MS: '300' },
    flags: ['--restart-strategy', 'hold'],
    expectGatewayGone: true,
    captured,
  });
  cleanups.push(() => t.stop());
  await t.ctl.bootstrapped;
  const client = httpControllerClient({
    url: `http://127.0.0.1:${t.ctl.port}`,
    token: TOKEN,
    timeoutMs: 20_000,
  });
  const serving = await waitFor(
    async () => {
      const s = await client.getState(AbortSignal.timeout(5_000));
      return s.gateway.state === 'running' && s.gateway.ready ? s : null;
    },
    20_000,
    'gateway running',
  );
  return { t, client, serving };
}

/** Whether the controller logged at error level (pino: 50) or above. */
const errorsLogged = (lines: string[]) =>
  lines.filter((l) => (JSON.parse(l) as { level: number }).level >= 50);

describe('a patch and a state read sent together (pipelined) to the controller', () => {
  it('the patch is answered at once, the read once the new gateway is ready, with its pid and fingerprint', async () => {
    const { t, client, serving } = await setup();
    const oldPid = serving.gateway.pid!;
    let readyAt: number | null = null;
    t.ctl.supervisor.on('state', (s) => {
      if (s === 'running' && readyAt === null) readyAt = performance.now();
    });
    const { patch, state } = client.patchEnvThenState!(
      { KILOCODE_API_KEY: KEY_B },
      'v2',
      { ms: 15_000, pid: oldPid },
      AbortSignal.timeout(20_000),
    );
    expect(await patch).toMatchObject({ ok: true, signaled: true });
    const patchedAt = performance.now();
    const after = await state;
    const answeredAt = performance.now();
    expect(readyAt).not.toBeNull();
    expect(answeredAt).toBeGreaterThanOrEqual(readyAt!);
    expect(answeredAt - patchedAt).toBeGreaterThanOrEqual(250); // held through the restart
    expect(answeredAt - readyAt!).toBeLessThan(3_000); // woken by the change, not by the 15 s limit
    expect(after.gateway).toMatchObject({ state: 'running', ready: true });
    expect(after.gateway.pid).not.toBe(oldPid);
    expect(after.gateway.pid).toBe(t.ctl.supervisor.getStats().pid);
    expect(after.key.envHash).toBe(fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_B }));
    expect(t.ctl.stateWaits.held).toBe(0);
    expect(errorsLogged(t.lines)).toEqual([]);
  });

  it('a refused patch: the read is dropped unanswered, the connection closed, nothing left held', async () => {
    const { t, client, serving } = await setup();
    const { patch, state } = client.patchEnvThenState!(
      { KILOCODE_API_KEY: 42 as unknown as string },
      'v2',
      { ms: 15_000, pid: serving.gateway.pid ?? null },
      AbortSignal.timeout(20_000),
    );
    await expect(patch).rejects.toMatchObject({ kind: 'http', status: 400 });
    await expect(state).rejects.toMatchObject({
      kind: 'network',
      message: 'GET _kilo/state not sent: the request before it was answered HTTP 400',
    });
    // The controller may have started holding the read; the closed connection ends the hold.
    await waitFor(() => t.ctl.stateWaits.held === 0, 5_000, 'no read held');
    const now = await client.getState(AbortSignal.timeout(5_000));
    expect(now.gateway.pid).toBe(serving.gateway.pid); // nothing restarted
    expect(now.key.envHash).toBe(fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_A }));
    expect(errorsLogged(t.lines)).toEqual([]);
  });
});
