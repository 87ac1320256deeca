// Vitest global setup for the `unit` project: a directory for the run's shared bundle
// (test/support/shared-bundle.ts), built there on first use, not here, so a run whose tests never
// start the bundle pays nothing; removed with whatever was built once every test has finished.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Where the run's shared bundle is built (test/support/shared-bundle.ts). */
    keyrollBundleDir: string;
  }
}

/** In the shared directory: the path of the built package root, once the build succeeded. */
export const ROOT_FILE = 'root';

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-shared-bundle-'));
  project.provide('keyrollBundleDir', dir);
  return () => {
    const root = join(dir, ROOT_FILE);
    if (existsSync(root)) rmSync(readFileSync(root, 'utf8'), { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  };
}
