// Owns one pass over a fleet: targets streamed through reconcileTarget under concurrency, maxUnavailable and a failure budget.
import { type Delivery, type Desired, type DesiredSpec, desired } from '../reconcile/desired.ts';
import { forEachLimit } from '../reconcile/limits.ts';
import type { KeyMaterial } from '../reconcile/sources/key-source.ts';
import type { Rollout } from '../reconcile/targets.ts';
import { type PassEnv, type Phase, rolloutGate } from './env.ts';
import { RestartPace, reconcileTarget, type Target, type TargetResult } from './target.ts';

export interface PassOptions {
  key: KeyMaterial;
  spec: DesiredSpec;
  rollout: Rollout;
  /** Dry run: observe and plan, send nothing (the `diff` command, or a paused rollout). */
  dryRun: boolean;
  env: PassEnv;
  onPhase?: (target: string, phase: Phase) => void;
  /** Every target's result, as it finishes (in completion order). */
  onResult?: (result: TargetResult) => void;
  /**
   * Keep every result in `PassResult.targets` (default). False: results go only to `onResult`
   * and the summary, so a pass over a very large fleet holds no more than the targets in flight.
   */
  keepResults?: boolean;
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
  /** Per target, in input order; empty when the pass ran with `keepResults: false`. */
  targets: TargetResult[];
  durationMs: number;
}

export function emptySummary(): PassSummary {
  return { total: 0, converged: 0, drift: 0, notConverged: 0, unreachable: 0, skipped: 0, patched: 0 };
}

/** Adds one result to a summary (in place). */
export function tally(s: PassSummary, r: TargetResult): PassSummary {
  s.total++;
  if (r.outcome === 'converged') s.converged++;
  else if (r.outcome === 'drift') s.drift++;
  else if (r.outcome === 'not-converged') s.notConverged++;
  else if (r.outcome === 'unreachable') s.unreachable++;
  else s.skipped++;
  if (r.patched) s.patched++;
  return s;
}

/** Pure: the counts a report and an exit code are computed from. */
export function summarize(results: readonly TargetResult[]): PassSummary {
  return results.reduce(tally, emptySummary());
}

/**
 * `fn` remembering its last answer: the targets of a pass mostly share one controller token, so
 * the desired fingerprints (two HMACs) are computed once per token run, not once per target.
 */
function lastByToken(fn: (token: string) => Desired): (token: string) => Desired {
  let last: { token: string; want: Desired } | null = null;
  return (token) => {
    if (last?.token !== token) last = { token, want: fn(token) };
    return last.want;
  };
}

/**
 * One level-triggered pass. Every target is observed afresh; a converged target gets no request
 * beyond `GET /_kilo/state`, so running a pass twice restarts nothing the first pass finished.
 * `targets` is consumed lazily, at most `rollout.concurrency` at a time.
 */
export async function runPass(targets: Iterable<Target>, opts: PassOptions): Promise<PassResult> {
  const started = opts.env.clock.now();
  const dryRun = opts.dryRun || opts.rollout.paused;
  const work = {
    key: opts.key,
    spec: opts.spec,
    desiredFor: lastByToken((token) => desired(opts.spec, opts.key, token)),
    dryRun,
    env: opts.env,
    gate: rolloutGate(opts.rollout, opts.onPhase),
    pace: new RestartPace(),
  };
  const keep = opts.keepResults ?? true;
  const kept: TargetResult[] = [];
  const summary = emptySummary();
  // A promise chain, not an async callback awaiting `.finally`: a target in flight keeps its
  // callback alive as long as it is in flight, and an async frame plus finally's promise and
  // closures cost ≈0.3 KB more of it (BENCHMARKS.md, reconcile fleet, Session 9).
  await forEachLimit(targets, opts.rollout.concurrency, (t, i) =>
    reconcileTarget(t, work).then(
      (r) => {
        t.client.closeIdle?.();
        tally(summary, r);
        if (keep) kept[i] = r;
        opts.onResult?.(r);
      },
      (err: unknown) => {
        t.client.closeIdle?.();
        throw err;
      },
    ),
  );
  return {
    keyVersion: opts.key.version,
    delivery: opts.spec.delivery,
    dryRun,
    paused: opts.rollout.paused,
    summary,
    targets: kept,
    durationMs: opts.env.clock.now() - started,
  };
}
