// The CLI shell every command runs on: usage errors on stderr with exit 2 and a hint, -o json that
// parses, progress only on a terminal (cut to its width), and SIGTERM/SIGINT stopping a long
// command cleanly, a second signal included.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { commandContext, fitToWidth } from '../../src/cli/shell.ts';
import type { Io } from '../../src/cli/usage.ts';
import { createProgress } from '../../src/reconcile/progress.ts';

const BIN = fileURLToPath(new URL('../../bin/keyroll.mjs', import.meta.url));

function capture(over: Partial<Io> = {}) {
  const out = { stdout: '', stderr: '' };
  const io: Io = {
    stdout: (t) => {
      out.stdout += t;
    },
    stderr: (t) => {
      out.stderr += t;
    },
    env: {},
    isTty: false,
    ...over,
  };
  return { io, out };
}

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-shell-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('usage errors', () => {
  it.each([
    [
      ['fly', '-a', 'app', '--interval', '1x'],
      /^keyroll fly: --interval: expected a duration .*unknown unit 'x'/,
    ],
    [['profiles', 'scan', '--nope'], /^keyroll profiles: Unknown option '--nope'/],
    [['profiles', 'scan', '--state-dir', '/x', '-o', 'yaml'], /--output: expected text or json, got 'yaml'/],
    [['operator', '--resync', '90'], /^keyroll operator: --resync: expected a duration .*no unit/],
    [['controller', '--stop-timeout=-5s'], /--stop-timeout: expected a duration .*cannot be negative/],
  ])('%j → stderr names the problem, one hint line, exit 2, stdout empty', async (argv, message) => {
    const { io, out } = capture({ env: { FLY_API_TOKEN: 'x'.repeat(20) } });
    expect(await main(argv, io)).toBe(2);
    expect(out.stdout).toBe('');
    expect(out.stderr).toMatch(message);
    const lines = out.stderr.trimEnd().split('\n');
    expect(lines.at(-1)).toBe(`Run \`keyroll ${argv[0]} --help\` for usage.`);
  });

  it('operator --context must name a context of the kubeconfig', async () => {
    const dir = tempDir();
    const kubeconfig = join(dir, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      [
        'apiVersion: v1',
        'kind: Config',
        'clusters: [{name: c1, cluster: {server: "http://127.0.0.1:9"}}]',
        'users: [{name: u1, user: {}}]',
        'contexts: [{name: ctx-a, context: {cluster: c1, user: u1, namespace: ns-a}}]',
        'current-context: ctx-a',
        '',
      ].join('\n'),
    );
    const { io, out } = capture();
    expect(await main(['operator', '--kubeconfig', kubeconfig, '--context', 'ctx-b'], io)).toBe(2);
    expect(out.stderr).toMatch(/^keyroll operator: --context: no context 'ctx-b' in the kubeconfig\n/);
    expect(out.stdout).toBe('');
  });

  it('an unknown command and no command at all go to stderr with exit 2', async () => {
    const a = capture();
    expect(await main(['nope'], a.io)).toBe(2);
    expect(a.out.stdout).toBe('');
    expect(a.out.stderr).toBe("keyroll: unknown command 'nope'\nRun `keyroll --help` for the commands.\n");
    const b = capture();
    expect(await main([], b.io)).toBe(2);
    expect(b.out.stdout).toBe('');
    expect(b.out.stderr).toMatch(/^keyroll — /);
  });

  it('--help lists the common flags of the command', async () => {
    const { io, out } = capture();
    expect(await main(['operator', '--help'], io)).toBe(0);
    for (const f of ['-o, --output text|json', '-n, --namespace NS', '--context NAME', '--kubeconfig PATH']) {
      expect(out.stdout).toContain(f);
    }
    const fly = capture();
    expect(await main(['fly', '--help'], fly.io)).toBe(0);
    expect(fly.out.stdout).toContain('-a, --app APP');
    expect(fly.out.stdout).not.toContain('--namespace');
  });
});

describe('-o json', () => {
  it.each([[['-o', 'json']], [['--output', 'json']], [['--json']]])(
    'profiles scan %j prints one JSON document',
    async (flags) => {
      const dir = tempDir();
      const { io, out } = capture();
      expect(await main(['profiles', 'scan', '--state-dir', dir, ...flags], io)).toBe(0);
      const report = JSON.parse(out.stdout) as { command: string; ok: boolean; stores: unknown[] };
      expect(report).toMatchObject({ command: 'scan', ok: true, stores: [] });
    },
  );

  it('text stays the default', async () => {
    const dir = tempDir();
    const { io, out } = capture();
    expect(await main(['profiles', 'scan', '--state-dir', dir], io)).toBe(0);
    expect(out.stdout).toMatch(/^No auth-profile stores found\./);
  });

  it('the deprecated --busy-timeout-ms still works, with a warning on stderr naming --busy-timeout', async () => {
    const dir = tempDir();
    const { io, out } = capture();
    expect(
      await main(['profiles', 'scan', '--state-dir', dir, '--busy-timeout-ms', '500', '-o', 'json'], io),
    ).toBe(0);
    expect(JSON.parse(out.stdout)).toMatchObject({ command: 'scan' });
    expect(out.stderr).toBe(
      'keyroll profiles scan: --busy-timeout-ms is deprecated and goes in the next release; use --busy-timeout 500ms\n',
    );
  });
});

