import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { endWorkspaceTest, Workspace } from './support/cli-harness.ts';
import {
  type FakeController,
  type FakeControllerOptions,
  startFakeController,
  unreachableUrl,
} from './support/fake-controller.ts';

const KEY_A = 'test-key-A-rotation-0000000001';
const KEY_B = 'test-key-B-rotation-0000000002';

let ws: Workspace;
let fakes: FakeController[] = [];

beforeEach(() => {
  ws = new Workspace();
  fakes = [];
});

// Whatever a test did, no key or token may appear in anything the commands printed.
afterEach(() => endWorkspaceTest(ws, fakes, [KEY_A, KEY_B]));

async function fleet(n: number, opts: Partial<FakeControllerOptions> = {}) {
  const list = [];
  for (let i = 0; i < n; i++) {
    const token = `test-token-target-${i}-000000`;
    const f = await startFakeController({ token, key: KEY_A, restartMs: 50, ...opts });
    fakes.push(f);
    list.push({ name: `gw-${i}`, url: f.url, token, fake: f });
  }
  return list;
}

const posts = (f: FakeController) => f.requests.filter((r) => r.method !== 'GET').length;

describe('keyroll reconcile --once', () => {
  it('converges every target, then a second pass sends no POST and restarts nothing', async () => {
    const targets = await fleet(3);
    fakes[1]!.setFaults({});
    const file = ws.targets(targets, { rollout: { concurrency: 3, maxUnavailable: 3 } });
    ws.write('key', `${KEY_B}\n`);
    const before = targets.map((t) => t.fake.snapshot());

    const first = await ws.run('reconcile', ['--once', '--targets', file, '--poll', '50ms']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    expect(first.stdout).toMatch(/3\/3 converged \(3 patched this pass\)/);
    const after = targets.map((t) => t.fake.snapshot());
    for (const [i, t] of targets.entries()) {
      expect(posts(t.fake)).toBe(1);
      expect(t.fake.patches).toEqual([KEY_B]);
      expect(after[i]!.pid).not.toBe(before[i]!.pid);
      expect(after[i]!.ready).toBe(true);
      expect(first.stdout).toContain(`${before[i]!.pid} → ${after[i]!.pid}`);
    }

    const second = await ws.run('reconcile', ['--once', '--targets', file, '--json']);
    expect(second.code).toBe(0);
    for (const [i, t] of targets.entries()) {
      expect(posts(t.fake)).toBe(1);
      expect(t.fake.snapshot()).toEqual(after[i]);
    }
    const json = JSON.parse(second.stdout);
    expect(json.summary).toMatchObject({ total: 3, converged: 3, patched: 0 });
    expect(json.targets.every((t: { attempts: number }) => t.attempts === 0)).toBe(true);
  });

  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s ends a pass that waits on a silent controller at once, not at its deadline',
    async (sig) => {
      const [t] = await fleet(1);
      t!.fake.setFaults({ hang: 'GET' });
      ws.write('key', `${KEY_B}\n`);
      const run = ws.run('reconcile', ['--once', '--targets', ws.targets([t!]), '--deadline', '120s']);
      // Once the pass waits on the controller (its first GET hangs), the signal arrives.
      while (t!.fake.requests.length === 0) await new Promise((r) => setTimeout(r, 20));
      const signalledAt = Date.now();
      process.emit(sig, sig);
      const r = await run;
      expect(Date.now() - signalledAt).toBeLessThan(3_000);
      expect(r.code).not.toBe(0);
      expect(t!.fake.patches).toEqual([]);
    },
  );

  it('migrates a plaintext profile even when the key is already right', async () => {
    const [t] = await fleet(1, {
      key: KEY_B,
      profiles: [{ agentId: 'main', profileId: 'kilocode:default', store: 'json', form: 'plaintext' }],
    });
    ws.write('key', KEY_B);
    const r = await ws.run('reconcile', ['--once', '--targets', ws.targets([t!]), '--poll', '50ms']);
    expect(r.code, r.stdout).toBe(0);
    expect(r.stdout).toContain('migrate-profiles');
    expect(posts(t!.fake)).toBe(1);
  });

  it('keeps at most maxUnavailable gateways restarting at once', async () => {
    const targets = await fleet(4, { restartMs: 150 });
    ws.write('key', KEY_B);
    const file = ws.targets(targets, { rollout: { concurrency: 4, maxUnavailable: 1 } });
    const r = await ws.run('reconcile', ['--once', '--targets', file, '--poll', '20ms']);
    expect(r.code).toBe(0);
    const windows = fakes.flatMap((f) => f.restartWindows).sort((a, b) => a[0] - b[0]);
    expect(windows).toHaveLength(4);
    for (let i = 1; i < windows.length; i++)
      expect(windows[i]![0]).toBeGreaterThanOrEqual(windows[i - 1]![1]!);
  });

  it('delivers by file without a restart in file mode', async () => {
    const [t] = await fleet(1, {
      delivery: 'file',
      profiles: [{ agentId: 'main', profileId: 'kilocode:default', store: 'sqlite', form: 'keyRef-file' }],
    });
    ws.write('key', KEY_B);
    const pid = t!.fake.snapshot().pid;
    const r = await ws.run('reconcile', [
      '--once',
      '--targets',
      ws.targets([t!], { delivery: 'file' }),
      '--json',
    ]);
    expect(r.code, r.stdout).toBe(0);
    expect(t!.fake.snapshot().pid).toBe(pid);
    expect(JSON.parse(r.stdout).targets[0].after.key.fileHash).toMatch(/^hmac-sha256:/);
  });

  it('prints a \\r progress line on a TTY and plain lines otherwise', async () => {
    const targets = await fleet(2);
    ws.write('key', KEY_B);
    const file = ws.targets(targets, { rollout: { concurrency: 2, maxUnavailable: 2 } });
    const tty = await ws.run('reconcile', ['--once', '--targets', file, '--poll', '20ms'], true);
    expect(tty.stderr).toMatch(/\rreconcile 2\/2 done: 2 converged, 0 not/);
    const plain = await ws.run('reconcile', ['--once', '--targets', file]);
    expect(plain.stderr).not.toContain('\r');
    expect(plain.stderr).toMatch(/^gw-0: converged pid \d+ envHash [0-9a-f]{12} \[none\]/m);
  });
});

