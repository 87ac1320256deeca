// Owns the gateway child process: spawn with a fresh env, readiness, graceful stop, crash backoff,
// and the two restart strategies (hold: drain, restart in place; surge: start the next gateway on a
// second port, switch, then drain and stop the old one).
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { ReadyProbe } from '../adapters/loopback-http.ts';
import { type Clock, systemClock } from '../clock.ts';
import { CUT_MARK, type Logger } from '../log.ts';
import type { RouteTarget } from './front-door.ts';
import { onLines } from './lines.ts';

export type SupervisorState = 'stopped' | 'starting' | 'running' | 'stopping' | 'crashed' | 'shutting_down';

export interface ExitInfo {
  code: number | null;
  signal: string | null;
  at: string;
}

export interface SupervisorStats {
  state: SupervisorState;
  pid: number | null;
  startedAt: string | null;
  /** Seconds since the current child was spawned (0 without a child). */
  uptime: number;
  /** Respawns after unexpected exits (crashes); requested restarts are not counted here. */
  restarts: number;
  /** Restarts asked for by an operator or a rotation. */
  requestedRestarts: number;
  /** Children spawned in total. */
  spawns: number;
  lastExit: ExitInfo | null;
  /** Loopback port of the current child (null without one). */
  port: number | null;
  /** How the last requested restart went: strategy used, why surge fell back, how long it took. */
  lastRestart: RestartRecord | null;
}

export type RestartStrategy = 'hold' | 'surge';

/** The strategy restarts use now: the configured one, or `hold` once the gateway refused a surge. */
export interface StrategyInUse {
  configured: RestartStrategy;
  effective: RestartStrategy;
  /** Why `effective` is not `configured` (null when they are the same). */
  reason: string | null;
}

export interface RestartRecord {
  strategy: RestartStrategy;
  /** Why a surge was not possible and the restart held instead. */
  fallback: string | null;
  at: string;
  /** From the restart request to the new gateway taking requests (null: it did not). */
  durationMs: number | null;
}

/** The front door as the supervisor drives it (see front-door.ts). */
export interface TrafficSwitch {
  route(target: RouteTarget | null): void;
  hold(): void;
  drain(port: number, timeoutMs: number): Promise<unknown>;
}

export type SpawnReason = 'start' | 'restart' | 'crash';

/** Cumulative restart counts for /metrics. */
export interface RestartCounts {
  /** Requested restarts by the strategy used and outcome: `ok` (took requests) or `failed`. */
  byOutcome: [strategy: RestartStrategy, outcome: 'ok' | 'failed', count: number][];
  surgeFallbacks: number;
  /** Unexpected exits (the same as `restarts` in the stats). */
  crashes: number;
}

export type ChildEnv = Record<string, string>;

