// A gateway that runs one instance per state dir (OpenClaw 2026.9.x): the first surge's gateway
// says it waits for the serving one, the controller stops it and holds, and every later restart
// holds without trying; /_kilo/state says which strategy is in use and why. The fixture child
// plays 2026.9.x (FIX_STATE_LOCK); the real one is test/gateway/front-door-e2e-9x.test.ts.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openclawSurgeRefusal } from '../../src/controller/supervisor.ts';
import { pidAlive, readStarts, startTestController, TOKEN, tempDir, waitFor } from './helpers.ts';

// biome-ignore lint/suspicious/noExplicitAny: /_kilo/state is read field by field.
type Json = Record<string, any>;

const KEYS = ['test-key-A-refuse-aaaaaaaa', 'test-key-B-refuse-bbbbbbbb', 'test-key-C-refuse-cccccccc'];
const REASON = 'the gateway does not run beside another on the same state dir (gateway-lifecycle ownership)';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(fixEnv: Record<string, string>) {
  const logDir = tempDir('keyroll-refuse-starts-');
  const starts = join(logDir.dir, 'starts.jsonl');
  const t = await startTestController({
    prefix: 'keyroll-refuse-',
    gateway: 'fixture',
    surge: true,
    env: {
      OPENCLAW_GATEWAY_TOKEN: TOKEN,
      KILOCODE_API_KEY: KEYS[0]!,
      FIX_LOG: starts,
      ...fixEnv,
    },
    flags: ['--restart-strategy', 'surge'],
  });
  cleanups.push(async () => {
    await t.stop();
    for (const s of readStarts(starts)) expect(pidAlive(s.pid)).toBe(false);
    expect(t.lines.join('\n')).not.toMatch(/test-key-/);
    logDir.cleanup();
  });
  const adm = `http://127.0.0.1:${t.ctl.adminPort}`;
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${adm}${path}`, {
      method,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(15_000),
    });
    return { status: res.status, body: (await res.json()) as Json };
  };
  const serving = (pred: (s: Json) => boolean) =>
    waitFor(
      async () => {
        const s = (await call('GET', '/_kilo/state')).body;
        return s.gateway.state === 'running' && s.proxy.state === 'routing' && pred(s) ? s : null;
      },
      20_000,
      'gateway serving through the proxy',
    );
  const logged = (msg: string) => t.lines.map((l) => JSON.parse(l) as Json).filter((l) => l.msg === msg);
  await t.ctl.bootstrapped;
  return { call, serving, logged, starts: () => readStarts(starts), adm };
}

describe('surge on a gateway that runs one instance per state dir', () => {
  it.each([
    ['waits for the ownership (stopped)', {}, 'waiting for gateway-lifecycle ownership'],
    ['exits at once', { FIX_STATE_LOCK_EXIT: '1' }, 'another OpenClaw process owns gateway-lifecycle'],
  ])(
    'the surge gateway %s: the restart holds, every later one holds at once; /_kilo/state says why',
    async (_, fix, said) => {
      const { dir, cleanup } = tempDir('keyroll-refuse-lock-');
      cleanups.push(cleanup);
      const { call, serving, logged, starts, adm } = await setup({
        FIX_STATE_LOCK: join(dir, 'lifecycle'),
        ...fix,
      });
      const first = await serving(() => true);
      expect(first.proxy).toMatchObject({
        strategy: 'surge',
        configuredStrategy: 'surge',
        strategyReason: null,
      });

      expect((await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEYS[1] })).status).toBe(200);
      const second = await serving((s) => s.gateway.pid !== first.gateway.pid);
      // Three starts: the first gateway, the surge one that waited (stopped), the held restart's.
      const [, refused, held] = starts();
      expect(starts().map((s) => s.key)).toEqual([KEYS[0], KEYS[1], KEYS[1]]);
      expect(second.gateway.pid).toBe(held!.pid);
      expect(pidAlive(refused!.pid)).toBe(false);
      expect(second.proxy).toMatchObject({
        strategy: 'hold',
        configuredStrategy: 'surge',
        strategyReason: REASON,
        lastRestart: { strategy: 'hold', fallback: REASON },
      });
      expect(
        logged('The gateway refuses to run beside the serving one; this restart and every later one hold'),
      ).toEqual([expect.objectContaining({ pid: refused!.pid, reason: REASON, level: 'warn' })]);
      // Its output was logged: what it said is what the controller read.
      expect(
        logged('Gateway output')
          .filter((l) => l.pid === refused!.pid)
          .map((l) => l.line),
      ).toContainEqual(expect.stringContaining(said));

      // The next restart holds without starting a gateway beside the serving one.
      expect((await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEYS[2] })).status).toBe(200);
      const third = await serving((s) => s.gateway.pid !== second.gateway.pid);
      expect(starts().map((s) => s.key)).toEqual([KEYS[0], KEYS[1], KEYS[1], KEYS[2]]);
      expect(third.proxy).toMatchObject({
        strategy: 'hold',
        lastRestart: { strategy: 'hold', fallback: REASON },
      });
      const metrics = await (
        await fetch(`${adm}/_kilo/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })
      ).text();
      expect(metrics).toMatch(/^keyroll_controller_surge_fallbacks_total 2$/m);
      expect(metrics).toMatch(/^keyroll_controller_restarts_total\{strategy="hold",outcome="ok"\} 2$/m);
      expect(metrics).not.toMatch(/^keyroll_controller_restarts_total\{strategy="surge"/m);
    },
    30_000,
  );

  it('a gateway that runs beside another (2026.6.8) surges as before', async () => {
    const { call, serving, starts } = await setup({});
    const first = await serving(() => true);
    await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEYS[1] });
    const second = await serving((s) => s.gateway.pid !== first.gateway.pid);
    expect(starts()).toHaveLength(2);
    expect(second.proxy).toMatchObject({
      strategy: 'surge',
      configuredStrategy: 'surge',
      strategyReason: null,
      lastRestart: { strategy: 'surge', fallback: null },
    });
  }, 30_000);
});

describe('openclawSurgeRefusal', () => {
  it.each([
    [
      '[gateway] waiting for gateway-lifecycle ownership held by another OpenClaw process, up to 300 s',
      REASON,
    ],
    [
      'Gateway failed to start: Doctor could not enter maintenance. StateDatabaseCoordinatorContentionError: another OpenClaw process owns gateway-lifecycle Stop the Gateway service and other OpenClaw processes using this state, then run openclaw doctor --fix from an independent shell.',
      REASON,
    ],
    [
      'Gateway failed to start: GatewayLockError: failed to acquire gateway state ownership; waited 300012ms for gateway-lifecycle ownership',
      REASON,
    ],
    ['[gateway] loading configuration…', null],
    ['[gateway] ready (3 plugins; 41.2s)', null],
  ])('%s', (line, reason) => {
    expect(openclawSurgeRefusal(line)).toBe(reason);
  });
});