describe('keyroll diff', () => {
  it('makes only GETs, and its exit code follows drift', async () => {
    const targets = await fleet(2);
    fakes[0]!.setFaults({});
    ws.write('key', KEY_B);
    const file = ws.targets(targets);
    const drift = await ws.run('diff', ['--targets', file]);
    expect(drift.code).toBe(1);
    expect(drift.stdout).toMatch(/^--- observed gw-0 http:\/\/127\.0\.0\.1:\d+$/m);
    expect(drift.stdout).toMatch(
      /^\+\+\+ desired {2}gw-0 \(key version hmac:[0-9a-f]{16}, delivery restart\)$/m,
    );
    expect(drift.stdout).toMatch(/^- envHash +[0-9a-f]{12} {2}version v-initial$/m);
    expect(drift.stdout).toMatch(/^ {2}plan +deliver-key: /m);
    for (const f of fakes) {
      expect(f.requests.length).toBeGreaterThan(0);
      expect(f.requests.every((r) => r.method === 'GET')).toBe(true);
    }

    const r = await ws.run('reconcile', ['--once', '--targets', file, '--poll', '20ms']);
    expect(r.code).toBe(0);
    const clean = await ws.run('diff', ['--targets', file, '--output', 'json']);
    expect(clean.code).toBe(0);
    expect(JSON.parse(clean.stdout).summary).toMatchObject({ total: 2, converged: 2, drift: 0 });
  });

  it('counts an unreachable target as drift (exit 1)', async () => {
    const [t] = await fleet(1);
    ws.write('key', KEY_A);
    const file = ws.targets([
      t!,
      { name: 'gone', url: await unreachableUrl(), token: 'test-token-gone-0000' },
    ]);
    const d = await ws.run('diff', ['--targets', file, '--retries', '1']);
    expect(d.code).toBe(1);
    expect(d.stdout).toMatch(/^! error +cannot observe: GET _kilo\/state failed: ECONNREFUSED/m);
  });
});

