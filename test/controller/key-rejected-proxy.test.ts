// KeyRejected end to end through the real controller (issue 10, "KeyRejected"): a `keyroll
// controller` process in front of the stand-in gateway, a fake upstream that accepts only key A,
// and the real `keyroll reconcile --once` and `keyroll diff` binaries against a targets file. The
// key is rotated to B, which the provider refuses: clients get 401s through the front door, the
// controller counts them, and both commands exit 1 with KeyRejected without re-delivering B. Once
// the provider accepts B and one client request succeeds, both exit 0. The same through the
// Kubernetes operator: the GatewayKey goes Degraded=KeyRejected, then Ready. No key and no token
// appears in anything printed, logged or stored.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  NS,
  putPod,
  putSecret,
  startTestOperator,
  waitFor,
} from '../operator/support.ts';
import {
  type ControllerProcess,
  KEYROLL_BIN,
  spawnControllerProcess,
} from '../support/controller-process.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../support/fake-upstream.ts';
import { startKubeApiServer } from '../support/kube/index.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { node24 } from '../support/sandbox.ts';

const GATEWAY_TOKEN = 'test-token-kr-gateway-0123456789abcdef';
const CONTROLLER_TOKEN = 'test-token-kr-controller-0123456789abcd';
const KEY_A = 'test-key-A-kr-proxy-aaaaaaaaaaaaaaaa';
const KEY_B = 'test-key-B-kr-proxy-bbbbbbbbbbbbbbbb';
const SECRETS = [GATEWAY_TOKEN, CONTROLLER_TOKEN, KEY_A, KEY_B];

/** Everything printed, logged, answered or stored in this file, for the secret grep. */
const transcript: string[] = [];
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await killAllTracked();
});

afterAll(() => {
  const all = transcript.join('\n');
  expect(all).toContain('Controller listening');
  for (const secret of SECRETS) expect(all.includes(secret), 'a secret leaked').toBe(false);
});

async function startRig(name: string): Promise<{ upstream: FakeUpstream; ctl: ControllerProcess }> {
  const upstream = await startFakeUpstream({ keys: [KEY_A] });
  cleanups.push(() => upstream.close());
  const ctl = await spawnControllerProcess({
    name,
    token: GATEWAY_TOKEN,
    controllerToken: CONTROLLER_TOKEN,
    key: KEY_A,
    upstreamBaseUrl: upstream.baseUrl,
    seedProfile: true,
    env: { STANDIN_READY_DELAY_MS: '100' },
  });
  cleanups.push(async () => {
    await ctl.stop();
    transcript.push(ctl.proc.lines.join('\n'));
  });
  return { upstream, ctl };
}