export interface SupervisorOptions {
  command: string;
  /** The child's arguments; a function gets the loopback port the child must serve on. */
  args: string[] | ((port: number) => string[]);
  /** Called for every spawn, so each child gets the controller's env as it is at that moment. */
  env: (port: number) => ChildEnv;
  log: Logger;
  /**
   * Readiness check of the child within `timeoutMs` (probeTimeoutMs). Default: a ReadyProbe of
   * its own (GET http://127.0.0.1:<port>/readyz → 200) with `gatewayPort`, ready at once without.
   * The controller passes the ReadyProbe its `/_kilo/state` uses too.
   */
  probe?: (port: number, timeoutMs: number) => Promise<boolean>;
  gatewayPort?: number;
  /** Second loopback port, for the gateway a surge restart starts beside the running one. */
  surgePort?: number;
  strategy?: RestartStrategy;
  /** Why a surge cannot be used for this restart (a store that must be migrated offline), or null. */
  surgeBlocked?: () => Promise<string | null>;
  /**
   * Reads each line a surge gateway prints for its refusal to run beside the serving one, and
   * returns the reason (null: not a refusal). A refused surge gateway is stopped, the restart
   * holds, and so does every later one (`strategyInUse`). See `openclawSurgeRefusal`.
   */
  surgeRefusal?: (line: string) => string | null;
  /** The front door: held, drained and re-routed around every restart. */
  frontDoor?: TrafficSwitch;
  /** Longest wait for in-flight requests to the old gateway before it is stopped. */
  drainTimeoutMs?: number;
  /** Runs with no child alive, right before every spawn (profile migration of locked stores). */
  beforeSpawn?: (reason: SpawnReason) => Promise<void>;
  stopTimeoutMs?: number;
  killTimeoutMs?: number;
  readyTimeoutMs?: number;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  healthyThresholdMs?: number;
  /**
   * The supervisor's own time (default systemClock): the crash backoff's wait, the healthy
   * threshold, and the timestamps it reports; a test passes a ManualClock and advances it. Waits
   * that bound what a real child does (become ready, exit after a signal, close its output) stay
   * on real time: see `#watchReadiness` and `raceTimeout`.
   */
  clock?: Clock;
  spawnImpl?: typeof spawn;
  /**
   * Run every child as this user and group (`--gateway-uid/--gateway-gid`), so that code in the
   * gateway cannot read the controller's memory, environ or files. Supplementary groups are
   * dropped too (libuv calls setgroups(0) before setgid/setuid).
   */
  user?: { uid: number; gid: number } | null;
  /** Truncation length for forwarded output lines. */
  maxLineLength?: number;
  /**
   * Niceness given to every thread of the old gateway for the length of a surge, from the moment
   * the next one is spawned (null: unchanged). The next gateway's start is CPU-bound on more than
   * one core, and the old one, still serving, was its competitor. The old one keeps serving, behind
   * the new one's start, and after the switch its drain and shutdown yield to the new one.
   */
  surgeNice?: number | null;
  /**
   * Also give the old gateway's autogroup that niceness (default false here; the controller's
   * `--surge-yield autogroup`, its default, sets it). Where the kernel schedules by autogroup (root
   * cgroup: a plain host, a VM such as a Fly machine) thread niceness does not change the old
   * gateway's share against the new one; its autogroup's does, and also puts it behind every other
   * busy session of the host: on a shared loaded host that slowed its clients (BENCHMARKS.md).
   */
  surgeAutogroup?: boolean;
  /**
   * Sets the niceness of the gateway that leads process group `pgid`; the default is setGroupNice
   * (renice -g as the gateway user, and /proc/PID/autogroup when `autogroup`).
   */
  setNice?: (pgid: number, nice: number, autogroup: boolean) => Promise<NiceResult>;
}

export class GatewayAlreadyRunningError extends Error {
  override name = 'GatewayAlreadyRunningError';
}
export class SupervisorShuttingDownError extends Error {
  override name = 'SupervisorShuttingDownError';
}
export class GatewaySpawnError extends Error {
  override name = 'GatewaySpawnError';
}

interface Child {
  proc: ChildProcess;
  pid: number;
  port: number;
  env: ChildEnv;
  startedAtMs: number;
  startedAtIso: string;
  exited: Promise<ExitInfo>;
  hasExited: boolean;
  /** Set before we signal it, so its exit is not taken for a crash. */
  expectedExit: boolean;
  ready: boolean;
  /** A surge gateway that said it will not run beside the serving one: why (`surgeRefusal`). */
  refused: string | null;
  /** Resolves when the child became ready, exited, or refused to run beside the serving one. */
  settled: Promise<void>;
  settle: () => void;
}

const DEFAULTS = {
  stopTimeoutMs: 10_000,
  killTimeoutMs: 5_000,
  readyTimeoutMs: 120_000,
  probeIntervalMs: 50,
  probeTimeoutMs: 1_000,
  backoffInitialMs: 1_000,
  backoffMaxMs: 300_000,
  healthyThresholdMs: 30_000,
  maxLineLength: 8_192,
  drainTimeoutMs: 30_000,
  strategy: 'hold' as RestartStrategy,
  surgeNice: 10 as number | null,
  surgeAutogroup: false,
};

/** Supervisor of one child process; every lifecycle operation runs through one queue. */
export class Supervisor extends EventEmitter {
  readonly #o: SupervisorOptions & typeof DEFAULTS;
  readonly #clock: Clock;
  readonly #spawn: typeof spawn;
  readonly #probe: (port: number, timeoutMs: number) => Promise<boolean>;
  /** The default probe, closed at shutdown (null: a probe was given, or none is needed). */
  readonly #ownProbe: ReadyProbe | null = null;
  readonly #port: number;
  #state: SupervisorState = 'stopped';
  #child: Child | null = null;
  /** The gateway a surge restart is starting beside #child. */
  #next: Child | null = null;
  #lastRestart: RestartRecord | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #backoffMs: number;
  /** Cancels the pending crash respawn (null: none pending). */
  #cancelRespawn: (() => void) | null = null;
  #manualStop = false;
  #shuttingDown = false;
  #pendingRestart: Promise<void> | null = null;
  #restarts = 0;
  #requestedRestarts = 0;
  #spawns = 0;
  #lastExit: ExitInfo | null = null;
  readonly #outcomes = new Map<string, number>();
  #surgeFallbacks = 0;
  /** Set once a surge gateway refused to run beside the serving one: every restart holds. */
  #surgeRefused: string | null = null;

