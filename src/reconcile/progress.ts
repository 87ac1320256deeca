// Owns the live progress of a pass: one `\r`-updated line on a TTY, one plain line per target otherwise.
import type { Phase } from '../engine/env.ts';
import type { TargetResult } from '../engine/target.ts';
import { renderResultLine } from './report.ts';

export interface Progress {
  phase(target: string, phase: Phase): void;
  result(r: TargetResult): void;
  finish(): void;
}

export function createProgress(total: number, write: (text: string) => void, tty: boolean): Progress {
  const inFlight = new Map<string, Phase>();
  const counts = { done: 0, converged: 0, failed: 0 };
  let lastWidth = 0;
  const draw = () => {
    const phases = [...inFlight.values()];
    const n = (p: Phase) => phases.filter((x) => x === p).length;
    const text =
      `reconcile ${counts.done}/${total} done: ${counts.converged} converged, ${counts.failed} not` +
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
      inFlight.delete(r.name);
      counts.done++;
      if (r.outcome === 'converged') counts.converged++;
      else counts.failed++;
      if (tty) draw();
      else write(renderResultLine(r));
    },
    finish() {
      if (tty && lastWidth > 0) write('\n');
    },
  };
}
