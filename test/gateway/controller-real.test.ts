// `keyroll controller` in file mode supervising the real OpenClaw 2026.6.8, one onboarding shared by
// the checks that were three real-gateway runs (controller-rotation.test.ts's file case,
// controller-config-ref.test.ts, scripts/controller-entrypoint-smoke-test.sh): a rotation under a
// continuous client on the same PID, then a config-level ref (secrets reload), then a second life
// on the same volume with a legacy plaintext profile (the doctor path): migrated everywhere,
// backups 0600, and another doctor does not bring it back.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprintValue } from '../../src/fingerprint.ts';
import { type FakeUpstream, startFakeUpstream } from '../support/fake-upstream.ts';
import { chat, freePort } from '../support/http.ts';
import { openclawEntry, readKilocodeProfile } from '../support/openclaw.ts';
import { killAllTracked, spawnTracked, type Tracked } from '../support/processes.ts';
import {
  createSandbox,
  filesContaining,
  listFiles,
  node24,
  REPO_ROOT,
  type Sandbox,
} from '../support/sandbox.ts';

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

// biome-ignore lint/suspicious/noExplicitAny: /_kilo/state is read field by field.
type Json = Record<string, any>;

/** A chat straight to the gateway answers 200 (a failure shows the answer, keys scrubbed). */
async function expectChatOk(port: number): Promise<void> {
  const r = await chat(port, TOKEN);
  let text = r.text.slice(0, 400);
  for (const s of SECRETS) text = text.split(s).join('[REDACTED]');
  expect(r.status, text).toBe(200);
}

interface Ctl {
  proc: Tracked;
  port: number;
  gatewayPort: number;
  call(
    method: string,
    path: string,
    body?: unknown,
    opts?: { auth?: string | null; headers?: Record<string, string>; raw?: string },
  ): Promise<{ status: number; body: Json }>;
  waitState(pred: (s: Json) => boolean, timeoutMs?: number): Promise<Json>;
  stop(): Promise<{ code: number | null; signal: string | null }>;
}

async function startController(
  sb: Sandbox,
  upstream: FakeUpstream,
  extra: string[],
  key = KEY_A,
): Promise<Ctl> {
  const port = await freePort();
  const gatewayPort = await freePort();
  const proc = spawnTracked(
    node24(),
    [
      join(REPO_ROOT, 'bin', 'keyroll.mjs'),
      'controller',
      '--state-dir',
      sb.stateDir,
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--gateway-port',
      String(gatewayPort),
      '--provider-base-url',
      upstream.baseUrl,
      '--enable-chat-completions',
      // CI machines run several gateways at once; a cold start was seen taking over 70 s.
      '--ready-timeout',
      '400000ms',
      ...extra,
    ],
    {
      name: 'keyroll-controller',
      cwd: sb.dir,
      env: sb.env({
        OPENCLAW_GATEWAY_TOKEN: TOKEN,
        KEYROLL_CONTROLLER_TOKEN: CONTROLLER_TOKEN,
        KILOCODE_API_KEY: key,
      }),
    },
  );
  const call: Ctl['call'] = async (method, path, body, opts = {}) => {
    const auth = opts.auth === undefined ? CONTROLLER_TOKEN : opts.auth;
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: {
        ...(auth ? { authorization: `Bearer ${auth}` } : {}),
        'content-type': 'application/json',
        ...opts.headers,
      },
      ...(opts.raw !== undefined
        ? { body: opts.raw }
        : body === undefined
          ? {}
          : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    captured.push(text);
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as Json };
  };
  const waitState = async (pred: (s: Json) => boolean, timeoutMs = 400_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await call('GET', '/_kilo/state').catch(() => null);
      if (r?.status === 200 && r.body.gateway.state === 'running' && r.body.gateway.ready && pred(r.body)) {
        return r.body;
      }
      if (r?.body?.controller?.state === 'degraded' || Date.now() > deadline) {
        throw new Error(
          `controller did not converge; last: ${JSON.stringify(r?.body)}\n${proc.lines.slice(-30).join('\n')}`,
        );
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  };
  const stop = async () => {
    const exit = await proc.stop('SIGTERM', 30_000, { group: false });
    captured.push(...proc.lines);
    return exit;
  };
  return { proc, port, gatewayPort, call, waitState, stop };
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
    boot = await ctl.waitState(() => true);
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
    const after = await ctl.waitState(() => true, 10_000);
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
    const started = await ctl.waitState(() => true);
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

  it('an existing volume with a legacy plaintext profile (doctor path): migrated everywhere, backups 0600, and another doctor does not bring it back', async () => {
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
    const s = await ctl.waitState(() => true);
    expect((await ctl.call('GET', '/_kilo/health', undefined, { auth: null })).body.state).toBe('ready');
    expect([...new Set(s.profiles.map((p: Json) => p.form))]).toEqual(['keyRef-env']);
    expect(readKilocodeProfile(sb)).toMatchObject({ keyRef: { source: 'env', id: 'KILOCODE_API_KEY' } });
    expect(filesContaining(sb.stateDir, LEGACY)).toEqual([]);
    expect(filesContaining(sb.stateDir, KEY_A)).toEqual([]);
    const open = listFiles(sb.stateDir).filter((f) => f.endsWith('.bak') && (statSync(f).mode & 0o077) !== 0);
    expect(open).toEqual([]);
    await expectChatOk(ctl.gatewayPort);
    expect(upstream.chatRequests().at(-1)?.key).toBe(KEY_A);
    expect((await ctl.stop()).code).toBe(0);

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
