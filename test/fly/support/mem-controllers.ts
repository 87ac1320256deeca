// Owns the in-memory controllers the Fly loop's tests drive through the pass's `client` seam
// (`/_kilo/state` and `env/patch` answered from a Map keyed by controller URL), and the pass
// options those tests start from.
import { systemClock } from '../../../src/clock.ts';
import { fingerprintEnv } from '../../../src/fingerprint.ts';
import type { FlyClient } from '../../../src/fly/client.ts';
import type { FlyPassOptions } from '../../../src/fly/loop.ts';
import type { ObservedState } from '../../../src/kilo-state.ts';
import { silentLogger } from '../../../src/log.ts';
import { type ControllerClient, ControllerError } from '../../../src/reconcile/controller-client.ts';

/** One machine's controller: the fingerprint of the env its gateway runs, and its PID. */
export interface MemController {
  envHash: string;
  pid: number;
  /** Patches received. */
  posts: number;
  /** A patch never answers (until the pass aborts it). */
  hang: boolean;
  /** Unreachable: every call fails as a refused connection would. */
  down: boolean;
}

/** A reachable controller whose gateway runs with `KILOCODE_API_KEY` = `key`. */
export function memController(token: string, key: string, pid = 100): MemController {
  return {
    envHash: fingerprintEnv(token, { KILOCODE_API_KEY: key }),
    pid,
    posts: 0,
    hang: false,
    down: false,
  };
}

/**
 * The client of the controller at each URL: state from the Map; a patch restarts the gateway
 * (PID + 1) onto the patched env, fingerprinted with `token`.
 */
export function memControllerClient(
  controllers: Map<string, MemController>,
  token: string,
): (url: string) => ControllerClient {
  return (url) => {
    const c = controllers.get(url)!;
    return {
      async getState(): Promise<ObservedState> {
        if (c.down) throw new ControllerError('network', 'GET /_kilo/state failed: ECONNREFUSED');
        return {
          controller: { state: 'ready', delivery: 'restart' },
          gateway: { state: 'running', pid: c.pid, ready: true },
          key: { envHash: c.envHash },
          profiles: [],
        };
      },
      async patchEnv(vars, _version, signal) {
        if (c.down) throw new ControllerError('network', 'POST /_kilo/env/patch failed: ECONNREFUSED');
        c.posts++;
        if (c.hang) {
          await new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
        }
        c.envHash = fingerprintEnv(token, vars);
        c.pid++;
        return { ok: true, signaled: true, migratedProfiles: 0 };
      },
    };
  };
}

/** A pass of `app` to `key` (version v2) over `controllers`, with fast timings; `over` wins. */
export function memPassOptions(
  o: { fly: FlyClient; app: string; token: string; key: string; controllers: Map<string, MemController> },
  over: Partial<FlyPassOptions> = {},
): FlyPassOptions {
  return {
    fly: o.fly,
    app: o.app,
    key: { key: o.key, version: 'v2' },
    spec: { envVar: 'KILOCODE_API_KEY', delivery: 'restart' },
    token: o.token,
    controllerPort: 18789,
    controllerTimeoutMs: 1000,
    rollout: { concurrency: 10, maxUnavailable: 2, failureBudget: 5, paused: false },
    maxChanges: 10,
    requireDurable: false,
    dryRun: false,
    env: {
      clock: systemClock,
      log: silentLogger(),
      retry: { retries: 0, minTimeoutMs: 10, maxTimeoutMs: 10 },
      deadlineMs: 5_000,
      pollIntervalMs: 20,
      signal: new AbortController().signal,
    },
    passDeadlineMs: 30_000,
    client: memControllerClient(o.controllers, o.token),
    ...over,
  };
}
