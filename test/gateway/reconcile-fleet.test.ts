// Integration: one `keyroll reconcile --once` converges 21 real controllers (20 stand-in gateways
// and the real OpenClaw gateway) after the key source changes; a second pass changes nothing.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import {
  type ControllerState,
  type FleetMember,
  KEYROLL_BIN,
  readState,
  startReadyMember,
  stopMember,
} from '../reconcile/support/fleet.ts';
import { type RecordingProxy, startRecordingProxy } from '../reconcile/support/recording-proxy.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../support/fake-upstream.ts';
import { chat } from '../support/http.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { createSandbox, node24, type Sandbox } from '../support/sandbox.ts';

const KEY_A = 'test-key-A-fleet-000000000001';
const KEY_B = 'test-key-B-fleet-000000000002';
const STAND_INS = 20;

let upstream: FakeUpstream;
let work: Sandbox;
const members: FleetMember[] = [];
const proxies: RecordingProxy[] = [];
let targetsFile = '';
let transcript = '';

async function keyroll(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawnTracked(node24(), [KEYROLL_BIN, ...args], {
    name: `keyroll-${args[0]}`,
    env: { PATH: process.env.PATH, KEYROLL_LOG_LEVEL: 'info' },
  });
  const exit = await p.exited;
  const stdout = p.stdoutLines.join('\n');
  const stderr = p.stderrLines.join('\n');
  transcript += `${stdout}\n${stderr}\n`;
  return { code: exit.code, stdout, stderr };
}

async function states(): Promise<ControllerState[]> {
  return Promise.all(members.map(async (m) => (await readState(m))!));
}

const posts = () => proxies.reduce((n, p) => n + p.requests.filter((r) => r.method !== 'GET').length, 0);

beforeAll(async () => {
  upstream = await startFakeUpstream({ keys: [KEY_A] });
  work = createSandbox('keyroll-fleet-work-');
  const starts = [
    startReadyMember(
      'openclaw',
      {
        name: 'openclaw',
        token: 'test-token-fleet-openclaw-0',
        key: KEY_A,
        upstreamBaseUrl: upstream.baseUrl,
      },
      240_000,
    ),
  ];
  for (let i = 0; i < STAND_INS; i++) {
    starts.push(
      startReadyMember(
        'stand-in',
        {
          name: `standin-${String(i).padStart(2, '0')}`,
          token: `test-token-fleet-standin-${i}`,
          key: KEY_A,
          upstreamBaseUrl: upstream.baseUrl,
        },
        60_000,
      ),
    );
  }
  // allSettled: a member that never came up must still be stopped in afterAll.
  const settled = await Promise.allSettled(starts);
  for (const r of settled) if (r.status === 'fulfilled') members.push(r.value);
  for (const r of settled) if (r.status === 'rejected') throw r.reason;
  for (const m of members) proxies.push(await startRecordingProxy(m.url));

  const targets = members.map((m, i) => {
    const tokenFile = join(work.dir, `token-${m.name}`);
    writeFileSync(tokenFile, m.token, { mode: 0o600 });
    return { name: m.name, url: proxies[i]!.url, token: { file: tokenFile }, labels: { kind: m.kind } };
  });
  targetsFile = join(work.dir, 'targets.yaml');
  writeFileSync(
    targetsFile,
    stringify({
      source: { file: { path: join(work.dir, 'key') } },
      defaults: { rollout: { concurrency: 21, maxUnavailable: 8, failureBudget: 2 } },
      targets,
    }),
  );
  writeFileSync(join(work.dir, 'key'), `${KEY_A}\n`, { mode: 0o600 });
}, 400_000); // 21 controllers, one onboarding the real OpenClaw: 60-180 s on a busy 2-core host

afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(members.map((m) => stopMember(m).catch(() => undefined)));
  await killAllTracked();
  await upstream?.close();
  work?.cleanup();
  for (const secret of [KEY_A, KEY_B, ...members.map((m) => m.token)])
    expect(transcript).not.toContain(secret);
});

describe('reconcile a fleet of 21 real controllers', () => {
  it('reports no drift while the source still holds the running key', async () => {
    const r = await keyroll(['diff', '--targets', targetsFile]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/21 target\(s\): 21 in sync, 0 drift/);
  });

  it('after the key source changes, diff shows drift and sends GETs only', async () => {
    upstream.setKeys([KEY_A, KEY_B]);
    writeFileSync(join(work.dir, 'key'), `${KEY_B}\n`, { mode: 0o600 });
    const r = await keyroll(['diff', '--targets', targetsFile, '--output', 'json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ total: 21, drift: 21 });
    expect(posts()).toBe(0);
  });

  it('one reconcile --once converges all 21, each gateway restarted with the new key', async () => {
    const before = await states();
    const r = await keyroll([
      'reconcile',
      '--once',
      '--targets',
      targetsFile,
      '--json',
      '--deadline',
      '150s',
    ]);
    expect(r.code, r.stdout.slice(-3000) + r.stderr.slice(-3000)).toBe(0);
    const pass = JSON.parse(r.stdout);
    expect(pass.summary).toMatchObject({ total: 21, converged: 21, patched: 21 });
    expect(posts()).toBe(21);
    const after = await states();
    for (const [i, s] of after.entries()) {
      expect(s.gateway.pid).not.toBe(before[i]!.gateway.pid);
      // `restarts` counts crash respawns only: a delivery restart is requested, not a crash.
      expect(s.gateway.restarts).toBe(before[i]!.gateway.restarts);
      expect(s.gateway.ready).toBe(true);
      expect(s.key.envHash).not.toBe(before[i]!.key.envHash);
    }
    // Proof from the other side: revoke the old key upstream; the gateways now authenticate with B.
    upstream.setKeys([KEY_B]);
    const sample = [members[0]!, members[1]!, members[STAND_INS]!];
    for (const m of sample) {
      const res = await chat(m.gatewayPort, m.token, 90_000);
      expect(res.status, `${m.name}: ${res.text.slice(0, 300)}`).toBe(200);
    }
    const seen = upstream.requests.filter((q) => q.path.endsWith('chat/completions')).slice(-sample.length);
    expect(seen.map((q) => q.keyHash)).toEqual(sample.map(() => keyHash(KEY_B)));
  }, 300_000);

  it('a second pass sends no POST and restarts nothing', async () => {
    const before = await states();
    const postsBefore = posts();
    const r = await keyroll(['reconcile', '--once', '--targets', targetsFile, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ total: 21, converged: 21, patched: 0 });
    expect(posts()).toBe(postsBefore);
    const after = await states();
    expect(after.map((s) => [s.gateway.pid, s.gateway.restarts])).toEqual(
      before.map((s) => [s.gateway.pid, s.gateway.restarts]),
    );
  });
});
