// A read that waits: `GET /_kilo/state` with `x-keyroll-wait-ms` (and `x-keyroll-wait-pid`) held
// until the gateway is ready — the header parsing and the holding (StateWaits on a manual clock),
// the route's auth and start-up answers (the handler with fakes), and a whole controller in front
// of the stand-in gateway restarting for a patch (hold and surge).
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { type IncomingMessage, request } from 'node:http';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { CAPABILITIES } from '../../src/controller/controller.ts';
import { createControllerHandler, type GatewayControl, listen } from '../../src/controller/server.ts';
import { parseWait, RELOOK_MS, relookDue, StateWaits, WAIT_MAX_MS } from '../../src/controller/state-wait.ts';
import type { SupervisorState } from '../../src/controller/supervisor.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import {
  type KiloState,
  parseObservedState,
  type StateWait,
  WAIT_HEADER,
  WAIT_PID_HEADER,
} from '../../src/kilo-state.ts';
import { SecretRegistry, silentLogger } from '../../src/log.ts';
import { startTestController, suiteCapture, TOKEN, waitFor } from './helpers.ts';

// biome-ignore lint/suspicious/noExplicitAny: responses are read field by field and asserted on.
type Json = Record<string, any>;

const KEY_A = 'test-key-A-wait-aaaaaaaa';
const KEY_B = 'test-key-B-wait-bbbbbbbb';
const { captured, cleanups } = suiteCapture([TOKEN, KEY_A, KEY_B], 1000);

describe('parseWait', () => {
  const MS_ERROR = `${WAIT_HEADER} must be a whole number of milliseconds`;
  const PID_ERROR = `${WAIT_PID_HEADER} must be a positive integer (a process id)`;
  it.each([
    [{}, { ok: true, wait: null }],
    [{ [WAIT_HEADER]: '0' }, { ok: true, wait: null }],
    [
      { [WAIT_HEADER]: '0', [WAIT_PID_HEADER]: '12' },
      { ok: true, wait: null },
    ],
    [{ [WAIT_HEADER]: '1500' }, { ok: true, wait: { ms: 1500, pid: null } }],
    [
      { [WAIT_HEADER]: '1500', [WAIT_PID_HEADER]: '4242' },
      { ok: true, wait: { ms: 1500, pid: 4242 } },
    ],
    // Longer than any controller holds: clamped when held, not refused.
    [{ [WAIT_HEADER]: '99999999999' }, { ok: true, wait: { ms: 99999999999, pid: null } }],
    [{ [WAIT_HEADER]: '-1' }, { ok: false, error: MS_ERROR }],
    [{ [WAIT_HEADER]: '1.5' }, { ok: false, error: MS_ERROR }],
    [{ [WAIT_HEADER]: '1e3' }, { ok: false, error: MS_ERROR }],
    [{ [WAIT_HEADER]: '' }, { ok: false, error: MS_ERROR }],
    [{ [WAIT_HEADER]: 'soon' }, { ok: false, error: MS_ERROR }],
    [{ [WAIT_HEADER]: '500, 600' }, { ok: false, error: MS_ERROR }],
    [
      { [WAIT_HEADER]: '500', [WAIT_PID_HEADER]: '0' },
      { ok: false, error: PID_ERROR },
    ],
    [
      { [WAIT_HEADER]: '500', [WAIT_PID_HEADER]: '-7' },
      { ok: false, error: PID_ERROR },
    ],
    [
      { [WAIT_HEADER]: '500', [WAIT_PID_HEADER]: '7.5' },
      { ok: false, error: PID_ERROR },
    ],
    [
      { [WAIT_HEADER]: '500', [WAIT_PID_HEADER]: '9007199254740993' },
      { ok: false, error: PID_ERROR },
    ],
    [{ [WAIT_PID_HEADER]: 'x' }, { ok: false, error: PID_ERROR }],
  ])('%j → %j', (headers, want) => {
    expect(parseWait(headers)).toEqual(want);
  });
});

