// `keyroll fly` with the key lifecycle (issue 12, "per app for fly") against the fake Fly API, the
// fake key API (mint, current, revoke) and in-memory controllers: the previous key is revoked only
// after every machine of the app proved the new one, exactly once, and no secret is printed. Also
// the pass's progress line on a TTY (issue 14), tested as reconcile's is.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runFly } from '../../src/cli/fly.ts';
import { UsageError } from '../../src/errors.ts';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { machineProof } from '../../src/fly/lifecycle.ts';
import type { MachineResult } from '../../src/fly/loop.ts';
import { type FakeKeyApi, startFakeKeyApi } from '../support/fake-key-api.ts';
import { type FakeFlyApi, startFakeFlyApi } from '../support/fly/fake-fly-api.ts';
import { type MemController, memController, memControllerClient } from './support/mem-controllers.ts';

const APP = 'lifecycle-app';
const TOKEN = 'test-token-fly-lifecycle-0123456789';
const FLY_TOKEN = 'test-fly-token-lifecycle-0123456789';
const SOURCE_TOKEN = 'test-source-token-lifecycle-0123456789';

let fly: FakeFlyApi;
let keys: FakeKeyApi;
let dir: string;
let controllers: Map<string, MemController>;
let transcript: string;

beforeEach(async () => {
  fly = await startFakeFlyApi({ token: FLY_TOKEN });
  keys = await startFakeKeyApi({ token: SOURCE_TOKEN });
  dir = mkdtempSync(join(tmpdir(), 'keyroll-fly-lifecycle-'));
  controllers = new Map();
  transcript = '';
});
afterEach(async () => {
  await fly.close();
  await keys.close();
  rmSync(dir, { recursive: true, force: true });
});

const hashOf = (key: string) => fingerprintEnv(TOKEN, { KILOCODE_API_KEY: key });

function addStarted(id: string, port: number, key: string): MemController {
  fly.addMachine(APP, { id, private_ip: '127.0.0.1', env: {}, metadata: { keyroll_port: String(port) } });
  const c = memController(TOKEN, key);
  controllers.set(`http://127.0.0.1:${port}`, c);
  return c;
}

async function run(
  argv: string[],
  columns?: number,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const tty = columns !== undefined;
  const io = {
    stdout: (t: string) => {
      stdout += t;
    },
    stderr: (t: string) => {
      stderr += t;
    },
    env: {
      FLY_API_TOKEN: FLY_TOKEN,
      FLY_API_URL: fly.baseUrl,
      OPENCLAW_GATEWAY_TOKEN: TOKEN,
      KEY_API_TOKEN: SOURCE_TOKEN,
      // A TTY run keeps stderr for the progress line alone.
      KEYROLL_LOG_LEVEL: tty ? 'warn' : 'debug',
    },
    isTty: tty,
    columns,
  };
  let code: number;
  try {
    code = await runFly(
      [
        '--app',
        APP,
        '--once',
        '--source-url',
        keys.currentUrl,
        '--source-token-env',
        'KEY_API_TOKEN',
        '--retries',
        '0',
        '--poll',
        '20ms',
        '--max-changes',
        '10',
        ...argv,
      ],
      io,
      { controllerClient: memControllerClient(controllers, TOKEN) },
    );
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    stderr += `keyroll fly: ${err.message}\n`;
    code = 2;
  }
  transcript += stdout + stderr;
  return { code, stdout, stderr };
}

function lifecycleFlags(): string[] {
  return [
    '--state-file',
    join(dir, 'fly.state.json'),
    '--retire-after',
    '0s',
    '--revoke-url',
    keys.revokeUrl,
  ];
}

