// Owns the assembled controller: config → env, supervisor, delivery, bootstrap, HTTP server.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { readyzOk } from '../adapters/loopback-http.ts';
import { constantTimeEqual, fingerprintEnv, fingerprintValue } from '../fingerprint.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import { VERSION } from '../version.ts';
import { type BootstrapPhase, runBootstrap, StageError } from './bootstrap.ts';
import { coalesce } from './coalesce.ts';
import type { ControllerConfig } from './config.ts';
import { Delivery } from './delivery.ts';
import type { EnvStore } from './env-store.ts';
import { FrontDoor, type FrontDoorStats, type TrafficStats } from './front-door.ts';
import {
  DOCTOR_ARGS,
  gatewayRunArgs,
  type OpenclawCommand,
  onboardArgs,
  openclawEnv,
  openclawVersion,
  resolveOpenclaw,
  runOpenclaw,
  SECRETS_RELOAD_ARGS,
} from './openclaw-cli.ts';
import {
  configPath,
  FILE_PROVIDER_ALIAS,
  hasConfigLevelRef,
  readConfig,
  writeConfigEdits,
} from './openclaw-config.ts';
import type { ProfileFormRow, ProfilePort } from './profile-port.ts';
import { createControllerHandler, type LifecycleState, listen, type ServerDeps } from './server.ts';
import { errInfo, type RestartRecord, Supervisor, type SupervisorOptions } from './supervisor.ts';

/** The wire API this controller speaks (`/_kilo/version`), and what a caller can rely on. */
export const API_VERSION = 'keyroll.dev/v1';
export const CAPABILITIES = [
  'admin-port',
  'delivery:file',
  'delivery:restart',
  'env-patch',
  'key-version-header',
  'proxy',
  'proxy:websocket',
  'restart-strategy:hold',
  'restart-strategy:surge',
  'state',
  'traffic',
].sort();

export interface ControllerDeps {
  config: ControllerConfig;
  env: EnvStore;
  log: Logger;
  secrets: SecretRegistry;
  profiles: ProfilePort;
  /** Override the OpenClaw binary resolution (tests). */
  openclaw?: OpenclawCommand | null;
  /** Supervisor knobs for tests (timers, backoff constants, probe interval). */
  supervisor?: Partial<Omit<SupervisorOptions, 'command' | 'args' | 'env' | 'log'>>;
  onboardTimeoutMs?: number;
  doctorTimeoutMs?: number;
}

export interface ObservedState {
  controller: { version: string; state: LifecycleState['state']; delivery: 'restart' | 'file' };
  gateway: {
    state: string;
    pid: number | null;
    startedAt: string | null;
    restarts: number;
    ready: boolean;
    lastExit: { code: number | null; signal: string | null; at: string } | null;
  };
  key: { envHash: string | null; fileHash: string | null; version: string | null };
  profiles: (Omit<ProfileFormRow, 'agentId'> & { agentId: string })[];
  /** The front door: strategy, what waits and what flows, and how the last restart went. */
  proxy: FrontDoorStats & { strategy: 'hold' | 'surge'; lastRestart: RestartRecord | null };
  /** Live answers since the current gateway took requests or the key changed (KeyRejected). */
  traffic: TrafficStats;
}

export interface RunningController {
  port: number;
  /** The admin port when `--admin-port` is set, else the same as `port`. */
  adminPort: number;
  frontDoor: FrontDoor;
  supervisor: Supervisor;
  delivery: Delivery;
  lifecycle: () => LifecycleState;
  /** Settles when bootstrap has finished (ready or degraded). */
  bootstrapped: Promise<void>;
  observe: () => Promise<ObservedState>;
  shutdown: () => Promise<void>;
}