/** A gateway seen by a held read, and the supervisor stand-in that announces changes. */
function holdRig(maxHeld?: number) {
  const clock = new ManualClock(1_000);
  const source = new EventEmitter();
  let gateway = { state: 'running', ready: true, pid: 100 };
  let observations = 0;
  const waits = new StateWaits({ source, events: ['state', 'switched'], clock, maxHeld });
  const observe = async () => {
    observations++;
    return { gateway: { ...gateway } };
  };
  const answers: (Json | null)[] = [];
  const hold = (ask: StateWait, gone = new AbortController().signal) => {
    const p = waits.hold(ask, observe, gone);
    void p.then((s) => answers.push(s));
    return p;
  };
  return {
    clock,
    source,
    waits,
    answers,
    hold,
    observations: () => observations,
    set: (g: Partial<typeof gateway>) => {
      gateway = { ...gateway, ...g };
    },
  };
}

describe('StateWaits (manual clock)', () => {
  it('holds through a restart and answers at the first observation of the new ready gateway', async () => {
    const r = holdRig();
    r.set({ state: 'stopping', ready: false });
    const held = r.hold({ ms: 10_000, pid: 100 });
    await r.clock.advance(0);
    expect(r.waits.held).toBe(1);
    expect(r.observations()).toBe(1); // the first look: not over
    // No wake-up, no observation: nothing polls.
    await r.clock.advance(5_000);
    expect(r.observations()).toBe(1);
    r.set({ state: 'starting', pid: 101 });
    r.source.emit('state', 'starting');
    await r.clock.advance(0);
    expect(r.observations()).toBe(2);
    expect(r.answers).toEqual([]); // starting, not ready: still held
    r.set({ state: 'running', ready: true });
    r.source.emit('state', 'running');
    expect(await held).toEqual({ gateway: { state: 'running', ready: true, pid: 101 } });
    expect(r.observations()).toBe(3);
    expect(r.waits.held).toBe(0);
    expect(r.clock.pending).toBe(0); // its deadline timer is released
  });

  it('a surge switch (no state change) ends the wait', async () => {
    const r = holdRig();
    const held = r.hold({ ms: 10_000, pid: 100 });
    await r.clock.advance(0);
    expect(r.answers).toEqual([]); // pid 100 is the one the caller saw
    r.set({ pid: 102 });
    r.source.emit('switched', 102);
    expect((await held)?.gateway.pid).toBe(102);
  });

  it('the same ready gateway: held until the time is up, clamped to maxMs, then the state then', async () => {
    const r = holdRig();
    const held = r.hold({ ms: 60_000, pid: 100 });
    await r.clock.advance(WAIT_MAX_MS - 1);
    expect(r.answers).toEqual([]);
    expect(r.waits.held).toBe(1);
    await r.clock.advance(1);
    expect(await held).toEqual({ gateway: { state: 'running', ready: true, pid: 100 } });
    expect(r.observations()).toBe(2); // the first look, and the one at the deadline
    expect(r.waits.held).toBe(0);
  });

  it('without a pid, a ready gateway ends the wait at once', async () => {
    const r = holdRig();
    expect((await r.hold({ ms: 10_000, pid: null }))?.gateway.pid).toBe(100);
    expect(r.clock.pending).toBe(0);
  });

  it('the caller leaving ends the hold: null, nothing held, no timer, no further observation', async () => {
    const r = holdRig();
    const gone = new AbortController();
    const held = r.hold({ ms: 10_000, pid: 100 }, gone.signal);
    await r.clock.advance(0);
    expect(r.waits.held).toBe(1);
    gone.abort();
    expect(await held).toBeNull();
    expect(r.waits.held).toBe(0);
    expect(r.clock.pending).toBe(0);
    r.source.emit('state', 'running');
    await r.clock.advance(0);
    expect(r.observations()).toBe(1);
  });

  it('past maxHeld a read is answered at once; close() answers every held read and detaches', async () => {
    const r = holdRig(2);
    const a = r.hold({ ms: 10_000, pid: 100 });
    const b = r.hold({ ms: 10_000, pid: 100 });
    await r.clock.advance(0);
    expect(r.waits.held).toBe(2);
    expect((await r.hold({ ms: 10_000, pid: 100 }))?.gateway.pid).toBe(100); // the third: at once
    expect(r.answers).toHaveLength(1);
    expect(r.source.listenerCount('state')).toBe(1); // one listener for all, not one per read
    r.set({ state: 'shutting_down', ready: false });
    await r.waits.close();
    expect(r.waits.held).toBe(0);
    expect((await a)?.gateway.state).toBe('shutting_down');
    expect((await b)?.gateway.state).toBe('shutting_down');
    expect(r.source.listenerCount('state') + r.source.listenerCount('switched')).toBe(0);
    expect(r.clock.pending).toBe(0);
    // Once closed, nothing is held.
    expect((await r.hold({ ms: 10_000, pid: 100 }))?.gateway.state).toBe('shutting_down');
  });
});

