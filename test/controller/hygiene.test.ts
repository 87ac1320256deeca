// Small hardening items of issue 13, each shown against what used to happen:
// - `--state-dir` and OPENCLAW_STATE_DIR naming different dirs is refused at start (the controller
//   migrated one, the gateway read the other);
// - envHash covers the key variable only, exactly what the reconciler desires (with
//   `--patchable A,B` and B set, a target never converged);
// - the HTTP server keeps a logging `error` listener for its whole life (errors after listen
//   were swallowed without a trace).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/usage.ts';
import { parseControllerConfig } from '../../src/controller/config.ts';
import { listen } from '../../src/controller/server.ts';
import { desired } from '../../src/reconcile/desired.ts';
import { needsPatch, plan } from '../../src/reconcile/plan.ts';
import { observedOrThrow } from '../support/observed.ts';
import { node24, REPO_ROOT } from '../support/sandbox.ts';
import { captureLogger, startTestController, suiteCapture, TOKEN, tempDir, waitFor } from './helpers.ts';

const KEY_A = 'test-key-A-hygiene-aaaaaaaa';
const KEY_B = 'test-key-B-hygiene-bbbbbbbb';
const { cleanups } = suiteCapture([]);

describe('--state-dir and OPENCLAW_STATE_DIR', () => {
  const env = { OPENCLAW_GATEWAY_TOKEN: TOKEN, HOME: '/home/x' };

  it('disagreeing: refused with a clear error', () => {
    const run = () =>
      parseControllerConfig(['--state-dir', '/data/a'], { ...env, OPENCLAW_STATE_DIR: '/data/b' });
    expect(run).toThrow(UsageError);
    expect(run).toThrow(/--state-dir and OPENCLAW_STATE_DIR name different directories/);
  });

  it('the same dir spelled differently, or only one of them: accepted', () => {
    for (const [argv, stateDirEnv, want] of [
      [['--state-dir', '/data/a/'], '/data/x/../a', '/data/a/'],
      [['--state-dir', '/data/a'], undefined, '/data/a'],
      [[], '/data/b', '/data/b'],
    ] as const) {
      const e = stateDirEnv === undefined ? env : { ...env, OPENCLAW_STATE_DIR: stateDirEnv };
      expect(parseControllerConfig([...argv], e).stateDir).toBe(want);
    }
  });

  it('the controller binary exits 2 before doing anything, naming both', () => {
    const { dir, cleanup } = tempDir('keyroll-statedir-');
    cleanups.push(cleanup);
    const r = spawnSync(
      node24(),
      [join(REPO_ROOT, 'bin', 'keyroll.mjs'), 'controller', '--state-dir', join(dir, 'a'), '--port', '0'],
      {
        env: {
          PATH: process.env.PATH,
          HOME: dir,
          OPENCLAW_GATEWAY_TOKEN: TOKEN,
          OPENCLAW_STATE_DIR: join(dir, 'b'),
        },
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--state-dir and OPENCLAW_STATE_DIR name different directories/);
    expect(r.stderr + r.stdout).not.toContain(TOKEN);
    expect(existsSync(join(dir, 'a'))).toBe(false);
    expect(existsSync(join(dir, 'b'))).toBe(false);
  });
});

describe('envHash covers the key variable only', () => {
  it('--patchable KILOCODE_API_KEY,EXTRA with EXTRA set: the reconciler’s desired fingerprint matches, before and after EXTRA changes', async () => {
    const t = await startTestController({
      prefix: 'keyroll-envhash-',
      gateway: 'fixture',
      env: { OPENCLAW_GATEWAY_TOKEN: TOKEN, KILOCODE_API_KEY: KEY_A, KILO_EXTRA_SETTING: 'extra-value-1' },
      flags: ['--patchable', 'KILOCODE_API_KEY,KILO_EXTRA_SETTING'],
    });
    cleanups.push(() => t.stop());
    const { ctl } = t;
    await ctl.bootstrapped;
    const spec = { envVar: 'KILOCODE_API_KEY', delivery: 'restart' as const };
    const running = async (pred: (pid: number) => boolean) =>
      waitFor(
        async () => {
          const s = observedOrThrow(await ctl.observe());
          return s.gateway.state === 'running' && s.gateway.ready && pred(s.gateway.pid ?? 0) ? s : null;
        },
        15_000,
        'gateway running',
      );
    const first = await running(() => true);
    const want = desired(spec, { key: KEY_A, version: 'v1' }, TOKEN);
    expect(first.key.envHash).toBe(want.envHash);
    expect(needsPatch(plan(want, first))).toBe(false);

    // The other variable changes (and restarts the gateway): still the same key, still converged.
    await ctl.delivery.deliver({ KILO_EXTRA_SETTING: 'extra-value-2' });
    const second = await running((pid) => pid !== first.gateway.pid);
    expect(ctl.supervisor.childEnv()?.KILO_EXTRA_SETTING).toBe('extra-value-2');
    expect(second.key.envHash).toBe(want.envHash);

    // The key changes: the fingerprint follows it.
    await ctl.delivery.deliver({ KILOCODE_API_KEY: KEY_B });
    const third = await running((pid) => pid !== second.gateway.pid);
    expect(third.key.envHash).toBe(desired(spec, { key: KEY_B, version: 'v2' }, TOKEN).envHash);
  });
});

describe('the HTTP server error listener', () => {
  it('stays for the server’s life and logs every error (code, port), without crashing', async () => {
    const { log, lines } = captureLogger();
    const srv = await listen(
      async (_req, res) => {
        res.end('ok');
      },
      { port: 0, host: '127.0.0.1', log },
    );
    cleanups.push(() => srv.close());
    // What accept() failing with EMFILE looks like to a server.
    for (const code of ['EMFILE', 'ENFILE']) {
      srv.server.emit('error', Object.assign(new Error(`accept ${code}`), { code }));
    }
    const logged = lines.filter((l) => l.includes('HTTP server error')).map((l) => JSON.parse(l));
    expect(logged.map((l) => l.err.code)).toEqual(['EMFILE', 'ENFILE']);
    expect(logged[0]).toMatchObject({ level: 'error', port: 0, host: '127.0.0.1' });
    expect(srv.server.listenerCount('error')).toBeGreaterThanOrEqual(1);
    // Still serving.
    const res = await fetch(`http://127.0.0.1:${srv.port}/`, { signal: AbortSignal.timeout(5_000) });
    expect(await res.text()).toBe('ok');
  });

  it('a failed listen (port taken) still rejects, and is not logged as a server error', async () => {
    const { log, lines } = captureLogger();
    const first = await listen(async (_req, res) => void res.end(), { port: 0, host: '127.0.0.1', log });
    cleanups.push(() => first.close());
    await expect(
      listen(async (_req, res) => void res.end(), { port: first.port, host: '127.0.0.1', log }),
    ).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(lines.filter((l) => l.includes('HTTP server error'))).toEqual([]);
  });
});
