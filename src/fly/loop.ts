// Owns the Fly machines loop: one pass = list → skip if mid-deploy → observe every started
// machine's controller → plan one action per machine → durable writes and live deliveries under
// machine leases → verify; and the loop that repeats passes at a jittered interval.
import type { Logger } from '../log.ts';
import type { Clock } from '../reconcile/clock.ts';
import { type Delivery, desired } from '../reconcile/desired.ts';
import { mapLimit } from '../reconcile/limits.ts';
import { needsPatch } from '../reconcile/plan.ts';
import type { Target, TargetResult } from '../reconcile/reconcile-target.ts';
import type { RetryPolicy } from '../reconcile/retry.ts';
import { runPass } from '../reconcile/rollout.ts';
import type { KeyMaterial } from '../reconcile/sources/key-source.ts';
import type { Rollout } from '../reconcile/targets.ts';
import type { FlyClient } from './client.ts';
import { type DeployState, detectDeploy } from './deploy.ts';
import { configFingerprint, configMatches, leaseOwner, releaseQuietly, writeDurable } from './durable.ts';
import { isLeaseHeld } from './errors.ts';
import {
  type ActionKind,
  type DurableState,
  type LiveState,
  type MachineInput,
  machineConverged,
  planMachines,
} from './machine-plan.ts';
import type { Machine } from './schemas.ts';
import { fleetMachines, type MachineTarget, machineTarget, type TargetOptions } from './targets.ts';

export interface FlyPassOptions {
  fly: FlyClient;
  app: string;
  key: KeyMaterial;
  envVar: string;
  delivery: Delivery;
  /** Controllers' bearer token; also the HMAC key of every fingerprint. */
  token: string;
  controllerPort: number;
  controllerTimeoutMs: number;
  rollout: Rollout;
  maxChanges: number;
  /** Count a deferred config write (started machine) as not converged. */
  requireDurable: boolean;
  /** Observe and plan only: reads at the Fly API, GETs at the controllers. */
  dryRun: boolean;
  clock: Clock;
  log: Logger;
  retry: RetryPolicy;
  /** Per machine: live delivery plus verification. */
  deadlineMs: number;
  pollIntervalMs: number;
  /** The whole pass; what is unfinished by then is reported and left to the next pass. */
  passDeadlineMs: number;
  signal: AbortSignal;
  /** Test seam: how to reach a controller (default HTTP). */
  client?: TargetOptions['client'];
}

export type MachineOutcome = 'converged' | 'not-converged' | 'skipped';

export interface MachineResult {
  id: string;
  name: string | null;
  state: string;
  region: string | null;
  url: string | null;
  durable: DurableState;
  /** Fingerprint of the config's key (HMAC with the controller token); null when absent. */
  durableHash: string | null;
  live: LiveState;
  /** The action this pass took (`none` for a dry run or a held machine). */
  action: ActionKind;
  /** What the dry run would do, or what the pass set out to do. */
  planned: ActionKind;
  held: boolean;
  /** What this pass changed on the machine. */
  changed: 'durable' | 'live' | null;
  outcome: MachineOutcome;
  message: string;
  /** The controller observation before any action (null when not observed). */
  observed: TargetResult | null;
  /** The live delivery and its verification (null when none this pass). */
  delivered: TargetResult | null;
}

export type PassStatus = 'done' | 'deploying' | 'deadline';

export interface FlyPassSummary {
  total: number;
  converged: number;
  notConverged: number;
  skipped: number;
  liveDelivered: number;
  durableWritten: number;
  held: number;
  deferred: number;
}

export interface FlyPassResult {
  app: string;
  status: PassStatus;
  dryRun: boolean;
  keyVersion: string;
  envVar: string;
  delivery: Delivery;
  /** The desired env fingerprint (HMAC with the controller token), never the key. */
  desiredHash: string;
  maxChanges: number;
  deploy: DeployState;
  machines: MachineResult[];
  summary: FlyPassSummary;
  /** True when every machine converged and the pass was not skipped. */
  converged: boolean;
  durationMs: number;
}

