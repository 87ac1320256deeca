// Owns the live progress of a pass: one `\r`-updated line on a TTY, one plain line per target otherwise.
import type { Phase } from '../engine/env.ts';
import type { TargetResult } from '../engine/target.ts';
import { renderResultLine } from './report.ts';

export interface Progress {
  phase(target: string, phase: Phase): void;
  result(r: TargetResult): void;
  /** A unit finished without a controller result (a Fly machine that needed no delivery). */
  done(name: string, converged: boolean): void;
  finish(): void;
}

/** `label` opens the line: the command's fan-out (`reconcile`, `fly APP`). */
export function createProgress(
  total: number,
  write: (text: string) => void,
  tty: boolean,
  label = 'reconcile',
): Progress {
  const inFlight = new Map<string, Phase>();
  const counts = { done: 0, converged: 0, failed: 0 };
  let lastWidth = 0;
  const count = (name: string, converged: boolean) => {
    inFlight.delete(name);
    counts.done++;
    if (converged) counts.converged++;
    else counts.failed++;
  };
  const draw = () => {
    const phases = [...inFlight.values()];
    const n = (p: Phase) => phases.filter((x) => x === p).length;
    const text =
      `${label} ${counts.done}/${total} done: ${counts.converged} converged, ${counts.failed} not` +
      ` | observing ${n('observing')}, delivering ${n('delivering')}, verifying ${n('verifying') + n('waiting')}`;
    write(`\r${text.padEnd(lastWidth)}`);
    lastWidth = text.length;
  };
  return {
    phase(target, phase) {
      inFlight.set(target, phase);
      if (tty) draw();
    },
    result(r) {
      count(r.name, r.outcome === 'converged');
      if (tty) draw();
      else write(renderResultLine(r));
    },
    done(name, converged) {
      count(name, converged);
      if (tty) draw();
    },
    finish() {
      if (tty && lastWidth > 0) write('\n');
    },
  };
}
