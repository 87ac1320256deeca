// What one target in flight keeps alive, from two heap snapshots of the reconcile fleet benchmark
// taken at the same moment of a pass (BENCH_HEAP_SNAPSHOT=dir): a rotation pass's less a
// converged pass's, divided by the targets in flight (the rotation pass's `snapshot.inFlight`,
// ≈ the concurrency), in all and by constructor (bench/support/heap-snapshot.ts groups them).
// Against the rotation pass's own end snapshot (`-end`, nothing in flight) instead: all a target
// in flight keeps, its connection included.
//   node bench/support/heap-summary.ts dir/converged-c1000.*.heapsnapshot dir/rotation-c1000.*.heapsnapshot [inFlight=1000] [top=20]
import { type Group, summarize, totalBytes } from './heap-snapshot.ts';

const [base, rotation, inFlightArg, topArg] = process.argv.slice(2);
if (!base || !rotation) {
  console.error(
    'usage: node bench/support/heap-summary.ts <converged.heapsnapshot> <rotation.heapsnapshot> [inFlight] [top]',
  );
  process.exit(2);
}
const inFlight = Number(inFlightArg ?? 1000);
const top = Number(topArg ?? 20);
const a = summarize(base);
const b = summarize(rotation);
const live = (g: Map<string, Group>) => `${(totalBytes(g) / 1e6).toFixed(2)} MB`;
const perTarget = (totalBytes(b) - totalBytes(a)) / inFlight;
console.log(
  `live: converged ${live(a)}, rotation ${live(b)}; retained per in-flight target (${inFlight}): ${(perTarget / 1024).toFixed(2)} KB`,
);

const rows = [...new Set([...a.keys(), ...b.keys()])].map((k) => {
  const x = a.get(k) ?? { count: 0, selfBytes: 0 };
  const y = b.get(k) ?? { count: 0, selfBytes: 0 };
  return { k, count: (y.count - x.count) / inFlight, bytes: (y.selfBytes - x.selfBytes) / inFlight };
});
const table = (title: string, by: (r: (typeof rows)[number]) => number) => {
  console.log(`\nper in-flight target, by ${title}:\n| constructor | count | bytes |\n|---|---|---|`);
  for (const r of [...rows].sort((p, q) => by(q) - by(p)).slice(0, top)) {
    console.log(`| ${r.k} | ${r.count.toFixed(2)} | ${r.bytes.toFixed(0)} |`);
  }
};
table('size', (r) => r.bytes);
table('count', (r) => r.count);
