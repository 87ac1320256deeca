// The controller in front of the real OpenClaw 2026.9.6 (issue 15): clients only on the controller's
// port, zero failed requests, the upstream sees the new key.
//   1. A state dir 2026.9.6 onboarded with a plaintext key (the literal key in openclaw.json):
//      the controller migrates it, the gateway starts, the upstream sees the env key and never the
//      plaintext one, and no plaintext is left outside hardened backups. Then a rotation with
//      `--restart-strategy surge`: 2026.9.x runs one gateway per state dir, so the surge gateway
//      refuses (it exits, or waits for the state dir), and the controller holds instead
//      (docs/controller.md, "Surge on OpenClaw 2026.9.x").
//   2. A fresh state dir (the custom-provider onboarding), file delivery: a key file rotation that
//      needs `secrets reload` on 9.x, same process.
// Each controller boots one gateway; only the first restarts it. A 9.6 cold start is 30-90 s idle,
// up to 8 minutes at load 20. Runs in every `npm test` (the gateway project's set-up installs
// 2026.9.6); KEYROLL_TEST_OPENCLAW_9X=0 skips it, loudly.
import { cpSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fingerprintEnv, fingerprintValue } from '../../src/fingerprint.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../support/fake-upstream.ts';
import { OPENCLAW_9X_TESTS } from '../support/openclaw.ts';
import { killAllTracked } from '../support/processes.ts';
import { serving, startRealController } from '../support/real-controller.ts';
import { createSandbox, filesContaining, listFiles, REPO_ROOT, type Sandbox } from '../support/sandbox.ts';
import { failures, type RequestOutcome, startTraffic } from '../support/traffic.ts';

const V = '2026.9.6';
const TOKEN = 'test-token-gw-9x-e2e-0123456789';
const KEYS = [1, 2, 3].map((i) => `test-key-${i}-e2e9x-${String(i).repeat(8)}`);
/** The literal key the plaintext onboarding fixture holds (test/fixtures/profiles/openclaw-2026.9.6). */
const PLAINTEXT = 'test-key-C-fixture-9x-cccc';
const FIXTURE = join(REPO_ROOT, 'test', 'fixtures', 'profiles', `openclaw-${V}`, 'onboard-plaintext');
const READY_MS = 600_000;
const captured: string[] = [];

afterAll(async () => {
  await killAllTracked();
  const all = captured.join('\n');
  expect(all.length).toBeGreaterThan(1000);
  for (const s of [TOKEN, PLAINTEXT, ...KEYS])
    expect(all.includes(s), 'secret in captured output').toBe(false);
});

/** The plaintext-onboarded 9.6 state dir, with the sandbox's paths put back (the fixture has /sandbox). */
function seedPlaintextVolume(sb: Sandbox): void {
  cpSync(FIXTURE, sb.stateDir, { recursive: true });
  for (const f of listFiles(sb.stateDir)) {
    if (/openclaw\.json(\.bak.*)?$/.test(f)) {
      writeFileSync(f, readFileSync(f, 'utf8').split('/sandbox').join(sb.dir), { mode: 0o600 });
    }
  }
}

async function startController(
  name: string,
  sb: Sandbox,
  upstream: FakeUpstream,
  flags: string[],
  env: Record<string, string> = {},
) {
  const ctl = await startRealController({
    name: `9x-${name}`,
    sb,
    upstreamBaseUrl: upstream.baseUrl,
    token: TOKEN,
    key: KEYS[0]!,
    version: V,
    flags,
    env,
    readyTimeoutMs: READY_MS,
    captured,
  });
  return { ...ctl, serving };
}

const chats = (list: readonly RequestOutcome[], from: number) =>
  list.filter((o) => o.kind !== 'healthz' && o.startedAt > from);

if (!OPENCLAW_9X_TESTS) {
  // Said loudly, not only counted: this file is issue 15's acceptance on 2026.9.6.
  console.warn(
    `\n*** SKIPPED: the front-door end-to-end on the real OpenClaw ${V} (KEYROLL_TEST_OPENCLAW_9X=0; unset it to run it) ***\n`,
  );
}

