// Sums a sampling allocation profile (`BENCH_ALLOC_PROF=dir npm run bench -- reconcile-fleet`
// writes one per pass, alloc.<pid>.heapprofile) by the function that allocated: the total, then
// the largest sites with their share. Callees V8 inlined count under their caller.
//   node bench/support/alloc-summary.ts dir/alloc.1234.heapprofile [top=30]
import { readFileSync } from 'node:fs';

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

const [file, topArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node bench/support/alloc-summary.ts <file.heapprofile> [top]');
  process.exit(2);
}
const { head } = JSON.parse(readFileSync(file, 'utf8')) as { head: ProfileNode };
const bySite = new Map<string, number>();
let total = 0;
const stack: ProfileNode[] = [head];
for (let n = stack.pop(); n; n = stack.pop()) {
  const { functionName, url, lineNumber } = n.callFrame;
  const site = `${functionName || '(anonymous)'} ${url.split('/').pop()}:${lineNumber}`;
  bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
  total += n.selfSize;
  stack.push(...n.children);
}
console.log(`allocated (sampled): ${(total / 1e6).toFixed(1)} MB`);
const top = [...bySite].sort((a, b) => b[1] - a[1]).slice(0, Number(topArg ?? 30));
for (const [site, bytes] of top) {
  console.log(
    `${(bytes / 1e6).toFixed(1).padStart(7)} MB ${((100 * bytes) / total).toFixed(1).padStart(5)} %  ${site}`,
  );
}