describe('the re-look: the supervisor calls the gateway running, the read did not see it ready', () => {
  const g = (state: string, ready: boolean, pid: number | null) => ({ gateway: { state, ready, pid } });
  it.each([
    [g('running', false, 101), 100, true],
    [g('running', false, 101), null, true],
    [g('running', false, 100), 100, false], // the gateway the caller saw: only a restart ends it
    [g('starting', false, 101), 100, false], // its probe has not said ready: the 'state' event will come
    [g('stopping', false, 100), 100, false],
    [g('crashed', false, null), null, false],
  ] as const)('%j, pid %s → %s', (state, pid, want) => {
    expect(relookDue(state, pid)).toBe(want);
  });

  it('a wake-up that sees "not yet" is answered by the re-look, without a further supervisor event', async () => {
    const r = holdRig();
    r.set({ state: 'stopping', ready: false });
    const held = r.hold({ ms: 10_000, pid: 100 });
    await r.clock.advance(0);
    expect(r.clock.pending).toBe(1); // its deadline only: no re-look while stopping
    // The supervisor's probe said ready; this read's own look (a moment later) did not.
    r.set({ state: 'running', ready: false, pid: 101 });
    r.source.emit('state', 'running');
    await r.clock.advance(0);
    expect(r.observations()).toBe(2);
    expect(r.answers).toEqual([]);
    expect(r.clock.pending).toBe(2); // the deadline and the re-look
    r.set({ ready: true });
    await r.clock.advance(RELOOK_MS - 1);
    expect(r.observations()).toBe(2);
    await r.clock.advance(1);
    expect(await held).toEqual({ gateway: { state: 'running', ready: true, pid: 101 } });
    expect(r.observations()).toBe(3);
    expect(r.clock.now()).toBe(1_000 + RELOOK_MS); // well before its 10 s
    expect(r.clock.pending).toBe(0);
  });

  it('looks again every RELOOK_MS while it is due, one timer for all held reads, bounded by each read', async () => {
    const r = holdRig();
    r.set({ state: 'running', ready: false, pid: 101 });
    const a = r.hold({ ms: 1_000, pid: 100 });
    const b = r.hold({ ms: 10_000, pid: null });
    await r.clock.advance(0);
    expect(r.clock.pending).toBe(3); // two deadlines, one re-look
    await r.clock.advance(RELOOK_MS * 3);
    expect(r.observations()).toBe(2 * 4); // each: the first look and three re-looks
    expect(r.answers).toEqual([]);
    await r.clock.advance(1_000 - RELOOK_MS * 3);
    expect((await a)?.gateway).toMatchObject({ ready: false, pid: 101 }); // its time: the state then
    expect(r.clock.pending).toBe(2); // b's deadline and the re-look
    const gone = r.answers.length;
    r.set({ ready: true });
    await r.clock.advance(RELOOK_MS);
    expect(r.answers).toHaveLength(gone + 1);
    expect((await b)?.gateway.ready).toBe(true);
    expect(r.waits.held).toBe(0);
    expect(r.clock.pending).toBe(0);
  });

  it('the re-look timer is cleared when no read is held (the caller left, or close())', async () => {
    const r = holdRig();
    r.set({ state: 'running', ready: false, pid: 101 });
    const gone = new AbortController();
    const left = r.hold({ ms: 10_000, pid: 100 }, gone.signal);
    await r.clock.advance(0);
    expect(r.clock.pending).toBe(2);
    gone.abort();
    expect(await left).toBeNull();
    expect(r.clock.pending).toBe(0);
    const n = r.observations();
    await r.clock.advance(RELOOK_MS * 5);
    expect(r.observations()).toBe(n);
    const closed = r.hold({ ms: 10_000, pid: 100 });
    await r.clock.advance(0);
    expect(r.clock.pending).toBe(2);
    await r.waits.close();
    expect((await closed)?.gateway.pid).toBe(101);
    expect(r.clock.pending).toBe(0);
  });

  it('on the system clock the re-look does not keep the process alive', async () => {
    // A process whose only work is a read held for 60 s with a re-look due on every look: it
    // ends as soon as its own code is done (the timers are unref'd), having looked once.
    const stateWait = fileURLToPath(new URL('../../src/controller/state-wait.ts', import.meta.url));
    const clock = fileURLToPath(new URL('../../src/clock.ts', import.meta.url));
    const script = `
      import { EventEmitter } from 'node:events';
      import { systemClock } from ${JSON.stringify(clock)};
      import { StateWaits } from ${JSON.stringify(stateWait)};
      const waits = new StateWaits({ source: new EventEmitter(), events: ['state'], clock: systemClock });
      let looks = 0;
      const observe = async () => { looks++; return { gateway: { state: 'running', ready: false, pid: 2 } }; };
      void waits.hold({ ms: 60000, pid: 1 }, observe, new AbortController().signal);
      process.on('exit', () => console.log(JSON.stringify({ looks, held: waits.held })));
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(() => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c;
    });
    child.stderr.on('data', (c: Buffer) => {
      err += c;
    });
    const t0 = performance.now();
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(err).toBe('');
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({ looks: 1, held: 1 });
    expect(performance.now() - t0).toBeLessThan(10_000); // not the 60 s hold
  });
});

describe('GET /_kilo/state route with a wait (fakes)', () => {
  it('auth first and 503 before bootstrap ends: never held; malformed headers: 400, nothing held', async () => {
    let lifecycle: 'bootstrapping' | 'ready' = 'bootstrapping';
    const asked: StateWait[] = [];
    const gateway: GatewayControl = {
      getStats: () => {
        throw new Error('not used');
      },
      getState: (): SupervisorState => 'running',
      start: async () => {},
      stop: async () => {},
      restart: async () => {},
    };
    const handler = createControllerHandler({
      token: TOKEN,
      patchable: ['KILOCODE_API_KEY'],
      gatewayPort: () => 1,
      lifecycle: () =>
        lifecycle === 'ready' ? { state: 'ready' } : { state: 'bootstrapping', phase: 'init' },
      gateway,
      deliver: async () => ({ signaled: false, migratedProfiles: 0 }),
      setKeyVersion: () => {},
      observe: async () => ({ gateway: { state: 'running', ready: true, pid: 5 } }),
      observeWaiting: async (_k, wait) => {
        asked.push(wait);
        return { held: true };
      },
      version: () => ({}),
      secrets: new SecretRegistry(),
      log: silentLogger(),
    });
    const srv = await listen(handler, { port: 0, host: '127.0.0.1' });
    cleanups.push(() => srv.close());
    const get = async (headers: Record<string, string>) => {
      const res = await fetch(`http://127.0.0.1:${srv.port}/_kilo/state`, {
        headers,
        signal: AbortSignal.timeout(5_000),
      });
      return { status: res.status, body: (await res.json()) as Json };
    };
    const auth = { authorization: `Bearer ${TOKEN}` };
    const wait = { [WAIT_HEADER]: '5000' };
    expect(await get(wait)).toEqual({ status: 401, body: { error: 'Unauthorized' } });
    expect((await get({ ...wait, ...auth })).status).toBe(503);
    lifecycle = 'ready';
    expect(await get({ ...auth, [WAIT_HEADER]: 'x' })).toEqual({
      status: 400,
      body: { error: 'x-keyroll-wait-ms must be a whole number of milliseconds' },
    });
    expect(await get({ ...auth, ...wait, [WAIT_PID_HEADER]: '0' })).toEqual({
      status: 400,
      body: { error: 'x-keyroll-wait-pid must be a positive integer (a process id)' },
    });
    expect(asked).toEqual([]);
    expect(await get({ ...auth, [WAIT_HEADER]: '0' })).toEqual({
      status: 200,
      body: { gateway: { state: 'running', ready: true, pid: 5 } },
    });
    expect(await get({ ...auth, ...wait, [WAIT_PID_HEADER]: '5' })).toEqual({
      status: 200,
      body: { held: true },
    });
    expect(asked).toEqual([{ ms: 5000, pid: 5 }]);
  });
});

