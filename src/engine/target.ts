// Owns one target's steps: observeTarget → assess (pure plan + classify) → deliverAndVerify, and reconcileTarget, which chains them.

import type { ObservedState } from '../kilo-state.ts';
import { LOG_LEVELS, type Logger } from '../log.ts';
import type { ControllerClient, PatchResponse } from '../reconcile/controller-client.ts';
import { type Desired, type DesiredSpec, desired, shortHash } from '../reconcile/desired.ts';
import { type Action, classify, plan, type Verdict } from '../reconcile/plan.ts';
import { withRetry } from '../reconcile/retry.ts';
import type { KeyMaterial } from '../reconcile/sources/key-source.ts';
import { type Drift, reasonOf, status, type TargetReason } from '../reconcile/status.ts';
import type { PassEnv, RolloutGate } from './env.ts';

/** One in-pod controller to reconcile: where it is, its token (the fingerprints' HMAC key), its client. */
export interface Target {
  name: string;
  url: string;
  labels: Record<string, string>;
  token: string;
  client: ControllerClient;
}

/**
 * converged: the running gateway shows the desired key (already, or after this pass);
 * drift: a dry run (diff, paused rollout) found work to do; not-converged: a delivery or wait
 * ended without proof; unreachable: the controller could not be observed; skipped: the failure
 * budget was spent before this target's turn.
 */
export type Outcome = 'converged' | 'drift' | 'not-converged' | 'unreachable' | 'skipped';

export interface TargetResult {
  name: string;
  url: string;
  labels: Record<string, string>;
  outcome: Outcome;
  /** One line on why the target ended where it did. */
  message: string;
  /** A stable code for why it is not converged, when the drift has one (`KeyRejected`). */
  reason?: TargetReason;
  desired: Desired;
  before: ObservedState | null;
  after: ObservedState | null;
  actions: Action[];
  /** What still differs from the desired state at the end (empty when converged). */
  drift: Drift[];
  patched: boolean;
  patch: PatchResponse | null;
  /** POST attempts made (0 when nothing was sent). */
  attempts: number;
  durationMs: number;
}

/** What one target is reconciled to, and how. */
export interface TargetWork {
  key: KeyMaterial;
  spec: DesiredSpec;
  /**
   * The desired state for a target's token, when the caller keeps it: a pass over targets that
   * share a token computes its two HMACs once instead of once per target. Default: `desired()`.
   */
  desiredFor?: (token: string) => Desired;
  /** Observe and plan only: nothing is sent (diff, a paused rollout). */
  dryRun: boolean;
  env: PassEnv;
  gate: RolloutGate;
  /** When to look first after a delivery, learnt from this pass's earlier targets (runPass). */
  pace?: RestartPace;
}

/**
 * How soon after its patch was sent a target of this pass was first seen running the new key:
 * the shortest such time so far. A pass's gateways restart alike (one image, one key), so a target
 * polled any earlier than that after its patch would, most likely, still be restarting: its first
 * verifying observation waits until that long after its own patch was sent instead of starting at
 * once and then every poll interval. Counted from the send, not the answer: the gateway restarts
 * from when the controller got the patch, and on a busy pass the answer is read late by a varying
 * amount (counted from the answer, the shortest time came out up to a quarter short at 10,000
 * targets, and most first looks were one poll too early).
 * Scheduling only: a target is still converged only by an observation that shows the new key
 * running. The cost is bounded: a gateway that restarts faster than every earlier one of the pass
 * is seen up to the difference later (and lowers the figure for the rest).
 */
