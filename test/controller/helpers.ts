// Shared helpers for controller tests: a controller started in this process in front of the
// stand-in gateway or the fixture child, fixture processes, captured logs, pid checks.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, expect } from 'vitest';
import type { Clock } from '../../src/clock.ts';
import { type ControllerConfig, parseControllerConfig } from '../../src/controller/config.ts';
import { type RunningController, startController } from '../../src/controller/controller.ts';
import { EnvStore } from '../../src/controller/env-store.ts';
import { noopProfilePort, type ProfilePort } from '../../src/controller/profile-port.ts';
import { createLogger, type Logger, SecretRegistry } from '../../src/log.ts';
import { type FakeUpstream, startFakeUpstream } from '../support/fake-upstream.ts';
import { freePort } from '../support/http.ts';
import { standInPath } from '../support/stand-in-gateway.ts';

export const FIXTURE = fileURLToPath(new URL('./fixtures/child.ts', import.meta.url));
export const TOKEN = 'test-token-controller-0123456789';

export interface FixtureStart {
  pid: number;
  key: string | null;
  grandchild: number | null;
}

export function readStarts(logFile: string): FixtureStart[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as FixtureStart);
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function waitFor<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * A test file's bookkeeping, set up once at its top: `cleanups` run after each test (the last
 * added first); `captured` output (log lines, response bodies) is grepped after the file's last
 * test for every one of `secrets` (read then, so tests may add to a Set), and must be longer than
 * `moreThanChars` when given, so the grep has something to look at.
 */
export function suiteCapture(secrets: Iterable<string>, moreThanChars?: number) {
  const captured: string[] = [];
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  afterAll(() => {
    const all = captured.join('\n');
    if (moreThanChars !== undefined) expect(all.length).toBeGreaterThan(moreThanChars);
    for (const s of secrets) expect(all.includes(s), 'a secret leaked into captured output').toBe(false);
  });
  return { captured, cleanups };
}

/** A logger whose lines are kept in memory (for the secret grep), scrubbed like production. */
export function captureLogger(): { log: Logger; lines: string[]; secrets: SecretRegistry } {
  const lines: string[] = [];
  const secrets = new SecretRegistry();
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  const log = createLogger({ secrets, destination: stream, level: 'debug' });
  return { log, lines, secrets };
}

export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface TestControllerOptions {
  /** Prefix of its temp dir: HOME and TMPDIR, with the state dir (`state/`) below. */
  prefix: string;
  /** What it supervises: the stand-in gateway (default) or the fixture child (FIXTURE). */
  gateway?: 'stand-in' | 'fixture';
  /** Over the base env: PATH, HOME, TMPDIR, OPENCLAW_STATE_DIR (and STANDIN_READY_DELAY_MS 50). */
  env: Record<string, string>;
  /** After the base flags (loopback ports, the gateway command, `--stop-timeout 3000ms`). */
  flags?: string[] | ((paths: { dir: string; stateDir: string }) => string[]);
  /** A surge port too (`--surge-port`). */
  surge?: boolean;
  /** Keys a fake upstream accepts: started first, passed as `--provider-base-url`, closed at stop. */
  upstreamKeys?: string[];
  /** Writes what the state dir holds before the controller starts. */
  seed?: (paths: { dir: string; stateDir: string }) => void;
  /** Its profile port (default: none, `noopProfilePort`). */
  profiles?: (c: { dir: string; stateDir: string; config: ControllerConfig; log: Logger }) => ProfilePort;
  /** After `stop()`, expect the gateway it ran to be gone. */
  expectGatewayGone?: boolean;
  /** Where its log lines go at `stop()` (the secret grep). */
  captured?: string[];
  /** The controller's clock (default systemClock): its supervisor's and its front door's. */
  clock?: Clock;
}

export interface TestController {
  ctl: RunningController;
  config: ControllerConfig;
  /** The env it started with, and the store it keeps it in. */
  env: Record<string, string>;
  envStore: EnvStore;
  dir: string;
  stateDir: string;
  log: Logger;
  lines: string[];
  secrets: SecretRegistry;
  upstream: FakeUpstream | null;
  /** Shuts it down, closes the upstream, removes the temp dir. */
  stop(): Promise<void>;
}

/** `keyroll controller` in this process, on loopback, with captured logs and a 25 ms probe. */
export async function startTestController(o: TestControllerOptions): Promise<TestController> {
  const { dir, cleanup } = tempDir(o.prefix);
  const stateDir = join(dir, 'state');
  o.seed?.({ dir, stateDir });
  mkdirSync(stateDir, { recursive: true });
  const upstream = o.upstreamKeys ? await startFakeUpstream({ keys: o.upstreamKeys }) : null;
  const standIn = (o.gateway ?? 'stand-in') === 'stand-in';
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: dir,
    TMPDIR: dir,
    OPENCLAW_STATE_DIR: stateDir,
    ...(standIn ? { STANDIN_READY_DELAY_MS: '50' } : {}),
    ...o.env,
  };
  let config: ControllerConfig;
  let ctl: RunningController;
  const { log, lines, secrets } = captureLogger();
  const envStore = new EnvStore(env);
  try {
    config = parseControllerConfig(
      [
        '--port',
        '0',
        '--bind',
        '127.0.0.1',
        '--gateway-port',
        String(await freePort()),
        ...(o.surge ? ['--surge-port', String(await freePort())] : []),
        '--gateway-cmd',
        `'${process.execPath}' '${standIn ? standInPath() : FIXTURE}'`,
        ...(upstream ? ['--provider-base-url', upstream.baseUrl] : []),
        '--stop-timeout',
        '3000ms',
        ...(typeof o.flags === 'function' ? o.flags({ dir, stateDir }) : (o.flags ?? [])),
      ],
      env,
    );
    ctl = await startController({
      config,
      env: envStore,
      log,
      secrets,
      profiles: o.profiles?.({ dir, stateDir, config, log }) ?? noopProfilePort(),
      supervisor: { probeIntervalMs: 25 },
      clock: o.clock,
    });
  } catch (err) {
    await upstream?.close();
    cleanup();
    throw err;
  }
  let stopped = false;
  return {
    ctl,
    config,
    env,
    envStore,
    dir,
    stateDir,
    log,
    lines,
    secrets,
    upstream,
    async stop() {
      if (stopped) return;
      stopped = true;
      const pid = ctl.supervisor.getStats().pid;
      await ctl.shutdown();
      const outlived = o.expectGatewayGone && pid && pidAlive(pid);
      await upstream?.close();
      o.captured?.push(...lines);
      cleanup();
      if (outlived) throw new Error(`the gateway (pid ${pid}) outlived its controller's shutdown`);
    },
  };
}
