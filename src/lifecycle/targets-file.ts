// Owns the key lifecycle of a targets file (`reconcile --once --targets`, `diff --targets`): the
// pass's proof folded into the state file next to the targets file, then retirement — revoke
// (`--revoke-url`) and webhook — for `reconcile`; a read-only view of the same for `diff`.
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { advance, type KeyLifecycle, type LifecyclePolicy, summarize } from './lifecycle.ts';
import { type Announcer, type Revoker, retire } from './retire.ts';
import { loadLifecycle, saveLifecycle } from './state-file.ts';

/** What the lifecycle reads of a finished pass (the engine's PassResult has it). */
export interface FinishedPass {
  keyVersion: string;
  paused: boolean;
  summary: { skipped: number };
  targets: ReadonlyArray<{ name: string; after: unknown; outcome: string }>;
}

export interface TargetsLifecycleOptions {
  /** The targets file (named in the webhook) and the lifecycle's record. */
  targetsPath: string;
  stateFile: string;
  policy: LifecyclePolicy;
  /** Only `reconcile` writes the state file and retires; `diff` shows what would be. */
  act: boolean;
  revoker?: Revoker | undefined;
  announcer?: Announcer | undefined;
  clock: Clock;
  log: Logger;
  signal: AbortSignal;
}

export interface TargetsLifecycleResult {
  stateFile: string;
  lifecycle: KeyLifecycle;
  revoked: string[];
  announced: string[];
  error: string | null;
}

/** The state file's key for a targets file: one record per file, whatever it is called. */
const KEY = 'targets';

/**
 * Folds a finished pass into the lifecycle. A target proves the current version when the pass
 * left it converged; it was observed when the pass read its state at the end. A paused or
 * interrupted pass proves nothing new and retires nothing.
 */
export async function targetsLifecycle(
  pass: FinishedPass,
  o: TargetsLifecycleOptions,
): Promise<TargetsLifecycleResult> {
  const { stateFile } = o;
  const before = await loadLifecycle(stateFile, KEY);
  const proofs = pass.targets.map((t) => ({
    name: t.name,
    observed: t.after !== null,
    proves: t.outcome === 'converged',
  }));
  const pending = pass.paused || o.signal.aborted || pass.summary.skipped > 0;
  const { lifecycle } = advance(before, summarize(pass.keyVersion, proofs, pending), o.clock.now(), o.policy);
  const out: TargetsLifecycleResult = { stateFile, lifecycle, revoked: [], announced: [], error: null };
  if (!o.act) return out;
  await saveLifecycle(stateFile, KEY, lifecycle);
  const done = await retire(
    lifecycle,
    { gatewayKey: o.targetsPath, provenTargets: proofs.filter((p) => p.proves).map((p) => p.name) },
    {
      persist: (lc) => saveLifecycle(stateFile, KEY, lc),
      revoker: o.revoker,
      announcer: o.announcer,
      clock: o.clock,
      log: o.log,
      signal: o.signal,
    },
  );
  return {
    stateFile,
    lifecycle: done.lifecycle,
    revoked: done.revoked,
    announced: done.announced,
    error: done.error,
  };
}

/** Pure: the lifecycle as report lines (text output). */
export function renderLifecycle(r: TargetsLifecycleResult): string {
  const lc = r.lifecycle;
  if (!lc.current) return '';
  const lines = [
    `key lifecycle (${r.stateFile}): current ${lc.current.version}, ${
      lc.current.provenAt
        ? `proven by every target since ${lc.current.provenAt}`
        : 'not yet proven by every target'
    }`,
  ];
  for (const p of lc.previous) {
    const when =
      p.state === 'Retired'
        ? ` at ${p.retiredAt}`
        : p.state === 'Pending' && p.retirableAt
          ? ` (retirable after ${p.retirableAt})`
          : '';
    const why = p.message && p.state !== 'Retired' ? `: ${p.message}` : '';
    const revokedNow = r.revoked.includes(p.version) ? ' (revoked now)' : '';
    lines.push(`  previous ${p.version}: ${p.state}${when}${revokedNow}${why}`);
  }
  if (r.error) lines.push(`  retirement: ${r.error} (the next run tries again)`);
  return `${lines.join('\n')}\n`;
}
