// Integration: one `keyroll reconcile --once` converges 21 real controllers (20 stand-in gateways
// and the real OpenClaw gateway) after the key source changes; a second pass changes nothing.
// Then issue 12's full cycle on three of them (the real gateway among them) with a key-issuing API
// as the source: mint B, deliver, prove, revoke A, while clients send requests continuously
// through the real gateway's controller port.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import {
  type ControllerState,
  type FleetMember,
  KEYROLL_BIN,
  readState,
  startReadyMember,
  stopMember,
} from '../reconcile/support/fleet.ts';
import { type RecordingProxy, startRecordingProxy } from '../reconcile/support/recording-proxy.ts';
import { startFakeKeyApi } from '../support/fake-key-api.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../support/fake-upstream.ts';
import { chat } from '../support/http.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { createSandbox, node24, type Sandbox } from '../support/sandbox.ts';
import { failures, startTraffic, type TrafficRun } from '../support/traffic.ts';

const KEY_A = 'test-key-A-fleet-000000000001';
const KEY_B = 'test-key-B-fleet-000000000002';
const STAND_INS = 20;
const SOURCE_TOKEN = 'test-token-fleet-key-api-0000000000';
/** Every key the fake key API minted (for the secret grep). */
const apiKeys: string[] = [];

let upstream: FakeUpstream;
let work: Sandbox;
const members: FleetMember[] = [];
const proxies: RecordingProxy[] = [];
let targetsFile = '';
let transcript = '';

async function keyroll(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = spawnTracked(node24(), [KEYROLL_BIN, ...args], {
    name: `keyroll-${args[0]}`,
    env: { PATH: process.env.PATH, KEYROLL_LOG_LEVEL: 'info', ...env },
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
        // Requests arriving during a restart are held until the new gateway is ready; a cold
        // start on a loaded CI host can exceed the default 60 s.
        flags: ['--hold-timeout', '300s'],
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
  for (const secret of [KEY_A, KEY_B, SOURCE_TOKEN, ...apiKeys, ...members.map((m) => m.token)])
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

describe('the key lifecycle with the real OpenClaw gateway (issue 12)', () => {
  it('mint B, deliver, prove, revoke A under continuous traffic through the controller port: zero failed requests, A revoked after the last target proved B, within retire.after + one pass', async () => {
    const RETIRE_AFTER_MS = 3_000;
    // The provider accepts any key the API minted and did not revoke.
    const api = await startFakeKeyApi({
      token: SOURCE_TOKEN,
      onChange: (active) => upstream.setKeys(active),
    });
    let traffic: TrafficRun | undefined;
    let poller: Promise<void> | undefined;
    let polling = true;
    try {
      const a = api.current();
      const cycle = members.slice(0, 3); // the real gateway and two stand-ins
      const file = join(work.dir, 'lifecycle.yaml');
      writeFileSync(
        file,
        stringify({
          source: { http: { url: api.currentUrl, tokenEnv: 'SOURCE_TOKEN' } },
          defaults: { rollout: { concurrency: 3, maxUnavailable: 1 } },
          targets: cycle.map((m) => ({
            name: m.name,
            url: m.url,
            token: { file: join(work.dir, `token-${m.name}`) },
          })),
        }),
      );
      const pass = async () => {
        const started = Date.now();
        const r = await keyroll(
          [
            'reconcile',
            '--once',
            '--targets',
            file,
            '--deadline',
            '150s',
            '--retire-after',
            `${RETIRE_AFTER_MS}ms`,
            '--revoke-url',
            api.revokeUrl,
            '--revoke-token-env',
            'SOURCE_TOKEN',
          ],
          { SOURCE_TOKEN },
        );
        expect(r.code, r.stdout.slice(-2000) + r.stderr.slice(-2000)).toBe(0);
        return { ...r, ms: Date.now() - started };
      };
      // The fleet runs B from the file source: the first pass delivers A, the API's current key.
      await pass();
      apiKeys.push(a.key);

      const real = members[0]!;
      expect(real.kind).toBe('openclaw');
      upstream.setDelayMs(200);
      traffic = startTraffic({
        port: Number(new URL(real.url).port),
        token: real.token,
        clients: ['chat', 'chat-stream', 'chat'],
        requestTimeoutMs: 300_000,
      });
      await traffic.servedSince(Date.now());

      const b = api.mint();
      apiKeys.push(b.key);
      // When each target was first seen proving B (running, ready, B's fingerprint): seen at or
      // after the moment it did, never before.
      const provedAt = new Map<string, number>();
      poller = (async () => {
        while (polling) {
          for (const m of cycle) {
            if (provedAt.has(m.name)) continue;
            const s = await readState(m);
            if (
              s?.gateway.state === 'running' &&
              s.gateway.ready &&
              s.key.envHash === fingerprintEnv(m.token, { KILOCODE_API_KEY: b.key })
            )
              provedAt.set(m.name, Date.now());
          }
          await new Promise((r) => setTimeout(r, 100));
        }
      })();

      // A CronJob's worth of passes until A is revoked (bounded).
      const passes: number[] = [];
      while (api.revokedCount(a.version) === 0 && passes.length < 10) {
        passes.push((await pass()).ms);
        if (api.revokedCount(a.version) === 0) await new Promise((r) => setTimeout(r, 500));
      }
      polling = false;
      await poller;
      const revoke = api.revokeCalls.find((c) => c.version === a.version && c.status === 200);
      expect(revoke, `A not revoked after ${passes.length} passes`).toBeDefined();
      expect(api.revokedCount(a.version)).toBe(1);
      expect(api.revokeCalls.filter((c) => c.version === b.version)).toEqual([]);
      expect(api.activeKeys()).toEqual([b.key]);
      expect([...provedAt.keys()].sort()).toEqual(cycle.map((m) => m.name).sort());
      const lastProof = Math.max(...provedAt.values());
      expect(revoke!.at).toBeGreaterThanOrEqual(lastProof);
      expect(revoke!.at - lastProof).toBeLessThanOrEqual(RETIRE_AFTER_MS + Math.max(...passes) + 500);
      console.log(
        `lifecycle: ${passes.length} passes (${passes.join(', ')} ms); A revoked ${revoke!.at - lastProof} ms after the last target proved B (retire.after ${RETIRE_AFTER_MS} ms)`,
      );

      // Traffic goes on after the revoke on B alone.
      const revokedAt = revoke!.at;
      await traffic.servedSince(revokedAt);
      await traffic.stop();
      expect(failures(traffic.outcomes)).toEqual([]);
      const after = traffic.outcomes.filter((o) => o.kind !== 'healthz' && o.startedAt > revokedAt);
      expect(after.length).toBeGreaterThan(0);
      expect(after.every((o) => o.keyhash === keyHash(b.key))).toBe(true);
      console.log(`lifecycle: ${traffic.outcomes.length} requests through the controller port, 0 failed`);
    } finally {
      polling = false;
      await poller;
      await traffic?.stop();
      upstream.setDelayMs(0);
      await api.close();
      // The revoke call names a version, never a key.
      const revokes = api.requestLog.filter((l) => l.startsWith('POST /keys/revoke'));
      for (const k of apiKeys) expect(revokes.join('\n')).not.toContain(k);
    }
  }, 600_000);
});