describe('usage and configuration errors exit 2', () => {
  it.each([
    [['reconcile', '--targets', 'x.yaml'], /--once is required/],
    [['reconcile', '--once'], /--targets FILE is required/],
    [['reconcile', '--once', '--targets', 'missing.yaml'], /missing\.yaml: cannot read \(ENOENT\)/],
    [['diff', '--targets', 'x.yaml', '--output', 'yaml'], /--output: expected text or json/],
    [['reconcile', '--once', '--targets', 'x.yaml', '-o', 'yaml'], /--output: expected text or json/],
    [['diff', '--targets', 'x.yaml', '--json', '-o', 'text'], /give --json or --output text, not both/],
    [
      ['reconcile', '--once', '--targets', 'x.yaml', '--context', 'prod'],
      /--context and --kubeconfig need --kube/,
    ],
    [['reconcile', '--once', '--targets', 'x.yaml', '--deadline', 'soon'], /--deadline: expected a duration/],
  ])('%j', async (argv, message) => {
    const [cmd, ...rest] = argv as ['reconcile' | 'diff', ...string[]];
    const r = await ws.run(
      cmd,
      rest.map((a) => (a.endsWith('.yaml') ? ws.path(a) : a)),
    );
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it('names the bad field of a targets file, and refuses inline tokens', async () => {
    const file = ws.write(
      'bad.yaml',
      'targets:\n  - name: a\n    url: not-a-url\n    token: {value: test-token-inline-0000}\n',
    );
    const r = await ws.run('reconcile', ['--once', '--targets', file, '--source-file', ws.path('key')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/targets\[0\]\.url: /);
    expect(r.stderr).toMatch(/targets\[0\]\.token\.value: inline tokens are not allowed/);
    expect(r.stderr).not.toContain('test-token-inline-0000');
  });

  it('fails with exit 2 when the key source is unreadable, and contacts no target', async () => {
    const [t] = await fleet(1);
    const r = await ws.run('reconcile', ['--once', '--targets', ws.targets([t!])]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/key source file .*key: cannot read \(ENOENT\)/);
    expect(t!.fake.requests).toHaveLength(0);
  });

  it('--context naming a context the kubeconfig lacks is a usage error, before any request', async () => {
    const kubeconfig = ws.write(
      'kubeconfig.yaml',
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]',
        'users: [{name: u, user: {token: test-token-kubeconfig-000000}}]',
        'contexts: [{name: here, context: {cluster: c, user: u, namespace: gateways}}]',
        'current-context: here',
        '',
      ].join('\n'),
    );
    for (const cmd of ['reconcile', 'diff'] as const) {
      const once = cmd === 'reconcile' ? ['--once'] : [];
      const r = await ws.run(cmd, [...once, '--kube', '--kubeconfig', kubeconfig, '--context', 'nope']);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/--context: no context 'nope' in the kubeconfig/);
    }
  });

  it('-o json and --json print the same JSON report for reconcile and diff', async () => {
    const [t] = await fleet(1, { key: KEY_B });
    ws.write('key', `${KEY_B}\n`);
    const file = ws.targets([t!]);
    for (const [cmd, flags] of [
      ['reconcile', ['--once', '-o', 'json']],
      ['reconcile', ['--once', '--json']],
      ['diff', ['-o', 'json']],
      ['diff', ['--json']],
    ] as const) {
      const r = await ws.run(cmd, ['--targets', file, ...flags]);
      expect(r.code, `${cmd} ${flags.join(' ')}: ${r.stderr}`).toBe(0);
      expect(JSON.parse(r.stdout).summary).toMatchObject({ total: 1, converged: 1 });
    }
  });

  it('prints help for both commands, ending with the common flags (both run on the shell)', async () => {
    const a = await ws.run('reconcile', ['--help']);
    const b = await ws.run('diff', ['-h']);
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    expect(a.stdout).toMatch(/^Usage: keyroll reconcile --once/);
    expect(b.stdout).toMatch(/^Usage: keyroll diff/);
    for (const help of [a.stdout, b.stdout]) {
      expect(help).toMatch(/\nCommon flags:\n(.|\n)*--log-level LEVEL(.|\n)*-h, --help/);
      // Declared once: the command's own -o and --namespace lines are not repeated.
      expect(help.match(/-o, --output/g)).toHaveLength(1);
      expect(help.match(/-n, --namespace/g)).toHaveLength(1);
    }
  });

  it('--log-level is taken as on every command (log lines go to stderr, stdout stays the report)', async () => {
    const [t] = await fleet(1, { key: KEY_B });
    ws.write('key', `${KEY_B}\n`);
    const file = ws.targets([t!]);
    const r = await ws.run('diff', ['--targets', file, '--log-level', 'debug', '-o', 'json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).summary).toMatchObject({ total: 1, converged: 1 });
  });
});