describe('keyroll fly: key lifecycle per app', () => {
  it('revokes the previous key only after every machine proved the new one, exactly once', async () => {
    const a = keys.current();
    const machines = [
      addStarted('m1', 1001, a.key),
      addStarted('m2', 1002, a.key),
      addStarted('m3', 1003, a.key),
    ];
    fly.addMachine(APP, { id: 's1', state: 'stopped', env: { KILOCODE_API_KEY: a.key } });

    const first = await run(lifecycleFlags());
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toMatch(/current v1, proven by every target since/);

    const b = keys.mint();
    let provenAtRevoke: boolean[] = [];
    keys.onRevoked = () => {
      provenAtRevoke = machines.map((m) => m.envHash === hashOf(b.key));
    };
    machines[2]!.down = true;
    const second = await run(lifecycleFlags());
    expect(second.code).toBe(1);
    expect(machines.slice(0, 2).map((m) => m.envHash)).toEqual([hashOf(b.key), hashOf(b.key)]);
    expect(keys.revokeCalls).toEqual([]);
    expect(second.stdout).toMatch(/previous v1: Blocked: cannot observe m3/);
    const state = JSON.parse(readFileSync(join(dir, 'fly.state.json'), 'utf8'));
    expect(state.keys[`fly/${APP}`].previous[0]).toMatchObject({ version: 'v1', state: 'Blocked' });

    machines[2]!.down = false;
    const third = await run(lifecycleFlags());
    expect(third.code, third.stdout + third.stderr).toBe(0);
    expect(keys.revokedCount('v1')).toBe(1);
    expect(provenAtRevoke).toEqual([true, true, true]);
    expect(third.stdout).toMatch(/previous v1: Retired at \S+ \(revoked now\)/);

    const fourth = await run(lifecycleFlags());
    expect(fourth.code).toBe(0);
    expect(keys.revokeCalls.filter((c) => c.version === 'v1')).toHaveLength(1);
    expect(keys.revokedCount('v2')).toBe(0);
    expect(fourth.stdout).toMatch(/previous v1: Retired at/);
    expect(fourth.stdout).not.toMatch(/revoked now/);

    for (const secret of [a.key, b.key, TOKEN, FLY_TOKEN, SOURCE_TOKEN]) {
      expect(transcript).not.toContain(secret);
      expect(readFileSync(join(dir, 'fly.state.json'), 'utf8')).not.toContain(secret);
    }
  });

  it('-o json carries the lifecycle; --dry-run shows it and writes nothing', async () => {
    const a = keys.current();
    addStarted('m1', 1001, a.key);
    const stateFile = join(dir, 'fly.state.json');
    const dry = await run(['--dry-run', '--state-file', stateFile]);
    expect(dry.code).toBe(0);
    expect(() => readFileSync(stateFile)).toThrow();
    const json = await run(['--state-file', stateFile, '-o', 'json']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout).lifecycle.current).toMatchObject({ version: 'v1' });
  });

  it('--revoke-url without a token variable, or with an unset one, is a usage error before any call', async () => {
    const r = await run(['--revoke-url', keys.revokeUrl, '--revoke-token-env', 'NOT_SET_ANYWHERE']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--revoke-token-env: NOT_SET_ANYWHERE is not set/);
    expect(fly.requests).toEqual([]);
    const bad = await run(['--revoke-url', 'ftp://example.invalid/revoke']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--revoke-url: /);
  });

  it('a machine proves by its running key and a config without a key; stopped ones by the config', () => {
    const m = (over: Partial<MachineResult>): MachineResult =>
      ({
        id: 'x',
        state: 'started',
        live: 'ok',
        durable: 'ok',
        outcome: 'converged',
        ...over,
      }) as MachineResult;
    expect(machineProof(m({}))).toEqual({ name: 'x', observed: true, proves: true });
    expect(machineProof(m({ durable: 'deferred' }))).toMatchObject({ observed: true, proves: false });
    expect(machineProof(m({ live: 'stale' }))).toMatchObject({ observed: true, proves: false });
    expect(machineProof(m({ live: 'unreachable' }))).toMatchObject({ observed: false });
    expect(machineProof(m({ outcome: 'skipped' }))).toMatchObject({ observed: false });
    expect(machineProof(m({ state: 'stopped', live: 'not-running' }))).toMatchObject({ proves: true });
    expect(machineProof(m({ state: 'stopped', durable: 'stale' }))).toMatchObject({ proves: false });
    expect(machineProof(m({ state: 'starting' }))).toMatchObject({ observed: false });
  });
});

describe('keyroll fly: progress', () => {
  const draws = (stderr: string) => stderr.split('\n')[0]!.split('\r').filter(Boolean);

  it('draws a \\r progress line on stderr on a TTY, cut to its width, and none otherwise', async () => {
    const a = keys.current();
    addStarted('m1', 1001, a.key);
    addStarted('m2', 1002, a.key);
    keys.mint();
    const wide = await run([], 200);
    expect(wide.code, wide.stdout + wide.stderr).toBe(0);
    expect(draws(wide.stderr).at(-1)).toMatch(new RegExp(`^fly ${APP} 2/2 done: 2 converged, 0 not \\|`));
    expect(draws(wide.stderr).some((d) => /observing [1-9]/.test(d))).toBe(true);
    expect(draws(wide.stderr).some((d) => /delivering [1-9]|verifying [1-9]/.test(d))).toBe(true);

    keys.mint();
    const narrow = await run([], 40);
    expect(narrow.code).toBe(0);
    for (const d of draws(narrow.stderr)) {
      expect(d.length).toBeLessThanOrEqual(39);
      expect(d.endsWith('…')).toBe(true);
    }
    expect(draws(narrow.stderr).at(-1)).toBe(`fly ${APP} 2/2 done: 2 converge…`);

    const plain = await run([]);
    expect(plain.code).toBe(0);
    expect(plain.stderr).not.toContain('\r');
  });
});
