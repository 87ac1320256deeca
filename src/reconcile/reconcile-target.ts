// Owns one target's pass: observe → plan → apply → verify → status, with every step bounded.
import type { Logger } from '../log.ts';
import type { Clock } from './clock.ts';
import type { ControllerClient, PatchResponse } from './controller-client.ts';
import { type Desired, type DesiredSpec, desired, shortHash } from './desired.ts';
import type { FailureBudget, Semaphore } from './limits.ts';
import type { ObservedState } from './observed.ts';
import { type Action, needsPatch, plan } from './plan.ts';
import { type RetryPolicy, withRetry } from './retry.ts';
import type { KeyMaterial } from './sources/key-source.ts';
import { type Drift, reasonOf, status, type TargetReason } from './status.ts';

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

export interface Target {
  name: string;
  url: string;
  labels: Record<string, string>;
  token: string;
  client: ControllerClient;
}

export type Phase = 'observing' | 'delivering' | 'verifying' | 'waiting';

export interface PassContext {
  key: KeyMaterial;
  spec: DesiredSpec;
  dryRun: boolean;
  clock: Clock;
  log: Logger;
  retry: RetryPolicy;
  /** Per target: how long delivery plus verification may take before it counts as not converged. */
  deadlineMs: number;
  pollIntervalMs: number;
  signal: AbortSignal;
  budget: FailureBudget;
  /** Restart-mode deliveries hold a slot while their gateway restarts (maxUnavailable). */
  unavailable: Semaphore;
  onPhase?: (target: string, phase: Phase) => void;
}

