// Owns GatewayKey status, pure: computed from a pass result (or the reason there was none), compared before writing.

import { emptySummary, type PassResult, type PassSummary, tally } from '../engine/pass.ts';
import type { TargetResult } from '../engine/target.ts';
import type { KeyLifecycle } from '../lifecycle/lifecycle.ts';
import { type Condition, type ConditionInput, getCondition, rfc3339, setCondition } from './conditions.ts';
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

/** Pods the selector matches that no pass could observe (not ready, no IP): how many, the first names. */
export interface Unobserved {
  count: number;
  names: string[];
}

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

/** Not-converged targets first (they are what a reader needs), then by name. */
function byInterest(a: TargetStatus, b: TargetStatus): number {
  return Number(a.converged) - Number(b.converged) || a.name.localeCompare(b.name);
}

/** Pure: not-converged targets first, then by name; at most MAX. */
export function boundedTargetStatuses(results: readonly TargetResult[]): TargetStatus[] {
  return results.map(targetStatusOf).sort(byInterest).slice(0, MAX_TARGET_STATUSES);
}

export interface Counts {
  total: number;
  converged: number;
  progressing: number;
  failed: number;
}

/** Pure: drift and skipped targets still have work coming; unreachable and not-converged ones failed. */
export function countsOf(s: PassSummary, total = s.total): Counts {
  const failed = s.notConverged + s.unreachable;
  return { total, converged: s.converged, failed, progressing: total - s.converged - failed };
}

/** "a, b, c and 2 more": pod names, bounded. */
export function podNames(sample: Sample<string>, max = 5): string {
  const more = sample.count - Math.min(max, sample.first.length);
  return sample.first.slice(0, max).join(', ') + (more > 0 ? ` and ${more} more` : '');
}

/** How many, and the first few by name: what a message names of a large set. */
export interface Sample<T> {
  count: number;
  first: T[];
}

const SAMPLE = 5;

export interface Failure {
  name: string;
  message: string;
}

/**
 * What status and Events need of a pass, bounded whatever the fleet size: counts, the first
 * target lines, and a few names per category. Folded from results as they stream in
 * (`passDigest().add`), so a pass over 10,000 targets never holds them all.
 */
export interface PassDigest {
  keyVersion: string;
  dryRun: boolean;
  paused: boolean;
  summary: PassSummary;
  targetStatuses: TargetStatus[];
  /** Patched this pass and proven. */
  delivered: Sample<string>;
  /** The provider rejects the desired key they run (reason KeyRejected). */
  keyRejected: Sample<string>;
  /** Not converged or unreachable, KeyRejected included. */
  failed: Sample<Failure>;
  /** The same without KeyRejected; `notConverged`: how many of them are not-converged (not unreachable). */
  failedOthers: Sample<Failure> & { notConverged: number };
}

function addSample<T extends string | Failure>(s: Sample<T>, item: T, max = SAMPLE): void {
  s.count++;
  const name = (x: T) => (typeof x === 'string' ? x : x.name);
  s.first.push(item);
  s.first.sort((a, b) => name(a).localeCompare(name(b)));
  if (s.first.length > max) s.first.pop();
}

/** A digest being folded: `add` every result, read `digest` at any time (also mid-pass). */
export function passDigest(head: Pick<PassDigest, 'keyVersion' | 'dryRun' | 'paused'>): {
  add(r: TargetResult): void;
  readonly digest: PassDigest;
} {
  const digest: PassDigest = {
    ...head,
    summary: emptySummary(),
    targetStatuses: [],
    delivered: { count: 0, first: [] },
    keyRejected: { count: 0, first: [] },
    failed: { count: 0, first: [] },
    failedOthers: { count: 0, first: [], notConverged: 0 },
  };
  return {
    digest,
    add(r) {
      tally(digest.summary, r);
      const line = targetStatusOf(r);
      digest.targetStatuses.push(line);
      digest.targetStatuses.sort(byInterest);
      if (digest.targetStatuses.length > MAX_TARGET_STATUSES) digest.targetStatuses.pop();
      if (r.patched && r.outcome === 'converged') addSample(digest.delivered, r.name);
      if (r.reason === 'KeyRejected') addSample(digest.keyRejected, r.name);
      if (r.outcome === 'not-converged' || r.outcome === 'unreachable') {
        const f = { name: r.name, message: r.message };
        addSample(digest.failed, f, 3);
        if (r.reason !== 'KeyRejected') {
          addSample(digest.failedOthers, f, 3);
          if (r.outcome === 'not-converged') digest.failedOthers.notConverged++;
        }
      }
    },
  };
}

/** Pure: the digest of a pass that kept its results. */
export function digestOf(pass: PassResult | PassDigest): PassDigest {
  if ('targetStatuses' in pass) return pass;
  const d = passDigest(pass);
  for (const r of pass.targets) d.add(r);
  return d.digest;
}

/**
 * The KeyRejected message: the key version and the pods, no counts, so it stays the same pass
 * after pass while the same pods are affected (the per-target counts are in targetStatuses).
 */
export function keyRejectedMessage(d: PassDigest): string {
  const others = d.failedOthers;
  return (
    `the provider rejects key version ${d.keyVersion} on ${d.keyRejected.count} pod(s): ${podNames(d.keyRejected)}` +
    ' (the latest answers were 401 authentication_error, none accepted after); keyroll does not re-deliver a rejected key:' +
    ' put a key the provider accepts in the source Secret' +
    (others.count > 0
      ? `; also not converged: ${podNames({ count: others.count, first: others.first.map((f) => f.name) })}`
      : '')
  );
}

