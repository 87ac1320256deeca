// Issue 2 acceptance against the real OpenClaw 2026.6.8: a plaintext profile shadows the env
// key (the precedence fact the whole project rests on); `keyroll profiles migrate` turns it into a
// keyRef (env or file) and leaves no trace of the plaintext key anywhere in the state dir (SQLite
// pages, WAL and SHM included); afterwards the gateway uses the env key — also across an
// in-process SIGUSR1 restart — or, with a file ref, re-reads the key file on every request. (The
// harness checks of openclaw-harness.test.ts run here, on the same two gateways.)
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../../src/adapters/atomic-file.ts';
import { type FakeUpstream, startFakeUpstream } from '../support/fake-upstream.ts';
import {
  chat,
  freePort,
  GATEWAY_READY_TIMEOUT_MS,
  ONE_START_TEST_MS,
  onboard,
  pointAtUpstream,
  readConfig,
  readKilocodeProfile,
  startGateway,
  TWO_START_TEST_MS,
} from '../support/openclaw.ts';
import { killAllTracked, pidAlive, spawnTracked, type Tracked } from '../support/processes.ts';
import { createSandbox, filesContaining, node24, REPO_ROOT, type Sandbox } from '../support/sandbox.ts';
import { waitForReady } from '../support/stand-in-gateway.ts';

const KEY_P = 'test-key-P-disk-plaintext-8001';
const KEY_A = 'test-key-A-env-8002';
const KEY_B = 'test-key-B-rotated-file-8003';
const TOKEN = 'test-gateway-token-8004';

const sandboxes: Sandbox[] = [];
const outputs: Tracked[] = [];
let up: FakeUpstream | undefined;

afterEach(async () => {
  await killAllTracked();
  await up?.close();
  up = undefined;
});
afterAll(() => {
  const all = outputs.flatMap((p) => p.lines).join('\n');
  for (const secret of [KEY_P, KEY_A, KEY_B, TOKEN]) expect(all).not.toContain(secret);
  for (const sb of sandboxes) sb.cleanup();
});

/** `keyroll profiles migrate …` as a subprocess, with no key in its environment. */
async function migrate(sb: Sandbox, extra: string[]): Promise<{ code: number | null; stdout: string }> {
  const proc = spawnTracked(
    node24(),
    [
      join(REPO_ROOT, 'bin', 'keyroll.mjs'),
      'profiles',
      'migrate',
      '--state-dir',
      sb.stateDir,
      ...extra,
      '--json',
    ],
    { name: 'keyroll-migrate', cwd: REPO_ROOT, env: { PATH: sb.env().PATH, HOME: sb.home } },
  );
  outputs.push(proc);
  const exit = await Promise.race([
    proc.exited,
    new Promise<null>((r) => setTimeout(() => r(null), 120_000)),
  ]);
  if (!exit) {
    await proc.stop('SIGKILL');
    throw new Error('keyroll profiles migrate did not finish within 120 s');
  }
  await new Promise((r) => setImmediate(r));
  return { code: exit.code, stdout: proc.stdoutLines.join('\n') };
}

/** Onboards plaintext with P and points kilocode at the upstream; returns sandbox and port. */
async function plaintextGateway(): Promise<{ sb: Sandbox; port: number }> {
  const sb = createSandbox();
  sandboxes.push(sb);
  const port = await freePort();
  await onboard(sb, { mode: 'plaintext', key: KEY_P, token: TOKEN, port });
  expect(readKilocodeProfile(sb)).toMatchObject({ key: KEY_P });
  pointAtUpstream(sb, up!.baseUrl);
  return { sb, port };
}

const gatewayEnv = { OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: KEY_A };

