#!/usr/bin/env node
// The project's one test command (`npm test`): type check, lint, every vitest project, then a
// plain closing line `N passed, N failed` for CI. The type check and the lint count as one
// check each in that tally; any failure makes the exit code non-zero.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name) => join(root, 'node_modules', '.bin', name);
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  console.error(
    `npm test: Node ${process.versions.node} is too old and node_modules/.bin/node is missing; run \`npm ci\` first.`,
  );
  process.exit(2);
}

let passed = 0;
let failed = 0;

function step(label, cmd, args) {
  const started = Date.now();
  console.log(`\n== ${label}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  const ok = r.status === 0;
  console.log(`== ${label}: ${ok ? 'ok' : 'FAILED'} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return ok;
}

const extra = process.argv.slice(2);
if (extra.length === 0) {
  step('typecheck', bin('tsc'), ['--noEmit', '-p', '.']) ? passed++ : failed++;
  step('lint', bin('biome'), ['ci', '.']) ? passed++ : failed++;
}

const reportDir = join(root, '.cache', 'test-report');
const report = join(reportDir, 'vitest.json');
mkdirSync(reportDir, { recursive: true });
rmSync(report, { force: true });
step('vitest', bin('vitest'), [
  'run',
  '--reporter=default',
  '--reporter=json',
  `--outputFile.json=${report}`,
  ...extra,
]);

if (existsSync(report)) {
  const r = JSON.parse(readFileSync(report, 'utf8'));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  // A file that fails to load reports no test but must still fail the run.
  const brokenFiles = (r.testResults ?? []).filter(
    (f) => f.status === 'failed' && f.assertionResults.length === 0,
  );
  failed += brokenFiles.length;
  if (r.numTotalTests === 0) {
    console.log('no test was executed');
    failed++;
  }
} else {
  console.log('vitest wrote no report');
  failed++;
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
