// `keyroll controller` supervising the real OpenClaw 2026.6.8, one onboarding shared by the checks
// that were five real-gateway runs (controller-rotation.test.ts, controller-smoke.test.ts,
// controller-config-ref.test.ts, scripts/controller-entrypoint-smoke-test.sh and the file case): a
// file-mode rotation under a continuous client on the same PID, then a config-level ref (secrets
// reload), then a second life on the same volume in restart mode with a legacy plaintext profile
// (the doctor path): migrated everywhere, backups 0600, the wire contract's basics, a rotation
// A → B through a new gateway process that never holds the controller token, a clean stop, and
// another doctor does not bring the plaintext back.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv, fingerprintValue } from '../../src/fingerprint.ts';
import { type FakeUpstream, startFakeUpstream } from '../support/fake-upstream.ts';
import { chat } from '../support/http.ts';
import { openclawEntry, readKilocodeProfile } from '../support/openclaw.ts';
import { killAllTracked, pidAlive } from '../support/processes.ts';
import { type RealController, type State, startRealController } from '../support/real-controller.ts';
import { createSandbox, filesContaining, listFiles, node24, type Sandbox } from '../support/sandbox.ts';

const TOKEN = 'test-token-gw-controller-0123456789';
/** The controller's own token (/_kilo/*, fingerprints): never in the gateway's env. */
const CONTROLLER_TOKEN = 'test-ctl-token-gw-controller-0123456789abcdef';
const KEY_A = 'test-key-A-realgw-aaaaaaaa';
const KEY_B = 'test-key-B-realgw-bbbbbbbb';
const KEY_C = 'test-key-C-realgw-cccccccc';
const LEGACY = 'test-key-L-legacy-plaintext-llllllll';
const SECRETS = [TOKEN, CONTROLLER_TOKEN, KEY_A, KEY_B, KEY_C, LEGACY];
const captured: string[] = [];

afterAll(async () => {
  await killAllTracked();
  const all = captured.join('\n');
  expect(all.length).toBeGreaterThan(1000);
  for (const s of SECRETS) expect(all.includes(s), 'secret in captured output').toBe(false);
});

type Json = State;

/** A chat straight to the gateway answers 200 (a failure shows the answer, keys scrubbed). */
async function expectChatOk(port: number): Promise<void> {
  const r = await chat(port, TOKEN);
  let text = r.text.slice(0, 400);
  for (const s of SECRETS) text = text.split(s).join('[REDACTED]');
  expect(r.status, text).toBe(200);
}

/**
 * Every process of the gateway's process group (OpenClaw and whatever it started) runs without the
 * controller token: not under its name, not under any other; with the gateway's own token.
 */
function expectNoControllerToken(gatewayPid: number): void {
  const group: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const pgid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
      if (pgid === gatewayPid) group.push(Number(name));
    } catch {
      // gone
    }
  }
  expect(group).toContain(gatewayPid);
  for (const pid of group) {
    const environ = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    expect(
      environ.some((kv) => kv.includes(CONTROLLER_TOKEN)),
      `controller token in pid ${pid}'s env`,
    ).toBe(false);
    // Names only in what a failure prints: never a value.
    expect(environ.map((kv) => kv.split('=')[0]).filter((n) => n?.startsWith('KEYROLL_CONTROLLER'))).toEqual(
      [],
    );
    if (pid === gatewayPid) {
      expect(environ.includes(`OPENCLAW_GATEWAY_TOKEN=${TOKEN}`), 'gateway token in its env').toBe(true);
    }
  }
}

interface Ctl extends RealController {
  /** Until the gateway runs and is ready and `pred` holds; the state. */
  ready(pred?: (s: Json) => boolean, timeoutMs?: number): Promise<Json>;
}

async function startController(
  sb: Sandbox,
  upstream: FakeUpstream,
  extra: string[],
  key = KEY_A,
): Promise<Ctl> {
  const ctl = await startRealController({
    name: 'real',
    sb,
    upstreamBaseUrl: upstream.baseUrl,
    token: TOKEN,
    controllerToken: CONTROLLER_TOKEN,
    key,
    flags: extra,
    captured,
  });
  const ready: Ctl['ready'] = async (pred = () => true, timeoutMs) =>
    (await ctl.waitState((s) => s.gateway.state === 'running' && s.gateway.ready && pred(s), timeoutMs))
      .state;
  return { ...ctl, ready };
}

