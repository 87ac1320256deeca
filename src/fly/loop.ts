// Owns the Fly machines loop: one pass = list → skip if mid-deploy → observe every started
// machine's controller → plan one action per machine → durable writes and live deliveries under
// machine leases → verify. Each step is the engine's (inspectTarget, reconcileTarget); the loop
// that repeats passes is src/engine/run-loop.ts.

import { type PassEnv, rolloutGate } from '../engine/env.ts';
import {
  type Inspection,
  inspectTarget,
  reconcileTarget,
  type Target,
  type TargetResult,
} from '../engine/target.ts';
import { errorMessage } from '../errors.ts';
import { type Delivery, type DesiredSpec, desired } from '../reconcile/desired.ts';
import { mapLimit } from '../reconcile/limits.ts';
import type { Progress } from '../reconcile/progress.ts';
import type { KeyMaterial } from '../reconcile/sources/key-source.ts';
import type { Rollout } from '../reconcile/targets.ts';
import type { FlyClient } from './client.ts';
import { type DeployState, detectDeploy } from './deploy.ts';
import {
  configFingerprint,
  configMatches,
  leaseOwner,
  releaseQuietly,
  writeAppSecret,
  writeDurable,
} from './durable.ts';
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
  spec: DesiredSpec;
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
  /** `deadlineMs`: per machine, live delivery plus verification. */
  env: PassEnv;
  /** The whole pass; what is unfinished by then is reported and left to the next pass. */
  passDeadlineMs: number;
  /** Test seam: how to reach a controller (default HTTP). */
  client?: TargetOptions['client'];
  /** The pass's live progress, made once the machines are listed (`keyroll fly` on a TTY). */
  progress?: (total: number) => Progress;
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

function liveFromObservation(seen: Inspection | undefined): Exclude<LiveState, 'not-running'> {
  if (!seen?.assessment) return 'unreachable';
  return seen.assessment.verdict === 'in-sync' ? 'ok' : 'stale';
}

/** A live delivery can help: the engine's verdict is `deliverable` or `waiting` (an unobserved machine: maybe). */
function liveFixable(seen: Inspection | undefined): boolean {
  if (!seen) return true;
  const verdict = seen.assessment?.verdict;
  return verdict === 'deliverable' || verdict === 'waiting';
}

