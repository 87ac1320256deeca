// Owns the convergence rule (docs/design.md, "Convergence"): when a target counts as done, and why not otherwise.

import { describeLastExit, type ObservedState, requiredForm } from '../kilo-state.ts';
import { type Desired, desiredFingerprint, fingerprintLabel, shortHash } from './desired.ts';

export type DriftCode =
  | 'delivery-mismatch'
  | 'gateway-not-running'
  | 'gateway-not-ready'
  | 'fingerprint-differs'
  | 'profile-form'
  | 'pid-unchanged'
  | 'key-rejected';

export interface Drift {
  code: DriftCode;
  message: string;
}

/**
 * A template literal's text as one flat string. `${a} ${b}…` makes a rope, a node per piece, and
 * keeps every piece as long as the text lives: a target's plan and drift live as long as the
 * target is in flight (a rotation pass holds ≈1,000 of them for the ≈300 ms of a restart, long
 * enough to be copied into the old generation), and their messages as ropes were ≈0.9 KB of it;
 * `join` copies the pieces into one string (BENCHMARKS.md, reconcile fleet, Session 9).
 */
export function flat(parts: TemplateStringsArray, ...values: unknown[]): string {
  const all = new Array<string>(parts.length + values.length);
  all[0] = parts[0]!;
  for (let i = 0; i < values.length; i++) {
    all[2 * i + 1] = String(values[i]); // as a template literal, not as join, renders null
    all[2 * i + 2] = parts[i + 1]!;
  }
  return all.join('');
}

/** What the verifier knows beyond the observation: whether this pass patched, and the PID before. */
export interface VerifyContext {
  patched: boolean;
  pidBefore?: number | null;
}

export interface TargetStatus {
  converged: boolean;
  drift: Drift[];
}

/**
 * Why a target is not converged, as a stable code drivers report (an operator condition reason,
 * a report column), when the drift needs one beyond its messages. `KeyRejected`: the gateway runs
 * the desired key and the provider refuses it.
 */
export type TargetReason = 'KeyRejected';

/** Evidence from live traffic that the provider refuses the key the gateway runs. */
export interface KeyRejection {
  /** 401 `authentication_error` answers since `since`. */
  rejected: number;
  since: string | null;
  lastKeyRejectedAt: string | null;
  lastAcceptedAt: string | null;
}

/**
 * Pure. The most recent provider outcome real users saw is a rejection: `keyRejected > 0` and no
 * accepted response after the last rejection. Null without that evidence — an older controller
 * (no `traffic`), no rejection, an accepted response at or after the last rejection, or times that
 * cannot be ordered: absent or unclear evidence never makes a target look broken.
 */
export function keyRejection(o: ObservedState): KeyRejection | null {
  const t = o.traffic;
  if (!t?.keyRejected || t.keyRejected < 0) return null;
  const lastKeyRejectedAt = t.lastKeyRejectedAt ?? null;
  const lastAcceptedAt = t.lastAcceptedAt ?? null;
  if (lastAcceptedAt !== null) {
    const accepted = Date.parse(lastAcceptedAt);
    const rejected = lastKeyRejectedAt === null ? Number.NaN : Date.parse(lastKeyRejectedAt);
    if (!(accepted < rejected)) return null;
  }
  return { rejected: t.keyRejected, since: t.since ?? null, lastKeyRejectedAt, lastAcceptedAt };
}

/** "3 responses since 2026-12-02T11:00:00.000Z, none accepted after": counts and times, never a secret. */
export function describeKeyRejection(k: KeyRejection): string {
  const responses = `${k.rejected} response${k.rejected === 1 ? '' : 's'}`;
  const since = k.since ? `since ${k.since}` : 'since the gateway started or the key was delivered';
  return `${responses} ${since}, none accepted after`;
}

/**
 * Pure. `KeyRejected` when the drift shows the provider refusing the key and the gateway runs the
 * desired one (no `fingerprint-differs`): a rejected old key is what a delivery fixes, not a reason.
 */
export function reasonOf(drift: readonly Drift[]): TargetReason | undefined {
  const rejected = drift.some((d) => d.code === 'key-rejected');
  const stale = drift.some((d) => d.code === 'fingerprint-differs');
  return rejected && !stale ? 'KeyRejected' : undefined;
}

/** The fingerprint the controller reports for the desired mode. */
export function observedFingerprint(d: Desired, o: ObservedState): string | null {
  return (d.delivery === 'file' ? o.key.fileHash : o.key.envHash) ?? null;
}

/**
 * Pure. Converged ⇔ gateway running and ready ∧ fingerprint = desired ∧ every managed profile
 * is a keyRef of the mode's source (none listed is fine) ∧ in restart mode after a patch the PID
 * differs from the PID before it ∧ live traffic does not show the provider rejecting the key
 * (`keyRejection`). Every failed clause becomes one drift entry with a reason.
 */
export function status(d: Desired, o: ObservedState, ctx: VerifyContext = { patched: false }): TargetStatus {
  const drift: Drift[] = [];
  if (o.controller.delivery && o.controller.delivery !== d.delivery) {
    drift.push({
      code: 'delivery-mismatch',
      message: flat`controller delivers by '${o.controller.delivery}' but the targets want '${d.delivery}'`,
    });
  }
  if (o.gateway.state !== 'running') {
    const exit = describeLastExit(o.gateway.lastExit);
    drift.push({
      code: 'gateway-not-running',
      message: flat`gateway is ${o.gateway.state}${o.gateway.restarts ? ` after ${o.gateway.restarts} restarts` : ''}${exit ? ` (last ${exit})` : ''}`,
    });
  } else if (o.gateway.ready !== true) {
    drift.push({ code: 'gateway-not-ready', message: 'gateway is running but not ready' });
  }
  const want = desiredFingerprint(d);
  const have = observedFingerprint(d, o);
  if (have !== want) {
    const label = fingerprintLabel(d.delivery);
    drift.push({
      code: 'fingerprint-differs',
      message: ctx.patched
        ? flat`state still shows ${label} ${shortHash(have)} after the patch, desired ${shortHash(want)}`
        : flat`${label} ${shortHash(have)} differs from desired ${shortHash(want)}`,
    });
  }
  const form = requiredForm(d.delivery);
  const wrong = o.profiles.filter((p) => p.form !== form);
  if (wrong.length > 0) {
    drift.push({
      code: 'profile-form',
      message: flat`${wrong.length} profile(s) not ${form}: ${wrong.map((p) => `${p.agentId}/${p.profileId} ${p.form}`).join(', ')}`,
    });
  }
  if (d.delivery === 'restart' && ctx.patched && ctx.pidBefore != null && o.gateway.pid === ctx.pidBefore) {
    drift.push({
      code: 'pid-unchanged',
      message: flat`gateway still runs as pid ${ctx.pidBefore}, spawned before the patch`,
    });
  }
  const rejection = keyRejection(o);
  if (rejection) {
    drift.push({
      code: 'key-rejected',
      message: flat`the provider rejected the ${have === want ? '' : 'old '}key on ${describeKeyRejection(rejection)}`,
    });
  }
  // A copy at its length, as plan()'s actions: an array grown by push keeps room for 17.
  return { converged: drift.length === 0, drift: drift.length === 0 ? drift : drift.slice() };
}
