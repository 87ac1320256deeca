// Owns the convergence rule (DESIGN.md): when a target counts as done, and why not otherwise.
import { type Desired, desiredFingerprint, fingerprintLabel, shortHash } from './desired.ts';
import { describeLastExit, type ObservedState, requiredForm } from './observed.ts';

export type DriftCode =
  | 'delivery-mismatch'
  | 'gateway-not-running'
  | 'gateway-not-ready'
  | 'fingerprint-differs'
  | 'profile-form'
  | 'pid-unchanged';

export interface Drift {
  code: DriftCode;
  message: string;
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

/** The fingerprint the controller reports for the desired mode. */
export function observedFingerprint(d: Desired, o: ObservedState): string | null {
  return (d.delivery === 'file' ? o.key.fileHash : o.key.envHash) ?? null;
}

/**
 * Pure. Converged ⇔ gateway running and ready ∧ fingerprint = desired ∧ every managed profile
 * is a keyRef of the mode's source (none listed is fine) ∧ in restart mode after a patch the PID
 * differs from the PID before it. Every failed clause becomes one drift entry with a reason.
 */
export function status(d: Desired, o: ObservedState, ctx: VerifyContext = { patched: false }): TargetStatus {
  const drift: Drift[] = [];
  if (o.controller.delivery && o.controller.delivery !== d.delivery) {
    drift.push({
      code: 'delivery-mismatch',
      message: `controller delivers by '${o.controller.delivery}' but the targets want '${d.delivery}'`,
    });
  }
  if (o.gateway.state !== 'running') {
    const exit = describeLastExit(o.gateway.lastExit);
    drift.push({
      code: 'gateway-not-running',
      message:
        `gateway is ${o.gateway.state}` +
        (o.gateway.restarts ? ` after ${o.gateway.restarts} restarts` : '') +
        (exit ? ` (last ${exit})` : ''),
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
        ? `state still shows ${label} ${shortHash(have)} after the patch, desired ${shortHash(want)}`
        : `${label} ${shortHash(have)} differs from desired ${shortHash(want)}`,
    });
  }
  const form = requiredForm(d.delivery);
  const wrong = o.profiles.filter((p) => p.form !== form);
  if (wrong.length > 0) {
    drift.push({
      code: 'profile-form',
      message: `${wrong.length} profile(s) not ${form}: ${wrong.map((p) => `${p.agentId}/${p.profileId} ${p.form}`).join(', ')}`,
    });
  }
  if (d.delivery === 'restart' && ctx.patched && ctx.pidBefore != null && o.gateway.pid === ctx.pidBefore) {
    drift.push({
      code: 'pid-unchanged',
      message: `gateway still runs as pid ${ctx.pidBefore}, spawned before the patch`,
    });
  }
  return { converged: drift.length === 0, drift };
}