describe('keyroll profiles migrate on a real OpenClaw state dir', () => {
  it(
    '--to env: before, the upstream sees P; after migrating, A — and P is gone from the state dir',
    async () => {
      up = await startFakeUpstream({ keys: [KEY_A] });
      const { sb, port } = await plaintextGateway();

      expect(readConfig(sb)).toMatchObject({
        models: { providers: { kilocode: { baseUrl: up.baseUrl } } },
        gateway: { http: { endpoints: { chatCompletions: { enabled: true } } } },
      });
      const before = await startGateway(sb, { port, env: gatewayEnv });
      outputs.push(before.proc);
      const refused = await chat(port, TOKEN);
      expect(refused.status).toBe(401);
      expect(refused.text).toContain('authentication_error');
      const sent = up.chatRequests();
      expect(sent.length).toBeGreaterThanOrEqual(1);
      // Every attempt carried P; the env key A was never tried (no fallback on auth errors).
      expect(new Set(sent.map((q) => q.key))).toEqual(new Set([KEY_P]));
      expect(sent[0]).toMatchObject({ feature: 'openclaw', stream: true });
      expect(await before.stop()).toEqual({ code: 0, signal: null });
      expect(pidAlive(before.pid)).toBe(false);
      expect(filesContaining(sb.stateDir, KEY_P).length).toBeGreaterThan(0);

      const m = await migrate(sb, []);
      expect(m.code).toBe(0);
      expect(m.stdout).not.toContain(KEY_P);
      expect(readKilocodeProfile(sb)).toEqual({
        type: 'api_key',
        provider: 'kilocode',
        keyRef: { source: 'env', provider: 'default', id: 'KILOCODE_API_KEY' },
      });
      expect(filesContaining(sb.stateDir, KEY_P)).toEqual([]);

      const seenBefore = up.chatRequests().length;
      const after = await startGateway(sb, { port, env: gatewayEnv });
      outputs.push(after.proc);
      expect(after.pid).not.toBe(before.pid);
      const health = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5_000) });
      expect(await health.json()).toMatchObject({ ok: true, status: 'live' });
      const r = await chat(port, TOKEN);
      expect(r.status).toBe(200);
      expect(r.text).toContain('FAKE-UPSTREAM-OK');
      expect(
        up
          .chatRequests()
          .slice(seenBefore)
          .map((q) => q.key),
      ).toEqual([KEY_A]);

      // SIGUSR1 with OPENCLAW_NO_RESPAWN=1 restarts in process: same PID, same (spawn-time) env.
      // This is the behaviour the stand-in copies and the controller must never rely on.
      process.kill(after.pid, 'SIGUSR1');
      await after.proc.waitForLine(/in-process restart/, 60_000);
      await waitForReady(port, after.proc, GATEWAY_READY_TIMEOUT_MS);
      expect((await chat(port, TOKEN)).status).toBe(200);
      // The gateway may retry a request that straddled its in-process restart (seen once in CI:
      // three upstream requests for two chats); what matters is that every one carried A.
      const keys = up
        .chatRequests()
        .slice(seenBefore)
        .map((q) => q.key);
      expect(keys.length).toBeGreaterThanOrEqual(2);
      expect(new Set(keys)).toEqual(new Set([KEY_A]));
      expect(after.proc.exitInfo()).toBeNull();
      expect(await after.stop()).toEqual({ code: 0, signal: null });
      // The running gateway did not write P back either.
      expect(filesContaining(sb.stateDir, KEY_P)).toEqual([]);
    },
    TWO_START_TEST_MS,
  );

  it(
    '--to file: the key file holds the key, the gateway reads it per request, a replace is seen at once',
    async () => {
      up = await startFakeUpstream({ keys: [KEY_P, KEY_B] });
      const { sb, port } = await plaintextGateway();
      const secretsDir = join(sb.dir, 'secrets');
      mkdirSync(secretsDir, { mode: 0o700 });
      const keyFile = join(secretsDir, 'kilocode.key');

      const m = await migrate(sb, ['--to', 'file', '--key-file', keyFile]);
      expect(m.code).toBe(0);
      expect(m.stdout).not.toContain(KEY_P);
      const profile = readKilocodeProfile(sb);
      expect(profile).toMatchObject({
        type: 'api_key',
        provider: 'kilocode',
        keyRef: { source: 'file', id: 'value' },
      });
      expect(profile).not.toHaveProperty('key');
      expect(filesContaining(sb.stateDir, KEY_P)).toEqual([]);
      expect(statSync(keyFile).mode & 0o777).toBe(0o600);
      expect(filesContaining(secretsDir, KEY_P)).toEqual([keyFile]);
      expect(readConfig(sb)).toMatchObject({
        secrets: { providers: { kilofile: { source: 'file', path: keyFile } } },
      });

      // KILOCODE_API_KEY=A in the env must not matter any more: the profile names the file.
      const gw = await startGateway(sb, { port, env: gatewayEnv });
      outputs.push(gw.proc);
      expect((await chat(port, TOKEN)).status).toBe(200);
      expect(up.chatRequests().map((q) => q.key)).toEqual([KEY_P]);

      await writeFileAtomic(keyFile, `${KEY_B}\n`, { mode: 0o600 });
      const n = up.chatRequests().length;
      expect((await chat(port, TOKEN)).status).toBe(200);
      expect(
        up
          .chatRequests()
          .slice(n)
          .map((q) => q.key),
      ).toEqual([KEY_B]);
      expect(gw.proc.exitInfo()).toBeNull(); // same process, no restart

      // A key file that is too open is refused per request, without an upstream call, and the
      // first request after it is fixed succeeds again (reference §10, "file ref broken mid-run").
      chmodSync(keyFile, 0o644);
      const m2 = up.chatRequests().length;
      const refused = await chat(port, TOKEN);
      expect(refused.status).toBe(401);
      expect(up.chatRequests().length).toBe(m2);
      chmodSync(keyFile, 0o600);
      expect((await chat(port, TOKEN)).status).toBe(200);
      expect(
        up
          .chatRequests()
          .slice(m2)
          .map((q) => q.key),
      ).toEqual([KEY_B]);
      expect((await gw.stop()).code).toBe(0);
      expect(filesContaining(sb.stateDir, KEY_P)).toEqual([]);
      expect(filesContaining(sb.stateDir, KEY_B)).toEqual([]);
    },
    ONE_START_TEST_MS,
  );
});
