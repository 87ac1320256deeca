// Owns GatewayKey status, pure: computed from a pass result (or the reason there was none), compared before writing.

import type { PassResult } from '../engine/pass.ts';
import type { TargetResult } from '../engine/target.ts';
import { type Condition, type ConditionInput, rfc3339, setCondition } from './conditions.ts';
import type { GatewayKeyStatus, TargetStatus } from './gateway-key.ts';

/** The per-target list is a report, not an inventory: bounded so status stays small at any fleet size. */
export const MAX_TARGET_STATUSES = 20;
const MAX_MESSAGE = 500;

export type DegradedReason =
  | 'InvalidSpec'
  | 'SecretNotFound'
  | 'KeyNotFound'
  | 'InvalidKey'
  | 'InvalidVersionLabel'
  | 'TokenNotFound'
  | 'SourceUnavailable';

type ConditionSet = Array<Omit<ConditionInput, 'observedGeneration'>>;
/** [status, reason, message] of one condition. */
type Triple = readonly [ConditionInput['status'], string, string];

/** Ready, Progressing and Degraded (by default False/AsExpected) as condition inputs. */
function trio(
  ready: Triple,
  progressing: Triple,
  degraded: Triple = ['False', 'AsExpected', ''],
): ConditionSet {
  const c = (type: string, [status, reason, message]: Triple) => ({ type, status, reason, message });
  return [c('Ready', ready), c('Progressing', progressing), c('Degraded', degraded)];
}

function clip(s: string): string {
  return s.length > MAX_MESSAGE ? `${s.slice(0, MAX_MESSAGE - 1)}…` : s;
}

function apply(
  prev: readonly Condition[] | undefined,
  generation: number,
  now: Date,
  inputs: ReadonlyArray<Omit<ConditionInput, 'observedGeneration'>>,
): Condition[] {
  let out: Condition[] = [...(prev ?? [])];
  for (const c of inputs)
    out = setCondition(out, { ...c, message: clip(c.message), observedGeneration: generation }, now);
  return out;
}

/** Pure: one target's line in status. */
export function targetStatusOf(r: TargetResult): TargetStatus {
  const seen = r.after ?? r.before;
  const forms = [...new Set((seen?.profiles ?? []).map((p) => p.form))].sort();
  const pid = seen?.gateway.pid;
  return {
    name: r.name,
    // Omitted rather than null: a structural schema rejects null unless it says nullable.
    ...(typeof pid === 'number' ? { pid } : {}),
    form: forms.length === 0 ? 'none' : forms.join(','),
    converged: r.outcome === 'converged',
    message: r.outcome === 'converged' ? '' : clip(r.reason ? `${r.reason}: ${r.message}` : r.message),
  };
}

/** Pure: not-converged targets first (they are what a reader needs), then by name; at most MAX. */
export function boundedTargetStatuses(results: readonly TargetResult[]): TargetStatus[] {
  return results
    .map(targetStatusOf)
    .sort((a, b) => Number(a.converged) - Number(b.converged) || a.name.localeCompare(b.name))
    .slice(0, MAX_TARGET_STATUSES);
}

export interface Counts {
  total: number;
  converged: number;
  progressing: number;
  failed: number;
}

/** Pure: drift and skipped targets still have work coming; unreachable and not-converged ones failed. */
export function countsOf(results: readonly TargetResult[], total = results.length): Counts {
  const converged = results.filter((r) => r.outcome === 'converged').length;
  const failed = results.filter((r) => r.outcome === 'not-converged' || r.outcome === 'unreachable').length;
  return { total, converged, failed, progressing: total - converged - failed };
}

/** "a, b, c and 2 more": pod names, bounded. */
export function podNames(list: readonly string[], max = 5): string {
  return list.slice(0, max).join(', ') + (list.length > max ? ` and ${list.length - max} more` : '');
}

/** Targets whose provider rejects the desired key they run (reason KeyRejected). */
export function keyRejectedTargets(results: readonly TargetResult[]): TargetResult[] {
  return results.filter((r) => r.reason === 'KeyRejected');
}

/**
 * The KeyRejected message: the key version and the pods, no counts, so it stays the same pass
 * after pass while the same pods are affected (the per-target counts are in targetStatuses).
 */
export function keyRejectedMessage(version: string, results: readonly TargetResult[]): string {
  const rejected = keyRejectedTargets(results);
  const others = results.filter(
    (r) => r.reason !== 'KeyRejected' && (r.outcome === 'not-converged' || r.outcome === 'unreachable'),
  );
  return (
    `the provider rejects key version ${version} on ${rejected.length} pod(s): ${podNames(rejected.map((r) => r.name))}` +
    ' (the latest answers were 401 authentication_error, none accepted after); keyroll does not re-deliver a rejected key:' +
    ' put a key the provider accepts in the source Secret' +
    (others.length > 0 ? `; also not converged: ${podNames(others.map((r) => r.name))}` : '')
  );
}

function failedSummary(results: readonly TargetResult[]): string {
  const bad = results.filter((r) => r.outcome === 'not-converged' || r.outcome === 'unreachable');
  const shown = bad.slice(0, 3).map((r) => `${r.name}: ${r.message}`);
  return shown.join('; ') + (bad.length > 3 ? `; and ${bad.length - 3} more` : '');
}

/**
 * Pure: did this pass complete a rotation? Every target proves the desired version and keyroll
 * delivered it — in this pass, or (`deliveredEarlier`, known to the reconciler) in an earlier pass
 * of the same version whose targets converged only now.
 */
