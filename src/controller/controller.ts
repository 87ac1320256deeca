// Owns the assembled controller: config → env, supervisor, delivery, bootstrap, HTTP server.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { readyzOk } from '../adapters/loopback-http.ts';
import { fingerprintEnv, fingerprintValue } from '../fingerprint.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import { VERSION } from '../version.ts';
import { type BootstrapPhase, runBootstrap, StageError } from './bootstrap.ts';
import { coalesce } from './coalesce.ts';
import type { ControllerConfig } from './config.ts';
import { Delivery } from './delivery.ts';
import type { EnvStore } from './env-store.ts';
import {
  DOCTOR_ARGS,
  gatewayRunArgs,
  type OpenclawCommand,
  onboardArgs,
  openclawEnv,
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
import { createControllerHandler, type LifecycleState, listen } from './server.ts';
import { errInfo, Supervisor, type SupervisorOptions } from './supervisor.ts';

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
}

export interface RunningController {
  port: number;
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
  const childEnv = () =>
    openclawEnv(env.snapshot(), { gatewayPort: config.gatewayPort, stateDir: config.stateDir });
  const cfgPath = () => configPath(config.stateDir, env.snapshot());

  const gatewayCommand = config.gatewayCmd
    ? { command: config.gatewayCmd[0]!, args: config.gatewayCmd.slice(1) }
    : openclaw
      ? { command: openclaw.command, args: [...openclaw.prefix, ...gatewayRunArgs(config.gatewayPort)] }
      : null;

  let delivery: Delivery | null = null;
  const supervisor = new Supervisor({
    command: gatewayCommand?.command ?? 'openclaw',
    args: gatewayCommand?.args ?? [],
    env: childEnv,
    log: log.child({ component: 'supervisor' }),
    gatewayPort: config.gatewayPort,
    stopTimeoutMs: config.stopTimeoutMs,
    readyTimeoutMs: config.readyTimeoutMs,
    // SQLite stores are rewritten only here, with the gateway down.
    beforeSpawn: async () => {
      if (delivery) await delivery.migrateAll();
    },
    ...deps.supervisor,
  });

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
  });

  const probeReady = () => readyzOk(config.gatewayPort, AbortSignal.timeout(1_000));

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
    };
  });

  const handler = createControllerHandler({
    token: config.token,
    patchable: config.patchable,
    gatewayPort: config.gatewayPort,
    lifecycle: () => lifecycle,
    gateway: supervisor,
    deliver: (vars) => delivery.deliver(vars),
    setKeyVersion: (v) => {
      keyVersion = v;
    },
    observe,
    secrets,
    log: log.child({ component: 'http' }),
  });
  const http = await listen(handler, { port: config.port, host: config.bind });
  log.info({ port: http.port, bind: config.bind, delivery: config.delivery }, 'Controller listening');

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
        await http.close();
      }
      log.info({}, 'Controller stopped');
    })();
    return shuttingDown;
  };

  return {
    port: http.port,
    supervisor,
    delivery,
    lifecycle: () => lifecycle,
    bootstrapped,
    observe,
    shutdown,
  };
}
