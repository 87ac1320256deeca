// Sums a `--trace-gc` log per process (the reconcile fleet benchmark forwards each pass's trace to
// stderr, one process per pass: rotation then converged, per concurrency level): scavenges and
// mark-compacts, their count and pause time. With --trace-gc-nvp instead, also what scavenges
// promoted to the old generation (`promoted=`) and the incremental marking steps.
//   BENCH_KEYROLL_NODE_FLAGS="--max-semi-space-size=8 --max-old-space-size=320 --trace-gc" \
//     npm run bench -- reconcile-fleet 2> gc.log; node bench/support/gc-summary.ts gc.log
import { readFileSync } from 'node:fs';

export interface GcSums {
  scavenges: number;
  scavengeMs: number;
  markCompacts: number;
  markCompactMs: number;
  /** Incremental marking steps before the mark-compacts' pauses (nvp only). */
  markStepsMs: number;
  /** Bytes scavenges moved to the old generation (nvp only, else null). */
  promoted: number | null;
}

// `[pid:0x…]   123 ms: Scavenge 10.5 (12.3) -> 9.8 (13.3) MB, pooled: 0 MB, 1.23 / 0.00 ms  (…`
const PLAIN =
  /^\[(\d+):[^\]]*\]\s+[\d.]+ ms: (Scavenge|Mark-Compact|Minor Mark-Sweep)[^,]*,.*?([\d.]+) \/ [\d.]+ ms/;
// `[pid:0x…:0]   60 ms: pause=7.1 mutator=45.7 gc=s … incremental.steps_took=0.0 … promoted=0 …`
const NVP = /^\[(\d+):[^\]]*\]\s+[\d.]+ ms: pause=([\d.]+) .*?\bgc=(\w+)\b/;
const nvp = (line: string, name: string) => Number(new RegExp(`\\b${name}=([\\d.]+)`).exec(line)?.[1] ?? 0);

/** Per process id, in order of first appearance. */
export function sumTrace(text: string): Map<string, GcSums> {
  const out = new Map<string, GcSums>();
  const of = (pid: string) => {
    let s = out.get(pid);
    if (!s) {
      s = { scavenges: 0, scavengeMs: 0, markCompacts: 0, markCompactMs: 0, markStepsMs: 0, promoted: null };
      out.set(pid, s);
    }
    return s;
  };
  for (const line of text.split('\n')) {
    const p = PLAIN.exec(line);
    if (p) {
      const s = of(p[1]!);
      if (p[2] === 'Mark-Compact') {
        s.markCompacts++;
        s.markCompactMs += Number(p[3]);
      } else {
        s.scavenges++;
        s.scavengeMs += Number(p[3]);
      }
      continue;
    }
    const n = NVP.exec(line);
    if (!n) continue;
    const s = of(n[1]!);
    if (n[3] === 'mc') {
      s.markCompacts++;
      s.markCompactMs += Number(n[2]);
      s.markStepsMs += nvp(line, 'incremental.steps_took');
    } else if (n[3] === 's' || n[3] === 'mmc') {
      s.scavenges++;
      s.scavengeMs += Number(n[2]);
      s.promoted = (s.promoted ?? 0) + nvp(line, 'promoted');
    }
  }
  return out;
}

if (import.meta.main) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node bench/support/gc-summary.ts <trace-gc log>');
    process.exit(2);
  }
  console.log(
    '| pid | scavenges | scavenge ms | mark-compacts | mark-compact ms | promoted |\n|---|---|---|---|---|---|',
  );
  for (const [pid, s] of sumTrace(readFileSync(file, 'utf8'))) {
    const steps = s.markStepsMs > 0 ? ` (+ ${s.markStepsMs.toFixed(0)} in steps)` : '';
    const promoted = s.promoted === null ? '-' : `${(s.promoted / 1e6).toFixed(1)} MB`;
    console.log(
      `| ${pid} | ${s.scavenges} | ${s.scavengeMs.toFixed(0)} | ${s.markCompacts} | ${s.markCompactMs.toFixed(0)}${steps} | ${promoted} |`,
    );
  }
}
