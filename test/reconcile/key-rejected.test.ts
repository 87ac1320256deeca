// The KeyRejected rule end to end at the HTTP boundary: fake controllers serve `/_kilo/state` with
// live-traffic evidence; `keyroll reconcile --once` and `keyroll diff` (in-process, and once as the
// real binary) report KeyRejected with exit 1, never re-deliver the rejected key, and exit 0 as soon
// as an accepted response follows the last rejection.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TRAFFIC_ACCEPTED_LATER, TRAFFIC_HEALTHY, TRAFFIC_REJECTED } from '../support/observed.ts';
import { spawnTracked } from '../support/processes.ts';
import { node24 } from '../support/sandbox.ts';
import { endWorkspaceTest, Workspace } from './support/cli-harness.ts';
import { type FakeController, startFakeController } from './support/fake-controller.ts';
import { KEYROLL_BIN } from './support/fleet.ts';

const KEY_A = 'test-key-A-rejected-0000000001';
const KEY_B = 'test-key-B-rejected-0000000002';
const rejected = TRAFFIC_REJECTED;
const acceptedLater = TRAFFIC_ACCEPTED_LATER;
const proxy = { strategy: 'hold', inFlight: 0, held: 0, websockets: 0 };

let ws: Workspace;
let fakes: FakeController[] = [];

beforeEach(() => {
  ws = new Workspace();
  fakes = [];
});

afterEach(() => endWorkspaceTest(ws, fakes, [KEY_A, KEY_B]));

/** gw-0 runs `key` and reports `traffic0`; gw-1 runs the desired key with healthy traffic. */
async function twoTargets(key: string, traffic0: unknown) {
  const list = [];
  for (const [i, traffic] of [traffic0, TRAFFIC_HEALTHY].entries()) {
    const token = `test-token-rejected-${i}-000000`;
    const fake = await startFakeController({
      token,
      key: i === 0 ? key : KEY_B,
      restartMs: 50,
      traffic,
      proxy,
    });
    fakes.push(fake);
    list.push({ name: `gw-${i}`, url: fake.url, token, fake });
  }
  ws.write('key', `${KEY_B}\n`);
  return { list, file: ws.targets(list, { rollout: { concurrency: 2, maxUnavailable: 2 } }) };
}

const posts = () => fakes.flatMap((f) => f.requests.filter((r) => r.method !== 'GET'));

