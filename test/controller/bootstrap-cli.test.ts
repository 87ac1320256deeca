// Config parsing, bootstrap sequencing against a fake `openclaw`, and the CLI process lifecycle.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/usage.ts';
import { parseControllerConfig, splitCommand } from '../../src/controller/config.ts';
import { startController } from '../../src/controller/controller.ts';
import { EnvStore } from '../../src/controller/env-store.ts';
import { noopProfilePort } from '../../src/controller/profile-port.ts';
import { controllerFlags } from '../support/controller-process.ts';
import { freePort } from '../support/http.ts';
import {
  captureLogger,
  FIXTURE,
  pidAlive,
  readStarts,
  suiteCapture,
  TOKEN,
  tempDir,
  waitFor,
} from './helpers.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FAKE_OPENCLAW = fileURLToPath(new URL('./fixtures/fake-openclaw.mjs', import.meta.url));
const { cleanups } = suiteCapture([]);

describe('config', () => {
  const env = { OPENCLAW_GATEWAY_TOKEN: TOKEN, HOME: '/home/x' };
  it('has the documented defaults', () => {
    expect(parseControllerConfig([], env)).toMatchObject({
      stateDir: '/home/x/.openclaw',
      port: 18789,
      bind: '0.0.0.0',
      gatewayPort: 3001,
      gatewayCmd: null,
      delivery: 'restart',
      provider: 'kilocode',
      patchable: ['KILOCODE_API_KEY'],
      stopTimeoutMs: 10_000,
    });
  });

  it.each([
    [['--port', 'abc'], /--port must be a port number/],
    [['--gateway-port', '70000'], /--gateway-port must be a port number/],
    [['--delivery', 'sigusr1'], /--delivery must be restart or file/],
    [['--delivery', 'file'], /--key-file is required with --delivery file/],
    [['--key-file', 'relative.key'], /--key-file must be an absolute path/],
    [['--patchable', 'lower'], /--patchable must be a comma-separated list of VAR names/],
    [['--provider-base-url', 'not a url'], /--provider-base-url must be an http\(s\) URL/],
    [['--stop-timeout', '5'], /--stop-timeout: expected a duration .*\(no unit: write 5s for seconds\)/],
    [['--stop-timeout', '50ms'], /--stop-timeout: expected at least 100ms/],
    [['--stop-timeout-ms', '5'], /--stop-timeout: expected at least 100ms/],
    [['--stop-timeout-ms', '1s'], /--stop-timeout-ms: expected a whole number of milliseconds/],
    [
      ['--stop-timeout', '2s', '--stop-timeout-ms', '2000'],
      /give --stop-timeout or --stop-timeout-ms, not both/,
    ],
    [['--gateway-cmd', "node 'unterminated"], /--gateway-cmd has an unterminated quote/],
    [['--nope'], /Unknown option '--nope'/],
  ])('%j → a UsageError naming the field', (argv, message) => {
    expect(() => parseControllerConfig(argv, env)).toThrow(UsageError);
    expect(() => parseControllerConfig(argv, env)).toThrow(message);
  });

  it('takes Go durations, and the old millisecond flags with a warning naming the new flag', () => {
    const warnings: string[] = [];
    const warn = (t: string) => warnings.push(t);
    const c = parseControllerConfig(
      ['--stop-timeout', '1m30s', '--ready-timeout', '250s'],
      env,
      undefined,
      warn,
    );
    expect([c.stopTimeoutMs, c.readyTimeoutMs]).toEqual([90_000, 250_000]);
    expect(warnings).toEqual([]);
    const old = parseControllerConfig(
      ['--stop-timeout-ms', '2500', '--ready-timeout-ms', '60000'],
      env,
      undefined,
      warn,
    );
    expect([old.stopTimeoutMs, old.readyTimeoutMs]).toEqual([2500, 60_000]);
    expect(warnings).toEqual([
      'keyroll controller: --stop-timeout-ms is deprecated and goes in the next release; use --stop-timeout 2500ms\n',
      'keyroll controller: --ready-timeout-ms is deprecated and goes in the next release; use --ready-timeout 60000ms\n',
    ]);
  });

  it('requires the token and never echoes it', () => {
    expect(() => parseControllerConfig([], {})).toThrow(/OPENCLAW_GATEWAY_TOKEN must be set/);
    try {
      parseControllerConfig([], { OPENCLAW_GATEWAY_TOKEN: 'short-secret' });
      expect.unreachable();
    } catch (err) {
      expect(String(err)).not.toContain('short-secret');
    }
  });

  it('splits --gateway-cmd into words without a shell', () => {
    expect(splitCommand(`node "/a b/gw.ts" --flag 'x y' z\\ w $HOME`)).toEqual([
      'node',
      '/a b/gw.ts',
      '--flag',
      'x y',
      'z w',
      '$HOME',
    ]);
  });
});

