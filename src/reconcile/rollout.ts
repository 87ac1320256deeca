// Owns one pass over a fleet: per-target pipelines under concurrency, maxUnavailable and a failure budget.
import type { Logger } from '../log.ts';
import type { Clock } from './clock.ts';
import type { Delivery } from './desired.ts';
import { FailureBudget, mapLimit, Semaphore } from './limits.ts';
import { type Phase, reconcileTarget, type Target, type TargetResult } from './reconcile-target.ts';
import type { RetryPolicy } from './retry.ts';
import type { KeyMaterial } from './sources/key-source.ts';
import type { Rollout } from './targets.ts';

export interface PassOptions {
  key: KeyMaterial;
  envVar: string;
  delivery: Delivery;
  rollout: Rollout;
  /** Dry run: observe and plan, send nothing (the `diff` command, or a paused rollout). */
  dryRun: boolean;
  clock: Clock;
  log: Logger;
  retry: RetryPolicy;
  deadlineMs: number;
  pollIntervalMs: number;
  signal: AbortSignal;
  onPhase?: (target: string, phase: Phase) => void;
  onResult?: (result: TargetResult) => void;
}

export interface PassSummary {
  total: number;
  converged: number;
  drift: number;
  notConverged: number;
  unreachable: number;
  skipped: number;
  /** Targets that got a POST this pass. */
  patched: number;
}

export interface PassResult {
  keyVersion: string;
  delivery: Delivery;
  dryRun: boolean;
  paused: boolean;
  summary: PassSummary;
  targets: TargetResult[];
  durationMs: number;
}

/** Pure: the counts a report and an exit code are computed from. */
export function summarize(results: readonly TargetResult[]): PassSummary {
  const count = (o: TargetResult['outcome']) => results.filter((r) => r.outcome === o).length;
  return {
    total: results.length,
    converged: count('converged'),
    drift: count('drift'),
    notConverged: count('not-converged'),
    unreachable: count('unreachable'),
    skipped: count('skipped'),
    patched: results.filter((r) => r.patched).length,
  };
}

/**
 * One level-triggered pass. Every target is observed afresh; a converged target gets no request
 * beyond `GET /_kilo/state`, so running a pass twice restarts nothing the first pass finished.
 */
export async function runPass(targets: readonly Target[], opts: PassOptions): Promise<PassResult> {
  const started = opts.clock.now();
  const dryRun = opts.dryRun || opts.rollout.paused;
  const ctx = {
    key: opts.key,
    spec: { envVar: opts.envVar, delivery: opts.delivery },
    dryRun,
    clock: opts.clock,
    log: opts.log,
    retry: opts.retry,
    deadlineMs: opts.deadlineMs,
    pollIntervalMs: opts.pollIntervalMs,
    signal: opts.signal,
    budget: new FailureBudget(opts.rollout.failureBudget),
    unavailable: new Semaphore(opts.rollout.maxUnavailable),
    ...(opts.onPhase ? { onPhase: opts.onPhase } : {}),
  };
  const results = await mapLimit(targets, opts.rollout.concurrency, async (t) => {
    const r = await reconcileTarget(t, ctx);
    opts.onResult?.(r);
    return r;
  });
  return {
    keyVersion: opts.key.version,
    delivery: opts.delivery,
    dryRun,
    paused: opts.rollout.paused,
    summary: summarize(results),
    targets: results,
    durationMs: opts.clock.now() - started,
  };
}
