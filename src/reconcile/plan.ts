// Owns planning: from desired and observed state, the actions that converge a target, with reasons.

import { type ObservedState, requiredForm } from '../kilo-state.ts';
import { type Desired, desiredFingerprint, fingerprintLabel, shortHash } from './desired.ts';
import {
  describeKeyRejection,
  flat,
  keyRejection,
  observedFingerprint,
  type TargetReason,
} from './status.ts';

export type ActionType = 'migrate-profiles' | 'deliver-key' | 'wait-for-ready' | 'none';

export interface Action {
  type: ActionType;
  reason: string;
  /** Set on a `none` that stands for a reported reason (`KeyRejected`): what a reader should act on. */
  code?: TargetReason;
}

/**
 * What the engine can do about a target, from its plan alone: `in-sync` (nothing to do),
 * `deliverable` (a patch: migrate and/or deliver, then verify), `waiting` (only readiness is
 * missing: observe until it shows), `unfixable` (nothing keyroll sends can fix it: a delivery-mode
 * mismatch, an unparseable profile, a provider rejecting the desired key).
 */
export type Verdict = 'in-sync' | 'deliverable' | 'waiting' | 'unfixable';

const IN_SYNC = 'in sync';

/** Profile forms a migration by the controller can turn into the mode's keyRef. */
const MIGRATABLE = new Set(['plaintext', 'keyRef-env', 'keyRef-file']);

/** True when the plan needs `POST /_kilo/env/patch` (which migrates, then delivers). */
export function needsPatch(actions: readonly Action[]): boolean {
  return actions.some((a) => a.type === 'deliver-key' || a.type === 'migrate-profiles');
}

/**
 * Pure. The actions are what one `POST /_kilo/env/patch` plus verification would do; an empty
 * drift gives `[none]`. Nothing is planned for what a patch cannot fix (a delivery-mode mismatch,
 * an unreadable or missing profile, a provider rejecting the desired key): planning a restart
 * there would restart the gateway on every pass without ever converging.
 */
export function plan(d: Desired, o: ObservedState): Action[] {
  if (o.controller.delivery && o.controller.delivery !== d.delivery) {
    return [
      {
        type: 'none',
        reason: flat`controller delivers by '${o.controller.delivery}', targets want '${d.delivery}': fix the controller's --delivery flag`,
      },
    ];
  }
  const actions: Action[] = [];
  const form = requiredForm(d.delivery);
  const wrong = o.profiles.filter((p) => p.form !== form);
  const fixable = wrong.filter((p) => MIGRATABLE.has(p.form));
  const stuck = wrong.filter((p) => !MIGRATABLE.has(p.form));
  if (fixable.length > 0) {
    actions.push({
      type: 'migrate-profiles',
      reason: flat`${fixable.map((p) => `${p.agentId}/${p.profileId} is ${p.form}`).join(', ')}; want ${form}`,
    });
  }
  const want = desiredFingerprint(d);
  const have = observedFingerprint(d, o);
  if (have !== want) {
    actions.push({
      type: 'deliver-key',
      reason: flat`${fingerprintLabel(d.delivery)} ${shortHash(have)} differs from desired ${shortHash(want)} (version ${o.key.version ?? '-'} → ${d.version})`,
    });
  }
  const running = o.gateway.state === 'running';
  const ready = running && o.gateway.ready === true;
  if (actions.length > 0 && d.delivery === 'restart') {
    actions.push({
      type: 'wait-for-ready',
      reason:
        o.gateway.pid != null && running
          ? flat`the patch restarts the gateway; done when a new pid (not ${o.gateway.pid}) is ready`
          : `the patch reaches the gateway at its next start; done when it is ready`,
    });
  } else if (!ready) {
    actions.push({
      type: 'wait-for-ready',
      reason: running ? 'gateway is running but not ready' : flat`gateway is ${o.gateway.state}`,
    });
  }
  if (stuck.length > 0) {
    actions.push({
      type: 'none',
      reason: flat`${stuck.map((p) => `${p.agentId}/${p.profileId} is ${p.form}`).join(', ')}: keyroll does not rewrite what it cannot parse; fix by hand`,
    });
  }
  const rejection = keyRejection(o);
  if (rejection && have === want) {
    // The desired key itself is refused: re-delivering it would restart the gateway forever. A
    // rejected old key needs no action of its own: the deliver-key above replaces it.
    actions.push({
      type: 'none',
      code: 'KeyRejected',
      reason: flat`the provider rejected the desired key on ${describeKeyRejection(rejection)}; delivering the same key again cannot fix that: put a key the provider accepts in the key source`,
    });
  }
  if (actions.length === 0) return [{ type: 'none', reason: IN_SYNC }];
  // A copy at its length: an array grown by push keeps room for 17, and a target's plan lives as
  // long as the target is in flight.
  return actions.slice();
}

/**
 * Pure. The verdict on a plan. A gateway that runs the desired key while the provider rejects it
 * gains nothing by waiting (readiness would not make the key valid): `unfixable`, the next pass
 * observes again.
 */
export function classify(actions: readonly Action[]): Verdict {
  if (needsPatch(actions)) return 'deliverable';
  if (
    actions.length === 1 &&
    actions[0]?.type === 'none' &&
    !actions[0].code &&
    actions[0].reason === IN_SYNC
  )
    return 'in-sync';
  const rejected = actions.some((a) => a.type === 'none' && a.code === 'KeyRejected');
  if (actions.some((a) => a.type === 'wait-for-ready') && !rejected) return 'waiting';
  return 'unfixable';
}
