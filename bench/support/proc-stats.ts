// Owns reading one process's resource use from /proc (Linux): resident set, its kernel-kept
// high-water mark, the pages only that process holds, a sampler that keeps the memory peaks over a
// period, and the CPU time it has used.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/PID/stat's times. */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU time of `pid` so far, in ms (resolution 1000 / CLK_TCK ms). */
export function cpuMs(pid: number): number {
  const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

function statusKb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : Number.NaN;
}

/** VmRSS in MB. */
export function rssMb(pid: number): number {
  return statusKb(pid, 'VmRSS') / 1024;
}

/** VmHWM in MB: the highest RSS since the process started, as the kernel counted it. */
export function hwmMb(pid: number): number {
  return statusKb(pid, 'VmHWM') / 1024;
}

/** Private clean + dirty pages in MB (`smaps_rollup`): the memory this process alone holds. */
export function privateMb(pid: number): number {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
  return (kb('Private_Clean') + kb('Private_Dirty')) / 1024;
}

export interface MemorySampler {
  /** Stops sampling; the peaks seen (NaN when the process was gone at every sample). */
  stop(): { peakRss: number; peakPrivate: number; samples: number };
}

/** Samples RSS and private memory of `pid` every `everyMs` until stopped. */
export function sampleMemory(pid: number, everyMs = 50): MemorySampler {
  let peakRss = Number.NaN;
  let peakPrivate = Number.NaN;
  let samples = 0;
  const take = () => {
    try {
      const r = rssMb(pid);
      const p = privateMb(pid);
      peakRss = Number.isNaN(peakRss) ? r : Math.max(peakRss, r);
      peakPrivate = Number.isNaN(peakPrivate) ? p : Math.max(peakPrivate, p);
      samples++;
    } catch {
      // the process is gone; keep what was seen
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return { peakRss, peakPrivate, samples };
    },
  };
}
