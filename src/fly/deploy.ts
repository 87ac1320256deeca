// Owns the pure decision "is this Fly app mid-deploy?" from a machine listing, so the loop can
// skip a pass instead of writing a config that a rolling deploy is about to replace.
import type { Machine } from './schemas.ts';

/**
 * States a machine passes through while `fly deploy` (or another config change) replaces it.
 * `starting`/`stopping` are left out on purpose: autostop/autostart cause them without a deploy.
 */
export const DEPLOY_STATES: ReadonlySet<string> = new Set(['replacing', 'updating', 'creating']);

/** Metadata flyctl stamps on every machine it deploys; machines disagree while a rollout runs. */
export const RELEASE_METADATA_KEY = 'fly_release_version';

export interface DeployState {
  deploying: boolean;
  /** Human-readable reasons, identifiers only. */
  reasons: string[];
}

export function detectDeploy(machines: readonly Machine[]): DeployState {
  const reasons: string[] = [];
  const live = machines.filter((m) => m.state !== 'destroyed' && m.state !== 'destroying');
  for (const m of live) {
    if (DEPLOY_STATES.has(m.state)) reasons.push(`machine ${m.id} is ${m.state}`);
  }
  const releases = new Set<string>();
  for (const m of live) {
    const release = m.config?.metadata?.[RELEASE_METADATA_KEY];
    if (release !== undefined) releases.add(release);
  }
  if (releases.size > 1) {
    reasons.push(`machines are on different releases (${[...releases].sort().join(', ')})`);
  }
  return { deploying: reasons.length > 0, reasons };
}
