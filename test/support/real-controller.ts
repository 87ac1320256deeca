// Owns a `keyroll controller` run in front of the real OpenClaw gateway (any installed version) for
// the real-gateway tests: the one set of controller arguments they share, its ports read back from
// its log, authenticated `/_kilo/*` calls on the admin port, waits on `/_kilo/state`, and a stop
// that keeps its whole output for the tests' secret grep.
import { KEYROLL_BIN, loopbackPortFlags } from './controller-process.ts';
import { freePort } from './http.ts';
import { OPENCLAW_VERSION, openclawEntry } from './openclaw.ts';
import { type ExitInfo, spawnTracked, type Tracked } from './processes.ts';
import { node24, type Sandbox } from './sandbox.ts';

// biome-ignore lint/suspicious/noExplicitAny: /_kilo/state is read field by field.
export type State = Record<string, any>;

export interface RealControllerOptions {
  name: string;
  sb: Sandbox;
  upstreamBaseUrl: string;
  /** The gateway token (OPENCLAW_GATEWAY_TOKEN); also the controller's unless `controllerToken`. */
  token: string;
  /** KEYROLL_CONTROLLER_TOKEN: the bearer for `/_kilo/*`, which the gateway never sees. */
  controllerToken?: string;
  /** KILOCODE_API_KEY at start. */
  key: string;
  /** The OpenClaw version the controller runs (`--openclaw-bin`); default OPENCLAW_VERSION. */
  version?: string;
  /** Flags after the shared ones (later flags win). */
  flags?: string[];
  env?: Record<string, string>;
  /** Bound for onboarding + cold start and for every wait on the state (`--ready-timeout`). */
  readyTimeoutMs?: number;
  /** Every response body and, at stop, every output line goes here for the secret grep. */
  captured: string[];
}

export interface RealController {
  proc: Tracked;
  /** The front door (clients). */
  port: number;
  /** `/_kilo/*`. */
  adminPort: number;
  /** The gateway's own port (behind the front door). */
  gatewayPort: number;
  startedAt: number;
  call(
    method: string,
    path: string,
    body?: unknown,
    opts?: { auth?: string | null; headers?: Record<string, string>; raw?: string },
  ): Promise<{ status: number; body: State }>;
  /** Polls `/_kilo/state` until `pred` holds; fails at once when the controller is degraded. */
  waitState(pred: (s: State) => boolean, timeoutMs?: number): Promise<{ state: State; at: number }>;
  stop(timeoutMs?: number): Promise<ExitInfo>;
}

/** The gateway runs, is ready, and the front door routes to it. */
export const serving = (s: State): boolean =>
  s.gateway?.state === 'running' && s.gateway.ready === true && s.proxy?.state === 'routing';

/**
 * Starts the controller (`loopbackPortFlags`) and resolves once it listens; the gateway is
 * onboarded and started in the background (wait with `waitState(serving)`).
 */
export async function startRealController(o: RealControllerOptions): Promise<RealController> {
  const readyMs = o.readyTimeoutMs ?? 400_000;
  const gatewayPort = await freePort();
  const startedAt = Date.now();
  const proc = spawnTracked(
    node24(),
    [
      KEYROLL_BIN,
      'controller',
      '--state-dir',
      o.sb.stateDir,
      ...(o.version && o.version !== OPENCLAW_VERSION ? ['--openclaw-bin', openclawEntry(o.version)] : []),
      ...loopbackPortFlags(gatewayPort, await freePort()),
      '--provider-base-url',
      o.upstreamBaseUrl,
      '--enable-chat-completions',
      // A loaded CI host was seen taking over 70 s for a 2026.6.8 cold start, 90 s for 2026.9.6;
      // nothing here may give up first.
      '--ready-timeout',
      `${readyMs}ms`,
      '--hold-timeout',
      `${Math.ceil(readyMs / 1000)}s`,
      ...(o.flags ?? []),
    ],
    {
      name: `keyroll-controller-${o.name}`,
      cwd: o.sb.dir,
      env: o.sb.env({
        // OpenClaw re-spawns its launcher under a compile cache it did not choose (vitest.config.ts).
        NODE_COMPILE_CACHE: undefined,
        OPENCLAW_GATEWAY_TOKEN: o.token,
        ...(o.controllerToken ? { KEYROLL_CONTROLLER_TOKEN: o.controllerToken } : {}),
        KILOCODE_API_KEY: o.key,
        ...o.env,
      }),
    },
  );
  const { port, adminPort } = JSON.parse(await proc.waitForLine(/"msg":"Controller listening"/, 60_000)) as {
    port: number;
    adminPort: number;
  };
  const bearer = o.controllerToken ?? o.token;
  const call: RealController['call'] = async (method, path, body, opts = {}) => {
    const auth = opts.auth === undefined ? bearer : opts.auth;
    const res = await fetch(`http://127.0.0.1:${adminPort}${path}`, {
      method,
      headers: {
        ...(auth ? { authorization: `Bearer ${auth}` } : {}),
        'content-type': 'application/json',
        ...opts.headers,
      },
      ...(opts.raw !== undefined
        ? { body: opts.raw }
        : body === undefined
          ? {}
          : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(120_000),
    });
    const text = await res.text();
    o.captured.push(text);
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as State };
  };
  const waitState: RealController['waitState'] = async (pred, timeoutMs = readyMs) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = await call('GET', '/_kilo/state').catch(() => null);
      if (r?.status === 200 && pred(r.body)) return { state: r.body, at: Date.now() };
      if (r?.body?.controller?.state === 'degraded' || proc.exitInfo() || Date.now() > deadline) {
        throw new Error(
          `controller ${o.name} did not converge; last: ${JSON.stringify(r?.body)}\n${proc.lines.slice(-40).join('\n')}`,
        );
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  };
  const stop = async (timeoutMs = 60_000) => {
    // The controller's own shutdown stops the gateway: signal it alone, not its group.
    const exit = await proc.stop('SIGTERM', timeoutMs, { group: false });
    o.captured.push(...proc.lines);
    return exit;
  };
  return { proc, port, adminPort, gatewayPort, startedAt, call, waitState, stop };
}
