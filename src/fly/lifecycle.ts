// Owns the key lifecycle of a Fly app (`keyroll fly` with a --state-file or a retire flag): each
// finished pass folded into the app's record in a state file, then retirement (revoke, webhook),
// with src/lifecycle's pure advance() and retire(). docs/fly.md, "Key lifecycle", says why a file.
import type { Clock } from '../clock.ts';
import { advance, type LifecyclePolicy, summarize, type TargetProof } from '../lifecycle/lifecycle.ts';
import { type Announcer, type Revoker, retire } from '../lifecycle/retire.ts';
import { loadLifecycle, saveLifecycle } from '../lifecycle/state-file.ts';
import type { TargetsLifecycleResult } from '../lifecycle/targets-file.ts';
import type { Logger } from '../log.ts';
import type { FlyPassResult, MachineResult } from './loop.ts';

/** The default state file of an app, in the working directory (on a Fly volume when scheduled). */
export function flyStateFile(app: string): string {
  return `keyroll-fly-${app}.state.json`;
}

/**
 * Pure: what one machine proves about the current version.
 * - started: observed when its controller answered; proves when the running gateway showed the
 *   desired key and its config holds no key (a config key would come back on the next reboot);
 * - stopped (or created): there is no process to observe; it proves when its config holds no key,
 *   so its next boot reads the app secret, which the pass set to the current version first;
 * - any other state (starting, stopping, …) or a machine the pass skipped: unobserved.
 */
export function machineProof(m: MachineResult): TargetProof {
  if (m.outcome === 'skipped') return { name: m.id, observed: false, proves: false };
  if (m.state === 'started') {
    const observed = m.live === 'ok' || m.live === 'stale';
    return { name: m.id, observed, proves: observed && m.live === 'ok' && m.durable === 'ok' };
  }
  if (m.state === 'stopped' || m.state === 'created') {
    return { name: m.id, observed: true, proves: m.durable === 'ok' };
  }
  return { name: m.id, observed: false, proves: false };
}

export interface FlyLifecycleOptions {
  stateFile: string;
  policy: LifecyclePolicy;
  revoker?: Revoker | undefined;
  announcer?: Announcer | undefined;
  clock: Clock;
  log: Logger;
  signal: AbortSignal;
}

/**
 * Folds a finished pass into the app's lifecycle and retires what became retirable. A dry run,
 * a pass skipped for a deploy or cut by its deadline proves nothing new and retires nothing.
 */
export async function flyLifecycle(
  pass: FlyPassResult,
  o: FlyLifecycleOptions,
): Promise<TargetsLifecycleResult> {
  const key = `fly/${pass.app}`;
  const before = await loadLifecycle(o.stateFile, key);
  const proofs = pass.machines.map(machineProof);
  const pending = pass.dryRun || pass.status !== 'done' || o.signal.aborted;
  const { lifecycle } = advance(before, summarize(pass.keyVersion, proofs, pending), o.clock.now(), o.policy);
  const out = { stateFile: o.stateFile, lifecycle, revoked: [], announced: [], error: null };
  if (pass.dryRun) return out;
  await saveLifecycle(o.stateFile, key, lifecycle);
  const done = await retire(
    lifecycle,
    { gatewayKey: pass.app, provenTargets: proofs.filter((p) => p.proves).map((p) => p.name) },
    {
      persist: (lc) => saveLifecycle(o.stateFile, key, lc),
      revoker: o.revoker,
      announcer: o.announcer,
      clock: o.clock,
      log: o.log,
      signal: o.signal,
    },
  );
  return { ...out, ...done };
}
