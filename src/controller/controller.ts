// Owns the assembled controller: config → env, supervisor, delivery, bootstrap, HTTP server.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { ReadyProbe } from '../adapters/loopback-http.ts';
import { type Clock, systemClock } from '../clock.ts';
import { constantTimeEqual, fingerprintEnv, fingerprintValue } from '../fingerprint.ts';
import type { KiloState as ObservedState } from '../kilo-state.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import { VERSION } from '../version.ts';
import { type BootstrapPhase, runBootstrap, StageError } from './bootstrap.ts';
import { coalesce } from './coalesce.ts';
import type { ControllerConfig } from './config.ts';
import { Delivery } from './delivery.ts';
import type { EnvStore } from './env-store.ts';
import { FrontDoor } from './front-door.ts';
import { type GatewayUser, stateHandOver } from './gateway-user.ts';
import {
  CONTROLLER_ONLY_VARS,
  customOnboardArgs,
  DOCTOR_ARGS,
  fileKeyResolution,
  gatewayRunArgs,
  type KeyResolution,
  KILO_GATEWAY_BASE_URL,
  type OpenclawCommand,
  onboardArgs,
  openclawEnv,
  openclawVersion,
  providerPluginInstalled,
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
import type { ProfilePort, StoreLayout } from './profile-port.ts';
import { createControllerHandler, type LifecycleState, listen, type ServerDeps } from './server.ts';
import { StateWaits, WAIT_MAX_MS } from './state-wait.ts';
import {
  type ChildEnv,
  errInfo,
  openclawSurgeRefusal,
  Supervisor,
  type SupervisorOptions,
} from './supervisor.ts';

/**
 * Onboarding and doctor of OpenClaw >= 2026.6.9 (custom provider): 14 s idle, but 147 s for an
 * onboarding and over 180 s for a doctor were measured on a 2-core host at load 9-17.
 */
const SLOW_CLI_TIMEOUT_MS = 600_000;

/**
 * `doctor --fix` is idempotent and can fail for a passing reason: 2026.9.6 gives its state-lease
 * worker a fixed 5 s to start and, on a saturated node, refuses its migrations with "state lease
 * heartbeat did not become ready" (exit 1). A failed doctor (not a timed-out one) runs again.
 */
const DOCTOR_ATTEMPTS = 3;

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
  'state:wait',
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
  /**
   * The controller's time (default systemClock), for both the supervisor and the front door: a
   * test can run a whole controller on a ManualClock.
   */
  clock?: Clock;
  /** Supervisor knobs for tests (backoff constants, probe interval). */
  supervisor?: Partial<Omit<SupervisorOptions, 'command' | 'args' | 'env' | 'log' | 'clock'>>;
  onboardTimeoutMs?: number;
  doctorTimeoutMs?: number;
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
  /** The `GET /_kilo/state` reads held now (a read that waits). */
  stateWaits: StateWaits;
  shutdown: () => Promise<void>;
}

