// The stand-in gateway reproduces the OpenClaw 2026.6.8 behaviours keyroll depends on
// (reference/openclaw.md §9-§11): precedence, env refs fixed at spawn, file refs re-read per
// request, config refs refreshed only by secrets reload, SIGUSR1 keeping env, fail-fast start.
import { chmodSync, linkSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type FakeUpstream, startFakeUpstream } from '../support/fake-upstream.ts';
import { chat } from '../support/http.ts';
import { killAllTracked, spawnTracked, type Tracked } from '../support/processes.ts';
import {
  type SeedOptions,
  seedStandInState,
  standInPath,
  startStandIn,
} from '../support/stand-in-gateway.ts';

const KEY_P = 'test-key-P-plaintext-0001';
const KEY_A = 'test-key-A-env-0002';
const KEY_B = 'test-key-B-file-0003';
const TOKEN = 'test-gateway-token-0004';

let up: FakeUpstream;
const dirs: string[] = [];
const procs: Tracked[] = [];

function stateDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'keyroll-standin-'));
  dirs.push(d);
  return d;
}

function seeded(opts: Omit<SeedOptions, 'baseUrl'>): string {
  const dir = stateDir();
  seedStandInState(dir, { baseUrl: up.baseUrl, ...opts });
  return dir;
}

async function start(dir: string, env: Record<string, string> = {}) {
  const g = await startStandIn({
    port: 0,
    env: { OPENCLAW_STATE_DIR: dir, OPENCLAW_GATEWAY_TOKEN: TOKEN, STANDIN_READY_DELAY_MS: '0', ...env },
  });
  procs.push(g.proc);
  return g;
}

/** Starts the stand-in expecting it to fail; returns its exit code and output. */
async function startFailing(dir: string, env: Record<string, string>) {
  const proc = spawnTracked(process.execPath, [standInPath(), '--port', '0'], {
    env: { PATH: process.env.PATH, OPENCLAW_STATE_DIR: dir, OPENCLAW_GATEWAY_TOKEN: TOKEN, ...env },
  });
  procs.push(proc);
  const exit = await Promise.race([proc.exited, new Promise<null>((r) => setTimeout(() => r(null), 25_000))]);
  return { exit, output: proc.lines.join('\n') };
}

/** Sends one request and returns the key the upstream saw for it. */
async function keySeen(port: number): Promise<{ status: number; key: string | undefined }> {
  const before = up.chatRequests().length;
  const r = await chat(port, TOKEN, 10_000);
  const seen = up.chatRequests().slice(before);
  expect(seen.length).toBeLessThanOrEqual(1);
  return { status: r.status, key: seen[0]?.key };
}

beforeAll(async () => {
  up = await startFakeUpstream({ keys: [KEY_A, KEY_B] });
});
afterEach(async () => {
  await killAllTracked();
});
afterAll(async () => {
  await up.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  // No key or token in anything any stand-in printed.
  const all = procs.flatMap((p) => p.lines).join('\n');
  for (const secret of [KEY_P, KEY_A, KEY_B, TOKEN]) expect(all).not.toContain(secret);
});