export class RestartPace {
  #shortest = Number.POSITIVE_INFINITY;
  /** How long after its patch was sent a delivered target first looks (0 until a target proved one). */
  get firstPollMs(): number {
    return Number.isFinite(this.#shortest) ? this.#shortest : 0;
  }
  /** A delivered target was proven by an observation started `ms` after its patch was sent. */
  proven(ms: number): void {
    if (ms < this.#shortest) this.#shortest = Math.max(0, ms);
  }
}

export type Observation = { ok: true; state: ObservedState } | { ok: false; error: string };

/** Step 1: `GET /_kilo/state`, retried under the env's policy. Throws only when the signal aborts. */
export function observeTarget(t: Target, env: PassEnv, log?: TargetLog): Promise<Observation> {
  // A promise chain, not an async function, and the target's logger made only if it logs: what
  // an observation in flight keeps alive is ≈0.3 KB less (BENCHMARKS.md, reconcile fleet, Session 9).
  return withRetry(
    () => t.client.getState(env.signal),
    env.retry,
    env.signal,
    (err, attempt) => warnLog(env, t, log)?.warn({ attempt, error: err.message }, 'Observe failed; retrying'),
  ).then(observed, (err: unknown) => {
    env.signal.throwIfAborted();
    warnLog(env, t, log)?.warn({ error: (err as Error).message }, 'Target unreachable');
    return { ok: false, error: (err as Error).message };
  });
}

const observed = (state: ObservedState): Observation => ({ ok: true, state });

/** The target's logger at warn: the caller's, or one made for a failure (most targets have none). */
const warnLog = (env: PassEnv, t: Target, log: TargetLog | undefined) => (log ?? targetLog(env, t))('warn');

/** A target as observed, with the plan and what the engine can do about it. */
export interface Assessment {
  want: Desired;
  before: ObservedState;
  actions: Action[];
  /** Drift of the observation (empty ⇔ in sync). */
  drift: Drift[];
  verdict: Verdict;
}

/** Step 2, pure: plan the actions, state the drift, classify. */
export function assess(want: Desired, before: ObservedState): Assessment {
  const actions = plan(want, before);
  return { want, before, actions, drift: status(want, before).drift, verdict: classify(actions) };
}

type Fields = Pick<TargetResult, 'outcome' | 'message' | 'before' | 'after' | 'actions' | 'drift'> &
  Partial<Pick<TargetResult, 'patched' | 'patch' | 'attempts'>>;

function resultOf(t: Target, want: Desired, started: number, env: PassEnv, r: Fields): TargetResult {
  const reason = r.outcome === 'converged' ? undefined : reasonOf(r.drift);
  return {
    name: t.name,
    url: t.url,
    labels: t.labels,
    desired: want,
    patched: false,
    patch: null,
    attempts: 0,
    ...r,
    ...(reason ? { reason } : {}),
    durationMs: env.clock.now() - started,
  };
}

/** A target's logger for one level, or undefined when that level is off. */
export type TargetLog = (level: 'info' | 'warn') => Logger | undefined;

/**
 * The target's child logger, made on first use at an enabled level: a child logger costs more than
 * the rest of a converged target's handling, and most targets of a pass log nothing at the
 * levels drivers run at.
 */
function targetLog(env: PassEnv, t: Target): TargetLog {
  let log: Logger | undefined;
  return (level) => {
    if (LOG_LEVELS.indexOf(level) < LOG_LEVELS.indexOf(env.log.level)) return undefined;
    log ??= env.log.child({ component: 'reconcile', target: t.name });
    return log;
  };
}

/** An inspected target: its dry-run result, and the assessment when it could be observed. */
export interface Inspection {
  result: TargetResult;
  assessment: Assessment | null;
}

/** The result of a target that could not be observed. */
function unreachable(t: Target, want: Desired, error: string, started: number, env: PassEnv): TargetResult {
  return resultOf(t, want, started, env, {
    outcome: 'unreachable',
    message: `cannot observe: ${error}`,
    before: null,
    after: null,
    actions: [],
    drift: [],
  });
}

/** The dry-run result of an assessed target: converged when in sync, else its drift. */
function inspected(t: Target, a: Assessment, started: number, env: PassEnv): TargetResult {
  const inSync = a.verdict === 'in-sync';
  return resultOf(t, a.want, started, env, {
    outcome: inSync ? 'converged' : 'drift',
    message: inSync ? 'in sync' : a.drift.map((d) => d.message).join('; '),
    before: a.before,
    after: inSync ? a.before : null,
    actions: a.actions,
    drift: a.drift,
  });
}

/**
 * Steps 1 and 2 (observe, assess) as a dry-run result: converged, drift or unreachable. Sends
 * nothing but `GET /_kilo/state`; what `diff` reports and what every driver decides from.
 */
export async function inspectTarget(
  t: Target,
  want: Desired,
  env: PassEnv,
  started = env.clock.now(),
): Promise<Inspection> {
  const observation = await observeTarget(t, env);
  if (!observation.ok)
    return { result: unreachable(t, want, observation.error, started, env), assessment: null };
  const a = assess(want, observation.state);
  return { result: inspected(t, a, started, env), assessment: a };
}

/**
 * One target's pass: observe and assess, then (unless a dry run) act on the verdict. A converged
 * target gets nothing but `GET /_kilo/state`. (inspectTarget's steps, without building the
 * dry-run result a target that is acted on would drop.)
 */
export async function reconcileTarget(t: Target, w: TargetWork): Promise<TargetResult> {
  const started = w.env.clock.now();
  const want = w.desiredFor ? w.desiredFor(t.token) : desired(w.spec, w.key, t.token);
  w.gate.onPhase?.(t.name, 'observing');
  const observation = await observeTarget(t, w.env);
  if (!observation.ok) return unreachable(t, want, observation.error, started, w.env);
  const a = assess(want, observation.state);
  if (a.verdict === 'in-sync' || w.dryRun) return inspected(t, a, started, w.env);
  if (a.verdict === 'unfixable') {
    // Nothing a patch can fix (a delivery-mode mismatch, an unreadable profile, a rejected
    // desired key): report, touch nothing.
    return resultOf(t, want, started, w.env, {
      outcome: 'not-converged',
      message: a.actions.map((x) => x.reason).join('; '),
      before: a.before,
      after: a.before,
      actions: a.actions,
      drift: a.drift,
    });
  }
  return deliverAndVerify(t, a, w, started);
}

/**
 * Step 3 for a `deliverable` or `waiting` target: take a restart slot (restart mode), patch under
 * the failure budget, then re-observe until the running gateway proves the desired state or the
 * deadline passes. Only a delivery of this pass that did not verify spends budget.
 */
export async function deliverAndVerify(
  t: Target,
  a: Assessment,
  w: Pick<TargetWork, 'key' | 'env' | 'gate' | 'pace'>,
  started = w.env.clock.now(),
): Promise<TargetResult> {
  const { env, gate } = w;
  const patching = a.verdict === 'deliverable';
  if (patching && gate.budget.exhausted) return budgetSpent(t, a, started, w);
  const release =
    patching && a.want.delivery === 'restart' ? await gate.unavailable.acquire(env.signal) : null;
  try {
    // Re-check after the wait for a restart slot: other targets may have spent the budget meanwhile.
    if (patching && gate.budget.exhausted) return budgetSpent(t, a, started, w);
    const deadline = env.clock.now() + env.deadlineMs;
    const log = targetLog(env, t);
    let sent: Delivery | null = null;
    if (patching) {
      const d = await deliver(t, a, w, log, deadline);
      if ('failed' in d) return resultOf(t, a.want, started, env, d.failed);
      sent = d;
    }
    return await verify(t, a, w, log, sent, deadline, started);
  } finally {
    release?.();
  }
}

function budgetSpent(
  t: Target,
  a: Assessment,
  started: number,
  w: Pick<TargetWork, 'env' | 'gate'>,
): TargetResult {
  const { budget } = w.gate;
  return resultOf(t, a.want, started, w.env, {
    outcome: 'skipped',
    message: `failure budget spent (${budget.failures}/${budget.limit}); not delivered`,
    before: a.before,
    after: a.before,
    actions: a.actions,
    drift: a.drift,
  });
}

/**
 * A patch the controller accepted: its answer, the attempts it took, when the last one was sent,
 * and the state read sent with it (`patchEnvThenState`), or null.
 */
interface Delivery {
  patch: PatchResponse;
  attempts: number;
  sentAt: number;
  read: Promise<ObservedState> | null;
}

/**
 * The patch under the retry policy; a failure spends budget and is the target's result. To a
 * controller that holds a state read (`controller.waitMaxMs`) a restart's first attempt goes with
 * that read written behind it (ControllerClient.patchEnvThenState): one write and one turn fewer
 * per target, and the read waits at the controller from the start of the restart. A retry sends
 * the patch alone.
 */
async function deliver(
  t: Target,
  a: Assessment,
  w: Pick<TargetWork, 'key' | 'env' | 'gate'>,
  log: TargetLog,
  deadline: number,
): Promise<Delivery | { failed: Fields }> {
  const { env, gate } = w;
  const { want, before } = a;
  gate.onPhase?.(t.name, 'delivering');
  const waitMaxMs = before.controller.waitMaxMs ?? 0;
  const paired = want.delivery === 'restart' && waitMaxMs > 0 && t.client.patchEnvThenState !== undefined;
  let attempts = 0;
  let sentAt = env.clock.now();
  let read: Promise<ObservedState> | null = null;
  let patch: PatchResponse;
  try {
    patch = await withRetry(
      (attempt) => {
        attempts = attempt;
        sentAt = env.clock.now();
        const vars = { [want.envVar]: w.key.key };
        if (!paired || attempt > 1) {
          read = null;
          return t.client.patchEnv(vars, want.version, env.signal);
        }
        const wait = { ms: Math.min(waitMaxMs, deadline - sentAt), pid: before.gateway.pid ?? null };
        const sent = t.client.patchEnvThenState!(vars, want.version, wait, env.signal);
        read = sent.state;
        return sent.patch;
      },
      env.retry,
      env.signal,
      (err, attempt) => log('warn')?.warn({ attempt, error: err.message }, 'Patch failed; retrying'),
    );
  } catch (err) {
    env.signal.throwIfAborted();
    gate.budget.record();
    log('warn')?.warn({ attempts, error: (err as Error).message }, 'Key delivery failed');
    return {
      failed: {
        outcome: 'not-converged',
        message: `delivery failed after ${attempts} attempt(s): ${(err as Error).message}`,
        before,
        after: null,
        actions: a.actions,
        drift: a.drift,
        attempts,
      },
    };
  }
  log('info')?.info(
    {
      keyHash: shortHash(want.delivery === 'file' ? want.fileHash : want.envHash),
      version: want.version,
      signaled: patch.signaled,
      migratedProfiles: patch.migratedProfiles,
      pidBefore: before.gateway.pid ?? null,
    },
    'Delivered key; verifying',
  );
  return { patch, attempts, sentAt, read };
}

/**
 * Re-observes until the running gateway proves the desired state or `deadline` passes. `sent`:
 * this pass's accepted patch, or null when the target only waits (for its gateway to be ready).
 */
async function verify(
  t: Target,
  a: Assessment,
  w: Pick<TargetWork, 'env' | 'gate' | 'pace'>,
  log: TargetLog,
  sent: Delivery | null,
  deadline: number,
  started: number,
): Promise<TargetResult> {
  const { env, gate } = w;
  const { want, before } = a;
  const patching = sent !== null;
  gate.onPhase?.(t.name, patching ? 'verifying' : 'waiting');
  const vctx = { patched: patching, pidBefore: before.gateway.pid ?? null };
  const result = (r: Pick<Fields, 'outcome' | 'message' | 'after' | 'drift'>) =>
    resultOf(t, want, started, env, {
      ...r,
      before,
      actions: a.actions,
      patched: patching,
      patch: sent?.patch ?? null,
      attempts: sent?.attempts ?? 0,
    });
  let last: ObservedState | null = null;
  let lastDrift: Drift[] = a.drift;
  let lastError: string | null = null;
  // A controller that holds a state read until its gateway is ready (`controller.waitMaxMs`,
  // src/kilo-state.ts) is asked so at once: the proof arrives when the new gateway serves, with
  // no polling. Reads still start at most one per poll interval (a read whose wait ran out is
  // asked again at once; one answered early but unproven waits out the interval). Any other
  // controller is polled, its first look paced by this pass's restarts (RestartPace).
  const waitMaxMs = before.controller.waitMaxMs ?? 0;
  const waitPid = patching && want.delivery === 'restart' ? vctx.pidBefore : null;
  const patchedAt = env.clock.now();
  const firstPoll =
    sent && w.pace && waitMaxMs === 0
      ? Math.min(w.pace.firstPollMs - (patchedAt - sent.sentAt), deadline - patchedAt)
      : 0;
  if (firstPoll > 0) await env.clock.sleep(firstPoll, env.signal);
  // The first read may be on its way already, written behind the patch (Delivery.read).
  let early = sent?.read ?? null;
  for (;;) {
    const asked = early && sent ? sent.sentAt : env.clock.now();
    const waitMs = Math.min(waitMaxMs, deadline - asked);
    try {
      const read =
        early ?? t.client.getState(env.signal, waitMs > 0 ? { ms: waitMs, pid: waitPid } : undefined);
      early = null;
      last = await read;
      lastError = null;
      const st = status(want, last, vctx);
      if (st.converged) {
        if (sent && waitMs <= 0) w.pace?.proven(asked - sent.sentAt);
        log('info')?.info({ pid: last.gateway.pid ?? null, pidBefore: vctx.pidBefore }, 'Target converged');
        return result({
          outcome: 'converged',
          message: patching ? 'delivered and verified' : 'gateway became ready',
          after: last,
          drift: [],
        });
      }
      lastDrift = st.drift;
    } catch (err) {
      env.signal.throwIfAborted();
      lastError = (err as Error).message;
    }
    const left = deadline - env.clock.now();
    if (left <= 0) break;
    const pause = waitMs > 0 ? env.pollIntervalMs - (env.clock.now() - asked) : env.pollIntervalMs;
    if (pause > 0) await env.clock.sleep(Math.min(pause, left), env.signal);
  }
  // Only a delivery of this pass that did not verify is evidence against the rollout; a gateway
  // that was already failing before we touched it is reported, but spends no budget.
  if (patching) gate.budget.record();
  const why = [
    ...lastDrift.map((d) => d.message),
    ...(lastError ? [`last observation failed: ${lastError}`] : []),
  ].join('; ');
  const afterPatch = sent ? ` after the patch (controller answered signaled:${sent.patch.signaled})` : '';
  log('warn')?.warn({ drift: lastDrift.map((d) => d.code) }, 'Target did not converge before the deadline');
  return result({
    outcome: 'not-converged',
    message: `not converged within ${Math.round(env.deadlineMs / 1000)} s${afterPatch}: ${why}`,
    after: last,
    drift: lastDrift,
  });
}