export async function reconcileTarget(t: Target, ctx: PassContext): Promise<TargetResult> {
  const started = ctx.clock.now();
  const log = ctx.log.child({ component: 'reconcile', target: t.name });
  const want = desired(ctx.spec, ctx.key, t.token);
  const base = {
    name: t.name,
    url: t.url,
    labels: t.labels,
    desired: want,
    patched: false,
    patch: null,
    attempts: 0,
  };
  type Fields = Pick<TargetResult, 'outcome' | 'message' | 'before' | 'after' | 'actions' | 'drift'> &
    Partial<Pick<TargetResult, 'patched' | 'patch' | 'attempts'>>;
  const done = (r: Fields): TargetResult => {
    const reason = r.outcome === 'converged' ? undefined : reasonOf(r.drift);
    return { ...base, ...r, ...(reason ? { reason } : {}), durationMs: ctx.clock.now() - started };
  };

  ctx.onPhase?.(t.name, 'observing');
  let before: ObservedState;
  try {
    before = await withRetry(
      () => t.client.getState(ctx.signal),
      ctx.retry,
      ctx.signal,
      (err, attempt) => log.warn({ attempt, error: err.message }, 'Observe failed; retrying'),
    );
  } catch (err) {
    ctx.signal.throwIfAborted();
    log.warn({ error: (err as Error).message }, 'Target unreachable');
    return done({
      outcome: 'unreachable',
      message: `cannot observe: ${(err as Error).message}`,
      before: null,
      after: null,
      actions: [],
      drift: [],
    });
  }

  const actions = plan(want, before);
  const initial = status(want, before);
  if (initial.converged) {
    return done({ outcome: 'converged', message: 'in sync', before, after: before, actions, drift: [] });
  }
  if (ctx.dryRun) {
    return done({
      outcome: 'drift',
      message: initial.drift.map((d) => d.message).join('; '),
      before,
      after: null,
      actions,
      drift: initial.drift,
    });
  }
  const patching = needsPatch(actions);
  // A gateway that runs the desired key while the provider rejects it gains nothing by waiting:
  // readiness would not make the key valid; the next pass observes again.
  const waitOnly = actions.some((a) => a.type === 'wait-for-ready') && !reasonOf(initial.drift);
  if (!patching && !waitOnly) {
    // Nothing a patch can fix (a delivery-mode mismatch, an unreadable profile, a rejected
    // desired key): report, touch nothing.
    return done({
      outcome: 'not-converged',
      message: actions.map((a) => a.reason).join('; '),
      before,
      after: before,
      actions,
      drift: initial.drift,
    });
  }
  if (patching && ctx.budget.exhausted) {
    return done({
      outcome: 'skipped',
      message: `failure budget spent (${ctx.budget.failures}/${ctx.budget.limit}); not delivered`,
      before,
      after: before,
      actions,
      drift: initial.drift,
    });
  }

  const release =
    patching && want.delivery === 'restart' ? await ctx.unavailable.acquire(ctx.signal) : () => undefined;
  try {
    // Re-check after the wait for a restart slot: other targets may have spent the budget meanwhile.
    if (patching && ctx.budget.exhausted) {
      return done({
        outcome: 'skipped',
        message: `failure budget spent (${ctx.budget.failures}/${ctx.budget.limit}); not delivered`,
        before,
        after: before,
        actions,
        drift: initial.drift,
      });
    }
    const deadline = ctx.clock.now() + ctx.deadlineMs;
    let patch: PatchResponse | null = null;
    let attempts = 0;
    if (patching) {
      ctx.onPhase?.(t.name, 'delivering');
      try {
        patch = await withRetry(
          (attempt) => {
            attempts = attempt;
            return t.client.patchEnv({ [want.envVar]: ctx.key.key }, want.version, ctx.signal);
          },
          ctx.retry,
          ctx.signal,
          (err, attempt) => log.warn({ attempt, error: err.message }, 'Patch failed; retrying'),
        );
      } catch (err) {
        ctx.signal.throwIfAborted();
        ctx.budget.record();
        log.warn({ attempts, error: (err as Error).message }, 'Key delivery failed');
        return done({
          outcome: 'not-converged',
          message: `delivery failed after ${attempts} attempt(s): ${(err as Error).message}`,
          before,
          after: null,
          actions,
          drift: initial.drift,
          attempts,
        });
      }
      log.info(
        {
          keyHash: shortHash(want.delivery === 'file' ? want.fileHash : want.envHash),
          version: want.version,
          signaled: patch.signaled,
          migratedProfiles: patch.migratedProfiles,
          pidBefore: before.gateway.pid ?? null,
        },
        'Delivered key; verifying',
      );
    }

    ctx.onPhase?.(t.name, patching ? 'verifying' : 'waiting');
    const vctx = { patched: patching, pidBefore: before.gateway.pid ?? null };
    let last: ObservedState | null = null;
    let lastDrift: Drift[] = initial.drift;
    let lastError: string | null = null;
    for (;;) {
      try {
        last = await t.client.getState(ctx.signal);
        lastError = null;
        const st = status(want, last, vctx);
        if (st.converged) {
          log.info({ pid: last.gateway.pid ?? null, pidBefore: vctx.pidBefore }, 'Target converged');
          return done({
            outcome: 'converged',
            message: patching ? 'delivered and verified' : 'gateway became ready',
            before,
            after: last,
            actions,
            drift: [],
            patched: patching,
            patch,
            attempts,
          });
        }
        lastDrift = st.drift;
      } catch (err) {
        ctx.signal.throwIfAborted();
        lastError = (err as Error).message;
      }
      const left = deadline - ctx.clock.now();
      if (left <= 0) break;
      await ctx.clock.sleep(Math.min(ctx.pollIntervalMs, left), ctx.signal);
    }
    // Only a delivery of this pass that did not verify is evidence against the rollout; a gateway
    // that was already failing before we touched it is reported, but spends no budget.
    if (patching) ctx.budget.record();
    const why = [
      ...lastDrift.map((d) => d.message),
      ...(lastError ? [`last observation failed: ${lastError}`] : []),
    ].join('; ');
    const after = patching
      ? ` after the patch (controller answered signaled:${patch?.signaled ?? false})`
      : '';
    log.warn({ drift: lastDrift.map((d) => d.code) }, 'Target did not converge before the deadline');
    return done({
      outcome: 'not-converged',
      message: `not converged within ${Math.round(ctx.deadlineMs / 1000)} s${after}: ${why}`,
      before,
      after: last,
      actions,
      drift: lastDrift,
      patched: patching,
      patch,
      attempts,
    });
  } finally {
    release();
  }
}