describe('stand-in gateway: precedence', () => {
  it('a plaintext profile (SQLite store) beats KILOCODE_API_KEY, and the upstream 401 surfaces', async () => {
    const g = await start(seeded({ profile: { key: KEY_P } }), { KILOCODE_API_KEY: KEY_A });
    const before = up.chatRequests().length;
    const r = await chat(g.port, TOKEN, 10_000);
    expect(r.status).toBe(401);
    expect(r.body).toEqual({ error: { message: '401 Invalid API key', type: 'authentication_error' } });
    const sent = up.chatRequests().slice(before);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ key: KEY_P, feature: 'openclaw', stream: true });
  });

  it.each([
    ['json', { key: KEY_P }],
    ['json', { apiKeyAlias: KEY_P }],
    ['json-flat', { key: KEY_P }],
  ] as const)('a plaintext profile in the legacy %s store beats the env too', async (store, profile) => {
    const g = await start(seeded({ profile, store }), { KILOCODE_API_KEY: KEY_A });
    expect(await keySeen(g.port)).toEqual({ status: 401, key: KEY_P });
  });

  it('an env keyRef reads the env the gateway was spawned with', async () => {
    const dir = seeded({
      profile: { keyRef: { source: 'env', provider: 'default', id: 'KILOCODE_API_KEY' } },
    });
    const g = await start(dir, { KILOCODE_API_KEY: KEY_A });
    const r = await chat(g.port, TOKEN, 10_000);
    expect(r.status).toBe(200);
    expect(r.text).toContain('FAKE-UPSTREAM-OK');
    expect(up.chatRequests().at(-1)?.key).toBe(KEY_A);
  });

  it('with no profile at all, KILOCODE_API_KEY is used', async () => {
    const g = await start(seeded({ profile: null }), { KILOCODE_API_KEY: KEY_A });
    expect(await keySeen(g.port)).toEqual({ status: 200, key: KEY_A });
  });

  it('rejects a wrong gateway token without calling upstream', async () => {
    const g = await start(seeded({ profile: null }), { KILOCODE_API_KEY: KEY_A });
    const before = up.requests.length;
    expect((await chat(g.port, 'wrong-token-xyz', 5_000)).status).toBe(401);
    expect(up.requests.length).toBe(before);
  });
});