/** "a: why; b: why; and 2 more". */
export function failureSummary(s: Sample<Failure>): string {
  const more = s.count - s.first.length;
  return s.first.map((f) => `${f.name}: ${f.message}`).join('; ') + (more > 0 ? `; and ${more} more` : '');
}

/**
 * Pure: did this pass complete a rotation? Every target proves the desired version and keyroll
 * delivered it — in this pass, or (`deliveredEarlier`, known to the reconciler) in an earlier pass
 * of the same version whose targets converged only now.
 */
export function rotationCompleted(pass: PassResult | PassDigest, deliveredEarlier = false): boolean {
  const s = pass.summary;
  return s.total > 0 && s.converged === s.total && (deliveredEarlier || s.patched > 0);
}

/** Pure: the status after a completed pass. `rotated` sets lastRotationTime (see rotationCompleted). */
export function statusFromPass(
  prev: GatewayKeyStatus,
  generation: number,
  pass: PassResult | PassDigest,
  now: Date,
  rotated = rotationCompleted(pass),
): GatewayKeyStatus {
  const result = digestOf(pass);
  const counts = countsOf(result.summary);
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
  } else if (result.keyRejected.count > 0) {
    // Before the other failures: a refused key is what a human must fix, and retrying the same
    // key cannot; the reconciler keeps observing, so a later accepted response clears it.
    conditions = trio(
      ['False', 'KeyRejected', `${runs}; the provider rejects it on ${result.keyRejected.count} pod(s)`],
      [
        'False',
        'KeyRejected',
        'not re-delivering a key the provider rejects; waiting for an accepted response or a new key',
      ],
      ['True', 'KeyRejected', keyRejectedMessage(result)],
    );
  } else if (counts.failed > 0) {
    const unreachable = result.summary.unreachable > 0;
    const reason = result.summary.notConverged > 0 ? 'DeliveryFailed' : 'TargetsUnreachable';
    conditions = trio(
      ['False', 'TargetsNotConverged', runs],
      [
        'False',
        'RetryPending',
        `${counts.failed} target(s) failed${unreachable ? ' or were unreachable' : ''}; retrying with backoff`,
      ],
      ['True', reason, failureSummary(result.failed)],
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
    targetStatuses: result.targetStatuses.map((t) => ({ ...t })),
    conditions: apply(prev.conditions, generation, now, conditions),
  };
}

/** Pure: the status while a pass is delivering (written once per pass, when the first delivery starts). */
export function statusProgressing(
  prev: GatewayKeyStatus,
  generation: number,
  version: string,
  total: number,
  done: PassSummary,
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

/**
 * Pure: the status with the pods that could not be observed counted (issue 12): `targets.total`
 * is every pod the selector matches, Ready or not, and Ready cannot be True while one of them is
 * unobserved — `kubectl wait --for=condition=Ready` means "every consumer proved it".
 */
export function statusWithUnobserved(
  status: GatewayKeyStatus,
  unobserved: Unobserved,
  generation: number,
  now: Date,
): GatewayKeyStatus {
  if (unobserved.count === 0 || !status.targets) return status;
  const targets = {
    ...status.targets,
    total: status.targets.total + unobserved.count,
    unobserved: unobserved.count,
  };
  const ready = getCondition(status.conditions, 'Ready');
  const blocks = ready?.status === 'True' || ready?.reason === 'NoTargets';
  if (!blocks) return { ...status, targets };
  const names = podNames({ count: unobserved.count, first: unobserved.names });
  const message =
    `${targets.converged}/${targets.total} targets run key version ${status.desiredVersion ?? '?'}; ` +
    `${unobserved.count} pod(s) matched but not observable (not ready or no IP): ${names}`;
  return {
    ...status,
    targets,
    conditions: apply(status.conditions, generation, now, [
      { type: 'Ready', status: 'False', reason: 'TargetsUnobserved', message },
    ]),
  };
}

/**
 * Pure: the status carrying the key lifecycle and its condition `PreviousKeyRetirable` — True
 * while the oldest previous version not yet retired may be (or is being) retired, else False
 * with the reason it is held back (or `Retired` / `NoPreviousKey`).
 */
export function statusWithLifecycle(
  status: GatewayKeyStatus,
  lc: KeyLifecycle,
  generation: number,
  now: Date,
): GatewayKeyStatus {
  if (!lc.current) return status;
  const current = lc.current.version;
  const open = lc.previous.find((p) => p.state !== 'Retired');
  const last = lc.previous.filter((p) => p.state === 'Retired').at(-1);
  let c: Omit<ConditionInput, 'observedGeneration'>;
  if (open && (open.state === 'Retirable' || open.state === 'Retiring')) {
    c = {
      type: 'PreviousKeyRetirable',
      status: 'True',
      reason: open.state,
      message: `key version ${open.version} may be retired: every target proved ${current}`,
    };
  } else if (open) {
    c = {
      type: 'PreviousKeyRetirable',
      status: 'False',
      reason: open.reason ?? open.state,
      message: `key version ${open.version}: ${open.message ?? open.state}`,
    };
  } else if (last) {
    c = {
      type: 'PreviousKeyRetirable',
      status: 'False',
      reason: 'Retired',
      message: `key version ${last.version} retired at ${last.retiredAt ?? '?'}`,
    };
  } else {
    c = { type: 'PreviousKeyRetirable', status: 'False', reason: 'NoPreviousKey', message: '' };
  }
  return { ...status, lifecycle: lc, conditions: apply(status.conditions, generation, now, [c]) };
}