describe('file delivery, then a config-level ref, then the doctor path (real OpenClaw 2026.6.8)', () => {
  let sb: Sandbox;
  let upstream: FakeUpstream;
  let ctl: Ctl;
  let boot: Json;
  let keyFile: string;

  beforeAll(async () => {
    sb = createSandbox('keyroll-ctl-gwf-');
    const keyDir = join(sb.dir, 'keys');
    mkdirSync(keyDir, { mode: 0o700 });
    keyFile = join(keyDir, 'kilocode.key');
    upstream = await startFakeUpstream({ keys: [KEY_A] });
    ctl = await startController(sb, upstream, ['--delivery', 'file', '--key-file', keyFile]);
    boot = await ctl.ready();
  }, 600_000);

  afterAll(async () => {
    await ctl?.stop();
    await upstream?.close();
    sb?.cleanup();
  }, 120_000);

  it('continuous client, zero failures, same PID, B from the first request after the patch', async () => {
    expect(boot.profiles.map((p: Json) => p.form)).toEqual(['keyRef-file']);
    // 2026.6.8 re-reads a profile's file ref per request: no reload needed.
    expect(boot.gateway).toMatchObject({ version: '2026.6.8', keyResolution: 'file-per-request' });
    expect(boot.key.fileHash).toBe(fingerprintValue(CONTROLLER_TOKEN, KEY_A));
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    await expectChatOk(ctl.gatewayPort);
    upstream.setKeys([KEY_A, KEY_B]);

    let running = true;
    const results: number[] = [];
    const client = (async () => {
      while (running) results.push((await chat(ctl.gatewayPort, TOKEN)).status);
    })();
    while (results.length < 3) await new Promise((r) => setTimeout(r, 50));
    const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B });
    const returnedAt = Date.now();
    expect(patch.body).toEqual({ ok: true, signaled: true, migratedProfiles: 0 });
    expect(ctl.proc.lines.some((l) => l.includes('Asked the gateway to reload its secrets'))).toBe(false);
    const first = await chat(ctl.gatewayPort, TOKEN);
    const firstMs = Date.now() - returnedAt;
    expect(first.status).toBe(200);
    expect(upstream.chatRequests().filter((r) => r.at >= returnedAt)[0]?.key).toBe(KEY_B);
    const n = results.length;
    while (results.length < n + 3) await new Promise((r) => setTimeout(r, 50));
    running = false;
    await client;
    expect(results.filter((s) => s !== 200)).toEqual([]);
    const after = await ctl.ready(() => true, 10_000);
    expect(after.gateway.pid).toBe(boot.gateway.pid);
    expect(after.key.fileHash).toBe(fingerprintValue(CONTROLLER_TOKEN, KEY_B));
    console.log(
      `file-mode: first request after the patch took ${firstMs} ms, ${results.length} requests, 0 failed`,
    );
  }, 600_000);

  it('a config-level ref: the controller replaces the key file and reloads the gateway secrets; requests carry the new key', async () => {
    // Add the config-level ref while the gateway is stopped, then start it again.
    expect((await ctl.call('POST', '/_kilo/gateway/stop')).status).toBe(200);
    const cfgPath = join(sb.stateDir, 'openclaw.json');
    const cfg = JSON.parse(readFileSync(cfgPath, 'utf8'));
    cfg.models.providers.kilocode.apiKey = { source: 'file', provider: 'kilofile', id: 'value' };
    writeFileSync(cfgPath, JSON.stringify(cfg, null, 2), { mode: 0o600 });
    expect((await ctl.call('POST', '/_kilo/gateway/start')).status).toBe(200);
    const started = await ctl.ready();
    expect(started.gateway.keyResolution).toBe('file-on-reload');
    expect(started.profiles.map((p: Json) => `${p.store}:${p.form}`).sort()).toEqual([
      'config:keyRef-file',
      'sqlite-agent:keyRef-file',
    ]);
    await expectChatOk(ctl.gatewayPort);

    upstream.setKeys([KEY_C]);
    const patch = await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_C });
    expect(patch.status).toBe(200);
    const reload = ctl.proc.lines.find((l) => l.includes('Asked the gateway to reload its secrets'));
    expect(reload, ctl.proc.lines.slice(-30).join('\n')).toBeDefined();
    expect(JSON.parse(reload!).ok).toBe(true);
    await expectChatOk(ctl.gatewayPort);
    expect(upstream.chatRequests().at(-1)?.key).toBe(KEY_C);
  }, 600_000);

  it('an existing volume with a legacy plaintext profile (doctor path), restart mode: migrated everywhere, backups 0600; the wire contract; A → B through a new gateway process without the controller token; a clean stop; another doctor does not bring the plaintext back', async () => {
    const exit = await ctl.stop();
    expect(exit.code).toBe(0);
    // The same volume, now also holding a legacy plaintext JSON profile, in restart mode.
    const agentDir = join(sb.stateDir, 'agents', 'main', 'agent');
    writeFileSync(
      join(agentDir, 'auth-profiles.json'),
      JSON.stringify({
        version: 1,
        profiles: { 'kilocode:default': { type: 'api_key', provider: 'kilocode', key: LEGACY } },
      }),
      { mode: 0o600 },
    );
    upstream.setKeys([KEY_A]);
    ctl = await startController(sb, upstream, [], KEY_A);
    const s = await ctl.ready();
    expect((await ctl.call('GET', '/_kilo/health', undefined, { auth: null })).body.state).toBe('ready');
    expect([...new Set(s.profiles.map((p: Json) => p.form))]).toEqual(['keyRef-env']);
    expect(s.key.envHash).toBe(fingerprintEnv(CONTROLLER_TOKEN, { KILOCODE_API_KEY: KEY_A }));
    expect(readKilocodeProfile(sb)).toMatchObject({ keyRef: { source: 'env', id: 'KILOCODE_API_KEY' } });
    expect(readKilocodeProfile(sb)).not.toHaveProperty('key');
    expect(filesContaining(sb.stateDir, LEGACY)).toEqual([]);
    expect(filesContaining(sb.stateDir, KEY_A)).toEqual([]);
    const open = listFiles(sb.stateDir).filter((f) => f.endsWith('.bak') && (statSync(f).mode & 0o077) !== 0);
    expect(open).toEqual([]);
    expectNoControllerToken(s.gateway.pid);
    await expectChatOk(ctl.gatewayPort);
    expect(upstream.chatRequests().at(-1)?.key).toBe(KEY_A);

    // The wire contract's basics (what scripts/controller-smoke-test.sh checks by hand).
    const front = (path: string) =>
      fetch(`http://127.0.0.1:${ctl.port}${path}`, { signal: AbortSignal.timeout(30_000) });
    expect((await front('/health')).status).toBe(200);
    expect((await ctl.call('GET', '/_kilo/gateway/status', undefined, { auth: null })).status).toBe(401);
    expect((await ctl.call('GET', '/_kilo/gateway/status')).status).toBe(200);
    expect(
      (await ctl.call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B }, { auth: null })).status,
    ).toBe(401);
    expect((await ctl.call('POST', '/_kilo/env/patch', { PATH: '/tmp' })).status).toBe(400);
    expect((await ctl.call('POST', '/_kilo/env/patch', {})).status).toBe(400);
    expect((await ctl.call('GET', '/_kilo/nope')).body.code).toBe('controller_route_unavailable');
    expect((await ctl.ready()).gateway.pid).toBe(s.gateway.pid); // refused patches changed nothing

    // Rotation A → B: the upstream accepts only B; the patch restarts the gateway with B.
    upstream.setKeys([KEY_B]);
    const t0 = Date.now();
    const patch = await ctl.call(
      'POST',
      '/_kilo/env/patch',
      { KILOCODE_API_KEY: KEY_B },
      { headers: { 'X-Keyroll-Key-Version': 'real-2' } },
    );
    expect(patch.body).toEqual({ ok: true, signaled: true, migratedProfiles: 0 });
    const after = await ctl.ready((n) => n.gateway.pid !== s.gateway.pid);
    const convergedMs = Date.now() - t0;
    expect(pidAlive(s.gateway.pid)).toBe(false);
    expect(after.key).toMatchObject({
      envHash: fingerprintEnv(CONTROLLER_TOKEN, { KILOCODE_API_KEY: KEY_B }),
      version: 'real-2',
    });
    expectNoControllerToken(after.gateway.pid);
    for (let i = 0; i < 3; i++) await expectChatOk(ctl.gatewayPort);
    const sinceRotation = upstream.chatRequests().filter((r) => r.at >= t0);
    expect(sinceRotation.length).toBeGreaterThanOrEqual(3);
    expect(sinceRotation.every((r) => r.key === KEY_B && r.ok)).toBe(true);
    console.log(`restart-mode rotation converged in ${convergedMs} ms`);
    // A clean stop takes the gateway with it.
    expect((await ctl.stop()).code).toBe(0);
    expect(pidAlive(after.gateway.pid)).toBe(false);

    // A doctor run after the controller's bootstrap must not bring the plaintext back.
    const doctor = spawnSync(node24(), [openclawEntry(), 'doctor', '--fix', '--non-interactive'], {
      cwd: sb.dir,
      env: sb.env({ OPENCLAW_GATEWAY_TOKEN: TOKEN }),
      encoding: 'utf8',
      timeout: 300_000,
    });
    expect(doctor.error).toBeUndefined();
    expect(filesContaining(sb.stateDir, LEGACY)).toEqual([]);
  }, 900_000);
});