describe('progress', () => {
  const spec = { name: 'thing', usage: 'Usage: keyroll thing\n', progress: createProgress };
  it('is absent when stderr is not a terminal', () => {
    const { io, out } = capture({ isTty: false, columns: 80 });
    const ctx = commandContext([], io, spec);
    try {
      const p = ctx.progress(3);
      p.phase('gw-0', 'observing');
      p.phase('gw-1', 'delivering');
      p.finish();
    } finally {
      ctx.dispose();
    }
    expect(out).toEqual({ stdout: '', stderr: '' });
  });

  it('on a terminal is one redrawn line on stderr, cut to its width', () => {
    const { io, out } = capture({ isTty: true, columns: 40 });
    const ctx = commandContext([], io, spec);
    try {
      const p = ctx.progress(3);
      p.phase('gw-0', 'observing');
      p.phase('gw-1', 'delivering');
      p.finish();
    } finally {
      ctx.dispose();
    }
    expect(out.stdout).toBe('');
    const draws = out.stderr.split('\r').filter(Boolean);
    expect(draws.length).toBeGreaterThanOrEqual(2);
    for (const d of draws) expect(d.replace(/\n$/, '').length).toBeLessThanOrEqual(39);
    expect(draws[0]).toMatch(/^reconcile 0\/3 done/);
    expect(out.stderr.endsWith('\n')).toBe(true);
  });

  it('fitToWidth leaves short lines and a missing width alone', () => {
    expect(fitToWidth('\rabc', 10)).toBe('\rabc');
    expect(fitToWidth('\rabcdefghijkl', 10)).toBe('\rabcdefgh…');
    expect(fitToWidth('\r'.padEnd(200, 'x'), undefined)).toHaveLength(200);
  });
});

describe('signals', () => {
  it('the first SIGTERM aborts the signal, a second one does not cut a slow stop short', async () => {
    const { io } = capture();
    const before = process.listenerCount('SIGTERM');
    const ctx = commandContext([], io, { name: 'thing', usage: 'Usage: keyroll thing\n' });
    expect(process.listenerCount('SIGTERM')).toBe(before + 1);
    let stops = 0;
    const done = ctx.untilSignalled(async () => {
      stops++;
      await new Promise((r) => setTimeout(r, 150));
    });
    expect(ctx.signal.aborted).toBe(false);
    process.emit('SIGTERM', 'SIGTERM');
    expect(ctx.signal.aborted).toBe(true);
    expect(String(ctx.signal.reason)).toMatch(/interrupted by SIGTERM/);
    process.emit('SIGINT', 'SIGINT');
    expect(await done).toBe(0);
    expect(stops).toBe(1);
    ctx.dispose();
    expect(process.listenerCount('SIGTERM')).toBe(before);
  });

  let flyApi: Server | undefined;
  afterEach(async () => {
    await new Promise<void>((r) => (flyApi ? flyApi.close(() => r()) : r()));
    flyApi = undefined;
  });

  it.each(['SIGTERM', 'SIGINT'] as const)(
    '%s stops `keyroll fly` (the loop, waiting an hour for its next pass) cleanly with exit 0',
    async (sig) => {
      const dir = tempDir();
      const keyFile = join(dir, 'key');
      writeFileSync(keyFile, 'sk-test-shell-key-0123456789\n');
      let lists = 0;
      // An app with no machines: the machine list, and the app secrets the pass lists and sets.
      flyApi = createServer((req, res) => {
        req.resume();
        const json = (body: unknown) =>
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        if (req.method === 'GET' && req.url === '/v1/apps/shell-app/machines') {
          lists++;
          json([]);
        } else if (req.method === 'GET' && req.url === '/v1/apps/shell-app/secrets') json({ secrets: [] });
        else if (req.method === 'POST' && req.url?.startsWith('/v1/apps/shell-app/secrets/'))
          json({ name: req.url.split('/').at(-1), digest: 'd1', version: 1 });
        else res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"not found"}');
      });
      await new Promise<void>((r) => flyApi!.listen(0, '127.0.0.1', r));
      const port = (flyApi.address() as AddressInfo).port;
      const child: ChildProcess = spawn(
        process.execPath,
        [BIN, 'fly', '--source-file', keyFile, '--interval', '1h', '--jitter', '0s'],
        {
          env: {
            PATH: process.env.PATH,
            FLY_APP: 'shell-app',
            FLY_API_TOKEN: 'fly-token-shell-0123456789',
            FLY_API_URL: `http://127.0.0.1:${port}`,
            OPENCLAW_GATEWAY_TOKEN: 'gateway-token-shell-0123456789',
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      cleanups.push(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      });
      let stdout = '';
      let stderr = '';
      child.stdout!.on('data', (d) => {
        stdout += d;
      });
      child.stderr!.on('data', (d) => {
        stderr += d;
      });
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
        child.on('exit', (code, signal) => r({ code, signal })),
      );
      const deadline = Date.now() + 30_000;
      while (!/converged/.test(stdout) && Date.now() < deadline && child.exitCode === null) {
        await new Promise((r) => setTimeout(r, 50));
      }
      expect(stdout, stderr).toMatch(/converged/);
      expect(lists).toBe(1);
      const t0 = Date.now();
      child.kill(sig);
      child.kill(sig);
      const { code, signal } = await exited;
      expect({ code, signal }, stderr).toEqual({ code: 0, signal: null });
      expect(Date.now() - t0).toBeLessThan(5_000);
      for (const secret of ['fly-token-shell', 'gateway-token-shell', 'sk-test-shell-key']) {
        expect(stdout + stderr).not.toContain(secret);
      }
    },
    60_000,
  );
});