describe.skipIf(!OPENCLAW_9X_TESTS)(`controller and front door on the real OpenClaw ${V}`, () => {
  it('a volume onboarded with a plaintext key: migrated, the gateway starts on the env key, never the plaintext; a surge rotation held (one gateway per state dir) with zero failed requests', async () => {
    const sb = createSandbox('keyroll-9x-plain-');
    seedPlaintextVolume(sb);
    expect(filesContaining(sb.stateDir, PLAINTEXT)).toEqual([join(sb.stateDir, 'openclaw.json')]);
    // Offline, the provider's plugin cannot be installed; without this the start retries it (about
    // a minute). The controller sets it itself for a volume it onboards (the second test).
    const cfgPath = join(sb.stateDir, 'openclaw.json');
    const seeded = JSON.parse(readFileSync(cfgPath, 'utf8'));
    seeded.plugins.entries.kilocode = { enabled: false };
    writeFileSync(cfgPath, JSON.stringify(seeded, null, 2), { mode: 0o600 });
    // The upstream accepts the env key only: a request with the plaintext key would be a 401.
    const upstream = await startFakeUpstream({ keys: [KEYS[0]!] });
    const ctl = await startController('plain', sb, upstream, ['--restart-strategy', 'surge']);
    let exit: { code: number | null } = { code: null };
    try {
      const boot = await ctl.waitState(ctl.serving);
      console.log(
        `${V} plaintext volume: serving ${boot.at - ctl.startedAt} ms after the controller started`,
      );
      expect(boot.state.gateway).toMatchObject({ version: V, keyResolution: 'env-per-spawn' });
      expect(boot.state.profiles).toEqual([
        { agentId: '*', store: 'config', profileId: 'models.providers.kilocode.apiKey', form: 'keyRef-env' },
      ]);
      const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
      expect(cfg.models.providers.kilocode.apiKey).toEqual({
        source: 'env',
        provider: 'default',
        id: 'KILOCODE_API_KEY',
      });
      // No plaintext outside hardened backups (OpenClaw's own openclaw.json.bak*), which /_kilo/state counts.
      const holding = filesContaining(sb.dir, PLAINTEXT);
      for (const f of holding) {
        expect(f).toMatch(/\/openclaw\.json\.bak[.\d]*$/);
        expect(statSync(f).mode & 0o777).toBe(0o600);
      }
      expect(boot.state.backups).toMatchObject({ plaintext: holding.length });

      upstream.setDelayMs(200);
      const traffic = startTraffic({
        port: ctl.port,
        token: TOKEN,
        clients: ['chat', 'chat-stream', 'chat'],
        requestTimeoutMs: 600_000,
      });
      await traffic.servedSince(0);
      expect(chats(traffic.outcomes, 0).every((o) => o.keyhash === keyHash(KEYS[0]!))).toBe(true);

      expect(boot.state.proxy).toMatchObject({
        strategy: 'surge',
        configuredStrategy: 'surge',
        strategyReason: null,
      });

      // The rotation: the surge gateway starts beside the serving one, says it waits for the state
      // dir's gateway ownership, is stopped, and the restart holds instead.
      upstream.setKeys([KEYS[0]!, KEYS[1]!]);
      const patchedAt = Date.now();
      const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEYS[1] });
      expect(patch.body).toMatchObject({ ok: true, signaled: true });
      const seen = await ctl.waitState(
        (s) =>
          ctl.serving(s) &&
          s.gateway.pid !== boot.state.gateway.pid &&
          s.key.envHash === fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEYS[1]! }),
      );
      const reason = seen.state.proxy.strategyReason;
      expect(reason).toMatch(/same state dir/);
      expect(seen.state.proxy).toMatchObject({ strategy: 'hold', configuredStrategy: 'surge' });
      expect(seen.state.proxy.lastRestart).toMatchObject({ strategy: 'hold', fallback: reason });
      const logged = (msg: string) =>
        ctl.proc.lines.filter((l) => l.includes(`"msg":"${msg}"`)).map((l) => JSON.parse(l));
      const [refusal] = logged(
        'The gateway refuses to run beside the serving one; this restart and every later one hold',
      );
      expect(refusal).toMatchObject({ reason });
      // The refused gateway's own words, as the controller logged them.
      const said = logged('Gateway output')
        .filter((l) => l.pid === refusal.pid)
        .map((l) => l.line as string);
      expect(
        said.some((l) => /gateway-lifecycle/.test(l)),
        said.join('\n'),
      ).toBe(true);
      upstream.setKeys([KEYS[1]!]); // the old key is revoked now; nothing may still send it
      await traffic.servedSince(seen.at);
      await traffic.stop();
      console.log(
        `${V} surge→hold: refused ${refusal.spentMs} ms after the patch, switched ${seen.at - patchedAt} ms after it ` +
          `(restart ${seen.state.proxy.lastRestart.durationMs} ms), ${traffic.outcomes.length} requests, ${failures(traffic.outcomes).length} failed`,
      );
      expect(failures(traffic.outcomes)).toEqual([]);
      // Held from the refusal on, released to the new gateway: every one of them carried the new key.
      const after = chats(traffic.outcomes, Date.parse(refusal.time) + 100);
      expect(after.length).toBeGreaterThan(0);
      expect(after.filter((o) => o.keyhash !== keyHash(KEYS[1]!)).map((o) => o.client)).toEqual([]);
      expect(upstream.chatRequests().some((r) => r.key === PLAINTEXT)).toBe(false);
      expect(upstream.chatRequests().length).toBeGreaterThan(0);
      expect(filesContaining(sb.dir, PLAINTEXT).every((f) => /\/openclaw\.json\.bak[.\d]*$/.test(f))).toBe(
        true,
      );
    } catch (err) {
      console.log(ctl.proc.lines.slice(-60).join('\n'));
      throw err;
    } finally {
      exit = await ctl.stop();
      await upstream.close();
      sb.cleanup();
    }
    expect(exit.code).toBe(0);
  }, 1_800_000);

  it('a fresh volume, file delivery: onboarded as a custom provider, a key file rotation reloaded into the running gateway (same process); zero failed requests', async () => {
    const sb = createSandbox('keyroll-9x-file-');
    const keyDir = join(sb.dir, 'keys');
    mkdirSync(keyDir, { mode: 0o700 });
    const keyFile = join(keyDir, 'kilocode.key');
    const upstream = await startFakeUpstream({ keys: [KEYS[0]!] });
    const ctl = await startController('file', sb, upstream, ['--delivery', 'file', '--key-file', keyFile]);
    let exit: { code: number | null } = { code: null };
    try {
      const boot = await ctl.waitState(ctl.serving);
      console.log(`${V} fresh volume: serving ${boot.at - ctl.startedAt} ms after the controller started`);
      expect(boot.state.gateway).toMatchObject({ version: V, keyResolution: 'file-on-reload' });
      expect(boot.state.profiles).toEqual([
        { agentId: '*', store: 'config', profileId: 'models.providers.kilocode.apiKey', form: 'keyRef-file' },
      ]);
      expect(boot.state.key.fileHash).toBe(fingerprintValue(TOKEN, KEYS[0]!));
      const cfg = JSON.parse(readFileSync(join(sb.stateDir, 'openclaw.json'), 'utf8'));
      expect(cfg.models.providers.kilocode.apiKey).toEqual({
        source: 'file',
        provider: 'kilofile',
        id: 'value',
      });
      expect(cfg.secrets.providers.kilofile).toEqual({ source: 'file', path: keyFile, mode: 'singleValue' });
      expect(cfg.plugins.entries.kilocode).toEqual({ enabled: false });
      expect(filesContaining(sb.stateDir, KEYS[0]!)).toEqual([]);
      expect(readdirSync(keyDir)).toEqual(['kilocode.key']);

      upstream.setDelayMs(200);
      const traffic = startTraffic({
        port: ctl.port,
        token: TOKEN,
        clients: ['chat', 'chat-stream', 'chat'],
        requestTimeoutMs: 600_000,
      });
      await traffic.servedSince(0);

      // File rotation: the patch answers once the file is replaced and the gateway reloaded it.
      upstream.setKeys([KEYS[0]!, KEYS[1]!]);
      const patchedAt = Date.now();
      const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEYS[1] });
      const returnedAt = Date.now();
      expect(patch.body).toMatchObject({ ok: true, signaled: true });
      const reload = ctl.proc.lines.find((l) => l.includes('Asked the gateway to reload its secrets'));
      expect(reload, ctl.proc.lines.slice(-30).join('\n')).toBeDefined();
      expect(JSON.parse(reload!).ok).toBe(true);
      await traffic.servedSince(returnedAt);
      const afterFile = chats(traffic.outcomes, returnedAt);
      expect(afterFile.filter((o) => o.keyhash !== keyHash(KEYS[1]!)).map((o) => o.client)).toEqual([]);
      upstream.setKeys([KEYS[1]!]); // the old key is revoked now; nothing may still send it
      const mid = await ctl.waitState(ctl.serving, 10_000);
      expect(mid.state.gateway.pid).toBe(boot.state.gateway.pid);
      expect(mid.state.gateway.restarts).toBe(0);
      expect(mid.state.key.fileHash).toBe(fingerprintValue(TOKEN, KEYS[1]!));
      await traffic.servedSince(Date.now());
      await traffic.stop();
      console.log(
        `${V} file: the patch answered ${returnedAt - patchedAt} ms after it was sent (replace + secrets reload), ` +
          `${traffic.outcomes.length} requests, ${failures(traffic.outcomes).length} failed`,
      );
      expect(failures(traffic.outcomes)).toEqual([]);
      expect(filesContaining(sb.stateDir, KEYS[1]!)).toEqual([]);
    } catch (err) {
      console.log(ctl.proc.lines.slice(-60).join('\n'));
      throw err;
    } finally {
      exit = await ctl.stop();
      await upstream.close();
      sb.cleanup();
    }
    expect(exit.code).toBe(0);
  }, 1_800_000);
});