/** Listens first (health routes answer during bootstrap), then bootstraps in the background. */
export async function startController(deps: ControllerDeps): Promise<RunningController> {
  const { config, env, log, secrets } = deps;
  for (const t of [config.token, config.previousToken, config.gatewayToken]) secrets.add(t);
  const keyVar = config.patchable[0]!;
  for (const name of config.patchable) secrets.add(env.get(name));
  let lifecycle: LifecycleState = { state: 'bootstrapping', phase: 'init' };
  let keyVersion: string | null = null;

  // The controller's credentials never reach a child: not by name, not under another name. The
  // gateway token stays (it is the gateway's own), even when it is also accepted here.
  for (const name of CONTROLLER_ONLY_VARS) env.delete(name);
  const withheld = [config.token, config.previousToken].filter(
    (t): t is string => t !== null && t !== config.gatewayToken,
  );
  const user: GatewayUser | null =
    config.gatewayUid !== null && config.gatewayGid !== null
      ? { uid: config.gatewayUid, gid: config.gatewayGid }
      : null;
  warnAboutCredentials(config, user, log);
  const handOver = stateHandOver(config.stateDir, user, log.child({ component: 'gateway-user' }));
  // Every store the controller rewrote (as root) goes back to the gateway's user at once.
  const profiles: ProfilePort = user
    ? {
        ...deps.profiles,
        migrate: async (layouts?: StoreLayout[]) => {
          try {
            return await deps.profiles.migrate(layouts);
          } finally {
            await handOver();
          }
        },
      }
    : deps.profiles;

  const openclaw =
    deps.openclaw !== undefined
      ? deps.openclaw
      : config.gatewayCmd
        ? null
        : resolveOpenclaw(config.openclawBin, env.get('PATH'));
  const envFor = (gatewayPort: number) =>
    openclawEnv(env.snapshot(), { gatewayPort, stateDir: config.stateDir, withheld });
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
    // Clients present the gateway's token, never the controller's (config refuses the flag without it).
    proxyToken: config.requireProxyToken ? config.gatewayToken : null,
    tokenEquals: constantTimeEqual,
    clock: deps.clock,
  });

  /** The gateway's readiness, for the supervisor (every 50 ms while it starts) and /_kilo/state. */
  const readiness = new ReadyProbe();
  let delivery: Delivery | null = null;
  const supervisor = new Supervisor({
    command: gatewayCommand?.command ?? 'openclaw',
    args: gatewayCommand?.args ?? [],
    env: envFor,
    log: log.child({ component: 'supervisor' }),
    gatewayPort: config.gatewayPort,
    surgePort: config.surgePort,
    strategy: config.restartStrategy,
    surgeNice: config.surgeYield === 'off' ? null : 10,
    surgeAutogroup: config.surgeYield === 'autogroup',
    frontDoor,
    drainTimeoutMs: config.drainTimeoutMs,
    // A SQLite store is rewritten only with no gateway running: a surge (two running) cannot.
    surgeBlocked: async () => {
      // A SQLite row that the migration would rewrite (plaintext, or the other mode's keyRef).
      const want = config.delivery === 'file' ? 'keyRef-file' : 'keyRef-env';
      const rows = await profiles.scan();
      const due = rows.filter(
        (r) =>
          r.store !== 'json' &&
          r.form !== want &&
          ['plaintext', 'keyRef-env', 'keyRef-file'].includes(r.form),
      );
      return due.length > 0 ? `profile migration due in ${due.map((r) => r.store).join(', ')}` : null;
    },
    // OpenClaw 2026.9.x runs one gateway per state dir: its refusal turns surge into hold for good.
    surgeRefusal: openclawSurgeRefusal,
    stopTimeoutMs: config.stopTimeoutMs,
    readyTimeoutMs: config.readyTimeoutMs,
    // SQLite stores are rewritten only here, with the gateway down; then whatever the controller
    // wrote (stores, openclaw.json, logs dir) is handed to the gateway's user.
    beforeSpawn: async () => {
      if (delivery) await delivery.migrateAll();
      await handOver();
    },
    user,
    probe: (port, timeoutMs) => readiness.ready(port, timeoutMs),
    clock: deps.clock,
    ...deps.supervisor,
  });
  /** The current gateway's port (a surge moves it between --gateway-port and --surge-port). */
  const currentPort = () => supervisor.getStats().port ?? config.gatewayPort;
  // One-shot OpenClaw commands (onboard, doctor, secrets reload) talk to the current gateway.
  const childEnv = () => envFor(currentPort());

  const openclawVer = openclaw ? openclawVersion(openclaw) : null;
  /**
   * The provider needs the custom-provider path: OpenClaw >= 2026.6.9 without the provider's
   * plugin (it is no longer bundled and cannot be installed offline).
   */
  const customProvider = openclaw !== null && !providerPluginInstalled(openclaw, config.provider);
  const configRef = async () => {
    const doc = await readConfig(cfgPath()).catch(() => null);
    return doc ? hasConfigLevelRef(doc, config.provider) : false;
  };
  const keyResolution = async (): Promise<KeyResolution> => {
    if (config.delivery === 'restart') return 'env-per-spawn';
    // A custom gateway (--gateway-cmd) reads the key file itself; no OpenClaw CLI to reload with.
    if (!openclaw) return 'file-per-request';
    return fileKeyResolution(openclawVer, await configRef());
  };

  const reloadSecrets = async (): Promise<boolean> => {
    if (!openclaw) return false;
    await handOver();
    const r = await runOpenclaw(openclaw, SECRETS_RELOAD_ARGS, {
      env: childEnv(),
      timeoutMs: 30_000,
      log: log.child({ component: 'openclaw' }),
      label: 'secrets-reload',
      user,
    });
    return r.code === 0;
  };

  delivery = new Delivery({
    mode: config.delivery,
    keyVar,
    keyFile: config.keyFile,
    keyFileOwner: user,
    token: config.token,
    env,
    supervisor,
    profiles,
    secrets,
    log: log.child({ component: 'delivery' }),
    needsReload: async () => (await keyResolution()) === 'file-on-reload',
    reloadSecrets,
    // A new key in the file starts a new window of evidence from live traffic.
    onKeyReplaced: () => frontDoor.resetTraffic(),
  });

  const probeReady = () => readiness.ready(currentPort(), 1_000);

  // A held read is re-observed when the supervisor's state changes (a hold restart's gateway
  // became ready: `running`) and when a surge gateway took over (`switched`), and every 200 ms
  // while the supervisor calls a new gateway running that the read's own look did not find ready
  // (`relookDue`, state-wait.ts). Without a separate
  // admin port it shares the public port's idle timeout, which would cut a longer hold.
  const stateWaits = new StateWaits({
    source: supervisor,
    events: ['state', 'switched'],
    clock: deps.clock ?? systemClock,
    maxMs:
      config.adminPort === null ? Math.min(WAIT_MAX_MS, Math.floor(config.idleTimeoutMs / 2)) : WAIT_MAX_MS,
  });

  /** One observation shared by concurrent readers; the secrets in it never leave this module. */
  interface RawObservation {
    state: Omit<ObservedState, 'key'> & { key: { version: string | null } };
    /** The key the running child was spawned with (undefined: none, or not in its env). */
    spawnKey: string | undefined;
    hasChild: boolean;
    /** The key file's bytes (file mode), or null. */
    fileKey: Buffer | null;
  }
  const observeRaw = coalesce(async (): Promise<RawObservation> => {
    const stats = supervisor.getStats();
    const strategy = supervisor.strategyInUse();
    const spawnEnv = supervisor.childEnv();
    let fileKey: Buffer | null = null;
    if (config.delivery === 'file' && config.keyFile) {
      fileKey = await fs.readFile(config.keyFile).catch(() => null);
    }
    const live = stats.state === 'running' || stats.state === 'starting';
    const rows = await profiles.scan().catch((err) => {
      log.warn({ err: errInfo(err) }, 'Profile scan failed');
      return [];
    });
    // The 2026.9.x store is gateway-wide (no agent); '*' keeps agentId a string on the wire.
    const profileRows = rows.map((r) => ({ ...r, agentId: r.agentId ?? '*' }));
    return {
      state: {
        controller: {
          version: VERSION,
          state: lifecycle.state,
          delivery: config.delivery,
          waitMaxMs: stateWaits.maxMs,
        },
        gateway: {
          state: stats.state,
          pid: stats.pid,
          startedAt: stats.startedAt,
          restarts: stats.restarts,
          ready: live ? await probeReady() : false,
          lastExit: stats.lastExit,
          version: openclawVer,
          keyResolution: await keyResolution(),
        },
        key: { version: keyVersion },
        profiles: profileRows,
        backups: profiles.backups ? await profiles.backups().catch(() => null) : null,
        proxy: {
          strategy: strategy.effective,
          configuredStrategy: strategy.configured,
          strategyReason: strategy.reason,
          ...frontDoor.stats(),
          lastRestart: stats.lastRestart,
        },
        traffic: frontDoor.traffic(),
      },
      spawnKey: spawnEnv?.[keyVar],
      hasChild: spawnEnv !== null,
      fileKey,
    };
  });

  /**
   * The observed state with fingerprints keyed with `hmacKey`: the token the caller authenticated
   * with (the current controller token, or the previous one during a token rotation, so a caller
   * not yet switched still sees its own desired fingerprints and does not re-deliver). envHash
   * covers the key variable only, exactly what the reconciler computes as desired
   * (`{[envVar]: key}`): other patchable variables must not make a converged target look drifted.
   */
  const observe = async (hmacKey: string = config.token): Promise<ObservedState> => {
    const raw = await observeRaw();
    let envHash: string | null = null;
    if (raw.hasChild) {
      envHash = fingerprintEnv(hmacKey, raw.spawnKey === undefined ? {} : { [keyVar]: raw.spawnKey });
    }
    const fileHash = raw.fileKey === null ? null : fingerprintValue(hmacKey, raw.fileKey);
    return { ...raw.state, key: { envHash, fileHash, version: raw.state.key.version } };
  };

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
    previousToken: config.previousToken,
    patchable: config.patchable,
    gatewayPort: currentPort,
    lifecycle: () => lifecycle,
    gateway: supervisor,
    deliver: (vars) => delivery.deliver(vars),
    setKeyVersion: (v) => {
      keyVersion = v;
    },
    observe,
    observeWaiting: (hmacKey, wait, gone) => stateWaits.hold(wait, () => observe(hmacKey), gone),
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
    log: log.child({ component: 'http', port: 'public' }),
  });
  const admin = split
    ? await listen(createControllerHandler(serverDeps, 'admin'), {
        port: config.adminPort!,
        host: config.bind,
        maxConnections: 256,
        log: log.child({ component: 'http', port: 'admin' }),
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
  const runStep = async (
    args: string[],
    label: string,
    timeoutMs: number,
    extraEnv: ChildEnv = {},
    attempts = 1,
  ) => {
    if (!openclaw) throw new Error('OpenClaw not found: pass --openclaw-bin or run npm run gateway:install');
    await handOver(); // onboard and doctor run as the gateway user, on what the controller wrote
    for (let attempt = 1; ; attempt++) {
      const r = await runOpenclaw(openclaw, args, {
        env: { ...childEnv(), ...extraEnv },
        timeoutMs,
        log: oclog,
        label,
        user,
      });
      if (r.code === 0) return;
      if (r.timedOut || attempt >= attempts) {
        throw new Error(
          `openclaw ${label} failed (exit ${r.code ?? r.signal}${r.timedOut ? ', timed out' : ''})`,
        );
      }
      log.warn(
        { command: label, exit: r.code ?? r.signal, attempt },
        'OpenClaw command failed; running it again',
      );
    }
  };

  const bootstrapped = runBootstrap({
    profiles,
    log: log.child({ component: 'bootstrap' }),
    setPhase: (phase: BootstrapPhase) => {
      lifecycle = phase === 'gateway-start' ? { state: 'starting' } : { state: 'bootstrapping', phase };
    },
    writeKeyFile:
      config.delivery === 'file' && config.keyFile
        ? async () => {
            const key = env.get(keyVar);
            if (key) await writeFileAtomic(config.keyFile!, key, { mode: 0o600, owner: user });
            else await fs.access(config.keyFile!); // no key in env: the volume must already hold one
          }
        : null,
    isFresh: async () => (await readConfig(cfgPath()).catch(() => ({}))) === null,
    onboard: config.gatewayCmd
      ? null
      : customProvider
        ? () => {
            // The key reaches the onboarding as CUSTOM_API_KEY (its ref); the migration after it
            // points the ref at the delivery's (the key variable, or the key file).
            const key = env.get(keyVar);
            log.info({ version: openclawVer }, 'Onboarding with the provider as a custom provider');
            return runStep(
              customOnboardArgs(
                config.gatewayPort,
                config.provider,
                config.providerBaseUrl ?? KILO_GATEWAY_BASE_URL,
              ),
              'onboard',
              deps.onboardTimeoutMs ?? SLOW_CLI_TIMEOUT_MS,
              key ? { CUSTOM_API_KEY: key } : {},
            );
          }
        : () => runStep(onboardArgs(config.gatewayPort), 'onboard', deps.onboardTimeoutMs ?? 180_000),
    doctor: config.gatewayCmd
      ? null
      : () =>
          runStep(
            DOCTOR_ARGS,
            'doctor',
            deps.doctorTimeoutMs ?? (customProvider ? SLOW_CLI_TIMEOUT_MS : 180_000),
            {},
            DOCTOR_ATTEMPTS,
          ),
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
        disableProviderPlugin: customProvider,
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
      // Held reads are answered now (the gateway shutting down), before the ports close.
      const released = stateWaits.close();
      try {
        await supervisor.shutdown();
      } finally {
        await released;
        frontDoor.close();
        readiness.close();
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
    stateWaits,
    shutdown,
  };
}

/**
 * The start-up warnings about where the controller token can be read from (each logged once):
 * the KiloClaw fallback, a gateway running as the controller's own user, and a previous token
 * that is the gateway's token.
 */
function warnAboutCredentials(config: ControllerConfig, user: GatewayUser | null, log: Logger): void {
  if (config.tokenSource === 'gateway-token') {
    log.warn(
      { tokenSource: 'OPENCLAW_GATEWAY_TOKEN' },
      'No controller token set: /_kilo/* accepts the gateway token, which code in the gateway can read; set KEYROLL_CONTROLLER_TOKEN or --controller-token-file',
    );
    return;
  }
  const self = process.getuid?.();
  if (user === null || (self !== undefined && user.uid === self)) {
    log.warn(
      { uid: self ?? null },
      'The gateway runs as the controller user: it can read the controller token from /proc; set --gateway-uid and --gateway-gid',
    );
  }
  if (config.previousToken !== null && config.previousToken === config.gatewayToken) {
    log.warn(
      {},
      'KEYROLL_CONTROLLER_TOKEN_PREVIOUS is the gateway token: code in the gateway can use it on /_kilo/* until it is removed',
    );
  }
}
