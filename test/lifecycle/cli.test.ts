// The key lifecycle of a targets file through `keyroll reconcile --once` and `diff`: the HTTP key
// source mints B, the pass delivers and proves it, the previous key A is revoked once — and never
// while a target cannot be observed; diff shows the record without writing it; nothing secret
// in any output or in the state file.
import { readFileSync, statSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { Workspace } from '../reconcile/support/cli-harness.ts';
import {
  type FakeController,
  startFakeController,
  unreachableUrl,
} from '../reconcile/support/fake-controller.ts';
import { type FakeKeyApi, startFakeKeyApi } from '../support/fake-key-api.ts';

const SOURCE_TOKEN = 'test-token-source-api-0000000000';

let ws: Workspace;
let api: FakeKeyApi;
let fakes: FakeController[];

beforeEach(async () => {
  ws = new Workspace();
  fakes = [];
  api = await startFakeKeyApi({ token: SOURCE_TOKEN });
  ws.env.SOURCE_TOKEN = SOURCE_TOKEN;
});

afterEach(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  await api.close();
  const secrets = [SOURCE_TOKEN, ...api.keys().map((k) => k.key)];
  const state = ws.path('targets.yaml.state.json');
  const stateText = (() => {
    try {
      return readFileSync(state, 'utf8');
    } catch {
      return '';
    }
  })();
  for (const s of secrets) {
    expect(ws.transcript).not.toContain(s);
    expect(stateText).not.toContain(s);
  }
  ws.cleanup();
});

async function fleet(n: number, key: string) {
  const list = [];
  for (let i = 0; i < n; i++) {
    const token = `test-token-target-${i}-000000`;
    const f = await startFakeController({ token, key, restartMs: 30 });
    fakes.push(f);
    list.push({ name: `gw-${i}`, url: f.url, token });
  }
  return list;
}

const source = () => ({ http: { url: api.currentUrl, tokenEnv: 'SOURCE_TOKEN' } });
const lifecycleFlags = () => [
  '--retire-after',
  '0s',
  '--revoke-url',
  api.revokeUrl,
  '--revoke-token-env',
  'SOURCE_TOKEN',
];