describe('KeyRejected at the HTTP boundary', () => {
  it('reconcile and diff exit 1 with KeyRejected and re-deliver nothing; an accepted response later → exit 0', async () => {
    const { list, file } = await twoTargets(KEY_B, rejected);
    const pid = list[0]!.fake.snapshot().pid;

    const r = await ws.run('reconcile', ['--once', '--targets', file, '--poll', '20ms']);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stdout).toMatch(
      /^gw-0: not-converged: KeyRejected: the provider rejected the desired key on 3 responses since 2026-12-02T11:00:00\.000Z, none accepted after; /m,
    );
    expect(r.stdout).toMatch(/^gw-1 +converged /m);
    expect(r.stdout).toMatch(/1\/2 converged \(0 patched this pass\), 1 not converged, .*, 1 key rejected/);

    const json = await ws.run('reconcile', ['--once', '--targets', file, '--json']);
    expect(json.code).toBe(1);
    const pass = JSON.parse(json.stdout);
    expect(pass.targets[0]).toMatchObject({ name: 'gw-0', outcome: 'not-converged', reason: 'KeyRejected' });
    expect(pass.targets[0].actions).toEqual([expect.objectContaining({ type: 'none', code: 'KeyRejected' })]);
    expect(pass.targets[0].before.traffic).toEqual(rejected);
    expect(pass.targets[0].before.proxy).toEqual(proxy);
    expect(pass.targets[1].reason).toBeUndefined();

    const d = await ws.run('diff', ['--targets', file]);
    expect(d.code).toBe(1);
    expect(d.stdout).toMatch(/^- traffic +120 responses since 2026-12-02T11:00:00\.000Z: 100 accepted/m);
    expect(d.stdout).toMatch(/^\+ traffic +an accepted response after the last key rejection$/m);
    expect(d.stdout).toMatch(
      /^ {2}plan +none: KeyRejected: the provider rejected the desired key on 3 responses/m,
    );
    expect(d.stdout).toMatch(/2 target\(s\): 1 in sync, 1 drift, 1 key rejected/);
    const dj = await ws.run('diff', ['--targets', file, '--output', 'json']);
    expect(dj.code).toBe(1);
    expect(JSON.parse(dj.stdout).targets[0]).toMatchObject({ outcome: 'drift', reason: 'KeyRejected' });

    // Four passes over a rejected desired key: not one POST, the gateway never restarted.
    expect(posts()).toEqual([]);
    expect(list[0]!.fake.snapshot().pid).toBe(pid);

    list[0]!.fake.setTraffic(acceptedLater);
    const ok = await ws.run('reconcile', ['--once', '--targets', file]);
    expect(ok.code, ok.stdout).toBe(0);
    expect(ok.stdout).not.toContain('KeyRejected');
    const clean = await ws.run('diff', ['--targets', file]);
    expect(clean.code).toBe(0);
    expect(clean.stdout).toMatch(/^ {2}traffic +121 responses since /m);
    expect(posts()).toEqual([]);
  });

  it('an older controller without traffic is judged as before', async () => {
    const { file } = await twoTargets(KEY_B, undefined);
    const r = await ws.run('reconcile', ['--once', '--targets', file]);
    expect(r.code, r.stdout).toBe(0);
    const d = await ws.run('diff', ['--targets', file]);
    expect(d.code).toBe(0);
    expect(d.stdout).toMatch(/--- observed gw-0 [^\n]*\n(?:(?! {2}traffic)[^\n]*\n)*\n--- observed gw-1/);
  });

  it('a rejected old key is replaced: the desired key is delivered once and the target converges', async () => {
    const { list, file } = await twoTargets(KEY_A, { ...rejected, accepted: 0, lastAcceptedAt: null });
    const pid = list[0]!.fake.snapshot().pid;
    const d = await ws.run('diff', ['--targets', file]);
    expect(d.code).toBe(1);
    expect(d.stdout).toMatch(/^ {2}plan +deliver-key: /m);
    expect(d.stdout).not.toContain('KeyRejected');

    const r = await ws.run('reconcile', ['--once', '--targets', file, '--poll', '20ms']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(list[0]!.fake.patches).toEqual([KEY_B]);
    expect(list[0]!.fake.snapshot().pid).not.toBe(pid);
    expect(list[1]!.fake.patches).toEqual([]);
  });

  it('the real binary: reconcile --once exits 1 with KeyRejected, then 0 once accepted later', async () => {
    const { list, file } = await twoTargets(KEY_B, rejected);
    const run = async () => {
      const p = spawnTracked(node24(), [KEYROLL_BIN, 'reconcile', '--once', '--targets', file], {
        name: 'reconcile-key-rejected',
        env: { ...process.env, ...ws.env, KEYROLL_LOG_LEVEL: 'warn' },
      });
      let timer: NodeJS.Timeout | undefined;
      const exit = await Promise.race([
        p.exited,
        new Promise<null>((resolve) => {
          timer = setTimeout(() => resolve(null), 20_000);
        }),
      ]);
      clearTimeout(timer);
      if (!exit) {
        await p.stop('SIGKILL', 5_000);
        throw new Error(`keyroll reconcile did not exit within 20 s:\n${p.lines.join('\n')}`);
      }
      const out = p.lines.join('\n');
      ws.transcript += out;
      return { code: exit.code, out };
    };
    const bad = await run();
    expect(bad.code, bad.out).toBe(1);
    expect(bad.out).toMatch(/^gw-0: not-converged: KeyRejected: the provider rejected the desired key/m);
    list[0]!.fake.setTraffic(acceptedLater);
    const good = await run();
    expect(good.code, good.out).toBe(0);
    expect(posts()).toEqual([]);
  });
});