describe('stand-in gateway: rotation paths', () => {
  it('SIGUSR1 restarts in process, keeps the PID and the old env key', async () => {
    const dir = seeded({
      profile: { keyRef: { source: 'env', provider: 'default', id: 'KILOCODE_API_KEY' } },
    });
    const g = await start(dir, { KILOCODE_API_KEY: KEY_A });
    expect((await keySeen(g.port)).key).toBe(KEY_A);
    process.kill(g.pid, 'SIGUSR1');
    await g.proc.waitForLine(/"event":"restarted"/, 5_000);
    // Env is what it was at spawn; there is no way to hand a running process a new one.
    expect(await keySeen(g.port)).toEqual({ status: 200, key: KEY_A });
    expect(g.proc.exitInfo()).toBeNull();
    const info = await fetch(`http://127.0.0.1:${g.port}/__standin/info`, {
      headers: { authorization: `Bearer ${TOKEN}` },
      signal: AbortSignal.timeout(5_000),
    });
    expect(await info.json()).toMatchObject({ pid: g.pid, restarts: 1, credential: 'profile-env-ref' });
  });

  it('a file keyRef is re-read on every request: atomic replace → new key, no restart', async () => {
    const dir = stateDir();
    const keyFile = join(dir, 'kilocode.key');
    writeFileSync(keyFile, `${KEY_A}\n`, { mode: 0o600 });
    seedStandInState(dir, {
      baseUrl: up.baseUrl,
      profile: { keyRef: { source: 'file', provider: 'kilofile', id: 'value' } },
      secretsProviders: { kilofile: { source: 'file', path: keyFile, mode: 'singleValue' } },
    });
    const g = await start(dir);
    expect(await keySeen(g.port)).toEqual({ status: 200, key: KEY_A });
    const tmp = join(dir, '.kilocode.key.tmp');
    writeFileSync(tmp, `${KEY_B}\n`, { mode: 0o600 });
    renameSync(tmp, keyFile);
    expect(await keySeen(g.port)).toEqual({ status: 200, key: KEY_B });

    // Too open, or a second hard link: refused without an upstream call, then fine again.
    chmodSync(keyFile, 0o644);
    const refused = await keySeen(g.port);
    expect(refused).toEqual({ status: 401, key: undefined });
    chmodSync(keyFile, 0o600);
    linkSync(keyFile, join(dir, 'second-link'));
    expect(await keySeen(g.port)).toEqual({ status: 401, key: undefined });
    rmSync(join(dir, 'second-link'));
    expect(await keySeen(g.port)).toEqual({ status: 200, key: KEY_B });
  });

  it('a config-level file ref is a snapshot that only secrets reload refreshes', async () => {
    const dir = stateDir();
    const keyFile = join(dir, 'provider.key');
    writeFileSync(keyFile, KEY_A, { mode: 0o600 });
    seedStandInState(dir, {
      baseUrl: up.baseUrl,
      profile: null,
      configApiKey: { source: 'file', provider: 'kilofile', id: 'value' },
      secretsProviders: { kilofile: { source: 'file', path: keyFile, mode: 'singleValue' } },
    });
    const g = await start(dir);
    expect((await keySeen(g.port)).key).toBe(KEY_A);
    writeFileSync(keyFile, KEY_B, { mode: 0o600 });
    expect((await keySeen(g.port)).key).toBe(KEY_A);
    const reload = await fetch(`http://127.0.0.1:${g.port}/__standin/secrets-reload`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}` },
      signal: AbortSignal.timeout(5_000),
    });
    expect(reload.status).toBe(200);
    await reload.text();
    expect((await keySeen(g.port)).key).toBe(KEY_B);
  });
});

describe('stand-in gateway: lifecycle', () => {
  it('exits 1 at start when a referenced env var is missing', async () => {
    const dir = seeded({
      profile: { keyRef: { source: 'env', provider: 'default', id: 'KILOCODE_API_KEY' } },
    });
    const { exit, output } = await startFailing(dir, {});
    expect(exit?.code).toBe(1);
    expect(output).toContain('Environment variable "KILOCODE_API_KEY" is missing or empty.');
  });

  it('exits 1 at start when a referenced key file is missing or too open', async () => {
    const dir = stateDir();
    const keyFile = join(dir, 'kilocode.key');
    seedStandInState(dir, {
      baseUrl: up.baseUrl,
      profile: { keyRef: { source: 'file', provider: 'kilofile', id: 'value' } },
      secretsProviders: { kilofile: { source: 'file', path: keyFile, mode: 'singleValue' } },
    });
    expect((await startFailing(dir, {})).exit?.code).toBe(1);
    writeFileSync(keyFile, KEY_A, { mode: 0o644 });
    chmodSync(keyFile, 0o644);
    const tooOpen = await startFailing(dir, {});
    expect(tooOpen.exit?.code).toBe(1);
    expect(tooOpen.output).toContain('secrets.providers.kilofile.path permissions are too open');
  });

  it('STANDIN_FAIL_START=1 exits 1; STANDIN_EXIT_AFTER_MS crashes with 1 after the delay', async () => {
    const dir = seeded({ profile: null });
    expect((await startFailing(dir, { STANDIN_FAIL_START: '1' })).exit?.code).toBe(1);
    const g = await start(dir, { KILOCODE_API_KEY: KEY_A, STANDIN_EXIT_AFTER_MS: '300' });
    const exit = await g.proc.exited;
    expect(exit.code).toBe(1);
  });

  it('/readyz is 503 until STANDIN_READY_DELAY_MS has passed, /healthz is live at once', async () => {
    const dir = seeded({ profile: null });
    const proc = spawnTracked(process.execPath, [standInPath(), '--port', '0'], {
      env: {
        PATH: process.env.PATH,
        OPENCLAW_STATE_DIR: dir,
        OPENCLAW_GATEWAY_TOKEN: TOKEN,
        STANDIN_READY_DELAY_MS: '3000',
      },
    });
    procs.push(proc);
    const line = await proc.waitForLine(/"event":"listening"/, 10_000);
    const { port } = JSON.parse(line) as { port: number };
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(await health.json()).toEqual({ ok: true, status: 'live' });
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(503);
    await proc.waitForLine(/"event":"ready"/, 5_000);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, failing: [] });
  });

  it('SIGTERM exits 0 within 3 s; with STANDIN_IGNORE_SIGTERM=1 only SIGKILL stops it', async () => {
    const dir = seeded({ profile: null });
    const g = await start(dir, { KILOCODE_API_KEY: KEY_A });
    const t0 = Date.now();
    expect(await g.proc.stop('SIGTERM', 3_000)).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(3_000);

    const stubborn = await start(dir, { KILOCODE_API_KEY: KEY_A, STANDIN_IGNORE_SIGTERM: '1' });
    expect(await stubborn.proc.stop('SIGTERM', 500)).toEqual({ code: null, signal: 'SIGKILL' });
    expect(stubborn.proc.lines.join('\n')).toContain('signal_ignored');
  });
});