/** One pass over the app's machines. Throws only when the listing or the signal fails. */
export async function runFlyPass(o: FlyPassOptions): Promise<FlyPassResult> {
  const clock = o.env.clock;
  const started = clock.now();
  const passAbort = AbortSignal.timeout(o.passDeadlineMs);
  const signal = AbortSignal.any([o.env.signal, passAbort]);
  const env: PassEnv = { ...o.env, signal };
  const passEnds = started + o.passDeadlineMs;
  const log = o.env.log.child({ component: 'fly-loop' });
  const { envVar } = o.spec;
  const want = desired(o.spec, o.key, o.token);
  const base = {
    app: o.app,
    dryRun: o.dryRun,
    keyVersion: o.key.version,
    envVar,
    delivery: o.spec.delivery,
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
    durableHash: configFingerprint(m.config, envVar, o.token),
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
      durationMs: clock.now() - started,
    };
  }

  const progress = machineProgress(o.progress?.(listed.length));
  // Observe: the engine's observe and assess steps (GET /_kilo/state only) on every started machine.
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
  const observed = new Map<string, Inspection>();
  await mapLimit(targets, o.rollout.concurrency, async (t) => {
    progress.phase(t.name, 'observing');
    observed.set(t.name, await inspectTarget(t, want, env));
  });

  const inputs: MachineInput[] = listed.map((m) => {
    const t = byId.get(m.id);
    return {
      id: m.id,
      state: m.state,
      durable: configMatches(m.config, envVar, o.token, want.envHash) ? 'ok' : 'differs',
      live:
        m.state !== 'started'
          ? null
          : t && 'addressError' in t
            ? 'no-address'
            : liveFromObservation(observed.get(m.id)),
      liveFixable: liveFixable(observed.get(m.id)),
    };
  });
  const plans = planMachines(inputs, { maxChanges: o.maxChanges });
  const results = new Map<string, MachineResult>();
  for (const [i, m] of listed.entries()) {
    const p = plans[i]!;
    const t = byId.get(m.id);
    const observedResult = observed.get(m.id)?.result ?? null;
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
    if (o.dryRun || p.action === 'none') {
      progress.done(m.id, machineConverged(p.durable, p.live, m.state, o.requireDurable));
    }
  }
  const finish = (status: PassStatus): FlyPassResult => {
    const machines = listed.map((m) => {
      const r = results.get(m.id)!;
      if (r.outcome !== 'skipped') {
        r.outcome = machineConverged(r.durable, r.live, r.state, o.requireDurable)
          ? 'converged'
          : 'not-converged';
      }
      progress.done(m.id, r.outcome === 'converged');
      return r;
    });
    progress.finish();
    const summary = summarize(machines);
    return {
      ...base,
      status,
      deploy,
      machines,
      summary,
      converged: status === 'done' && summary.converged === summary.total,
      durationMs: clock.now() - started,
    };
  };
  if (o.dryRun) return finish('done');
  // The key's durable copy is the app secret (staged: no machine restarts), set before any config
  // write or live delivery (docs/fly.md); no machine config holds the key.
  await writeAppSecret({
    fly: o.fly,
    app: o.app,
    envVar,
    key: o.key.key,
    desiredHash: want.envHash,
    provenLive: plans.some((p) => p.live === 'ok') && !plans.some((p) => p.live === 'stale'),
    signal,
    log,
  });

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
        envVar,
        key: o.key.key,
        token: o.token,
        desiredHash: want.envHash,
        leaseTtlSeconds: leaseTtl(passEnds, clock.now()),
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
      progress.done(p.id, r.durable === 'ok' && r.outcome !== 'skipped');
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
              ttlSeconds: leaseTtl(passEnds, clock.now()),
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
          r.message = `could not take the machine lease: ${errorMessage(err)}; next pass`;
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
          r.message = `could not re-read the machine: ${errorMessage(err)}; next pass`;
          return;
        }
        leased.push({ id: p.id, nonce, target: t.target });
      });
      for (const l of leased) results.get(l.id)!.action = 'live';
      // Under the lease: the engine's target pipeline (observe again, plan, deliverAndVerify).
      const work = {
        key: o.key,
        spec: o.spec,
        dryRun: o.rollout.paused,
        env,
        gate: rolloutGate(o.rollout, progress.phase),
      };
      await mapLimit(leased, o.rollout.concurrency, async (l) => {
        const d = await reconcileTarget(l.target, work);
        progress.result(d);
        const r = results.get(d.name)!;
        r.delivered = d;
        if (d.patched) r.changed = 'live';
        r.live = d.outcome === 'converged' ? 'ok' : d.outcome === 'unreachable' ? 'unreachable' : 'stale';
        r.message =
          d.outcome === 'converged'
            ? 'delivered through the controller and verified'
            : `live delivery not proven: ${d.message}; next pass`;
      });
    } finally {
      await Promise.all(leased.map((l) => releaseQuietly(o.fly, o.app, l.id, l.nonce, log)));
    }
  } catch (err) {
    if (o.env.signal.aborted || !passAbort.aborted) throw err;
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

/**
 * The pass's progress with each machine counted once, whichever step finishes it first (a machine
 * the plan leaves alone, a config write, a live delivery, or the end of the pass for the rest).
 */
function machineProgress(p: Progress | undefined): Progress {
  const counted = new Set<string>();
  const once = (name: string) => !counted.has(name) && counted.add(name) !== undefined;
  return {
    phase: (name, phase) => p?.phase(name, phase),
    result: (r) => {
      if (once(r.name)) p?.result(r);
    },
    done: (name, converged) => {
      if (once(name)) p?.done(name, converged);
    },
    finish: () => p?.finish(),
  };
}

/** Lease TTL in whole seconds: what is left of the pass plus a margin, at least 30 s. */
function leaseTtl(passEnds: number, now: number): number {
  return Math.max(30, Math.ceil((passEnds - now) / 1000) + 30);
}
