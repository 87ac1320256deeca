// Owns a `keyroll controller` run as its own process (the sources, `bin/keyroll.mjs`) in front of
// the stand-in gateway: listening ports read back from its log, its `/_kilo/state`, its RSS, and a
// stop that proves the gateway went with it. For tests whose client side opens many sockets or
// that need the controller's whole output (the secret grep).
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './http.ts';
import { pidAlive, spawnTracked, type Tracked, trackPid, waitForPidExit } from './processes.ts';
import { createSandbox, node24, REPO_ROOT, type Sandbox } from './sandbox.ts';
import { seedStandInState, standInPath } from './stand-in-gateway.ts';

export const KEYROLL_BIN = join(REPO_ROOT, 'bin', 'keyroll.mjs');

/**
 * A test controller's ports: front door and admin port picked by the controller itself (logged in
 * its "Controller listening" line: a port picked here beforehand can be taken by another test's
 * server on a busy host), on loopback; the gateway's and the surge gateway's as given.
 */
export function loopbackPortFlags(gatewayPort: number, surgePort: number): string[] {
  return [
    '--port',
    '0',
    '--admin-port',
    '0',
    '--bind',
    '127.0.0.1',
    '--gateway-port',
    String(gatewayPort),
    '--surge-port',
    String(surgePort),
  ];
}

/**
 * The flags of a `keyroll controller` run as its own process, before any of a test's own: its
 * state dir, its ports on loopback (an admin port when given) and the gateway command.
 */
export function controllerFlags(o: {
  stateDir: string;
  port: number;
  adminPort?: number;
  gatewayPort: number;
  gatewayCmd: string;
}): string[] {
  return [
    '--state-dir',
    o.stateDir,
    '--port',
    String(o.port),
    ...(o.adminPort === undefined ? [] : ['--admin-port', String(o.adminPort)]),
    '--bind',
    '127.0.0.1',
    '--gateway-port',
    String(o.gatewayPort),
    '--gateway-cmd',
    o.gatewayCmd,
  ];
}

// biome-ignore lint/suspicious/noExplicitAny: state bodies are read field by field and asserted on.
export type Json = Record<string, any>;

export interface ControllerProcessOptions {
  name: string;
  /** The gateway token (OPENCLAW_GATEWAY_TOKEN); also the controller's unless `controllerToken`. */
  token: string;
  /** KEYROLL_CONTROLLER_TOKEN: the bearer for `/_kilo/*`, which the gateway never sees. */
  controllerToken?: string;
  /** KILOCODE_API_KEY at start. */
  key: string;
  upstreamBaseUrl: string;
  /** Flags after the harness's own (ports, state dir, gateway command); later flags win. */
  flags?: string[];
  /** Node flags before the script, e.g. the gateway image's `--lite-mode --max-semi-space-size=1`. */
  nodeFlags?: string[];
  /** Extra environment for the controller (and so for the gateway it spawns). */
  env?: Record<string, string>;
  /** Seed a plaintext `kilocode:default` profile holding `key` (the controller migrates it). */
  seedProfile?: boolean;
  readyTimeoutMs?: number;
}

export interface ControllerProcess {
  proc: Tracked;
  /** PID of the controller itself (bin/keyroll.mjs runs in place under Node >= 22.19). */
  pid: number;
  port: number;
  adminPort: number;
  /** `http://127.0.0.1:<port>`: the front door. */
  pub: string;
  /** `http://127.0.0.1:<adminPort>`: `/_kilo/*`. */
  adm: string;
  sandbox: Sandbox;
  /** `GET /_kilo/state` on the admin port (status and body; throws on no answer). */
  state(timeoutMs?: number): Promise<{ status: number; body: Json }>;
  /** `POST /_kilo/env/patch` on the admin port. */
  patch(vars: Record<string, string>): Promise<{ status: number; body: Json }>;
  /** Waits until the gateway runs, is ready and the front door routes to it; returns the state. */
  waitServing(pred?: (s: Json) => boolean, timeoutMs?: number): Promise<Json>;
  /** The controller's resident set size in KiB (`VmRSS` of /proc/<pid>/status). */
  rssKiB(): number;
  /** SIGTERM; resolves once the controller and its gateway are gone (SIGKILL after 10 s). */
  stop(): Promise<void>;
}

