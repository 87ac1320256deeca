#!/usr/bin/env node
// `npm run bench [name…]`: runs every bench/*.bench.ts (or the named ones) one after another,
// each in its own process so RSS figures are not polluted by the previous benchmark.
// Benchmarks (a name matches part of a file name): migration, controller, front-door (rotation per
// restart strategy with the real OpenClaw against its own restart, proxy overhead, controller
// memory under proxy load; BENCH_ONLY=rotation|overhead|memory), operator, reconcile-fleet,
// surge-start (where a surge gateway's start loses time beside the old one, with the real
// OpenClaw; BENCH_CONDS, BENCH_RUNS).
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const wanted = process.argv.slice(2);
const files = readdirSync(join(root, 'bench'))
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.includes(w)))
  .sort();
if (files.length === 0) {
  console.error('bench: no benchmark matched');
  process.exit(2);
}
let failed = 0;
for (const f of files) {
  console.log(`\n== bench/${f}`);
  const r = spawnSync(process.execPath, ['--expose-gc', join(root, 'bench', f)], {
    cwd: root,
    stdio: 'inherit',
  });
  if (r.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);