/** Listens first (health routes answer during bootstrap), then bootstraps in the background. */
export async function startController(deps: ControllerDeps): Promise<RunningController> {
  const { config, env, log, secrets } = deps;
  secrets.add(config.token);
  const keyVar = config.patchable[0]!;
  for (const name of config.patchable) secrets.add(env.get(name));
  let lifecycle: LifecycleState = { state: 'bootstrapping', phase: 'init' };
  let keyVersion: string | null = null;

  const openclaw =
    deps.openclaw !== undefined
      ? deps.openclaw
      : config.gatewayCmd
        ? null
        : resolveOpenclaw(config.openclawBin, env.get('PATH'));
  const envFor = (gatewayPort: number) =>
    openclawEnv(env.snapshot(), { gatewayPort, stateDir: config.stateDir });
  const cfgPath = () => configPath(config.stateDir, env.snapshot());

  // A `--gateway-cmd` gateway learns its port from OPENCLAW_GATEWAY_PORT (a surge moves it).
  const gatewayCommand = config.gatewayCmd
    ? { command: config.gatewayCmd[0]!, args: (_port: number) => config.gatewayCmd!.slice(1) }
    : openclaw
      ? { command: openclaw.command, args: (port: number) => [...openclaw.prefix, ...gatewayRunArgs(port)] }
      : null;

  const frontDoor = new FrontDoor({
    log: log.child({ component: 'proxy' }),
    holdTimeoutMs: config.holdTimeoutMs,
    holdMax: config.holdMax,
    proxyToken: config.requireProxyToken ? config.token : null,
    tokenEquals: constantTimeEqual,
  });

  let delivery: Delivery | null = null;
  const supervisor = new Supervisor({
    command: gatewayCommand?.command ?? 'openclaw',
    args: gatewayCommand?.args ?? [],
    env: envFor,
    log: log.child({ component: 'supervisor' }),
    gatewayPort: config.gatewayPort,
    surgePort: config.surgePort,
    strategy: config.restartStrategy,
    frontDoor,
    drainTimeoutMs: config.drainTimeoutMs,
    // A SQLite store is rewritten only with no gateway running: a surge (two running) cannot.
    surgeBlocked: async () => {
      const rows = await deps.profiles.scan();
      const due = rows.filter((r) => r.store !== 'json' && r.form === 'plaintext');
      return due.length > 0 ? `profile migration due in ${due.map((r) => r.store).join(', ')}` : null;
    },
    stopTimeoutMs: config.stopTimeoutMs,
    readyTimeoutMs: config.readyTimeoutMs,
    // SQLite stores are rewritten only here, with the gateway down.
    beforeSpawn: async () => {
      if (delivery) await delivery.migrateAll();
    },
    ...deps.supervisor,
  });
  /** The current gateway's port (a surge moves it between --gateway-port and --surge-port). */
  const currentPort = () => supervisor.getStats().port ?? config.gatewayPort;
  // One-shot OpenClaw commands (onboard, doctor, secrets reload) talk to the current gateway.
  const childEnv = () => envFor(currentPort());

  const reloadSecrets = async (): Promise<boolean> => {
    if (!openclaw) return false;
    const r = await runOpenclaw(openclaw, SECRETS_RELOAD_ARGS, {
      env: childEnv(),
      timeoutMs: 30_000,
      log: log.child({ component: 'openclaw' }),
      label: 'secrets-reload',
    });
    return r.code === 0;
  };

  delivery = new Delivery({
    mode: config.delivery,
    keyVar,
    keyFile: config.keyFile,
    token: config.token,
    env,
    supervisor,
    profiles: deps.profiles,
    secrets,
    log: log.child({ component: 'delivery' }),
    hasConfigLevelRef: async () => {
      const doc = await readConfig(cfgPath());
      return doc ? hasConfigLevelRef(doc, config.provider) : false;
    },
    reloadSecrets,
    // A new key in the file starts a new window of evidence from live traffic.
    onKeyReplaced: () => frontDoor.resetTraffic(),
  });

  const probeReady = () => readyzOk(currentPort(), AbortSignal.timeout(1_000));

  const observe = coalesce(async (): Promise<ObservedState> => {
    const stats = supervisor.getStats();
    const spawnEnv = supervisor.childEnv();
    let envHash: string | null = null;
    if (spawnEnv) {
      const vars: Record<string, string> = {};
      for (const name of config.patchable) if (spawnEnv[name] !== undefined) vars[name] = spawnEnv[name];
      envHash = fingerprintEnv(config.token, vars);
    }
    let fileHash: string | null = null;
    if (config.delivery === 'file' && config.keyFile) {
      fileHash = await fs.readFile(config.keyFile).then(
        (b) => fingerprintValue(config.token, b),
        () => null,
      );
    }
    const live = stats.state === 'running' || stats.state === 'starting';
    const rows = await deps.profiles.scan().catch((err) => {
      log.warn({ err: errInfo(err) }, 'Profile scan failed');
      return [];
    });
    // The 2026.9.x store is gateway-wide (no agent); '*' keeps agentId a string on the wire.
    const profiles = rows.map((r) => ({ ...r, agentId: r.agentId ?? '*' }));
    return {
      controller: { version: VERSION, state: lifecycle.state, delivery: config.delivery },
      gateway: {
        state: stats.state,
        pid: stats.pid,
        startedAt: stats.startedAt,
        restarts: stats.restarts,
        ready: live ? await probeReady() : false,
        lastExit: stats.lastExit,
      },
      key: { envHash, fileHash, version: keyVersion },
      profiles,
      proxy: { strategy: config.restartStrategy, ...frontDoor.stats(), lastRestart: stats.lastRestart },
      traffic: frontDoor.traffic(),
    };
  });

  const openclawVer = openclaw ? openclawVersion(openclaw) : null;
  const version = () => ({
    version: VERSION,
    commit: process.env.KEYROLL_COMMIT ?? null,
    openclawVersion: openclawVer,
    openclawCommit: null,
    gateway: supervisor.getStats(),
    controllerState: lifecycle.state,
    apiVersion: API_VERSION,
    capabilities: CAPABILITIES,
  });

  const serverDeps: ServerDeps = {
    token: config.token,
    patchable: config.patchable,
    gatewayPort: currentPort,
    lifecycle: () => lifecycle,
    gateway: supervisor,
    deliver: (vars) => delivery.deliver(vars),
    setKeyVersion: (v) => {
      keyVersion = v;
    },
    observe,
    version,
    frontDoor,
    secrets,
    log: log.child({ component: 'http' }),
  };
  const split = config.adminPort !== null;
  // The public port may hold a request for a restart's length and stream for minutes: no
  // whole-request deadline there, an idle timeout and a connection cap instead.
  const http = await listen(createControllerHandler(serverDeps, split ? 'public' : 'both'), {
    port: config.port,
    host: config.bind,
    requestTimeoutMs: 0,
    idleTimeoutMs: config.idleTimeoutMs,
    maxConnections: config.maxConnections,
  });
  const admin = split
    ? await listen(createControllerHandler(serverDeps, 'admin'), {
        port: config.adminPort!,
        host: config.bind,
        maxConnections: 256,
      }).catch(async (err) => {
        await http.close();
        throw err;
      })
    : null;
  log.info(
    {
      port: http.port,
      adminPort: admin?.port ?? null,
      bind: config.bind,
      delivery: config.delivery,
      restartStrategy: config.restartStrategy,
    },
    'Controller listening',
  );

  const oclog = log.child({ component: 'openclaw' });
  const runStep = async (args: string[], label: string, timeoutMs: number) => {
    if (!openclaw) throw new Error('OpenClaw not found: pass --openclaw-bin or run npm run gateway:install');
    const r = await runOpenclaw(openclaw, args, { env: childEnv(), timeoutMs, log: oclog, label });
    if (r.code !== 0) {
      throw new Error(
        `openclaw ${label} failed (exit ${r.code ?? r.signal}${r.timedOut ? ', timed out' : ''})`,
      );
    }
  };

  const bootstrapped = runBootstrap({
    profiles: deps.profiles,
    log: log.child({ component: 'bootstrap' }),
    setPhase: (phase: BootstrapPhase) => {
      lifecycle = phase === 'gateway-start' ? { state: 'starting' } : { state: 'bootstrapping', phase };
    },
    writeKeyFile:
      config.delivery === 'file' && config.keyFile
        ? async () => {
            const key = env.get(keyVar);
            if (key) await writeFileAtomic(config.keyFile!, key, { mode: 0o600 });
            else await fs.access(config.keyFile!); // no key in env: the volume must already hold one
          }
        : null,
    isFresh: async () => (await readConfig(cfgPath()).catch(() => ({}))) === null,
    onboard: config.gatewayCmd
      ? null
      : () => runStep(onboardArgs(config.gatewayPort), 'onboard', deps.onboardTimeoutMs ?? 180_000),
    doctor: config.gatewayCmd ? null : () => runStep(DOCTOR_ARGS, 'doctor', deps.doctorTimeoutMs ?? 180_000),
    configure: async () => {
      const path = cfgPath();
      // A custom gateway without a config and nothing to set gets no config file.
      const needed =
        !config.gatewayCmd ||
        config.providerBaseUrl ||
        config.delivery === 'file' ||
        (await readConfig(path)) !== null;
      if (!needed) return;
      await fs.mkdir(join(config.stateDir, 'logs'), { recursive: true, mode: 0o700 });
      const changed = await writeConfigEdits(path, {
        provider: config.provider,
        stateDir: config.stateDir,
        providerBaseUrl: config.providerBaseUrl,
        enableChatCompletions: config.enableChatCompletions,
        keyFile: config.delivery === 'file' ? config.keyFile : null,
      });
      log.info(
        { changed, fileProvider: config.delivery === 'file' ? FILE_PROVIDER_ALIAS : null },
        'Gateway config written',
      );
    },
    startGateway: async () => {
      if (!gatewayCommand) throw new Error('No gateway command');
      await supervisor.start();
    },
  }).then(
    () => {
      lifecycle = { state: 'ready' };
      log.info({ pid: supervisor.getStats().pid }, 'Controller ready');
    },
    (err) => {
      const stage = err instanceof StageError ? err.stage : 'init';
      lifecycle = { state: 'degraded', stage };
      log.error({ stage }, 'Controller degraded');
    },
  );

  let shuttingDown: Promise<void> | null = null;
  const shutdown = () => {
    shuttingDown ??= (async () => {
      log.info({}, 'Controller shutting down');
      try {
        await supervisor.shutdown();
      } finally {
        frontDoor.close();
        await Promise.all([http.close(), admin?.close()]);
      }
      log.info({}, 'Controller stopped');
    })();
    return shuttingDown;
  };

  return {
    port: http.port,
    adminPort: admin?.port ?? http.port,
    frontDoor,
    supervisor,
    delivery,
    lifecycle: () => lifecycle,
    bootstrapped,
    observe,
    shutdown,
  };
}