describe('reconcile --once --targets with a key lifecycle', () => {
  it('mint B → deliver → prove → revoke A, exactly once; a second run revokes nothing', async () => {
    const a = api.current();
    const targets = await fleet(3, a.key);
    const file = ws.targets(targets, { rollout: { concurrency: 3, maxUnavailable: 3 } }, source());

    const first = await ws.run('reconcile', [
      '--once',
      '--targets',
      file,
      '--poll',
      '20ms',
      ...lifecycleFlags(),
    ]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`current ${a.version}, proven by every target`);
    expect(api.revokeCalls).toEqual([]);

    const b = api.mint();
    let atRevoke: Array<{ envHash: string | null; ready: boolean }> = [];
    api.onRevoked = () => {
      atRevoke = fakes.map((f) => {
        const { envHash, ready } = f.snapshot();
        return { envHash, ready };
      });
    };
    const second = await ws.run('reconcile', [
      '--once',
      '--targets',
      file,
      '--poll',
      '20ms',
      ...lifecycleFlags(),
    ]);
    expect(second.code, second.stderr).toBe(0);
    expect(fakes.every((f) => f.patches.length === 1)).toBe(true);
    expect(second.stdout).toMatch(new RegExp(`previous ${a.version}: Retired at \\S+ \\(revoked now\\)`));
    expect(api.revokedCount(a.version)).toBe(1);
    expect(api.activeKeys()).toEqual([b.key]);
    // At the moment A was revoked, every gateway already ran B, ready (the fake's state then).
    expect(atRevoke).toEqual(
      targets.map((t) => ({
        envHash: fingerprintEnv(t.token, { KILOCODE_API_KEY: b.key }),
        ready: true,
      })),
    );

    const third = await ws.run('reconcile', ['--once', '--targets', file, '--json', ...lifecycleFlags()]);
    expect(third.code).toBe(0);
    expect(api.revokeCalls).toHaveLength(1);
    const json = JSON.parse(third.stdout);
    expect(json.lifecycle.previous).toEqual([
      expect.objectContaining({ version: a.version, state: 'Retired' }),
    ]);
    expect(statSync(ws.path('targets.yaml.state.json')).mode & 0o777).toBe(0o600);
  });

  it('a target that cannot be observed blocks the revoke and is named; once it proves B, A is revoked', async () => {
    const a = api.current();
    const targets = await fleet(2, a.key);
    const down = { name: 'gw-down', url: await unreachableUrl(), token: 'test-token-target-down-0000' };
    const file = ws.targets(
      [...targets, down],
      { rollout: { concurrency: 3, maxUnavailable: 3, failureBudget: 3 } },
      source(),
    );
    await ws.run('reconcile', ['--once', '--targets', file, '--poll', '20ms', ...lifecycleFlags()]);
    api.mint();
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      file,
      '--poll',
      '20ms',
      '--retries',
      '0',
      ...lifecycleFlags(),
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(new RegExp(`previous ${a.version}: Blocked: cannot observe gw-down`));
    expect(api.revokeCalls).toEqual([]);

    // The pod is gone from the selection (or came back proving B): the next run retires A.
    const healed = ws.targets(targets, { rollout: { concurrency: 3, maxUnavailable: 3 } }, source());
    const again = await ws.run('reconcile', [
      '--once',
      '--targets',
      healed,
      '--poll',
      '20ms',
      ...lifecycleFlags(),
    ]);
    expect(again.code, again.stderr).toBe(0);
    expect(api.revokedCount(a.version)).toBe(1);
  });

  it('diff shows the recorded lifecycle and writes nothing; a corrupt state file is an error, not ignored', async () => {
    const a = api.current();
    const targets = await fleet(1, a.key);
    const file = ws.targets(targets, {}, source());
    await ws.run('reconcile', ['--once', '--targets', file, '--poll', '20ms', '--retire-after', '1h']);
    const state = ws.path('targets.yaml.state.json');
    const before = readFileSync(state, 'utf8');
    api.mint();
    const d = await ws.run('diff', ['--targets', file]);
    expect(d.code).toBe(1);
    expect(d.stdout).toContain(`key lifecycle (${state})`);
    expect(readFileSync(state, 'utf8')).toBe(before);

    ws.write('targets.yaml.state.json', '{"apiVersion":"keyroll.dev/v1","kind":"nope"}');
    const bad = await ws.run('reconcile', [
      '--once',
      '--targets',
      file,
      '--poll',
      '20ms',
      '--retire-after',
      '1h',
    ]);
    expect(bad.stderr).toMatch(/targets\.yaml\.state\.json is not a keyroll lifecycle state file \(kind/);
    expect(readFileSync(state, 'utf8')).toBe('{"apiVersion":"keyroll.dev/v1","kind":"nope"}');
  });

  it('a revoke token that is not set is a usage error before any target is contacted', async () => {
    const targets = await fleet(1, api.current().key);
    const file = ws.targets(targets, {}, source());
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      file,
      '--revoke-url',
      api.revokeUrl,
      '--revoke-token-env',
      'NOT_SET',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--revoke-token-env: NOT_SET is not set/);
    expect(fakes[0]!.requests).toEqual([]);
  });

  it('without a lifecycle flag nothing is written beside the targets file', async () => {
    const targets = await fleet(1, api.current().key);
    const file = ws.targets(targets, {}, source());
    const r = await ws.run('reconcile', ['--once', '--targets', file]);
    expect(r.code).toBe(0);
    expect(() => statSync(ws.path('targets.yaml.state.json'))).toThrow();
    expect(r.stdout).not.toContain('key lifecycle');
  });
});
