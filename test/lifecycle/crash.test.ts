// Crash safety of `keyroll reconcile --once --targets … --revoke-url …` with real processes: the
// CLI is SIGKILLed before, during and after its revoke call (the fake key API holds the call and
// the test kills at that moment), over many runs; a run in-process then finishes the job. A is
// revoked exactly once, never before every target proved B; a rotation to C during the
// retirement of A retires A and then B, in order. No key or token in any output or state file.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { Workspace } from '../reconcile/support/cli-harness.ts';
import { type FakeController, startFakeController } from '../reconcile/support/fake-controller.ts';
import { KEYROLL_BIN } from '../reconcile/support/fleet.ts';
import { type KillPoint, killAt, startFakeKeyApi } from '../support/fake-key-api.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';
import { node24 } from '../support/sandbox.ts';

const SOURCE_TOKEN = 'test-token-source-crash-0000000000';
const TARGET_TOKEN = 'test-token-target-crash-0000000000';
const RUNS = 12;
// Children share one V8 compile cache: a child's start is most of each run.
const compileCache = mkdtempSync(join(tmpdir(), 'keyroll-crash-cache-'));
const captured: string[] = [];
const secrets = new Set<string>([SOURCE_TOKEN, TARGET_TOKEN]);

afterAll(async () => {
  await killAllTracked();
  rmSync(compileCache, { recursive: true, force: true });
  const all = captured.join('\n');
  for (const s of secrets) expect(all.includes(s), 'a key or token in the output or state file').toBe(false);
});

interface Run {
  point: KillPoint;
  /** Mint C while A's revoke is held (during/after only). */
  toC: boolean;
}

/** 12 runs: before, during and after, each also with a rotation to C in the middle. */
const PLAN: Run[] = Array.from({ length: RUNS }, (_, i) => ({
  point: (['before', 'during', 'after'] as const)[i % 3]!,
  toC: i % 4 === 3 && i % 3 !== 0,
}));

async function oneRun(r: Run): Promise<void> {
  const ws = new Workspace();
  const api = await startFakeKeyApi({ token: SOURCE_TOKEN });
  const fakes: FakeController[] = [];
  try {
    ws.env.SOURCE_TOKEN = SOURCE_TOKEN;
    const a = api.current();
    for (let i = 0; i < 2; i++)
      fakes.push(await startFakeController({ token: TARGET_TOKEN, key: a.key, restartMs: 20 }));
    const file = ws.targets(
      fakes.map((f, i) => ({ name: `gw-${i}`, url: f.url, token: TARGET_TOKEN })),
      { rollout: { concurrency: 2, maxUnavailable: 2 } },
      { http: { url: api.currentUrl, tokenEnv: 'SOURCE_TOKEN' } },
    );
    const flags = [
      '--once',
      '--targets',
      file,
      '--poll',
      '20ms',
      '--retire-after',
      '0s',
      '--revoke-url',
      api.revokeUrl,
      '--revoke-token-env',
      'SOURCE_TOKEN',
    ];
    // A is current and proven; then B is minted.
    const seed = await ws.run('reconcile', flags);
    expect(seed.code, seed.stderr).toBe(0);
    const b = api.mint();
    const runsOn = (key: string) =>
      fakes.every(
        (f) =>
          f.snapshot().envHash === fingerprintEnv(TARGET_TOKEN, { KILOCODE_API_KEY: key }) &&
          f.snapshot().ready,
      );
    // Every successful revoke: which version, and whether every target already ran the key that
    // was current then (B for A, C for B).
    const revoked: Array<{ version: string; proven: boolean }> = [];
    let successor = b.key;
    api.onRevoked = (v) => {
      revoked.push({ version: v, proven: runsOn(successor) });
    };

    const p = spawnTracked(node24(), [KEYROLL_BIN, 'reconcile', ...flags], {
      name: `reconcile-${r.point}`,
      env: { ...process.env, ...ws.env, NODE_COMPILE_CACHE: compileCache },
    });
    let c: ReturnType<typeof api.mint> | null = null;
    await killAt(
      api,
      r.point,
      () => fakes.some((f) => f.patches.length > 0),
      async () => {
        if (r.toC) {
          c = api.mint();
        }
        await p.stop('SIGKILL', 5_000);
      },
    );
    captured.push(p.lines.join('\n'));
    if (c) successor = (c as { key: string }).key;

    // Recovery: runs in-process until the state settles (at most a few).
    for (let i = 0; i < 4; i++) {
      const again = await ws.run('reconcile', flags);
      expect(again.code, again.stderr + again.stdout).toBe(0);
      const state = readFileSync(ws.path('targets.yaml.state.json'), 'utf8');
      const want = c ? [a.version, b.version] : [a.version];
      const lc = (
        JSON.parse(state) as { keys: { targets: { previous: Array<{ version: string; state: string }> } } }
      ).keys.targets;
      if (want.every((v) => lc.previous.some((x) => x.version === v && x.state === 'Retired'))) break;
    }
    captured.push(ws.transcript, readFileSync(ws.path('targets.yaml.state.json'), 'utf8'));
    for (const k of api.keys()) secrets.add(k.key);

    const expected = c ? [a.version, b.version] : [a.version];
    // Exactly one successful revoke per retired version, in order, each after every target proved
    // its successor; A's never twice, whatever the kill point.
    expect(
      revoked.map((x) => x.version),
      `${r.point}${r.toC ? '+C' : ''}`,
    ).toEqual(expected);
    expect(revoked.every((x) => x.proven)).toBe(true);
    for (const v of expected) expect(api.revokedCount(v)).toBe(1);
    expect(api.activeKeys()).toEqual([c ? (c as { key: string }).key : b.key]);
  } finally {
    await Promise.all(fakes.map((f) => f.close()));
    await api.close();
    ws.cleanup();
  }
}

describe('reconcile --once --targets: SIGKILL around the revoke call', () => {
  it(`${RUNS} runs (before, during, after; some rotate to C meanwhile): exactly one revoke per version, never early, in order`, async () => {
    // Two lanes at once (each run has its own API, targets and state file): the file's wall time
    // stays under a minute on a loaded machine.
    const lanes = [0, 1].map(async (lane) => {
      for (const r of PLAN.filter((_, i) => i % 2 === lane)) await oneRun(r);
    });
    await Promise.all(lanes);
    expect(PLAN.filter((r) => r.point === 'during').length).toBeGreaterThanOrEqual(4);
    expect(PLAN.some((r) => r.toC)).toBe(true);
  }, 90_000);
});
