// The front door with the real OpenClaw 2026.6.8: clients talk only to the controller's port
// (three HTTP clients, one of them streaming, and one WebSocket client that completes OpenClaw's
// handshake) while the key is rotated three times per restart strategy, then once more with the
// upstream revoking the old key at the patch. One controller (one gateway) per strategy.
import { afterAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../support/fake-upstream.ts';
import { killAllTracked } from '../support/processes.ts';
import { serving, startRealController } from '../support/real-controller.ts';
import { createSandbox, filesContaining } from '../support/sandbox.ts';
import { failures, latency, type RequestOutcome, startTraffic } from '../support/traffic.ts';

const TOKEN = 'test-token-gw-frontdoor-0123456789';
const KEYS = [1, 2, 3, 4, 5].map((i) => `test-key-${i}-frontdoor-${String(i).repeat(8)}`);
const captured: string[] = [];

afterAll(async () => {
  await killAllTracked();
  const all = captured.join('\n');
  expect(all.length).toBeGreaterThan(1000);
  for (const s of [TOKEN, ...KEYS]) expect(all.includes(s), 'secret in captured output').toBe(false);
});

async function startController(strategy: 'hold' | 'surge', upstream: FakeUpstream) {
  const sb = createSandbox(`keyroll-door-${strategy}-`);
  const ctl = await startRealController({
    name: strategy,
    sb,
    upstreamBaseUrl: upstream.baseUrl,
    token: TOKEN,
    key: KEYS[0]!,
    flags: ['--restart-strategy', strategy],
    captured,
  });
  const stop = async () => {
    const exit = await ctl.stop(30_000);
    sb.cleanup();
    return exit;
  };
  return { ...ctl, sb, stop };
}

interface Rotation {
  key: string;
  patchedAt: number;
  /** When /_kilo/state first showed the new gateway taking requests. */
  switchedAt: number;
  pid: number;
}

/** Chats that started after the switch and the key that served them. */
function servedAfter(outcomes: readonly RequestOutcome[], from: number, to: number) {
  return outcomes.filter((o) => o.kind !== 'healthz' && o.startedAt > from && o.startedAt < to);
}

for (const strategy of ['hold', 'surge'] as const) {
  describe(`front door, ${strategy} (real OpenClaw 2026.6.8)`, () => {
    it('three rotations under continuous traffic: no failed request, B after the switch, one 1012 at most per rotation; then a revoking rotation', async () => {
      const upstream = await startFakeUpstream({ keys: [KEYS[0]!] });
      const ctl = await startController(strategy, upstream);
      let exit: { code: number | null } = { code: null };
      try {
        const boot = await ctl.waitState(serving);
        // A fresh volume onboarded in ref mode: the profile names the env variable, no key on disk.
        expect(boot.state.profiles.map((p: { form: string }) => p.form)).toEqual(['keyRef-env']);
        expect(filesContaining(ctl.sb.stateDir, KEYS[0]!)).toEqual([]);
        // Every chat stays in flight a while, so there are always requests across a switch.
        upstream.setDelayMs(300);
        const traffic = startTraffic({
          port: ctl.port,
          token: TOKEN,
          clients: ['chat', 'chat-stream', 'chat'],
          websockets: 1,
          wsToken: TOKEN,
          requestTimeoutMs: 300_000,
        });
        const rotations: Rotation[] = [];
        let pid: number = boot.state.gateway.pid;
        const rotate = async (key: string) => {
          // Traffic on the current gateway first: every client is served by it at least once.
          await traffic.servedSince(rotations.at(-1)?.switchedAt ?? Date.now());
          const patchedAt = Date.now();
          const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: key });
          expect(patch.body).toMatchObject({ ok: true, signaled: true });
          const seen = await ctl.waitState(
            (s) =>
              s.gateway.pid !== pid &&
              s.proxy.state === 'routing' &&
              s.key.envHash === fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key }),
            400_000,
          );
          expect(seen.state.proxy.lastRestart).toMatchObject({ strategy, fallback: null });
          pid = seen.state.gateway.pid;
          rotations.push({ key, patchedAt, switchedAt: seen.at, pid });
          console.log(
            `${strategy}: rotation to key ${rotations.length + 1} switched after ${seen.at - patchedAt} ms ` +
              `(restart ${seen.state.proxy.lastRestart.durationMs} ms, hold ${JSON.stringify(seen.state.proxy.lastHold)})`,
          );
        };
        for (const key of KEYS.slice(1, 4)) {
          upstream.setKeys(KEYS.slice(0, 4)); // the upstream accepts old and new: no revocation yet
          await rotate(key);
        }
        await traffic.servedSince(rotations.at(-1)!.switchedAt);
        const clean = traffic.outcomes.slice();
        const perClient = (list: readonly RequestOutcome[]) =>
          [...new Set(list.map((o) => o.client))].map((c) => {
            const l = list.filter((o) => o.client === c);
            return `${c}: ${l.length} (p50 ${latency(l).p50} ms)`;
          });
        console.log(`${strategy}: per client ${perClient(clean).join(', ')}`);

        // Zero failed requests over three rotations.
        expect(failures(clean)).toEqual([]);
        expect(clean.filter((o) => o.kind === 'chat-stream').length).toBeGreaterThanOrEqual(
          rotations.length + 1,
        );
        // Every request routed after a switch was served with that rotation's key; in hold, every
        // request that arrived after the patch was held and released to the new gateway.
        for (const [i, r] of rotations.entries()) {
          const next = rotations[i + 1]?.patchedAt ?? Number.POSITIVE_INFINITY;
          const from = strategy === 'hold' ? r.patchedAt + 100 : r.switchedAt;
          const served = servedAfter(clean, from, next);
          expect(served.length, `requests after rotation ${i + 1}`).toBeGreaterThan(0);
          expect(served.filter((o) => o.keyhash !== keyHash(r.key)).map((o) => o.client)).toEqual([]);
        }
        // WebSocket: at most one 1012 per rotation, a reconnect and a handshake after each.
        const wsCloses = traffic.wsEvents.filter((e) => e.event === 'close');
        const restarts = wsCloses.filter((e) => e.code === 1012);
        expect(restarts.length).toBeGreaterThanOrEqual(1);
        expect(restarts.length).toBeLessThanOrEqual(rotations.length);
        expect(wsCloses.filter((e) => e.code !== 1012)).toEqual([]);
        const hellos = traffic.wsEvents.filter((e) => e.event === 'hello');
        expect(hellos.length).toBeGreaterThanOrEqual(restarts.length + 1);
        expect(traffic.wsEvents.filter((e) => e.event === 'refused')).toEqual([]);

        // A fourth rotation where the upstream revokes the old key at the patch.
        upstream.setKeys([KEYS[4]!]);
        await rotate(KEYS[4]!);
        await traffic.servedSince(rotations.at(-1)!.switchedAt);
        await traffic.stop();
        const last = rotations.at(-1)!;
        const window = traffic.outcomes.slice(clean.length);
        const failed = window.filter((o) => !o.ok);
        // The only failures are requests already on their way through the old gateway: in hold,
        // those in flight at the patch; in surge, those routed to the old gateway before the switch.
        const cutoff = strategy === 'hold' ? last.patchedAt + 100 : last.switchedAt;
        expect(failed.filter((o) => o.startedAt > cutoff).map((o) => o.client)).toEqual([]);
        expect(failed.every((o) => o.status === 401 || (o.status === 200 && o.kind === 'chat-stream'))).toBe(
          true,
        );
        const after = servedAfter(window, cutoff, Number.POSITIVE_INFINITY);
        expect(after.length).toBeGreaterThan(0);
        expect(after.every((o) => o.ok && o.keyhash === keyHash(KEYS[4]!))).toBe(true);
        const lat = latency(clean.filter((o) => o.kind !== 'healthz'));
        console.log(
          `${strategy}: ${clean.length} requests over 3 rotations, 0 failed; chat latency p50 ${lat.p50} ms, ` +
            `p99 ${lat.p99} ms, max ${lat.max} ms; revoking rotation: ${failed.length} failed of ${window.length} ` +
            `(all sent before the ${strategy === 'hold' ? 'patch' : 'switch'}); websocket restarts ${restarts.length}`,
        );
        // The proxy saw the refused requests as the provider refusing the key, on the old gateway
        // only: the current gateway's window has none.
        const final = await ctl.call('GET', '/_kilo/state');
        expect(final.body.traffic.keyRejected).toBe(0);
        expect(final.body.traffic.accepted).toBeGreaterThan(0);
      } catch (err) {
        // What the controller said last is the useful part of a failure here.
        console.log(ctl.proc.lines.slice(-40).join('\n'));
        throw err;
      } finally {
        exit = await ctl.stop();
        await upstream.close();
      }
      expect(exit.code).toBe(0);
    }, 1_500_000);
  });
}