async function bootWithFakeOpenclaw(opts: { existing?: boolean; fail?: string; failTimes?: number }) {
  const { dir, cleanup } = tempDir('keyroll-boot-');
  const stateDir = join(dir, 'state');
  const logFile = join(dir, 'openclaw-calls.jsonl');
  if (opts.existing) {
    mkdirSync(stateDir, { recursive: true });
    writeFileSync(join(stateDir, 'openclaw.json'), '{}');
  }
  const gatewayPort = await freePort();
  const env: Record<string, string> = {
    PATH: '/usr/bin:/bin',
    HOME: dir,
    OPENCLAW_GATEWAY_TOKEN: TOKEN,
    KILOCODE_API_KEY: 'test-key-boot-0000000',
    FAKE_OPENCLAW_LOG: logFile,
    ...(opts.fail ? { FAKE_OPENCLAW_FAIL: opts.fail } : {}),
    ...(opts.failTimes ? { FAKE_OPENCLAW_FAIL_TIMES: String(opts.failTimes) } : {}),
  };
  const config = parseControllerConfig(
    [
      '--state-dir',
      stateDir,
      '--port',
      '0',
      '--bind',
      '127.0.0.1',
      '--gateway-port',
      String(gatewayPort),
      '--openclaw-bin',
      FAKE_OPENCLAW,
      '--provider-base-url',
      'http://127.0.0.1:9/api/gateway/',
    ],
    env,
  );
  const { log, lines, secrets } = captureLogger();
  const ctl = await startController({
    config,
    env: new EnvStore(env),
    log,
    secrets,
    profiles: noopProfilePort(),
    supervisor: { probeIntervalMs: 25 },
  });
  cleanups.push(async () => {
    await ctl.shutdown();
    cleanup();
  });
  await ctl.bootstrapped;
  const calls = () =>
    readFileSync(logFile, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(
        (l) => JSON.parse(l) as { args: string[]; noRespawn: string; pathHead: string; gatewayPort: string },
      );
  return { ctl, calls, stateDir, lines };
}

describe('bootstrap (fake openclaw)', () => {
  it('fresh state: onboard in ref mode, configure, then gateway run with the controller env', async () => {
    const { ctl, calls, stateDir } = await bootWithFakeOpenclaw({});
    expect(ctl.lifecycle()).toEqual({ state: 'ready' });
    await waitFor(() => ctl.supervisor.getState() === 'running', 10_000, 'gateway running');
    const c = calls();
    expect(c.map((x) => x.args[0])).toEqual(['onboard', 'gateway']);
    expect(c[0]!.args).toEqual(expect.arrayContaining(['--non-interactive', '--secret-input-mode', 'ref']));
    expect(c[0]!.args.join(' ')).toContain('--gateway-token-ref-env OPENCLAW_GATEWAY_TOKEN');
    expect(c[1]!.args.slice(0, 5)).toEqual(['gateway', 'run', '--port', c[1]!.gatewayPort, '--bind']);
    for (const call of c) {
      expect(call.noRespawn).toBe('1');
      expect(call.pathHead).toBe(dirname(process.execPath));
    }
    const cfg = JSON.parse(readFileSync(join(stateDir, 'openclaw.json'), 'utf8'));
    expect(cfg.models.providers.kilocode.baseUrl).toBe('http://127.0.0.1:9/api/gateway/');
    expect(cfg.update.checkOnStart).toBe(false);
    expect(cfg.logging.file).toBe(join(stateDir, 'logs', 'openclaw.log'));
    expect(cfg.gateway.mode).toBe('local'); // kept
  });

  it('existing state: doctor --fix --non-interactive instead of onboard', async () => {
    const { ctl, calls } = await bootWithFakeOpenclaw({ existing: true });
    expect(ctl.lifecycle()).toEqual({ state: 'ready' });
    await waitFor(() => ctl.supervisor.getState() === 'running', 10_000, 'gateway running');
    expect(calls().map((x) => x.args)).toEqual([
      ['doctor', '--fix', '--non-interactive'],
      expect.arrayContaining(['gateway', 'run']),
    ]);
  });

  it('a doctor that fails twice (2026.9.6 on a saturated node) runs again and the gateway starts; a third failure leaves the controller degraded', async () => {
    const twice = await bootWithFakeOpenclaw({ existing: true, fail: 'doctor', failTimes: 2 });
    expect(twice.ctl.lifecycle()).toEqual({ state: 'ready' });
    await waitFor(() => twice.ctl.supervisor.getState() === 'running', 10_000, 'gateway running');
    expect(twice.calls().map((x) => x.args[0])).toEqual(['doctor', 'doctor', 'doctor', 'gateway']);
    expect(twice.lines.join('')).toContain('OpenClaw command failed; running it again');
    const always = await bootWithFakeOpenclaw({ existing: true, fail: 'doctor' });
    expect(always.ctl.lifecycle()).toEqual({ state: 'degraded', stage: 'doctor' });
    expect(always.calls().map((x) => x.args[0])).toEqual(['doctor', 'doctor', 'doctor']);
    expect(always.ctl.supervisor.getState()).toBe('stopped');
  });

  it('a failing onboard leaves the controller degraded with a generic label and no gateway', async () => {
    const { ctl, calls, lines } = await bootWithFakeOpenclaw({ fail: 'onboard' });
    expect(ctl.lifecycle()).toEqual({ state: 'degraded', stage: 'onboard' });
    expect(calls().map((x) => x.args[0])).toEqual(['onboard']);
    expect(ctl.supervisor.getState()).toBe('stopped');
    expect(lines.join('')).toContain('fake onboard failed'); // details are in the logs
  });
});

describe('keyroll controller (CLI process)', () => {
  it('--help prints the usage and exits 0', async () => {
    const r = await runCli(['controller', '--help'], {});
    expect(r.code).toBe(0);
    expect(r.out).toContain('--gateway-cmd');
  });

  it('a bad flag exits 2 naming the field', async () => {
    const r = await runCli(['controller', '--delivery', 'x'], { OPENCLAW_GATEWAY_TOKEN: TOKEN });
    expect(r.code).toBe(2);
    expect(r.out).toContain('--delivery must be restart or file');
  });

  it('SIGTERM stops the gateway and its children, closes the server and exits 0', async () => {
    const { dir, cleanup } = tempDir('keyroll-cli-');
    cleanups.push(cleanup);
    const logFile = join(dir, 'starts.jsonl');
    const port = await freePort();
    const gatewayPort = await freePort();
    const proc = spawn(
      process.execPath,
      [
        join(ROOT, 'bin', 'keyroll.mjs'),
        'controller',
        ...controllerFlags({
          stateDir: join(dir, 'state'),
          port,
          gatewayPort,
          gatewayCmd: `'${process.execPath}' '${FIXTURE}'`,
        }),
      ],
      {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: dir,
          OPENCLAW_GATEWAY_TOKEN: TOKEN,
          KILOCODE_API_KEY: 'test-key-cli-0000000',
          FIX_LOG: logFile,
          FIX_GRANDCHILD: '1',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    proc.stdout.on('data', (d) => {
      out += String(d);
    });
    proc.stderr.on('data', (d) => {
      out += String(d);
    });
    const exited = new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
    cleanups.push(() => {
      if (proc.exitCode === null) proc.kill('SIGKILL');
      for (const s of readStarts(logFile)) {
        for (const pid of [s.pid, s.grandchild]) if (pid && pidAlive(pid)) process.kill(pid, 'SIGKILL');
      }
    });
    const start = await waitFor(() => readStarts(logFile)[0], 20_000, 'gateway start');
    await waitFor(
      async () => {
        const r = await fetch(`http://127.0.0.1:${port}/_kilo/gateway/status`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        }).catch(() => null);
        return r && ((await r.json()) as { state: string }).state === 'running';
      },
      20_000,
      'gateway running',
    );
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(pidAlive(start.pid)).toBe(false);
    await waitFor(() => !pidAlive(start.grandchild!), 3_000, 'grandchild gone');
    await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
    expect(out).not.toContain(TOKEN);
    expect(out).not.toContain('test-key-cli-0000000');
    expect(existsSync(logFile)).toBe(true);
  });
});

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [join(ROOT, 'bin', 'keyroll.mjs'), ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent', ...env },
    });
    let out = '';
    p.stdout.on('data', (d) => {
      out += String(d);
    });
    p.stderr.on('data', (d) => {
      out += String(d);
    });
    const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}