  constructor(opts: SupervisorOptions) {
    super();
    const defined = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
    this.#o = { ...DEFAULTS, ...defined } as SupervisorOptions & typeof DEFAULTS;
    this.#clock = opts.clock ?? systemClock;
    this.#spawn = opts.spawnImpl ?? spawn;
    this.#backoffMs = this.#o.backoffInitialMs;
    this.#port = opts.gatewayPort ?? 0;
    if (opts.probe) this.#probe = opts.probe;
    else if (opts.gatewayPort === undefined) this.#probe = async () => true;
    else {
      const own = new ReadyProbe();
      this.#ownProbe = own;
      this.#probe = (port, timeoutMs) => own.ready(port, timeoutMs);
    }
  }

  getState(): SupervisorState {
    return this.#state;
  }

  getStats(): SupervisorStats {
    const c = this.#child;
    return {
      state: this.#state,
      pid: c?.pid ?? null,
      startedAt: c?.startedAtIso ?? null,
      uptime: c ? Math.max(0, Math.floor((this.#clock.now() - c.startedAtMs) / 1000)) : 0,
      restarts: this.#restarts,
      requestedRestarts: this.#requestedRestarts,
      spawns: this.#spawns,
      lastExit: this.#lastExit,
      port: c?.port ?? null,
      lastRestart: this.#lastRestart,
    };
  }

  /** The strategy restarts use now, and why it differs from the configured one. */
  strategyInUse(): StrategyInUse {
    const configured = this.#o.strategy;
    const reason = configured === 'surge' ? this.#surgeRefused : null;
    return { configured, effective: reason === null ? configured : 'hold', reason };
  }

  restartCounts(): RestartCounts {
    const byOutcome: RestartCounts['byOutcome'] = [];
    for (const [key, n] of this.#outcomes) {
      const [strategy, outcome] = key.split(' ') as [RestartStrategy, 'ok' | 'failed'];
      byOutcome.push([strategy, outcome, n]);
    }
    return { byOutcome, surgeFallbacks: this.#surgeFallbacks, crashes: this.#restarts };
  }

  #countOutcome(strategy: RestartStrategy, ok: boolean): void {
    const key = `${strategy} ${ok ? 'ok' : 'failed'}`;
    this.#outcomes.set(key, (this.#outcomes.get(key) ?? 0) + 1);
  }

  /** The env the current child was spawned with (null without a child); a copy. */
  childEnv(): ChildEnv | null {
    return this.#child ? { ...this.#child.env } : null;
  }

  /** True when there is a child and it is starting or running (delivery can reach it). */
  hasLiveChild(): boolean {
    return this.#child !== null && (this.#state === 'starting' || this.#state === 'running');
  }

  /** Spawns the child. Throws GatewayAlreadyRunningError when one is starting or running. */
  start(): Promise<void> {
    return this.#exclusive(async () => {
      if (this.#shuttingDown) throw new SupervisorShuttingDownError('Supervisor is shutting down');
      if (this.#child) throw new GatewayAlreadyRunningError('Gateway already running or starting');
      this.#clearRespawn();
      this.#manualStop = false;
      this.#backoffMs = this.#o.backoffInitialMs;
      await this.#runBeforeSpawn('start');
      this.#spawnChild(this.#port);
    });
  }

  /** Stops the child (SIGTERM, then SIGKILL after the timeout); nothing respawns until start(). */
  stop(): Promise<void> {
    return this.#exclusive(async () => {
      this.#manualStop = true;
      this.#clearRespawn();
      this.#o.frontDoor?.route(null);
      if (this.#child) await this.#stopChild(this.#child);
      if (!this.#shuttingDown) this.#setState('stopped');
    });
  }

  /** Operator restart: stop (with SIGKILL escalation), then spawn with the current env. */
  restart(): Promise<void> {
    return this.#exclusive(() => this.#doRestart(false));
  }

  /**
   * Restart on behalf of a rotation. Requests that arrive while one is waiting in the queue join
   * it, so a burst of rotations costs at most the restart in progress plus one more; the queued
   * one is skipped when the child it would replace already runs with the current env.
   */
  requestRestart(): Promise<void> {
    if (this.#pendingRestart) return this.#pendingRestart;
    const p = this.#exclusive(async () => {
      this.#pendingRestart = null;
      await this.#doRestart(true);
    });
    this.#pendingRestart = p;
    // If the op fails before it clears the slot, do not let a rejected promise block later requests.
    p.catch(() => {
      if (this.#pendingRestart === p) this.#pendingRestart = null;
    });
    return p;
  }

  /** Graceful stop for controller shutdown; afterwards every lifecycle call is refused. */
  shutdown(): Promise<void> {
    this.#shuttingDown = true;
    this.#clearRespawn();
    this.#setState('shutting_down');
    // Stop at once rather than behind the queue: a queued op sees #shuttingDown and does nothing.
    const c = this.#child;
    const next = this.#next;
    const direct = Promise.all([c ? this.#stopChild(c) : null, next ? this.#stopChild(next) : null]);
    return direct
      .then(() =>
        this.#exclusive(async () => {
          if (this.#child) await this.#stopChild(this.#child);
        }),
      )
      .finally(() => this.#ownProbe?.close());
  }

  /** Synchronous SIGKILL of the child's group, for process-exit handlers; no waiting. */
  killNow(): void {
    for (const c of [this.#child, this.#next]) if (c && !c.hasExited) killGroup(c.pid, 'SIGKILL');
  }

  /**
   * Resolves true once the state is `wanted`, false after `timeoutMs` of real time: its callers
   * wait for a real child, which a manual clock would not time out.
   */
  waitForState(wanted: SupervisorState, timeoutMs: number): Promise<boolean> {
    if (this.#state === wanted) return Promise.resolve(true);
    return new Promise((resolve) => {
      const onState = (s: SupervisorState) => {
        if (s !== wanted) return;
        cancel();
        this.off('state', onState);
        resolve(true);
      };
      const cancel = systemClock.setTimeout(() => {
        this.off('state', onState);
        resolve(false);
      }, timeoutMs);
      this.on('state', onState);
    });
  }

  async #doRestart(coalesced: boolean): Promise<void> {
    if (this.#shuttingDown) throw new SupervisorShuttingDownError('Gateway is shutting down');
    const c = this.#child;
    if (coalesced && c && sameEnv(c.env, this.#o.env(c.port)) && !c.hasExited) {
      this.#o.log.info({ pid: c.pid }, 'Skipped coalesced restart: child already runs with the current env');
      return;
    }
    this.#clearRespawn();
    this.#manualStop = false;
    this.#backoffMs = this.#o.backoffInitialMs;
    this.#requestedRestarts++;
    // Restart durations are real elapsed time, monotonic: how long the gateways took.
    const began = performance.now();
    let fallback: string | null = null;
    if (this.#o.strategy === 'surge') {
      if (this.#surgeRefused !== null) {
        fallback = this.#surgeRefused;
      } else if (!c?.ready || c.hasExited || this.#o.surgePort === undefined) {
        fallback = 'no ready gateway to keep serving';
      } else {
        fallback =
          (await this.#o.surgeBlocked?.().catch(() => 'could not tell whether a migration is due')) ?? null;
      }
      if (fallback === null && c) {
        fallback = await this.#surge(c, began);
        if (fallback === null || this.#shuttingDown) return;
      }
      this.#surgeFallbacks++;
      this.#o.log.info({ fallback }, 'Surge not possible for this restart; holding instead');
    }
    const record = this.#recordRestart('hold', fallback);
    const fd = this.#o.frontDoor;
    fd?.hold();
    let counted = false;
    try {
      if (c) {
        await fd?.drain(c.port, this.#o.drainTimeoutMs);
        await this.#stopChild(c);
      }
      if (this.#shuttingDown) return;
      await this.#runBeforeSpawn('restart');
      const child = this.#spawnChild(this.#port);
      counted = true;
      void child.settled.then(() => {
        this.#countOutcome('hold', child.ready);
        if (child.ready) record.durationMs = Math.round(performance.now() - began);
      });
      // A rotation holds the queue until its child is ready (or gone), so rotations arriving during
      // the gateway's slow start join the one queued restart instead of killing a starting child
      // over and over.
      if (coalesced) await raceTimeout(child.settled, this.#o.readyTimeoutMs + this.#o.probeIntervalMs);
    } catch (err) {
      if (!counted) this.#countOutcome('hold', false);
      // Nothing will become ready to release the held requests to: answer them now.
      if (!this.#child?.ready) fd?.route(null);
      throw err;
    }
  }

  /**
   * Starts the next gateway on the other port with the current env while the old one serves;
   * once it is ready, new requests go to it, the old one drains and is stopped. If the next one
   * never becomes ready, it is stopped and the old one keeps serving. Returns null, or the reason
   * the next one refused to run beside the old one (stopped; the caller holds instead).
   */
  async #surge(old: Child, began: number): Promise<string | null> {
    const record = this.#recordRestart('surge', null);
    const port = old.port === this.#port ? this.#o.surgePort! : this.#port;
    // Not awaited: the spawn must not wait for renice; the old one yields within milliseconds.
    const yielded = this.#setNice(old, this.#o.surgeNice);
    let next: Child;
    try {
      next = this.#spawnChild(port, true);
    } catch (err) {
      this.#countOutcome('surge', false);
      await this.#restoreNice(old, yielded);
      throw err;
    }
    await raceTimeout(next.settled, this.#o.readyTimeoutMs + this.#o.probeIntervalMs);
    if (this.#shuttingDown) return null;
    // A gateway that exits on its refusal may exit before its last lines are read.
    if (next.hasExited && !next.ready) await raceTimeout(outputClosed(next.proc), 2_000);
    if (next.refused !== null && !next.ready) {
      this.#next = null;
      next.expectedExit = true;
      await this.#terminate(next);
      await this.#restoreNice(old, yielded);
      this.#surgeRefused = next.refused;
      this.#o.log.warn(
        { pid: next.pid, reason: next.refused, spentMs: Math.round(performance.now() - began) },
        'The gateway refuses to run beside the serving one; this restart and every later one hold',
      );
      return next.refused;
    }
    if (!next.ready || next.hasExited) {
      this.#countOutcome('surge', false);
      this.#next = null;
      next.expectedExit = true;
      await this.#terminate(next);
      this.#o.log.warn(
        { pid: next.pid, port },
        'Surge gateway did not become ready; the old one keeps serving',
      );
      await this.#restoreNice(old, yielded);
      throw new GatewaySpawnError('Surge gateway did not become ready');
    }
    // The switch: from here on the new gateway is the one supervised and served.
    this.#next = null;
    this.#child = next;
    this.#setState('running');
    this.emit('switched', next.pid); // no state change: held state reads wait for this
    this.#o.frontDoor?.route({ port: next.port, pid: next.pid });
    record.durationMs = Math.round(performance.now() - began);
    this.#countOutcome('surge', true);
    this.#o.log.info({ pid: next.pid, port, oldPid: old.pid }, 'Switched to the surge gateway');
    await this.#o.frontDoor?.drain(old.port, this.#o.drainTimeoutMs);
    old.expectedExit = true;
    await this.#terminate(old);
    return null;
  }

  #applyNice(pgid: number, nice: number): Promise<NiceResult | null> {
    const set = this.#o.setNice ?? ((g, n, a) => setGroupNice(g, n, this.#o.user ?? null, a));
    return set(pgid, nice, this.#o.surgeAutogroup).catch(() => null);
  }

  /** Lowers `child`'s CPU share to `nice` (null: not at all); logs what took effect, never throws. */
  async #setNice(child: Child, nice: number | null): Promise<NiceResult | null> {
    if (nice === null || child.hasExited) return null;
    const r = await this.#applyNice(child.pid, nice);
    if (!r || (!r.threads && !r.autogroup)) {
      this.#o.log.info({ pid: child.pid, nice }, 'Could not lower the old gateway priority');
      return null;
    }
    this.#o.log.info({ pid: child.pid, nice, ...r }, 'Old gateway yields the CPU to the surge gateway');
    return r;
  }

  /**
   * After a failed surge the old gateway goes on serving alone. Its threads' niceness can be
   * lowered again only with CAP_SYS_NICE (the pod has none), so the attempt may fail; that costs
   * the old gateway nothing against an idle CPU, only against the controller's own work. An
   * autogroup's is always set back.
   */
  async #restoreNice(child: Child, yielded: Promise<NiceResult | null>): Promise<void> {
    if ((await yielded) === null || child.hasExited) return;
    const r = await this.#applyNice(child.pid, 0);
    this.#o.log.info(
      { pid: child.pid, threads: r?.threads ?? false, autogroup: r?.autogroup ?? false },
      'Old gateway priority set back after the failed surge',
    );
  }

  /** Starts the record `lastRestart` reports; its duration is filled in once the switch happens. */
  #recordRestart(strategy: RestartStrategy, fallback: string | null): RestartRecord {
    this.#lastRestart = {
      strategy,
      fallback,
      at: new Date(this.#clock.now()).toISOString(),
      durationMs: null,
    };
    return this.#lastRestart;
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  #setState(s: SupervisorState): void {
    if (this.#state === s) return;
    this.#state = s;
    this.emit('state', s);
  }

  async #runBeforeSpawn(reason: SpawnReason): Promise<void> {
    if (!this.#o.beforeSpawn) return;
    try {
      await this.#o.beforeSpawn(reason);
    } catch (err) {
      // The hook hardens state (migration); a failure is logged and the spawn goes ahead, since a
      // gateway that is down helps nobody and the next rotation retries the hook.
      this.#o.log.error({ reason, err: errInfo(err) }, 'Pre-spawn hook failed');
    }
  }

  /** Spawns a child on `port`: as the supervised one, or (surge) as the next one beside it. */
  #spawnChild(port: number, asNext = false): Child {
    if (this.#shuttingDown) throw new SupervisorShuttingDownError('Gateway is shutting down');
    const env = { ...this.#o.env(port) };
    const args = typeof this.#o.args === 'function' ? this.#o.args(port) : this.#o.args;
    let proc: ChildProcess;
    try {
      proc = this.#spawn(this.#o.command, args, {
        env,
        // Own process group, so a stop reaches the gateway's own children too.
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        ...(this.#o.user ? { uid: this.#o.user.uid, gid: this.#o.user.gid } : {}),
      });
    } catch (err) {
      if (!asNext) this.#setState('stopped');
      throw new GatewaySpawnError(`Failed to spawn gateway: ${errInfo(err).code ?? 'error'}`);
    }
    if (proc.pid === undefined) {
      proc.on('error', () => {});
      if (!asNext) {
        this.#lastExit = { code: null, signal: null, at: new Date(this.#clock.now()).toISOString() };
        this.#setState('stopped');
      }
      throw new GatewaySpawnError('Failed to spawn gateway');
    }
    let resolveExit!: (e: ExitInfo) => void;
    const exited = new Promise<ExitInfo>((r) => {
      resolveExit = r;
    });
    const startedAtMs = this.#clock.now();
    let settle!: () => void;
    const settled = new Promise<void>((r) => {
      settle = r;
    });
    const child: Child = {
      settled,
      settle,
      proc,
      pid: proc.pid,
      port,
      env,
      startedAtMs,
      startedAtIso: new Date(startedAtMs).toISOString(),
      exited,
      hasExited: false,
      expectedExit: false,
      ready: false,
      refused: null,
    };
    if (asNext) this.#next = child;
    else this.#child = child;
    this.#spawns++;
    proc.on('error', (err) =>
      this.#o.log.warn({ pid: child.pid, err: errInfo(err) }, 'Gateway process error'),
    );
    proc.on('exit', (code, signal) => {
      const info: ExitInfo = { code, signal, at: new Date(this.#clock.now()).toISOString() };
      child.hasExited = true;
      killGroup(child.pid, 'SIGKILL'); // leftovers of the group must not outlive their leader
      resolveExit(info);
      child.settle();
      this.#onExit(child, info);
    });
    this.#forward(child, proc.stdout, 'stdout');
    this.#forward(child, proc.stderr, 'stderr');
    if (!asNext) this.#setState('starting');
    this.#o.log.info({ pid: child.pid, port, command: this.#o.command, surge: asNext }, 'Gateway spawned');
    void this.#watchReadiness(child);
    return child;
  }

  #forward(child: Child, stream: NodeJS.ReadableStream | null, name: 'stdout' | 'stderr'): void {
    if (!stream) return;
    onLines(stream, this.#o.maxLineLength, (line, cut) => {
      if (child === this.#next && child.refused === null && !child.ready) {
        child.refused = this.#o.surgeRefusal?.(line) ?? null;
        if (child.refused !== null) child.settle();
      }
      // The logger scrubs every registered secret from the line before it is written.
      this.#o.log.info(
        { pid: child.pid, stream: name, line: cut ? `${line}${CUT_MARK}` : line },
        'Gateway output',
      );
    });
  }

  /**
   * Polls the child until it is ready, exits, or overstays readyTimeoutMs. On real time (monotonic
   * `performance.now`, `systemClock`), not the injected clock: the wait is for a real process to
   * start, which a test's manual clock does not follow.
   */
  async #watchReadiness(child: Child): Promise<void> {
    const started = performance.now();
    const watched = () => (this.#child === child || this.#next === child) && !child.hasExited;
    while (watched()) {
      const ok = await this.#probe(child.port, this.#o.probeTimeoutMs).catch(() => false);
      if (!watched()) return;
      if (ok) {
        child.ready = true;
        child.settle();
        if (this.#child === child) {
          if (this.#state === 'starting') this.#setState('running');
          this.#o.frontDoor?.route({ port: child.port, pid: child.pid });
        }
        this.#o.log.info(
          { pid: child.pid, readyMs: Math.round(performance.now() - started) },
          'Gateway ready',
        );
        return;
      }
      if (performance.now() - started > this.#o.readyTimeoutMs) {
        this.#o.log.warn(
          { pid: child.pid, readyTimeoutMs: this.#o.readyTimeoutMs },
          'Gateway not ready in time; stopping it',
        );
        // Not marked expected: the exit goes through crash handling and its backoff.
        void this.#terminate(child).catch((err) =>
          this.#o.log.error({ pid: child.pid, err: errInfo(err) }, 'Gateway could not be stopped'),
        );
        return;
      }
      await systemClock.sleep(this.#o.probeIntervalMs);
    }
  }

  #onExit(child: Child, info: ExitInfo): void {
    if (this.#child !== child) return; // a stale child, or a surge gateway that never took over
    this.#child = null;
    this.#lastExit = info;
    // Requests stop going to a dead gateway; a planned restart has already put them on hold.
    if (!child.expectedExit) this.#o.frontDoor?.route(null);
    if (child.expectedExit) {
      this.#o.log.info({ pid: child.pid, code: info.code, signal: info.signal }, 'Gateway stopped');
      return;
    }
    if (this.#shuttingDown) return;
    this.#restarts++;
    const ranMs = this.#clock.now() - child.startedAtMs;
    if (ranMs >= this.#o.healthyThresholdMs) this.#backoffMs = this.#o.backoffInitialMs;
    // Every unexpected exit backs off, clean or not: with OPENCLAW_NO_RESPAWN=1 the gateway has
    // no reason to exit 0 by itself, and an immediate respawn of an exit-0 loop would spin.
    this.#setState('crashed');
    this.#o.log.warn(
      { pid: child.pid, code: info.code, signal: info.signal, ranMs, respawnInMs: this.#backoffMs },
      'Gateway exited unexpectedly',
    );
    this.#scheduleRespawn();
  }

  #scheduleRespawn(): void {
    const delayMs = this.#backoffMs;
    this.#backoffMs = Math.min(this.#o.backoffMaxMs, Math.floor(this.#backoffMs * 2));
    this.emit('backoff', delayMs);
    this.#cancelRespawn = this.#clock.setTimeout(() => {
      this.#cancelRespawn = null;
      void this.#exclusive(async () => {
        if (this.#shuttingDown || this.#manualStop || this.#child || this.#state !== 'crashed') return;
        await this.#runBeforeSpawn('crash');
        try {
          this.#spawnChild(this.#port);
        } catch (err) {
          this.#o.log.error({ err: errInfo(err) }, 'Gateway respawn failed');
          this.#restarts++;
          this.#setState('crashed');
          this.#scheduleRespawn();
        }
      });
    }, delayMs);
  }

  async #stopChild(child: Child): Promise<void> {
    child.expectedExit = true;
    if (!this.#shuttingDown) this.#setState('stopping');
    await this.#terminate(child);
  }

  /** SIGTERM to the group → wait → SIGKILL after stopTimeoutMs → wait (bounded). */
  async #terminate(child: Child): Promise<void> {
    if (child.hasExited) return;
    killGroup(child.pid, 'SIGTERM');
    const first = await raceTimeout(child.exited, this.#o.stopTimeoutMs);
    if (first) return;
    this.#o.log.warn(
      { pid: child.pid, stopTimeoutMs: this.#o.stopTimeoutMs },
      'Gateway ignored SIGTERM; killing it',
    );
    killGroup(child.pid, 'SIGKILL');
    const second = await raceTimeout(child.exited, this.#o.killTimeoutMs);
    if (!second) throw new Error('Gateway did not exit after SIGKILL');
  }

  #clearRespawn(): void {
    this.#cancelRespawn?.();
    this.#cancelRespawn = null;
  }
}

export interface NiceResult {
  /** Every thread of every process in the group has the niceness (`renice -g`). */
  threads: boolean;
  /** The gateway's autogroup has it (false: not asked, this kernel has none, or refused). */
  autogroup: boolean;
}

/**
 * Sets the niceness of the gateway that leads process group (and session) `pgid`; never throws,
 * says which took effect.
 * - Per thread. setpriority(PRIO_PROCESS, pid), which is Node's os.setPriority, reaches the main
 *   thread only: V8's compiler and GC threads and libuv's pool went on at 0. PRIO_PGRP reaches
 *   every thread of every process in the group; Node has no call for it, so `renice -g`. This is
 *   the weight that counts inside a cgroup (a Kubernetes pod), where only the pod's processes are.
 * - Per autogroup, when `autogroup`. Where the kernel schedules by autogroup
 *   (kernel.sched_autogroup_enabled=1 and the processes in the root cgroup), every session is one
 *   group and thread niceness only orders threads within it; a gateway spawned detached has a
 *   session of its own, so only /proc/PID/autogroup changes its share — against every session.
 * setpriority needs the same user or CAP_SYS_NICE (the example pod grants none), so `renice` runs
 * as the gateway user, which may always raise its own processes' niceness; lowering it back needs
 * CAP_SYS_NICE for threads, not for an autogroup (below 0 only).
 */
export async function setGroupNice(
  pgid: number,
  nice: number,
  user: { uid: number; gid: number } | null,
  autogroup = false,
): Promise<NiceResult> {
  const threads = new Promise<boolean>((resolve) => {
    const p = spawn('renice', ['-n', String(nice), '-g', String(pgid)], {
      stdio: 'ignore',
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
      env: { PATH: '/usr/bin:/bin' },
    });
    p.once('error', () => resolve(false));
    p.once('exit', (code) => resolve(code === 0));
  });
  const group = (async () => {
    if (!autogroup) return false;
    const { writeFile } = process.getBuiltinModule('node:fs/promises');
    // The kernel takes one autogroup change per 100 ms from the whole host (EAGAIN): one retry,
    // after a real-time wait (the kernel's limit, not the supervisor's).
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(`/proc/${pgid}/autogroup`, String(nice));
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return false;
        await systemClock.sleep(120);
      }
    }
    return false;
  })();
  return { threads: await threads, autogroup: await group };
}

/**
 * OpenClaw 2026.9.x's refusal of a second gateway on one state dir (`surgeRefusal`). Its `gateway
 * run` takes an exclusive gateway-lifecycle ownership of the state database (a SQLite coordinator
 * under /tmp named after the database path). A second gateway either needs start-up maintenance
 * first and exits at once (78: `Doctor could not enter maintenance. …: another OpenClaw process
 * owns gateway-lifecycle`, seen on a surge), or logs that it waits for the ownership, up to 300 s,
 * then exits with `failed to acquire gateway state ownership`. No option or env turns it off
 * (OPENCLAW_ALLOW_MULTI_GATEWAY=1 skips only the per-config lock file). 2026.6.8 has only that
 * lock file, which it takes over when the port in it is free: a surge works there.
 */
export function openclawSurgeRefusal(line: string): string | null {
  return /another OpenClaw process owns gateway-lifecycle|waiting for gateway-lifecycle ownership|failed to acquire gateway state ownership/.test(
    line,
  )
    ? 'the gateway does not run beside another on the same state dir (gateway-lifecycle ownership)'
    : null;
}

/** Signals a process group; falls back to the process when it is not a group leader. */
function killGroup(pid: number, sig: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  }
}

/** Resolves once the child's stdout and stderr are closed (every line of it has been read). */
function outputClosed(proc: ChildProcess): Promise<void> {
  const open = [proc.stdout, proc.stderr].filter((s) => s !== null && !s.closed);
  return Promise.all(open.map((s) => new Promise((r) => s!.once('close', r)))).then(() => undefined);
}

/**
 * `p`, or null after `ms` of real time. Every use bounds what a real child does (exit after a
 * signal, become ready, close its output), so it is not on the injected clock: a manual clock
 * moves only when a test says so, never in step with the child.
 */
async function raceTimeout<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let cancel = () => {};
  const timeout = new Promise<null>((r) => {
    cancel = systemClock.setTimeout(() => r(null), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    cancel();
  }
}

function sameEnv(a: ChildEnv, b: ChildEnv): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => a[k] === b[k]);
}

/** Error facts safe to log: name, code and message (messages here never carry secrets). */
export function errInfo(err: unknown): { name?: string; code?: string; message?: string } {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return { name: err.name, message: err.message, ...(code ? { code } : {}) };
  }
  return { message: String(err) };
}
