// `keyroll controller` supervising the real OpenClaw 2026.6.8: rotation in restart mode, with a
// controller token of its own that the gateway's processes never hold. (File mode runs in
// controller-real.test.ts, on one onboarding with the config-level ref and the doctor path.)
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { startFakeUpstream } from '../support/fake-upstream.ts';
import { chat, freePort } from '../support/http.ts';
import { readKilocodeProfile } from '../support/openclaw.ts';
import { killAllTracked, spawnTracked, type Tracked } from '../support/processes.ts';
import { createSandbox, node24, REPO_ROOT, type Sandbox } from '../support/sandbox.ts';

const TOKEN = 'test-token-gw-controller-0123456789';
/** The controller's own token (/_kilo/*, fingerprints): never in the gateway's env. */
const CONTROLLER_TOKEN = 'test-ctl-token-gw-controller-0123456789abcdef';
const KEY_A = 'test-key-A-realgw-aaaaaaaa';
const KEY_B = 'test-key-B-realgw-bbbbbbbb';
const captured: string[] = [];
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await killAllTracked();
});
afterAll(() => {
  const all = captured.join('\n');
  for (const s of [TOKEN, CONTROLLER_TOKEN, KEY_A, KEY_B])
    expect(all.includes(s), 'secret in captured output').toBe(false);
});

type Json = Record<string, unknown> & {
  gateway: { pid: number; ready: boolean; state: string };
  key: { envHash: string | null; fileHash: string | null };
  profiles: { form: string }[];
};

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

async function startController(sb: Sandbox, extra: string[]) {
  const upstream = await startFakeUpstream({ keys: [KEY_A] });
  const port = await freePort();
  const gatewayPort = await freePort();
  const proc: Tracked = spawnTracked(
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
        KILOCODE_API_KEY: KEY_A,
      }),
    },
  );
  cleanups.push(async () => {
    const exit = await proc.stop('SIGTERM', 20_000, { group: false });
    captured.push(...proc.lines);
    expect(exit.code).toBe(0);
    await upstream.close();
    sb.cleanup();
  });
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: { authorization: `Bearer ${CONTROLLER_TOKEN}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text();
    captured.push(text);
    return { status: res.status, body: JSON.parse(text) as Json };
  };
  const waitState = async (pred: (s: Json) => boolean, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await call('GET', '/_kilo/state').catch(() => null);
      if (r?.status === 200 && r.body.gateway.state === 'running' && r.body.gateway.ready && pred(r.body)) {
        return r.body;
      }
      if (Date.now() > deadline) {
        throw new Error(
          `controller did not converge; last: ${JSON.stringify(r?.body)}\n${proc.lines.slice(-20).join('\n')}`,
        );
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  };
  return { proc, upstream, gatewayPort, call, waitState };
}

describe('keyroll controller with the real OpenClaw gateway', () => {
  it('restart mode: A → B reaches the upstream through a new gateway process', async () => {
    const sb = createSandbox('keyroll-ctl-gw-');
    const { upstream, gatewayPort, call, waitState } = await startController(sb, []);
    const before = await waitState(() => true, 400_000);
    expect(before.key.envHash).toBe(fingerprintEnv(CONTROLLER_TOKEN, { KILOCODE_API_KEY: KEY_A }));
    expectNoControllerToken(before.gateway.pid);
    expect(before.profiles.map((p) => p.form)).toEqual(['keyRef-env']);
    expect(readKilocodeProfile(sb)).toMatchObject({ keyRef: { source: 'env', id: 'KILOCODE_API_KEY' } });
    expect((await chat(gatewayPort, TOKEN)).status).toBe(200);

    upstream.setKeys([KEY_B]);
    const t0 = Date.now();
    const patch = await call('POST', '/_kilo/env/patch', { KILOCODE_API_KEY: KEY_B });
    expect(patch.body).toEqual({ ok: true, signaled: true, migratedProfiles: 0 });
    const after = await waitState((s) => s.gateway.pid !== before.gateway.pid, 300_000);
    const convergedMs = Date.now() - t0;
    expect(after.key.envHash).toBe(fingerprintEnv(CONTROLLER_TOKEN, { KILOCODE_API_KEY: KEY_B }));
    expectNoControllerToken(after.gateway.pid);
    for (let i = 0; i < 3; i++) expect((await chat(gatewayPort, TOKEN)).status).toBe(200);
    const after200 = upstream.chatRequests().filter((r) => r.at >= t0);
    expect(after200.length).toBeGreaterThanOrEqual(3);
    expect(after200.every((r) => r.key === KEY_B && r.ok)).toBe(true);
    console.log(`restart-mode rotation converged in ${convergedMs} ms`);
  }, 900_000);
});
