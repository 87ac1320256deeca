// Starts real `keyroll controller` processes for integration tests and the demo: with the
// stand-in gateway, or with the real OpenClaw gateway in a sandbox. Every process is tracked.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as z from 'zod';
import { controllerFlags } from '../../support/controller-process.ts';
import { freePort } from '../../support/http.ts';
import { spawnTracked, type Tracked } from '../../support/processes.ts';
import { createSandbox, node24, REPO_ROOT, type Sandbox } from '../../support/sandbox.ts';
import { seedStandInState, standInPath } from '../../support/stand-in-gateway.ts';

export const KEYROLL_BIN = join(REPO_ROOT, 'bin', 'keyroll.mjs');

export interface FleetMember {
  name: string;
  kind: 'openclaw' | 'stand-in';
  /** The controller's base URL. */
  url: string;
  token: string;
  gatewayPort: number;
  controller: Tracked;
  sandbox: Sandbox;
}

const StateSchema = z.object({
  gateway: z.object({
    state: z.string(),
    pid: z.number().nullish(),
    ready: z.boolean().nullish(),
    restarts: z.number().nullish(),
  }),
  key: z.object({ envHash: z.string().nullish() }),
});
export type ControllerState = z.infer<typeof StateSchema>;

/** `GET /_kilo/state` of a member (bounded); null while the controller does not answer 200. */
export async function readState(m: { url: string; token: string }): Promise<ControllerState | null> {
  try {
    const res = await fetch(`${m.url}/_kilo/state`, {
      headers: { authorization: `Bearer ${m.token}` },
      signal: AbortSignal.timeout(2_000),
    });
    if (!res.ok) {
      await res.body?.cancel();
      return null;
    }
    return StateSchema.parse(await res.json());
  } catch {
    return null;
  }
}

/** Waits until the member's gateway is running and ready; rejects when the controller exits. */
export async function waitGatewayReady(
  m: FleetMember,
  timeoutMs: number,
  onTick?: (elapsedMs: number, state: string) => void,
): Promise<ControllerState> {
  const started = Date.now();
  for (;;) {
    const exit = m.controller.exitInfo();
    if (exit) {
      throw new Error(
        `controller ${m.name} exited (code ${exit.code}, signal ${exit.signal}):\n${m.controller.lines.slice(-15).join('\n')}`,
      );
    }
    const s = await readState(m);
    if (s && s.gateway.state === 'running' && s.gateway.ready) return s;
    // A gateway that keeps crashing will not come up by waiting (e.g. its port was taken by
    // another process between freePort() and its listen()); fail now so the caller can retry.
    if (s && (s.gateway.restarts ?? 0) >= 3) {
      throw new Error(
        `gateway of ${m.name} is crash-looping (${s.gateway.restarts} restarts):\n${m.controller.lines.slice(-15).join('\n')}`,
      );
    }
    onTick?.(Date.now() - started, s ? s.gateway.state : 'bootstrapping');
    if (Date.now() - started > timeoutMs) {
      throw new Error(
        `gateway of ${m.name} not ready after ${timeoutMs} ms:\n${m.controller.lines.slice(-15).join('\n')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface StartOptions {
  name: string;
  token: string;
  /** The key the controller starts with (its KILOCODE_API_KEY). */
  key: string;
  /** The fake upstream's base URL (`…/api/gateway/`). */
  upstreamBaseUrl: string;
  /**
   * Node's argv up to the controller's own flags; default: the sources (`bin/keyroll.mjs
   * controller`). The shipped-build test passes the gateway image's entrypoint and pod args.
   */
  launch?: string[];
  /** More controller flags (the real OpenClaw member only). */
  flags?: string[];
}

/** A controller supervising the stand-in gateway, with a seeded plaintext profile to migrate. */
export async function startStandInMember(o: StartOptions): Promise<FleetMember> {
  const sandbox = createSandbox(`keyroll-fleet-${o.name}-`);
  mkdirSync(sandbox.stateDir, { recursive: true, mode: 0o700 });
  const gatewayPort = await freePort();
  const port = await freePort();
  seedStandInState(sandbox.stateDir, { baseUrl: o.upstreamBaseUrl, profile: { key: o.key }, gatewayPort });
  const controller = spawnTracked(
    node24(),
    [
      ...(o.launch ?? [KEYROLL_BIN, 'controller']),
      ...controllerFlags({
        stateDir: sandbox.stateDir,
        port,
        gatewayPort,
        gatewayCmd: `${node24()} ${standInPath()}`,
      }),
      '--stop-timeout',
      '3000ms',
    ],
    {
      name: `controller-${o.name}`,
      env: sandbox.env({
        OPENCLAW_GATEWAY_TOKEN: o.token,
        KILOCODE_API_KEY: o.key,
        KEYROLL_LOG_LEVEL: 'info',
      }),
    },
  );
  return {
    name: o.name,
    kind: 'stand-in',
    url: `http://127.0.0.1:${port}`,
    token: o.token,
    gatewayPort,
    controller,
    sandbox,
  };
}

/** A controller that onboards and supervises the real OpenClaw gateway in a sandbox. */
export async function startOpenclawMember(o: StartOptions): Promise<FleetMember> {
  const sandbox = createSandbox(`keyroll-fleet-${o.name}-`);
  const gatewayPort = await freePort();
  const port = await freePort();
  const controller = spawnTracked(
    node24(),
    [
      KEYROLL_BIN,
      'controller',
      '--state-dir',
      sandbox.stateDir,
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--gateway-port',
      String(gatewayPort),
      '--provider-base-url',
      o.upstreamBaseUrl,
      '--enable-chat-completions',
      ...(o.flags ?? []),
    ],
    {
      name: `controller-${o.name}`,
      env: sandbox.env({
        OPENCLAW_GATEWAY_TOKEN: o.token,
        KILOCODE_API_KEY: o.key,
        KEYROLL_LOG_LEVEL: 'info',
      }),
    },
  );
  return {
    name: o.name,
    kind: 'openclaw',
    url: `http://127.0.0.1:${port}`,
    token: o.token,
    gatewayPort,
    controller,
    sandbox,
  };
}

/** Stops a member's controller (which stops its gateway) and removes its sandbox. */
export async function stopMember(m: FleetMember): Promise<void> {
  await m.controller.stop('SIGTERM', 15_000);
  m.sandbox.cleanup();
}

/**
 * Starts a member and waits until its gateway is ready, retrying with fresh ports and a fresh
 * sandbox when it fails: on a busy host another process can take a port between freePort() and
 * the gateway's listen(), and that is the harness's problem, not the behaviour under test.
 */
export async function startReadyMember(
  kind: FleetMember['kind'],
  o: StartOptions,
  timeoutMs: number,
  onTick?: (elapsedMs: number, state: string) => void,
  attempts = 2,
): Promise<FleetMember> {
  for (let attempt = 1; ; attempt++) {
    const m = kind === 'openclaw' ? await startOpenclawMember(o) : await startStandInMember(o);
    try {
      await waitGatewayReady(m, timeoutMs, onTick);
      return m;
    } catch (err) {
      await stopMember(m).catch(() => undefined);
      if (attempt >= attempts) throw err;
    }
  }
}