export function rotationCompleted(result: PassResult, deliveredEarlier = false): boolean {
  const counts = countsOf(result.targets);
  return (
    counts.total > 0 &&
    counts.converged === counts.total &&
    (deliveredEarlier || result.targets.some((r) => r.patched))
  );
}

/** Pure: the status after a completed pass. `rotated` sets lastRotationTime (see rotationCompleted). */
export function statusFromPass(
  prev: GatewayKeyStatus,
  generation: number,
  result: PassResult,
  now: Date,
  rotated = rotationCompleted(result),
): GatewayKeyStatus {
  const counts = countsOf(result.targets);
  const lastRotationTime = rotated ? rfc3339(now) : prev.lastRotationTime;
  const version = result.keyVersion;
  const runs = `${counts.converged}/${counts.total} targets run key version ${version}`;
  let conditions: ConditionSet;
  if (counts.total === 0) {
    conditions = trio(
      ['False', 'NoTargets', 'no ready pod matches spec.targets.selector'],
      ['False', 'NoTargets', 'nothing to roll out'],
    );
  } else if (counts.converged === counts.total) {
    conditions = trio(['True', 'Converged', runs], ['False', 'Converged', 'rollout complete']);
  } else if (keyRejectedTargets(result.targets).length > 0) {
    // Before the other failures: a refused key is what a human must fix, and retrying the same
    // key cannot; the reconciler keeps observing, so a later accepted response clears it.
    conditions = trio(
      [
        'False',
        'KeyRejected',
        `${runs}; the provider rejects it on ${keyRejectedTargets(result.targets).length} pod(s)`,
      ],
      [
        'False',
        'KeyRejected',
        'not re-delivering a key the provider rejects; waiting for an accepted response or a new key',
      ],
      ['True', 'KeyRejected', keyRejectedMessage(version, result.targets)],
    );
  } else if (counts.failed > 0) {
    const unreachable = result.targets.some((r) => r.outcome === 'unreachable');
    const reason = result.targets.some((r) => r.outcome === 'not-converged')
      ? 'DeliveryFailed'
      : 'TargetsUnreachable';
    conditions = trio(
      ['False', 'TargetsNotConverged', runs],
      [
        'False',
        'RetryPending',
        `${counts.failed} target(s) failed${unreachable ? ' or were unreachable' : ''}; retrying with backoff`,
      ],
      ['True', reason, failedSummary(result.targets)],
    );
  } else if (result.paused || result.dryRun) {
    conditions = trio(
      ['False', 'RolloutPaused', `${runs}; spec.rollout.paused is true`],
      ['False', 'RolloutPaused', 'rollout paused'],
    );
  } else {
    // Skipped targets (failure budget) or gateways still coming up: more work on the next pass.
    conditions = trio(
      ['False', 'RolloutInProgress', runs],
      ['True', 'DeliveringKey', `${counts.progressing} target(s) still to converge`],
    );
  }
  return {
    observedGeneration: generation,
    desiredVersion: version,
    ...(lastRotationTime ? { lastRotationTime } : {}),
    targets: counts,
    targetStatuses: boundedTargetStatuses(result.targets),
    conditions: apply(prev.conditions, generation, now, conditions),
  };
}

/** Pure: the status while a pass is delivering (written once per pass, when the first delivery starts). */
export function statusProgressing(
  prev: GatewayKeyStatus,
  generation: number,
  version: string,
  total: number,
  done: readonly TargetResult[],
  now: Date,
): GatewayKeyStatus {
  const counts = countsOf(done, total);
  const degraded = prev.conditions?.find((c) => c.type === 'Degraded');
  const keepDegraded =
    degraded &&
    degraded.status === 'True' &&
    (degraded.reason === 'DeliveryFailed' ||
      degraded.reason === 'TargetsUnreachable' ||
      degraded.reason === 'KeyRejected');
  return {
    ...prev,
    observedGeneration: generation,
    desiredVersion: version,
    targets: counts,
    conditions: apply(prev.conditions, generation, now, [
      {
        type: 'Ready',
        status: 'False',
        reason: 'RolloutInProgress',
        message: `delivering key version ${version}: ${counts.converged}/${total} targets converged`,
      },
      {
        type: 'Progressing',
        status: 'True',
        reason: 'DeliveringKey',
        message: `delivering key version ${version} to ${total - counts.converged} target(s)`,
      },
      ...(keepDegraded
        ? []
        : [{ type: 'Degraded', status: 'False' as const, reason: 'AsExpected', message: '' }]),
    ]),
  };
}

/** Pure: the status when no pass could run (bad spec, missing Secret or key). Target counts are kept as last seen. */
export function statusDegraded(
  prev: GatewayKeyStatus,
  generation: number,
  reason: DegradedReason,
  message: string,
  now: Date,
): GatewayKeyStatus {
  const { desiredVersion: _stale, ...rest } = prev;
  return {
    ...rest,
    observedGeneration: generation,
    conditions: apply(
      prev.conditions,
      generation,
      now,
      trio(
        ['False', reason, message],
        ['False', reason, 'blocked until the cause is fixed'],
        ['True', reason, message],
      ),
    ),
  };
}

/** Canonical JSON: object keys sorted at every level, undefined dropped. */
export function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      return Object.fromEntries(
        Object.entries(v as Record<string, unknown>)
          .filter(([, x]) => x !== undefined)
          .sort(([a], [b]) => a.localeCompare(b)),
      );
    }
    return v;
  });
}

/** Pure: true when writing `next` would change what the server stores. */
export function statusChanged(stored: unknown, next: GatewayKeyStatus): boolean {
  return canonical(stored ?? {}) !== canonical(next);
}