/**
 * A `/_kilo/*` call on node:http (its own connection, so a test can drop it while it is held):
 * the answer, and when it arrived.
 */
function kilo(
  port: number,
  headers: Record<string, string>,
  method = 'GET',
  path = '/_kilo/state',
  body?: unknown,
) {
  let req!: ReturnType<typeof request>;
  const answer = new Promise<{ status: number; body: Json; at: number }>((resolve, reject) => {
    req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', ...headers },
        agent: false,
      },
      (res: IncomingMessage) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          captured.push(text);
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Json, at: performance.now() });
        });
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
  return { answer, drop: () => req.destroy() };
}

async function setup(flags: string[] = [], readyDelayMs = 50) {
  const t = await startTestController({
    prefix: 'keyroll-wait-',
    env: {
      OPENCLAW_GATEWAY_TOKEN: TOKEN,
      KILOCODE_API_KEY: KEY_A,
      STANDIN_READY_DELAY_MS: String(readyDelayMs),
    },
    flags,
    surge: true,
    expectGatewayGone: true,
    captured,
  });
  cleanups.push(() => t.stop());
  const { ctl } = t;
  await ctl.bootstrapped;
  const call = (method: string, path: string, body?: unknown) =>
    kilo(ctl.port, {}, method, path, body).answer;
  const serving = await waitFor(
    async () => {
      const s = (await call('GET', '/_kilo/state')).body;
      return s.gateway.state === 'running' && s.gateway.ready ? (s as KiloState) : null;
    },
    20_000,
    'gateway running',
  );
  return { t, ctl, call, serving, read: (h: Record<string, string>) => kilo(ctl.port, h) };
}