function summarize(machines: readonly MachineResult[]): FlyPassSummary {
  return {
    total: machines.length,
    converged: machines.filter((m) => m.outcome === 'converged').length,
    notConverged: machines.filter((m) => m.outcome === 'not-converged').length,
    skipped: machines.filter((m) => m.outcome === 'skipped').length,
    liveDelivered: machines.filter((m) => m.changed === 'live').length,
    durableWritten: machines.filter((m) => m.changed === 'durable').length,
    held: machines.filter((m) => m.held).length,
    deferred: machines.filter((m) => m.durable === 'deferred').length,
  };
}

function liveFromObservation(r: TargetResult | undefined): Exclude<LiveState, 'not-running'> {
  if (!r) return 'unreachable';
  if (r.outcome === 'converged') return 'ok';
  if (r.outcome === 'unreachable') return 'unreachable';
  return 'stale';
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : 'unknown error';
}

/** One pass over the app's machines. Throws only when the listing or the signal fails. */
export async function runFlyPass(o: FlyPassOptions): Promise<FlyPassResult> {
  const started = o.clock.now();
  const passAbort = AbortSignal.timeout(o.passDeadlineMs);
  const signal = AbortSignal.any([o.signal, passAbort]);
  const passEnds = started + o.passDeadlineMs;
  const log = o.log.child({ component: 'fly-loop' });
  const want = desired({ envVar: o.envVar, delivery: o.delivery }, o.key, o.token);
  const base = {
    app: o.app,
    dryRun: o.dryRun,
    keyVersion: o.key.version,
    envVar: o.envVar,
    delivery: o.delivery,
    desiredHash: want.envHash,
    maxChanges: o.maxChanges,
  };

  const listed = fleetMachines(await o.fly.listMachines(o.app, { signal }));
  const deploy = detectDeploy(listed);
  const skeleton = (m: Machine, message: string): MachineResult => ({
    id: m.id,
    name: m.name ?? null,
    state: m.state,
    region: m.region ?? null,
    url: null,
    durable: 'deferred',
    durableHash: configFingerprint(m.config, o.envVar, o.token),
    live: 'not-running',
    action: 'none',
    planned: 'none',
    held: false,
    changed: null,
    outcome: 'skipped',
    message,
    observed: null,
    delivered: null,
  });
  if (deploy.deploying) {
    log.info({ reasons: deploy.reasons }, 'App is mid-deploy; skipping this pass');
    const machines = listed.map((m) => skeleton(m, 'app is mid-deploy; pass skipped'));
    return {
      ...base,
      status: 'deploying',
      deploy,
      machines,
      summary: summarize(machines),
      converged: false,
      durationMs: o.clock.now() - started,
    };
  }

  // Observe: the reconciler's own pipeline in dry-run mode (GET /_kilo/state only).
  const targetOpts: TargetOptions = {
    port: o.controllerPort,
    token: o.token,
    timeoutMs: o.controllerTimeoutMs,
    ...(o.client ? { client: o.client } : {}),
  };
  const byId = new Map<string, MachineTarget>();
  for (const m of listed) if (m.state === 'started') byId.set(m.id, machineTarget(m, targetOpts));
  const targets: Target[] = [];
  for (const t of byId.values()) if ('target' in t) targets.push(t.target);
  const passOpts = {
    key: o.key,
    envVar: o.envVar,
    delivery: o.delivery,
    rollout: o.rollout,
    clock: o.clock,
    log: o.log,
    retry: o.retry,
    deadlineMs: o.deadlineMs,
    pollIntervalMs: o.pollIntervalMs,
  };
  const observed = new Map<string, TargetResult>();
  const observation = await runPass(targets, { ...passOpts, dryRun: true, signal });
  for (const r of observation.targets) observed.set(r.name, r);

  const inputs: MachineInput[] = listed.map((m) => {
    const t = byId.get(m.id);
    return {
      id: m.id,
      state: m.state,
      durable: configMatches(m.config, o.envVar, o.token, want.envHash) ? 'ok' : 'differs',
      live:
        m.state !== 'started'
          ? null
          : t && 'addressError' in t
            ? 'no-address'
            : liveFromObservation(observed.get(m.id)),
      liveFixable: (() => {
        const seen = observed.get(m.id);
        return !seen || needsPatch(seen.actions) || seen.actions.some((a) => a.type === 'wait-for-ready');
      })(),
    };
  });
  const plans = planMachines(inputs, { maxChanges: o.maxChanges });
  const results = new Map<string, MachineResult>();
  for (const [i, m] of listed.entries()) {
    const p = plans[i]!;
    const t = byId.get(m.id);
    const observedResult = observed.get(m.id) ?? null;
    results.set(m.id, {
      ...skeleton(m, p.reason),
      url: t && 'target' in t ? t.target.url : null,
      durable: p.durable,
      live: p.live,
      planned: p.action,
      held: p.held,
      message:
        p.live === 'stale' && observedResult
          ? `${p.reason}: ${observedResult.message}`
          : p.live === 'unreachable' && observedResult
            ? `${p.reason}: ${observedResult.message}`
            : t && 'addressError' in t
              ? t.addressError
              : p.reason,
      observed: observedResult,
      outcome: 'not-converged',
    });
  }
  const finish = (status: PassStatus): FlyPassResult => {
    const machines = listed.map((m) => {
      const r = results.get(m.id)!;
      if (r.outcome !== 'skipped') {
        r.outcome = machineConverged(r.durable, r.live, r.state, o.requireDurable)
          ? 'converged'
          : 'not-converged';
      }
      return r;
    });
    const summary = summarize(machines);
    return {
      ...base,
      status,
      deploy,
      machines,
      summary,
      converged: status === 'done' && summary.converged === summary.total,
      durationMs: o.clock.now() - started,
    };
  };
  if (o.dryRun) return finish('done');

  try {
    // Durable writes: machines that are not running, `skip_launch`, under their lease.
    const writes = plans.filter((p) => p.action === 'durable');
    await mapLimit(writes, Math.max(1, Math.min(o.rollout.concurrency, 4)), async (p) => {
      const r = results.get(p.id)!;
      r.action = 'durable';
      const w = await writeDurable({
        fly: o.fly,
        app: o.app,
        machineId: p.id,
        envVar: o.envVar,
        key: o.key.key,
        token: o.token,
        desiredHash: want.envHash,
        leaseTtlSeconds: leaseTtl(passEnds, o.clock.now()),
        signal,
        log,
      });
      if (w.status === 'written' || w.status === 'already') {
        r.durable = 'ok';
        r.durableHash = want.envHash;
        if (w.status === 'written') r.changed = 'durable';
        r.message = w.message;
      } else if (w.status === 'lease-held' || w.status === 'state-changed') {
        r.outcome = 'skipped';
        r.message = `${w.message}; next pass`;
      } else {
        r.message = `config write failed: ${w.message}; next pass`;
      }
    });

    // Live deliveries: take each machine's lease, re-read it, and deliver through its controller.
    const lives = plans.filter((p) => p.action === 'live');
    const leased: Array<{ id: string; nonce: string; target: Target }> = [];
    try {
      await mapLimit(lives, Math.max(1, Math.min(o.rollout.concurrency, 4)), async (p) => {
        const r = results.get(p.id)!;
        const t = byId.get(p.id);
        if (!t || !('target' in t)) return;
        let nonce: string;
        try {
          nonce = (
            await o.fly.acquireLease(o.app, p.id, {
              ttlSeconds: leaseTtl(passEnds, o.clock.now()),
              description: 'keyroll: deliver rotated key to the running gateway',
              signal,
            })
          ).nonce;
        } catch (err) {
          if (isLeaseHeld(err)) {
            const owner = await leaseOwner(o.fly, o.app, p.id, signal);
            r.outcome = 'skipped';
            r.message = `lease held by ${owner ?? 'another client'}; not delivered, next pass`;
            log.info({ machine: p.id, owner }, 'Machine lease held by someone else; skipping it this pass');
            return;
          }
          signal.throwIfAborted();
          r.message = `could not take the machine lease: ${errorText(err)}; next pass`;
          return;
        }
        try {
          const fresh = await o.fly.getMachine(o.app, p.id, { signal });
          if (fresh.state !== 'started') {
            r.state = fresh.state;
            r.live = 'not-running';
            r.outcome = 'skipped';
            r.message = `machine became ${fresh.state} during the pass; not delivered, next pass`;
            log.info({ machine: p.id, state: fresh.state }, 'Machine stopped mid-pass; skipping it');
            await releaseQuietly(o.fly, o.app, p.id, nonce, log);
            return;
          }
        } catch (err) {
          await releaseQuietly(o.fly, o.app, p.id, nonce, log);
          signal.throwIfAborted();
          r.message = `could not re-read the machine: ${errorText(err)}; next pass`;
          return;
        }
        leased.push({ id: p.id, nonce, target: t.target });
      });
      for (const l of leased) results.get(l.id)!.action = 'live';
      if (leased.length > 0) {
        await runPass(
          leased.map((l) => l.target),
          {
            ...passOpts,
            dryRun: false,
            signal,
            onResult: (d) => {
              const r = results.get(d.name)!;
              r.delivered = d;
              if (d.patched) r.changed = 'live';
              r.live =
                d.outcome === 'converged' ? 'ok' : d.outcome === 'unreachable' ? 'unreachable' : 'stale';
              r.message =
                d.outcome === 'converged'
                  ? 'delivered through the controller and verified'
                  : `live delivery not proven: ${d.message}; next pass`;
            },
          },
        );
      }
    } finally {
      await Promise.all(leased.map((l) => releaseQuietly(o.fly, o.app, l.id, l.nonce, log)));
    }
  } catch (err) {
    if (o.signal.aborted || !passAbort.aborted) throw err;
    log.warn({ deadlineMs: o.passDeadlineMs }, 'Pass deadline reached; the rest waits for the next pass');
    for (const r of results.values()) {
      if (r.action !== 'none' && r.changed === null && r.outcome !== 'skipped' && !r.delivered) {
        r.message = `pass deadline (${Math.round(o.passDeadlineMs / 1000)} s) reached before this machine was proven; next pass`;
        if (r.action === 'live') r.live = 'stale';
      }
    }
    return finish('deadline');
  }
  return finish('done');
}

