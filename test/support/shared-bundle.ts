// Owns the one build of the shipped CLI (`npm run build`'s bundle) that the tests of a vitest run
// share. Started from the bundle, `keyroll operator`, `reconcile --kube` and `diff --kube` load
// in ≈0.4 s of CPU instead of ≈1.2–1.4 s from the sources with a warm compile cache (type
// stripping and 868 client-node modules; `diff --kube` up to its first API call, load 3); the
// build itself costs ≈3 s, so it is made once: the first test that asks builds it into the
// directory the unit project's global setup provides (test/support/bundle-global-setup.ts), a
// lock directory makes every other worker wait for that build instead of making its own, and the
// global teardown removes it. Outside that setup (a bench, another config) each process builds
// its own and removes it on exit.
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT_FILE } from './bundle-global-setup.ts';
import { buildPackage, imageCommand } from './image-command.ts';

const WAIT_MS = 180_000;
const POLL_MS = 100;

/** Files in the shared directory beside ROOT_FILE: the lock, and the builder's error for the others. */
const LOCK = 'lock';
const FAILED_FILE = 'failed';

let built: Promise<string> | undefined;

/** The package root (the image's /app: package.json, node_modules, dist/) of this run's bundle. */
export function sharedBundleRoot(): Promise<string> {
  built ??= locate();
  return built;
}

/**
 * Node argv up to the command (`operator`, `reconcile`, `diff`): the operator image's ENTRYPOINT,
 * its Node flags included, on this run's bundle; the image the operator Deployment and the
 * reconcile CronJob run.
 */
export async function bundledKeyroll(): Promise<string[]> {
  const image = imageCommand('operator', await sharedBundleRoot());
  return [...image.nodeFlags, image.script, ...image.args];
}

async function locate(): Promise<string> {
  const dir = await providedDir();
  if (!dir) {
    const pkg = buildPackage('keyroll-bundle-');
    process.on('exit', () => pkg.cleanup());
    return pkg.root;
  }
  let builder = false;
  try {
    mkdirSync(join(dir, LOCK));
    builder = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  if (builder) {
    try {
      // Left for the global teardown to remove: other workers run from it until the run ends.
      const pkg = buildPackage('keyroll-bundle-');
      publish(join(dir, ROOT_FILE), pkg.root);
      return pkg.root;
    } catch (err) {
      publish(join(dir, FAILED_FILE), (err as Error).message);
      throw err;
    }
  }
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    if (existsSync(join(dir, ROOT_FILE))) return readFileSync(join(dir, ROOT_FILE), 'utf8');
    if (existsSync(join(dir, FAILED_FILE)))
      throw new Error(`the shared bundle build failed: ${readFileSync(join(dir, FAILED_FILE), 'utf8')}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error(`the shared bundle was not built within ${WAIT_MS / 1000} s (lock ${join(dir, LOCK)})`);
}

/**
 * The unit project's directory, or undefined outside that project. Imported here, not at the top:
 * importing vitest outside a vitest worker throws, and the benches import the operator's test
 * support, which imports this file.
 */
async function providedDir(): Promise<string | undefined> {
  try {
    const { inject } = await import('vitest');
    return inject('keyrollBundleDir');
  } catch {
    return undefined; // not in a vitest worker (a bench)
  }
}

/** Written whole or not at all: a waiting worker never reads half a path. */
function publish(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}