/** Starts a controller with the stand-in gateway on loopback; resolves once it serves. */
export async function spawnControllerProcess(o: ControllerProcessOptions): Promise<ControllerProcess> {
  const sandbox = createSandbox(`keyroll-ctl-${o.name}-`);
  mkdirSync(sandbox.stateDir, { recursive: true, mode: 0o700 });
  const gatewayPort = await freePort();
  const surgePort = await freePort();
  if (o.seedProfile) {
    seedStandInState(sandbox.stateDir, { baseUrl: o.upstreamBaseUrl, profile: { key: o.key }, gatewayPort });
  }
  const proc = spawnTracked(
    node24(),
    [
      ...(o.nodeFlags ?? []),
      KEYROLL_BIN,
      'controller',
      '--state-dir',
      sandbox.stateDir,
      ...loopbackPortFlags(gatewayPort, surgePort),
      '--gateway-cmd',
      `'${node24()}' '${standInPath()}'`,
      '--provider-base-url',
      o.upstreamBaseUrl,
      '--stop-timeout',
      '3s',
      ...(o.flags ?? []),
    ],
    {
      name: `controller-${o.name}`,
      env: sandbox.env({
        OPENCLAW_GATEWAY_TOKEN: o.token,
        ...(o.controllerToken ? { KEYROLL_CONTROLLER_TOKEN: o.controllerToken } : {}),
        KILOCODE_API_KEY: o.key,
        KEYROLL_LOG_LEVEL: 'info',
        ...o.env,
      }),
    },
  );
  let listening: { port: number; adminPort: number };
  try {
    const line = await proc.waitForLine(/"msg":"Controller listening"/, 20_000);
    listening = JSON.parse(line) as { port: number; adminPort: number };
  } catch (err) {
    await proc.stop('SIGKILL', 5_000);
    sandbox.cleanup();
    throw new Error(`${(err as Error).message}\n${proc.lines.slice(-20).join('\n')}`);
  }
  const pub = `http://127.0.0.1:${listening.port}`;
  const adm = `http://127.0.0.1:${listening.adminPort}`;
  const auth = { authorization: `Bearer ${o.controllerToken ?? o.token}` };

  const state = async (timeoutMs = 5_000) => {
    try {
      const res = await fetch(`${adm}/_kilo/state`, {
        headers: auth,
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      return { status: res.status, body: (text ? JSON.parse(text) : {}) as Json };
    } catch (err) {
      throw withCause(`GET ${adm}/_kilo/state`, err);
    }
  };
  const patch = async (vars: Record<string, string>) => {
    const res = await fetch(`${adm}/_kilo/env/patch`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(vars),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : {}) as Json };
  };
  const gatewayPids = new Set<number>();
  const waitServing = async (pred: (s: Json) => boolean = () => true, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    let last: Json | null = null;
    for (;;) {
      const exit = proc.exitInfo();
      if (exit) {
        throw new Error(
          `controller ${o.name} exited (code ${exit.code}, signal ${exit.signal}):\n${proc.lines.slice(-20).join('\n')}`,
        );
      }
      try {
        const s = await state(2_000);
        last = s.body;
        if (typeof s.body.gateway?.pid === 'number') {
          gatewayPids.add(s.body.gateway.pid);
          trackPid(s.body.gateway.pid);
        }
        if (
          s.status === 200 &&
          s.body.gateway?.state === 'running' &&
          s.body.gateway.ready === true &&
          s.body.proxy?.state === 'routing' &&
          pred(s.body)
        )
          return s.body;
      } catch {
        // not answering yet
      }
      if (Date.now() > deadline) {
        throw new Error(
          `controller ${o.name}: not serving after ${timeoutMs} ms (last state ${JSON.stringify(last?.gateway ?? null)} ${JSON.stringify(last?.proxy ?? null)})\n${proc.lines.slice(-10).join('\n')}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const cp: ControllerProcess = {
    proc,
    pid: proc.pid,
    port: listening.port,
    adminPort: listening.adminPort,
    pub,
    adm,
    sandbox,
    state,
    patch,
    waitServing,
    rssKiB: () => {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'));
      if (!m) throw new Error(`no VmRSS for pid ${proc.pid}`);
      return Number(m[1]);
    },
    stop: async () => {
      // The controller's own shutdown stops the gateway: signal it alone, not its group.
      await proc.stop('SIGTERM', 10_000, { group: false });
      for (const pid of gatewayPids) {
        if (pidAlive(pid)) await waitForPidExit(pid, 5_000);
      }
      sandbox.cleanup();
    },
  };
  try {
    await cp.waitServing(() => true, o.readyTimeoutMs ?? 30_000);
  } catch (err) {
    await proc.stop('SIGKILL', 5_000);
    sandbox.cleanup();
    throw err;
  }
  return cp;
}

/** "fetch failed" says little: name the request and the network error under it. */
function withCause(what: string, err: unknown): Error {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  return new Error(
    `${what}: ${e.name} ${e.message}${e.cause ? ` (${e.cause.code ?? e.cause.message})` : ''}`,
  );
}