/** Lease TTL in whole seconds: what is left of the pass plus a margin, at least 30 s. */
function leaseTtl(passEnds: number, now: number): number {
  return Math.max(30, Math.ceil((passEnds - now) / 1000) + 30);
}

export interface LoopOptions {
  once: boolean;
  intervalMs: number;
  jitterMs: number;
  clock: Clock;
  signal: AbortSignal;
  /** Injected for tests; `Math.random` by default. */
  random?: () => number;
  /** Runs one pass (reading the key source afresh); throws on an error the pass could not report. */
  pass: () => Promise<FlyPassResult>;
  onPass: (r: FlyPassResult) => void;
  onError: (err: unknown) => void;
  log: Logger;
}

/** Pure: the wait before the next pass, `interval + random() * jitter`. */
export function nextDelay(intervalMs: number, jitterMs: number, random: () => number): number {
  return intervalMs + Math.floor(random() * jitterMs);
}

/**
 * Runs passes until `once` or the signal aborts. A failed pass is reported and retried at the next
 * tick (level-triggered: nothing is remembered between passes). Returns the last pass result, or
 * the last error when the last pass failed.
 */
export async function runLoop(o: LoopOptions): Promise<{ last: FlyPassResult | null; error: unknown }> {
  const random = o.random ?? Math.random;
  let last: FlyPassResult | null = null;
  let error: unknown = null;
  for (;;) {
    try {
      last = await o.pass();
      error = null;
      o.onPass(last);
    } catch (err) {
      if (o.signal.aborted) return { last, error: null };
      error = err;
      o.onError(err);
    }
    if (o.once || o.signal.aborted) return { last, error };
    const wait = nextDelay(o.intervalMs, o.jitterMs, random);
    o.log.debug({ waitMs: wait }, 'Next pass scheduled');
    try {
      await o.clock.sleep(wait, o.signal);
    } catch {
      return { last, error };
    }
  }
}