/** One chat through the controller's front door, as a client of the gateway. */
async function chat(ctl: ControllerProcess): Promise<{ status: number; text: string }> {
  const res = await fetch(`${ctl.pub}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${GATEWAY_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'hi' }] }),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  transcript.push(text);
  return { status: res.status, text };
}

/**
 * `node bin/keyroll.mjs …` as its own process, bounded; its whole output goes to the transcript.
 * With the unit project's compile cache, as the controller it talks to (sandbox.env()).
 */
async function keyroll(args: string[], env: Record<string, string>) {
  const cache = process.env.NODE_COMPILE_CACHE;
  const p = spawnTracked(node24(), [KEYROLL_BIN, ...args], {
    name: `keyroll-${args[0]}`,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: tmpdir(),
      KEYROLL_LOG_LEVEL: 'info',
      ...(cache ? { NODE_COMPILE_CACHE: cache } : {}),
      ...env,
    },
  });
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([
    p.exited,
    new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), 30_000);
    }),
  ]);
  clearTimeout(timer);
  const stdout = p.stdoutLines.join('\n');
  const stderr = p.stderrLines.join('\n');
  transcript.push(stdout, stderr);
  if (!exit) {
    await p.stop('SIGKILL', 5_000);
    throw new Error(`keyroll ${args.join(' ')} did not exit within 30 s:\n${p.lines.slice(-20).join('\n')}`);
  }
  return { code: exit.code, stdout, stderr, all: `${stdout}\n${stderr}` };
}

describe('KeyRejected through the real controller', () => {
  it('targets file: reconcile --once and diff exit 1 with KeyRejected while the provider refuses B, 0 once it accepts B', async () => {
    const { upstream, ctl } = await startRig('kr-file');
    const dir = mkdtempSync(join(tmpdir(), 'keyroll-kr-proxy-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'key'), `${KEY_B}\n`, { mode: 0o600 });
    const targets = join(dir, 'targets.yaml');
    writeFileSync(
      targets,
      stringify({
        source: { file: { path: 'key' } },
        defaults: { requestTimeout: '2s', delivery: 'restart' },
        targets: [{ name: 'gw-0', url: ctl.adm, token: { env: 'GW_0_TOKEN' } }],
      }),
      { mode: 0o600 },
    );
    const env = { GW_0_TOKEN: CONTROLLER_TOKEN };

    // A runs and the provider takes it.
    expect((await chat(ctl)).status).toBe(200);
    const onA = await ctl.waitServing();
    expect(onA.traffic).toMatchObject({ accepted: 1, keyRejected: 0 });

    // The rotation to B: delivered and proven (a new gateway with B); no traffic on it yet.
    const rotate = await keyroll(['reconcile', '--once', '--targets', targets, '--poll', '50ms'], env);
    expect(rotate.code, rotate.all).toBe(0);
    expect(rotate.stdout).toMatch(/1\/1 converged \(1 patched this pass\)/);
    const onB = await ctl.waitServing((s) => s.gateway.pid !== onA.gateway.pid);
    expect(onB.key.envHash).not.toBe(onA.key.envHash);
    expect(onB.traffic).toMatchObject({ responses: 0, keyRejected: 0 });

    // Users get 401s: the provider refuses B.
    for (let i = 0; i < 3; i++) {
      const r = await chat(ctl);
      expect(r.status).toBe(401);
      expect(JSON.parse(r.text)).toMatchObject({ error: { type: 'authentication_error' } });
    }
    expect(upstream.chatRequests().filter((r) => r.keyHash === keyHash(KEY_B) && !r.ok)).toHaveLength(3);
    const rejected = (await ctl.state()).body;
    expect(rejected.traffic).toMatchObject({ keyRejected: 3, accepted: 0, lastAcceptedAt: null });

    const bad = await keyroll(['reconcile', '--once', '--targets', targets, '--poll', '50ms'], env);
    expect(bad.code, bad.all).toBe(1);
    expect(bad.stdout).toMatch(
      new RegExp(
        `^gw-0: not-converged: KeyRejected: the provider rejected the desired key on 3 responses since ${reEscape(rejected.traffic.since)}, none accepted after`,
        'm',
      ),
    );
    expect(bad.stdout).toMatch(/0\/1 converged \(0 patched this pass\), 1 not converged, .*1 key rejected/);
    const drift = await keyroll(['diff', '--targets', targets], env);
    expect(drift.code, drift.all).toBe(1);
    expect(drift.stdout).toMatch(/^- traffic +3 responses since .*: 0 accepted/m);
    expect(drift.stdout).toMatch(/^\+ traffic +an accepted response after the last key rejection$/m);
    expect(drift.stdout).toMatch(
      /^ {2}plan +none: KeyRejected: the provider rejected the desired key on 3 responses/m,
    );
    expect(drift.stdout).toMatch(/1 target\(s\): 0 in sync, 1 drift, 1 key rejected/);

    // reconcile and diff over a rejected desired key: B was not delivered again, no restart.
    const still = (await ctl.state()).body;
    expect(still.gateway.pid).toBe(onB.gateway.pid);
    expect(still.gateway.restarts).toBe(onB.gateway.restarts);
    expect(still.proxy.lastRestart).toEqual(onB.proxy.lastRestart);
    expect(still.traffic).toMatchObject({ keyRejected: 3, accepted: 0 });

    // The provider takes B now; one client request succeeds.
    upstream.setKeys([KEY_A, KEY_B]);
    expect((await chat(ctl)).status).toBe(200);
    const ok = await keyroll(['reconcile', '--once', '--targets', targets], env);
    expect(ok.code, ok.all).toBe(0);
    expect(ok.stdout).not.toContain('KeyRejected');
    expect(ok.stdout).toMatch(/1\/1 converged \(0 patched this pass\)/);
    const clean = await keyroll(['diff', '--targets', targets], env);
    expect(clean.code, clean.all).toBe(0);
    expect(clean.stdout).toMatch(/^ {2}traffic +4 responses since .*: 1 accepted/m);
    expect((await ctl.state()).body.gateway.pid).toBe(onB.gateway.pid);
  }, 60_000);

  it('GatewayKey: the operator delivers B, goes Degraded=KeyRejected on the 401s, Ready once B is accepted', async () => {
    const server = await startKubeApiServer({ crdPaths: ['manifests/crd/gatewaykey.yaml'] });
    cleanups.push(async () => {
      transcript.push(JSON.stringify(server.hooks.dump()));
      await server.close();
    });
    const { upstream, ctl } = await startRig('kr-kube');
    const onA = await ctl.waitServing();
    const APP = 'gw-kr-proxy';
    putPod(server, 'gw-0', { app: APP }, ctl.adminPort);
    putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: CONTROLLER_TOKEN });
    putSecret(server, 'kilocode-key', { KILOCODE_API_KEY: KEY_B }, { 'keyroll.dev/version': 'v2' });
    await createGatewayKey(server, 'rotate', gatewayKeySpec({ app: APP }));
    const lines: string[] = [];
    cleanups.push(() => {
      transcript.push(lines.join('\n'));
    });
    const op = await startTestOperator(server, 'kr-proxy-op', { resync: '1s' }, lines);
    cleanups.push(() => op.stop());

    // The operator rotates the pod to B and sees it converge (no traffic yet).
    await waitFor(
      'Ready=True after the rotation',
      () => condition(gkStatus(server, 'rotate'), 'Ready')?.status === 'True',
      30_000,
    );
    const onB = await ctl.waitServing((s) => s.gateway.pid !== onA.gateway.pid);
    expect(onB.key.version).toBe('v2');

    // Users get 401s; the next resync sees them.
    for (let i = 0; i < 2; i++) expect((await chat(ctl)).status).toBe(401);
    await waitFor(
      'Degraded=KeyRejected',
      () => condition(gkStatus(server, 'rotate'), 'Degraded')?.reason === 'KeyRejected',
      20_000,
    );
    const s = gkStatus(server, 'rotate');
    expect(condition(s, 'Ready')).toMatchObject({ status: 'False', reason: 'KeyRejected' });
    expect(condition(s, 'Degraded')).toMatchObject({ status: 'True' });
    expect(condition(s, 'Degraded')?.message).toContain('gw-0');
    expect(s.targetStatuses?.[0]).toMatchObject({
      name: 'gw-0',
      converged: false,
      message: expect.stringMatching(/^KeyRejected: the provider rejected the desired key on 2 responses/),
    });
    // The Warning Event is recorded right after the status.
    const warning = await waitFor(
      'a KeyRejected Event',
      () =>
        server.hooks.objects('events', NS).find((e) => (e as { reason?: string }).reason === 'KeyRejected'),
      5_000,
    );
    expect(warning).toMatchObject({ type: 'Warning', message: expect.stringContaining('gw-0') });

    // The provider takes B; one request succeeds; the GatewayKey is Ready again, B never re-sent.
    upstream.setKeys([KEY_A, KEY_B]);
    expect((await chat(ctl)).status).toBe(200);
    await waitFor(
      'Ready=True once accepted',
      () => condition(gkStatus(server, 'rotate'), 'Ready')?.status === 'True',
      30_000,
    );
    expect(condition(gkStatus(server, 'rotate'), 'Degraded')).toMatchObject({ status: 'False' });
    const end = (await ctl.state()).body;
    expect(end.gateway.pid).toBe(onB.gateway.pid);
    expect(end.traffic).toMatchObject({ keyRejected: 2, accepted: 1 });
  }, 60_000);
});

function reEscape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