/** Whether the controller logged at error level (pino: 50) or above. */
const errorsLogged = (lines: string[]) => lines.filter((l) => (JSON.parse(l) as Json).level >= 50);

describe('a read that waits (stand-in gateway)', () => {
  for (const strategy of ['hold', 'surge'] as const) {
    it(`${strategy} restart after a patch: answered once the new gateway is ready, with its pid`, async () => {
      const { ctl, call, serving, read } = await setup(['--restart-strategy', strategy], 700);
      const oldPid = serving.gateway.pid!;
      // When the supervisor saw the new gateway ready (the switch, for surge), and whether the
      // held read had been answered by then.
      let readyAt: number | null = null;
      let answeredBeforeReady = false;
      let answered = false;
      const onReady = () => {
        if (readyAt !== null) return;
        readyAt = performance.now();
        answeredBeforeReady = answered;
      };
      ctl.supervisor.on(strategy === 'surge' ? 'switched' : 'state', (s) => {
        if (strategy === 'surge' || s === 'running') onReady();
      });
      const patch = await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B });
      expect(patch.body).toMatchObject({ ok: true, signaled: true });
      const held = read({ [WAIT_HEADER]: '15000', [WAIT_PID_HEADER]: String(oldPid) });
      void held.answer.then(() => {
        answered = true;
      });
      await waitFor(() => ctl.stateWaits.held === 1, 5_000, 'the read to be held');
      const got = await held.answer;
      expect(got.status).toBe(200);
      expect(readyAt).not.toBeNull();
      expect(answeredBeforeReady).toBe(false);
      expect(got.at).toBeGreaterThanOrEqual(readyAt!);
      expect(got.at - readyAt!).toBeLessThan(3_000); // woken by the change, not by the 15 s limit
      expect(got.body.gateway).toMatchObject({ state: 'running', ready: true });
      expect(got.body.gateway.pid).not.toBe(oldPid);
      expect(got.body.gateway.pid).toBe(ctl.supervisor.getStats().pid);
      expect(got.body.key.envHash).toBe(fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_B }));
      expect(got.body.proxy.lastRestart).toMatchObject({ strategy });
      expect(parseObservedState(got.body).ok).toBe(true);
      expect(ctl.stateWaits.held).toBe(0);
    });
  }

  it('the pid seen and no restart: held until the time asked, then answered with that pid', async () => {
    const { ctl, serving, read } = await setup();
    const pid = serving.gateway.pid!;
    const t0 = performance.now();
    const held = read({ [WAIT_HEADER]: '600', [WAIT_PID_HEADER]: String(pid) });
    await waitFor(() => ctl.stateWaits.held === 1, 5_000, 'the read to be held');
    const got = await held.answer;
    expect(got.at - t0).toBeGreaterThanOrEqual(590);
    expect(got.status).toBe(200);
    expect(got.body.gateway).toMatchObject({ pid, ready: true, state: 'running' });
    expect(ctl.stateWaits.held).toBe(0);
  });

  it('no wait, a wait of 0, or a wait without a pid on a ready gateway: answered at once; malformed: 400', async () => {
    const { ctl, serving, read } = await setup();
    // Which reads reach the holding at all.
    const asked: StateWait[] = [];
    const hold = ctl.stateWaits.hold.bind(ctl.stateWaits);
    ctl.stateWaits.hold = (ask, ...rest) => {
      asked.push(ask);
      return hold(ask, ...rest);
    };
    const asks: Record<string, string>[] = [{}, { [WAIT_HEADER]: '0' }, { [WAIT_HEADER]: '15000' }];
    for (const headers of asks) {
      const t0 = performance.now();
      const got = await read(headers).answer;
      expect(got.status).toBe(200);
      expect(got.body.gateway.pid).toBe(serving.gateway.pid);
      expect(got.at - t0).toBeLessThan(2_000); // a hold would take 15 s
    }
    for (const [headers, name] of [
      [{ [WAIT_HEADER]: '-5' }, WAIT_HEADER],
      [{ [WAIT_HEADER]: '2.5' }, WAIT_HEADER],
      [{ [WAIT_HEADER]: '1000', [WAIT_PID_HEADER]: 'abc' }, WAIT_PID_HEADER],
    ] as const) {
      const got = await read(headers).answer;
      expect(got.status).toBe(400);
      expect(got.body.error).toContain(name);
    }
    // Only the one that asked for 15 s, whose gateway was ready from the first look.
    expect(asked).toEqual([{ ms: 15_000, pid: null }]);
    expect(ctl.stateWaits.held).toBe(0);
  });

  it('past 16 held reads a read is answered at once; clients that leave leave nothing held, no error', async () => {
    const { t, ctl, serving, read } = await setup();
    const seen = { [WAIT_HEADER]: '15000', [WAIT_PID_HEADER]: String(serving.gateway.pid) };
    const holds = Array.from({ length: 16 }, () => read(seen));
    for (const h of holds) h.answer.catch(() => {}); // dropped below
    await waitFor(() => ctl.stateWaits.held === 16, 5_000, '16 held reads');
    const t0 = performance.now();
    const extra = await read(seen).answer;
    expect(extra.status).toBe(200);
    expect(extra.at - t0).toBeLessThan(2_000);
    expect(extra.body.gateway.pid).toBe(serving.gateway.pid);
    for (const h of holds) h.drop();
    await waitFor(() => ctl.stateWaits.held === 0, 5_000, 'no held read');
    // The next observation still works, and nothing was written to a closed socket.
    expect((await read({}).answer).status).toBe(200);
    expect(errorsLogged(t.lines)).toEqual([]);
  });

  it('controller shutdown answers a held read at once', async () => {
    const { t, ctl, serving, read } = await setup();
    const held = read({ [WAIT_HEADER]: '15000', [WAIT_PID_HEADER]: String(serving.gateway.pid) });
    await waitFor(() => ctl.stateWaits.held === 1, 5_000, 'the read to be held');
    await t.stop();
    const stoppedAt = performance.now();
    const got = await held.answer;
    // Answered (not cut by the closing port), with the gateway as seen then.
    expect(got.status).toBe(200);
    expect(got.at).toBeLessThan(stoppedAt);
    expect(got.body.gateway).toMatchObject({ state: 'shutting_down', ready: false });
    expect(ctl.stateWaits.held).toBe(0);
  });

  it('controller.waitMaxMs is in the state; state:wait is a capability', async () => {
    const { call, serving } = await setup();
    expect(serving.controller.waitMaxMs).toBe(WAIT_MAX_MS);
    expect(CAPABILITIES).toContain('state:wait');
    expect((await call('GET', '/_kilo/version')).body.capabilities).toContain('state:wait');
  });

  it('without --admin-port, waitMaxMs is at most half of --idle-timeout (a held read is idle)', async () => {
    const { serving } = await setup(['--idle-timeout', '10s']);
    expect(serving.controller.waitMaxMs).toBe(5_000);
  });
});
